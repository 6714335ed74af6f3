"""HTTP handlers of the streamer: ``GET /events`` (SSE) and ``GET /healthz``.

``GET /events?topics=a,b&token=...`` checks, in order: the token (401: missing,
invalid or expired), the topics (400 naming the bad one), the grants (403 naming the
topic). Without ``topics`` a client gets its own topic ``user:<id>``. The token may
also come as ``Authorization: Bearer`` or the ``herald_token`` cookie.

Only once Redis has confirmed the subscriptions of all its topics are the response
headers written: a client that has its headers receives every event published after
that moment. When the topics are already subscribed and there is nothing to replay
(the usual case) the whole handshake runs in the event loop's callback, without a
greenlet.

A stream lasts as long as its token: at the token's ``exp`` it gets a last
``token-expired`` message and is closed (see ``streamer.expiry``); a WebSocket can swap
in a fresh token before then with the ``auth`` command.

Resuming: with a ``Last-Event-ID`` header (sent by browsers when they reconnect) or a
``last_event_id`` parameter (for page reloads; the header wins), the client first gets
the events of its topics published after that position, from history, then live
events: no gap and no duplicate, including events published while the replay is sent.
The replay is planned first (``streamer.history``): when history cannot cover the gap
the client gets one ``reset`` event instead, then live events. Otherwise the response
head goes out and the replay follows in pages as the client reads (``streamer.replay``),
then ``resumed`` and ``ready``, or, past HERALD_REPLAY_MAX events on a topic or
HERALD_REPLAY_MAX_BYTES bytes, a ``reset`` where it stopped; a WebSocket client's
commands wait until it is live.
"""

from __future__ import annotations

import _socket
import json
import logging
import os
from typing import Any

import gevent
import redis
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection
from wsproto.events import Request as WsRequest
from wsproto.utilities import RemoteProtocolError

from herald.config import Config
from herald.errors import TokenError
from herald.event import TOPIC_RULE, sse_comment, user_topic, valid_topic
from herald.tokens import Grant
from streamer.broker import Broker
from streamer.client import SSE, WS, Client
from streamer.commands import Commands
from streamer.expiry import TOKEN_EXPIRED
from streamer.history import History, Key, Plan
from streamer.hub import Hub
from streamer.protocol import BadRequest, Request, response
from streamer.pubsub import PubSubError
from streamer.replay import Replays, reset_frames
from streamer.reply import reply_and_close
from streamer.tokencache import TokenCache
from streamer.websocket import reply

