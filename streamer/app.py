"""HTTP handlers of the streamer: a stream per transport and ``GET /healthz``.

Every registered transport (``streamer.transports``: ``GET /events`` for SSE, ``GET
/ws`` for WebSocket) is served by the same handler, which never asks which one it is:
the transport accepts the request (or refuses it: 426 without a WebSocket handshake,
400 for a malformed option), then ``?topics=a,b&token=...`` is checked, in order: the
token (401: missing, invalid, expired or revoked), the topics (400 naming the bad
one), the grants (403 naming the topic), all by ``herald.access`` as the API and the
WebSocket commands check them. Without ``topics`` a client gets its own topic
``user:<id>``. The token may also come as ``Authorization: Bearer`` or the
``herald_token`` cookie. For a transport browsers do not apply CORS to (WebSocket), a
browser's ``Origin`` must be allowed (HERALD_CORS_ORIGINS) when origins are configured
or the token came from a cookie (cross-site WebSocket hijacking).

Only once Redis has confirmed the subscriptions of all its topics are the response
headers written: a client that has its headers receives every event published after
that moment. When the topics are already subscribed and there is nothing to replay
(the usual case) the whole handshake runs in the event loop's callback, without a
greenlet.

A stream lasts as long as its token: at the token's ``exp`` it gets a last
``token-expired`` message and is closed (see ``streamer.expiry``); a WebSocket can swap
in a fresh token before then with the ``auth`` command.

Resuming: with a ``Last-Event-ID`` header (sent by EventSource when it reconnects) or a
``last_event_id`` parameter (for page reloads; the header wins), the client first gets
the events of its topics published after that position, from history, then live
events: no gap and no duplicate, including events published while the replay is sent.
The replay is planned first (``streamer.history``): when history cannot cover the gap
the client gets one ``reset`` event instead, then live events. Otherwise the response
head goes out and the replay follows in pages as the client reads (``streamer.replay``),
then ``resumed`` and ``ready``, or, past HERALD_REPLAY_MAX events on a topic or
HERALD_REPLAY_MAX_BYTES bytes, a ``reset`` where it stopped; a client's commands (over
a transport that takes them) wait until it is live.
"""

from __future__ import annotations

import _socket
import functools
import logging
import os
from typing import Any

import gevent
import redis

from herald import access
from herald.access import DenySet
from herald.config import Config
from herald.errors import Refusal
from herald.event import user_topic
from streamer import transports
from streamer.broker import Broker
from streamer.client import Client
from streamer.commands import Commands
from streamer.expiry import TOKEN_EXPIRED
from streamer.history import History, Key, Plan
from streamer.hub import Hub
from streamer.metrics import StreamerMetrics
from streamer.protocol import BadRequest, Request, answer, response
from streamer.replay import Replays
from streamer.reply import reply_and_close
from streamer.tokencache import TokenCache
from streamer.transport import Transport

log = logging.getLogger(__name__)



