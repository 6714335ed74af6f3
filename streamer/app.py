"""HTTP handlers of the streamer: ``GET /events`` (SSE) and ``GET /healthz``.

``GET /events?topics=a,b&token=...`` checks, in order: the token (401: missing,
invalid or expired), the topics (400 naming the bad one), the grants (403 naming the
topic). Without ``topics`` a client gets its own topic ``user:<id>``.
Only then is the client registered and, once Redis has confirmed its subscriptions,
the response headers are written: a client that has its headers receives every event
published after that moment. The token may also come as ``Authorization: Bearer`` or
the ``herald_token`` cookie.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from herald import tokens
from herald.config import Config
from herald.errors import TokenError
from herald.event import TOPIC_RULE, sse_comment, user_topic, valid_topic
from herald.tokens import Grant
from streamer.broker import Broker
from streamer.client import Client
from streamer.hub import Hub
from streamer.protocol import BadRequest, Request, read_request, respond, respond_error

log = logging.getLogger(__name__)

MAX_REQUEST_HEAD = 8192
REQUEST_TIMEOUT = 5.0
SUBSCRIBE_TIMEOUT = 5.0
MAX_CLIENT_INPUT = 64 * 1024  # bytes a subscriber may send after its request
TOKEN_COOKIE = "herald_token"

SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/event-stream; charset=utf-8\r\n"
    b"Cache-Control: no-cache\r\n"
    b"X-Accel-Buffering: no\r\n"
    b"Connection: close\r\n"
    b"\r\n"
)


class Streamer:
    """Serves one connection per call to ``handle`` (gevent ``StreamServer`` handler)."""

    def __init__(self, config: Config, hub: Hub, broker: Broker) -> None:
        self.config = config
        self.hub = hub
        self.broker = broker
        self.routes = {"/events": self.events, "/healthz": self.healthz}

    def handle(self, sock: socket.socket, address: Any) -> None:
        request = None
        try:
            request = read_request(sock, MAX_REQUEST_HEAD, REQUEST_TIMEOUT)
            if request is None:
                return
            self._route(request)(sock, request)
        except BadRequest as exc:
            respond_error(sock, request, exc)
        except OSError:
            log.debug("connection from %s failed", address, exc_info=True)

    def _route(self, request: Request) -> Any:
        handler = self.routes.get(request.path)
        if handler is None:
            raise BadRequest(404, "not_found", f"no resource at {request.path}")
        if request.method != "GET":
            raise BadRequest(405, "method_not_allowed", "only GET is served here",
                             headers={"Allow": "GET"})
        return handler

    def healthz(self, sock: socket.socket, request: Request) -> None:
        healthy = self.broker.connected
        body = {"status": "ok" if healthy else "unavailable",
                "redis": "ok" if healthy else "disconnected",
                "clients": len(self.hub.clients), "topics": len(self.hub.topics),
                "events": self.hub.events_in, "deliveries": self.hub.deliveries}
        respond(sock, request, 200 if healthy else 503, body)

    def events(self, sock: socket.socket, request: Request) -> None:
        grant = self._authenticate(request)
        topics = self._topics(request, grant)
        client = Client(sock, grant, topics, self.config.client_buffer,
                        peer=_peer(sock))
        self.hub.add(client)
        if not self.broker.wait_ready(topics, SUBSCRIBE_TIMEOUT):
            self.hub.remove(client)
            raise BadRequest(503, "unavailable", "not subscribed to Redis yet; retry",
                             headers={"Retry-After": "1"})
        try:
            sock.sendall(self._handshake(grant, topics))
            client.go_live()
            _wait_for_eof(sock)
        finally:
            client.close("disconnected")

    def _handshake(self, grant: Grant, topics: tuple[str, ...]) -> bytes:
        retry = b"retry: %d\n" % self.config.retry_ms
        hello = sse_comment(f"connected as {grant.user} to {','.join(topics)}")
        return SSE_HEAD + retry + hello

    def _authenticate(self, request: Request) -> Grant:
        token = request.arg("token") or _bearer(request) or request.cookie(TOKEN_COOKIE)
        if not token:
            raise _unauthorized("a token is required (?token=, Bearer or cookie)")
        try:
            return tokens.verify(self.config.secret, token)
        except TokenError as exc:
            raise _unauthorized(str(exc)) from None

    def _topics(self, request: Request, grant: Grant) -> tuple[str, ...]:
        raw = request.arg("topics")
        names = [t for t in raw.split(",") if t] if raw else [user_topic(grant.user)]
        names = list(dict.fromkeys(names))
        if len(names) > self.config.max_topics:
            raise BadRequest(400, "invalid_field",
                             f"topics: at most {self.config.max_topics} per connection",
                             "topics")
        for topic in names:
            if not valid_topic(topic):
                raise BadRequest(400, "invalid_field",
                                 f"topics: {topic[:140]!r} must match {TOPIC_RULE}", "topics")
            if not grant.allows(topic):
                raise BadRequest(403, "forbidden",
                                 f"token of {grant.user!r} does not grant topic {topic!r}",
                                 "topics")
        return tuple(names)


def _bearer(request: Request) -> str | None:
    value = request.headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def _unauthorized(message: str) -> BadRequest:
    return BadRequest(401, "unauthorized", message, "token",
                      headers={"WWW-Authenticate": 'Bearer realm="herald"'})


def _peer(sock: socket.socket) -> str:
    try:
        host, port = sock.getpeername()[:2]
    except OSError:
        return "?"
    return f"{host}:{port}"


def _wait_for_eof(sock: socket.socket) -> None:
    """Block until the peer closes (or the socket is shut down by ``Client.close``)."""
    received = 0
    while received <= MAX_CLIENT_INPUT:
        try:
            data = sock.recv(4096)
        except OSError:
            return
        if not data:
            return
        received += len(data)