log = logging.getLogger(__name__)

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

    def __init__(self, config: Config, hub: Hub, broker: Broker, history: History,
                 revoked: set[str] | None = None) -> None:
        self.config = config
        self.hub = hub
        self.broker = broker
        self.history = history
        self.replays = Replays(history, config.replay_concurrency)
        self.revoked = revoked if revoked is not None else set()
        self.routes = {"/events": self.events, "/ws": self.websocket, "/healthz": self.healthz}
        self.commands: Commands | None = None  # WebSocket commands, set by the service
        self._ready_cache: dict[str, tuple[Key, bytes]] = {}
        self.verified = TokenCache(config.secret, config.token_algorithms)

    def handle(self, sock: _socket.socket, request: Request) -> None:
        try:
            self._route(request)(sock, request)
        except BadRequest as exc:
            exc.headers.update(self._cors(request))
            reply_and_close(sock, exc.answer())

    def _route(self, request: Request) -> Any:
        handler = self.routes.get(request.path)
        if handler is None:
            raise BadRequest(404, "not_found", f"no resource at {request.path}")
        if request.method == "OPTIONS":
            return self.preflight
        if request.method != "GET":
            raise BadRequest(405, "method_not_allowed", "only GET is served here",
                             headers={"Allow": "GET, OPTIONS"})
        return handler

    def _cors(self, request: Request) -> dict[str, str]:
        """CORS headers for an allowed ``Origin`` (HERALD_CORS_ORIGINS), else none."""
        origin = request.headers.get("origin")
        allowed = self.config.cors_origins
        if not origin or not allowed or (origin not in allowed and "*" not in allowed):
            return {}
        # Credentials (the herald_token cookie) need the origin itself, not "*".
        return {"Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Credentials": "true", "Vary": "Origin"}

    def preflight(self, sock: _socket.socket, request: Request) -> None:
        cors = self._cors(request)
        if not cors:
            raise BadRequest(403, "forbidden", "origin not allowed (HERALD_CORS_ORIGINS)",
                             "Origin")
        cors.update({"Access-Control-Allow-Methods": "GET, OPTIONS",
                     "Access-Control-Allow-Headers":
                         "Authorization, Last-Event-ID, Cache-Control",
                     "Access-Control-Max-Age": "600"})
        reply_and_close(sock, response(204, None, cors))

    def healthz(self, sock: _socket.socket, request: Request) -> None:
        healthy = self.broker.connected
        body = {"status": "ok" if healthy else "unavailable", "pid": os.getpid(),
                "redis": "ok" if healthy else "disconnected",
                "clients": len(self.hub.clients), "topics": len(self.hub.topics),
                "events": self.hub.events_in, "deliveries": self.hub.deliveries,
                "dropped_slow": self.hub.dropped}
        reply_and_close(sock, response(200 if healthy else 503, body))

    def events(self, sock: _socket.socket, request: Request) -> None:
        """``GET /events``: a Server-Sent-Events stream."""
        client = self._client(request, SSE)
        client.head = self._handshake(client, self._cors(request))
        last_id = request.headers.get("last-event-id") or request.arg("last_event_id")
        self._open(sock, client, last_id)

    def websocket(self, sock: _socket.socket, request: Request) -> None:
        """``GET /ws``: the same stream over a WebSocket, with commands from the client.

        Tokens, grants and resuming (``?last_event_id=``) work as for ``/events``; a
        browser's ``Origin`` must be allowed (HERALD_CORS_ORIGINS) when origins are
        configured or the token came from a cookie (cross-site WebSocket hijacking).
        A request without ``Upgrade: websocket`` gets 426, a broken handshake 400.
        """
        ws = _handshake(request)
        self._check_origin(request)
        client = self._client(request, WS)
        client.ws = ws
        client.on_text = self.commands.handle if self.commands else None
        client.head = ws.send(AcceptConnection())
        self._open(sock, client, request.arg("last_event_id"))

    def _ready_now(self, transport: str, latest: Key) -> bytes:
        """The ``ready`` frame at ``latest``, encoded once per position and transport."""
        cached = self._ready_cache.get(transport)
        if cached is None or cached[0] != latest:
            cached = self._ready_cache[transport] = (latest, _ready(transport, _text(latest)))
        return cached[1]

    def _check_origin(self, request: Request) -> None:
        origin = request.headers.get("origin")
        if not origin or self._cors(request):
            return
        if self.config.cors_origins or _token_from_cookie(request):
            raise BadRequest(403, "forbidden", f"origin {origin!r} is not allowed "
                             "(HERALD_CORS_ORIGINS)", "Origin")

    def _client(self, request: Request, transport: str) -> Client:
        grant = self._authenticate(request)
        topics = self._topics(request, grant)
        if self.hub.per_user.get(grant.user, 0) >= self.config.max_connections_per_user:
            raise BadRequest(429, "too_many_connections",
                             f"{grant.user!r} already has "
                             f"{self.config.max_connections_per_user} streams open here",
                             "token", headers={"Retry-After": "5"})
        client = Client(grant.user, grant.token_id, topics, self.config.client_buffer,
                        write_timeout=self.config.write_timeout, peer=request.peer,
                        transport=transport)
        client.grant = grant
        return client

    def _open(self, sock: _socket.socket, client: Client, last_id: str | None) -> None:
        """Start the stream: at once when nothing needs waiting for, else in a greenlet.

        Every stream gets a ``ready`` event carrying its starting position, so a client
        that reconnects before any event came still resumes without a gap.
        """
        topics = client.topics
        latest = self.hub.latest
        if last_id is None and latest is not None and self.broker.ready(topics):
            self.hub.add(client)
            client.head += self._ready_now(client.transport, latest)
            self._start(sock, client)
            return
        self.hub.join(client)
        gevent.spawn(self._join, sock, client, last_id)

    def _start(self, sock: _socket.socket, client: Client) -> None:
        """Fast path: write the stream's head and hand the socket to the client."""
        head = client.head
        try:
            written = sock.send(head)
        except OSError:
            written = -1
        if written != len(head):  # a fresh socket takes a few hundred bytes, or is dead
            self.hub.remove(client)
            sock.close()
            return
        client.attach(sock, self.config.send_buffer)

    def _join(self, sock: _socket.socket, client: Client, last_id: str | None) -> None:
        """Wait for the subscriptions, plan the replay, then send it and go live in order."""
        plan = None
        try:
            # Subscribed, with a known start: this process has dispatched every event
            # of these topics up to ``start`` (their subscriptions' recorded starts).
            start = self.hub.wait_positions(client.topics, self.config.subscribe_timeout)
            if start is None:
                raise BadRequest(503, "unavailable", "not subscribed to Redis yet; retry",
                                 headers={"Retry-After": "1"})
            if last_id is not None:
                plan = self.replays.plan(client.topics, last_id)
                # Events up to the plan's end may still be on their way through pub/sub:
                # wait until they have been dispatched (to the joining client, which
                # drops them), so none comes twice.
                self.broker.barrier().get(timeout=self.config.subscribe_timeout)
        except (BadRequest, redis.RedisError, PubSubError, gevent.Timeout) as exc:
            self.hub.remove(client)
            error = exc if isinstance(exc, BadRequest) else BadRequest(
                503, "unavailable", "history unavailable; retry", headers={"Retry-After": "1"})
            reply_and_close(sock, error.answer())
            return
        if client.closed:
            if client.close_reason == TOKEN_EXPIRED:  # expired while joining: no stream
                reply_and_close(sock, _unauthorized(TOKEN_EXPIRED).answer())
            else:
                sock.close()
            return
        if plan is None or last_id is None:
            client.begin_with(client.head)
            self.hub.activate(client, None, (start, _ready(client.transport, _text(start))))
            client.attach(sock, self.config.send_buffer)
        elif plan.reset is not None:
            log.info("client %s of %s resuming from %r: reset (%s)", client.peer,
                     client.user, last_id[:40], plan.reset)
            reset = reset_frames(plan.position, plan.reset, last_id)
            client.begin_with(client.head + reset.for_transport(client.transport))
            self.hub.activate(client, reset.key)
            client.attach(sock, self.config.send_buffer)
        else:
            self._replay(sock, client, plan, last_id)

    def _replay(self, sock: _socket.socket, client: Client, plan: Plan, last_id: str) -> None:
        """Send the head, then the replay as the client reads it, then go live."""
        client.begin_with(client.head)
        client.drop_held(plan.end)  # replayed: dispatched before the barrier passed
        if self.commands is not None and client.ws is not None:
            self.commands.hold(client)
        client.attach(sock, self.config.send_buffer)
        complete = self.replays.send(client, plan, last_id)
        if complete is None:
            return
        marker = (plan.end, _ready(client.transport, plan.position)) if complete else None
        self.hub.activate(client, plan.end, marker)
        if self.commands is not None and client.ws is not None:
            self.commands.release(client)

    def _handshake(self, client: Client, cors: dict[str, str]) -> bytes:
        head = SSE_HEAD
        if cors:
            extra = "".join(f"{name}: {value}\r\n" for name, value in cors.items())
            head = head[:-2] + extra.encode("latin-1") + b"\r\n"
        retry = b"retry: %d\n" % self.config.retry_ms
        hello = sse_comment(f"connected as {client.user} to {','.join(client.topics)}")
        return head + retry + hello

    def _authenticate(self, request: Request) -> Grant:
        token = request_token(request)
        if not token:
            raise _unauthorized("a token is required (?token=, Bearer or cookie)")
        try:
            return self.grant_for(token)
        except TokenError as exc:
            raise _unauthorized(str(exc)) from None

    def grant_for(self, token: str) -> Grant:
        """What ``token`` allows; ``TokenError`` when it is invalid, expired or revoked.

        The one check of a token for this process: a stream's handshake and the
        WebSocket ``auth`` command both go through it.
        """
        grant = self.verified.verify(token)  # each distinct token once per process
        if grant.token_id in self.revoked:
            raise TokenError("token revoked")
        return grant

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