class Streamer:
    """Routes complete requests (``Listener`` handler) to the handlers below."""

    def __init__(self, config: Config, hub: Hub, broker: Broker, history: History,
                 revoked: DenySet | None = None) -> None:
        self.config = config
        self.hub = hub
        self.metrics: StreamerMetrics = hub.metrics
        self.broker = broker
        self.history = history
        self.replays = Replays(history, config.replay_concurrency, self.metrics)
        self.revoked = revoked if revoked is not None else DenySet()
        self.routes = {path: functools.partial(self.stream, transport)
                       for path, transport in transports.configured(config).items()}
        self.routes["/healthz"] = self.healthz
        self.commands: Commands | None = None  # clients' commands, set by the service
        self._ready_cache: dict[Transport, tuple[Key, bytes]] = {}
        self.verified = TokenCache(config.secret, config.token_algorithms)
        # Every token of this process is checked here: handshakes and ``auth`` commands.
        self.gate = access.Gate(self.verified.verify, self.revoked)

    def handle(self, sock: _socket.socket, request: Request) -> None:
        try:
            self._route(request)(sock, request)
        except Refusal as exc:
            exc.headers.update(self._cors(request))
            self._refuse(sock, exc)

    def _refuse(self, sock: _socket.socket, refusal: Refusal) -> None:
        """Answer a refused handshake (and count it by status) and close."""
        reply_and_close(sock, answer(refusal))
        self.metrics.refused(str(refusal.status))

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

    def stream(self, transport: Transport, sock: _socket.socket, request: Request) -> None:
        """A stream over ``transport`` (see the module's description)."""
        session = transport.accept(request)
        if not transport.browser_cors:
            self._check_origin(request)
        client = self._client(request, session.transport)
        client.session = session
        if transport.commands and self.commands is not None:
            client.on_text = self.commands.handle
        client.head = session.head(client, self._cors(request))
        last_id = request.headers.get("last-event-id") or request.arg("last_event_id")
        self._open(sock, client, last_id)

    def _ready_now(self, transport: Transport, latest: Key) -> bytes:
        """The ``ready`` frame at ``latest``, encoded once per position and transport."""
        cached = self._ready_cache.get(transport)
        if cached is None or cached[0] != latest:
            cached = self._ready_cache[transport] = (latest, transport.ready(_text(latest)))
        return cached[1]

    def _check_origin(self, request: Request) -> None:
        origin = request.headers.get("origin")
        if not origin or self._cors(request):
            return
        credential = request_token(request)
        if self.config.cors_origins or (credential and credential.source == access.COOKIE):
            raise BadRequest(403, "forbidden", f"origin {origin!r} is not allowed "
                             "(HERALD_CORS_ORIGINS)", "Origin")

    def _client(self, request: Request, transport: Transport) -> Client:
        credential = request_token(request)
        grant = self.gate.authenticate(credential.token if credential else None)
        raw = request.arg("topics")
        wanted = [t for t in raw.split(",") if t] if raw else [user_topic(grant.user)]
        topics = access.admit(grant, wanted, self.config.max_topics)
        if self.hub.per_user.get(grant.user, 0) >= self.config.max_connections_per_user:
            raise Refusal(429, "too_many_connections",
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
        except (BadRequest, redis.RedisError, ConnectionError, gevent.Timeout) as exc:
            self.hub.remove(client)
            error = exc if isinstance(exc, BadRequest) else BadRequest(
                503, "unavailable", "history unavailable; retry", headers={"Retry-After": "1"})
            self._refuse(sock, error)
            return
        if client.closed:
            if client.close_reason == TOKEN_EXPIRED:  # expired while joining: no stream
                self._refuse(sock, access.unauthorized(TOKEN_EXPIRED, "token"))
            else:
                sock.close()
            return
        if plan is None or last_id is None:
            client.begin_with(client.head)
            self.hub.activate(client, None, (start, client.transport.ready(_text(start))))
            client.attach(sock, self.config.send_buffer)
        elif plan.reset is not None:
            log.info("client %s of %s resuming from %r: reset (%s)", client.peer,
                     client.user, last_id[:40], plan.reset)
            reset = client.transport.reset(plan.position, plan.reset, last_id)
            client.begin_with(client.head + reset)
            self.hub.activate(client, plan.end)
            client.attach(sock, self.config.send_buffer)
        else:
            self._replay(sock, client, plan, last_id)

    def _replay(self, sock: _socket.socket, client: Client, plan: Plan, last_id: str) -> None:
        """Send the head, then the replay as the client reads it, then go live."""
        client.begin_with(client.head)
        client.drop_held(plan.end)  # replayed: dispatched before the barrier passed
        if self.commands is not None and client.on_text is not None:
            self.commands.hold(client)
        client.attach(sock, self.config.send_buffer)
        complete = self.replays.send(client, plan, last_id)
        if complete is None:
            return
        marker = (plan.end, client.transport.ready(plan.position)) if complete else None
        self.hub.activate(client, plan.end, marker)
        if self.commands is not None and client.on_text is not None:
            self.commands.release(client)

def request_token(request: Request) -> access.Credential | None:
    """The token a request carries: ``?token=``, ``Authorization: Bearer`` or the cookie."""
    headers = request.headers
    return access.credential(request.arg("token"), headers.get("authorization"),
                             headers.get("cookie"))


def _text(key: Key) -> str:
    return f"{key[0]}-{key[1]}"
