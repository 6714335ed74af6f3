"""HTTP handlers of the streamer: ``GET /events`` (SSE) and ``GET /healthz``.

``GET /events?topics=a,b&token=...`` checks, in order: the token (401: missing,
invalid or expired), the topics (400 naming the bad one), the grants (403 naming the
topic). Without ``topics`` a client gets its own topic ``user:<id>``. The token may
also come as ``Authorization: Bearer`` or the ``herald_token`` cookie.

Only once Redis has confirmed the subscriptions of all its topics are the response
headers written: a client that has its headers receives every event published after
that moment. When the topics are already subscribed (the usual case) the whole
handshake runs in the event loop's callback, without a greenlet.
"""

from __future__ import annotations

import _socket
import logging
import os
from typing import Any

import gevent

from herald import tokens
from herald.config import Config
from herald.errors import TokenError
from herald.event import TOPIC_RULE, sse_comment, user_topic, valid_topic
from herald.tokens import Grant
from streamer.broker import Broker
from streamer.client import Client
from streamer.hub import Hub
from streamer.protocol import BadRequest, Request, response
from streamer.reply import reply_and_close

log = logging.getLogger(__name__)

SUBSCRIBE_TIMEOUT = 5.0
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
    """Routes complete requests (``Listener`` handler) to the handlers below."""

    def __init__(self, config: Config, hub: Hub, broker: Broker) -> None:
        self.config = config
        self.hub = hub
        self.broker = broker
        self.routes = {"/events": self.events, "/healthz": self.healthz}

    def handle(self, sock: _socket.socket, request: Request) -> None:
        try:
            self._route(request)(sock, request)
        except BadRequest as exc:
            reply_and_close(sock, exc.answer())

    def _route(self, request: Request) -> Any:
        handler = self.routes.get(request.path)
        if handler is None:
            raise BadRequest(404, "not_found", f"no resource at {request.path}")
        if request.method != "GET":
            raise BadRequest(405, "method_not_allowed", "only GET is served here",
                             headers={"Allow": "GET"})
        return handler

    def healthz(self, sock: _socket.socket, request: Request) -> None:
        healthy = self.broker.connected
        body = {"status": "ok" if healthy else "unavailable", "pid": os.getpid(),
                "redis": "ok" if healthy else "disconnected",
                "clients": len(self.hub.clients), "topics": len(self.hub.topics),
                "events": self.hub.events_in, "deliveries": self.hub.deliveries,
                "dropped_slow": self.hub.dropped}
        reply_and_close(sock, response(200 if healthy else 503, body))

    def events(self, sock: _socket.socket, request: Request) -> None:
        grant = self._authenticate(request)
        topics = self._topics(request, grant)
        client = Client(grant.user, grant.token_id, topics, self.config.client_buffer,
                        peer=request.peer)
        self.hub.add(client)
        if self.broker.ready(topics):
            self._start(sock, client)
        else:
            gevent.spawn(self._start_when_subscribed, sock, client)

    def _start_when_subscribed(self, sock: _socket.socket, client: Client) -> None:
        if self.broker.wait_ready(client.topics, SUBSCRIBE_TIMEOUT) and not client.closed:
            self._start(sock, client)
            return
        self.hub.remove(client)
        reply_and_close(sock, BadRequest(503, "unavailable", "not subscribed to Redis yet; "
                                         "retry", headers={"Retry-After": "1"}).answer())

    def _start(self, sock: _socket.socket, client: Client) -> None:
        """Write the stream's head and hand the socket to the client."""
        head = self._handshake(client)
        try:
            written = sock.send(head)
        except OSError:
            written = -1
        if written != len(head):  # a fresh socket takes a few hundred bytes, or is dead
            self.hub.remove(client)
            sock.close()
            return
        client.attach(sock, self.config.send_buffer)

    def _handshake(self, client: Client) -> bytes:
        retry = b"retry: %d\n" % self.config.retry_ms
        hello = sse_comment(f"connected as {client.user} to {','.join(client.topics)}")
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