def _handshake(request: Request) -> WSConnection:
    """The WebSocket connection ``request`` opens, or ``BadRequest`` (426 or 400)."""
    upgrade = request.headers.get("upgrade", "")
    if "websocket" not in (token.strip().lower() for token in upgrade.split(",")):
        raise BadRequest(426, "upgrade_required", "GET /ws is a WebSocket endpoint: send "
                         "a handshake (Upgrade: websocket)", "Upgrade",
                         headers={"Upgrade": "websocket"})
    ws = WSConnection(ConnectionType.SERVER)
    try:
        ws.receive_data(request.raw)
        handshake = next(ws.events(), None)
    except RemoteProtocolError as exc:
        raise BadRequest(400, "bad_request", f"not a valid WebSocket handshake: {exc}") from None
    if not isinstance(handshake, WsRequest):
        raise BadRequest(400, "bad_request", "not a valid WebSocket handshake")
    return ws


def request_token(request: Request) -> str | None:
    """The token a request carries: ``?token=``, ``Authorization: Bearer`` or the cookie."""
    return request.arg("token") or _bearer(request) or request.cookie(TOKEN_COOKIE)


def _bearer(request: Request) -> str | None:
    value = request.headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def _unauthorized(message: str) -> BadRequest:
    return BadRequest(401, "unauthorized", message, "token",
                      headers={"WWW-Authenticate": 'Bearer realm="herald"'})


def _ready(transport: str, position: str) -> bytes:
    """The stream's starting position: resume from here if nothing else came."""
    if transport == WS:
        return reply("ready", position=position)
    data = json.dumps({"position": position}, separators=(",", ":")).encode()
    return b"id: %s\nevent: ready\ndata: %s\n\n" % (position.encode(), data)


def _text(key: Key) -> str:
    return f"{key[0]}-{key[1]}"


def _token_from_cookie(request: Request) -> bool:
    return not request.arg("token") and not _bearer(request) and bool(
        request.cookie(TOKEN_COOKIE))
