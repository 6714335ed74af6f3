"""Commands a WebSocket client sends: subscribe, unsubscribe, read, ping, auth.

Each is a JSON text message ``{"op": ..., "ref": ...}``; each gets one reply
``{"reply": op, "ref": ref, "ok": true, ...}`` or, on a refusal, ``"ok": false`` with an
``"error": {"code", "message", "field"}`` like the API's. A malformed message is
refused the same way and never closes the connection.

- ``subscribe`` / ``unsubscribe`` ``{"topics": [...]}``: same grammar, grants and limit
  as the ``topics`` of the handshake; the reply comes once Redis has confirmed new
  subscriptions, so the client receives every event published after it.
- ``read`` ``{"ids": [...]}`` or ``{"all": true}``: marks the user's own inbox entries
  read, and tells the user's other tabs with a ``notification.read`` event
  (``herald.reading``, as the API).
- ``ping``: replies ``pong``.
- ``auth`` ``{"token": "..."}``: swaps the connection's token without reconnecting. The
  new token is fully checked (signature, expiry, revocation), must be for the same user
  and must grant every topic the connection follows (unsubscribe first otherwise); the
  reply carries its ``exp``. From then on its expiry and its revocation govern the
  connection. Refused (``unauthorized``, ``forbidden`` or ``invalid_field``, naming the
  ``token`` field), the old token stays in charge.

Tokens and topics are checked by ``herald.access``, as for a handshake and on the API;
a refusal is a ``herald.errors.Refusal``, sent as the reply's ``error`` object.

Once the connection's token has expired every command is refused (``unauthorized``)
and the connection ends as at expiry (``token-expired``, then close code 4001).

Pacing, so that one connection can neither grow the process nor monopolise Redis:
- a connection's commands run one at a time, in the order they arrived, and their
  replies come in that order; a connection has a worker greenlet only while it has
  commands to run, so it holds at most one Redis connection at a time;
- at most ``MAX_QUEUED`` commands (and ``MAX_QUEUED_BYTES`` of their text) wait behind
  the running one; a command beyond that is answered at once with error ``busy``;
- a connection's commands are accepted at ``RATE`` per second, in bursts of ``BURST``;
  one beyond that is answered at once with error ``rate_limited`` and ``retry_after``
  (seconds until the next would be accepted);
- a message that is not a command (not JSON, nested too deep, an integer too long, a
  number that is not finite, no known ``op``) is answered at once: ``invalid_json`` or
  ``invalid_field``;
- answers given at once (the three above) may overtake replies still to come;
- when Redis fails (down, or no connection of this process' pool free within
  ``POOL_WAIT`` seconds) the command is answered ``unavailable``; the failure is logged
  as one WARNING line, without a traceback, at most once per ``REDIS_WARNING_INTERVAL``
  seconds.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import deque
from typing import Any

import gevent
import redis

from herald import access, reading
from herald.access import Gate
from herald.config import Config
from herald.errors import Refusal, invalid
from herald.logs import Throttled
from herald.services import Services
from streamer.broker import Broker
from streamer.client import Client
from streamer.expiry import TOKEN_EXPIRED, expired
from streamer.hub import Hub
from streamer.websocket import MAX_MESSAGE, error_reply, reply

log = logging.getLogger(__name__)

MAX_QUEUED = 16  # commands waiting per connection: a page's burst, not a backlog
MAX_QUEUED_BYTES = MAX_MESSAGE  # their text: a waiting command costs no more than that
RATE = 20.0  # commands per second per connection, far above what a person clicks
BURST = 40  # ...after a reconnection a client sends its unanswered requests at once
REDIS_WARNING_INTERVAL = 10.0  # seconds between two warnings of a failing Redis
POOL_WAIT = 2.0  # seconds a command waits for a free Redis connection, then `unavailable`


class Backlog:
    """One connection's commands waiting to run, its worker and its rate budget."""

    __slots__ = ("held", "size", "tokens", "updated", "waiting", "worker")

    def __init__(self) -> None:
        self.held = False  # queue but do not run yet (the connection is replaying)
        self.waiting: deque[str] = deque()
        self.size = 0  # characters of text waiting
        self.worker: gevent.Greenlet | None = None
        self.tokens = float(BURST)
        self.updated = time.monotonic()

    def full(self, size: int) -> bool:
        return len(self.waiting) >= MAX_QUEUED or (
            bool(self.waiting) and self.size + size > MAX_QUEUED_BYTES)

    def take(self) -> float:
        """Spend one command of the budget: 0, or the seconds until one is available.

        The wait is rounded up to whole milliseconds, so a refusal never says 0.
        """
        now = time.monotonic()
        self.tokens = min(BURST, self.tokens + (now - self.updated) * RATE)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return math.ceil((1 - self.tokens) / RATE * 1000) / 1000

    def push(self, text: str) -> None:
        self.waiting.append(text)
        self.size += len(text)

    def pop(self) -> str:
        text = self.waiting.popleft()
        self.size -= len(text)
        return text


class Commands:
    """Carries out WebSocket commands for the clients of one streamer process."""

    def __init__(self, config: Config, hub: Hub, broker: Broker, services: Services,
                 gate: Gate) -> None:
        self.config = config
        self.hub = hub
        self.broker = broker
        self.services = services
        self.gate = gate  # checks a token, as a handshake does (``Streamer.gate``)
        self._redis_failed = Throttled(log, REDIS_WARNING_INTERVAL)

    def handle(self, client: Client, text: str) -> None:
        """Called by the client for each complete text message (in the event loop).

        Never blocks: the command is refused at once or queued for the connection's
        worker.
        """
        try:
            message = parse(text)
        except Refusal as exc:
            client.send(_refused("?", None, exc))
            return
        op, ref = message["op"], message.get("ref")
        if not hasattr(self, f"op_{op}"):
            client.send(error_reply(op, ref, "invalid_field", f"op must be one of "
                                    f"{', '.join(self._ops())}", "op"))
            return
        backlog = client.backlog
        if backlog is None:
            backlog = client.backlog = Backlog()
        if backlog.full(len(text)):
            client.send(error_reply(op, ref, "busy", f"{len(backlog.waiting)} commands of "
                                    "this connection are waiting to run; retry once they "
                                    "are answered"))
            return
        wait = backlog.take()
        if wait:
            client.send(error_reply(op, ref, "rate_limited", f"at most {RATE:g} commands "
                                    "per second per connection", retry_after=wait))
            return
        backlog.push(text)
        self._start(client, backlog)

    def hold(self, client: Client) -> None:
        """Queue ``client``'s commands, without running them, until ``release``.

        A command (``subscribe``) must not move a client still receiving its replay;
        the queue's bounds (``busy``) and the rate apply as usual meanwhile.
        """
        if client.backlog is None:
            client.backlog = Backlog()
        client.backlog.held = True

    def release(self, client: Client) -> None:
        """Run the commands held since ``hold``, in order, then the later ones."""
        if client.backlog is not None:
            client.backlog.held = False
            self._start(client, client.backlog)

    def _start(self, client: Client, backlog: Backlog) -> None:
        if backlog.worker is None and backlog.waiting and not backlog.held:
            backlog.worker = gevent.spawn(self._work, client, backlog)

    def _ops(self) -> list[str]:
        return [name[3:] for name in dir(self) if name.startswith("op_")]

    def _work(self, client: Client, backlog: Backlog) -> None:
        """Run the connection's commands one at a time until none is left.

        Once the connection is closed its waiting commands are dropped: no one is left
        to answer.
        """
        try:
            while backlog.waiting and not backlog.held and not client.closed:
                self._run(client, backlog.pop())
        finally:
            backlog.worker = None

    def _run(self, client: Client, text: str) -> None:
        """Carry out one command and send its one reply, whatever happens; once the
        token has expired, refuse it and end the stream."""
        message = parse(text)  # it was parsed on arrival: a waiting command is only text
        op, ref = message["op"], message.get("ref")
        try:
            if self._expired(client):
                raise access.unauthorized(TOKEN_EXPIRED, "token")
            getattr(self, f"op_{op}")(client, message, op, ref)
        except Refusal as exc:
            client.send(_refused(op, ref, exc))
        except redis.RedisError as exc:
            self._redis_failed("WebSocket commands: Redis failed (%s: %s); answering "
                               "'unavailable'", type(exc).__name__, exc)
            client.send(error_reply(op, ref, "unavailable", "Redis unavailable; retry"))
        except Exception:
            log.exception("command %r of %s failed", op, client.user)
            client.send(error_reply(op, ref, "internal_error", "the command failed"))
        if self._expired(client):  # the answer went out; now the stream ends
            self.hub.expire((client,))

    @staticmethod
    def _expired(client: Client) -> bool:
        return client.grant is not None and expired(client.grant.expires_at)

    def op_ping(self, client: Client, message: dict[str, Any], op: str, ref: Any) -> None:
        client.send(reply("pong", ref))

    def op_auth(self, client: Client, message: dict[str, Any], op: str, ref: Any) -> None:
        token = message.get("token")
        if not isinstance(token, str) or not token:
            raise Refusal(400, "invalid_field", "token must be a subscriber token", "token")
        grant = access.reauthorize(self.gate.authenticate(token), client.user, client.topics)
        self.hub.reauthorize(client, grant)
        client.send(reply(op, ref, exp=grant.expires_at))

    def op_subscribe(self, client: Client, message: dict[str, Any], op: str,
                     ref: Any) -> None:
        if client.grant is None:
            raise access.unauthorized(access.NO_TOKEN, "token")
        wanted = access.admit(client.grant, (*client.topics, *_topics(message)),
                              self.config.max_topics)
        self.hub.retopic(client, wanted)
        if self.broker.wait_ready(client.topics, self.config.subscribe_timeout):
            client.send(reply(op, ref, topics=list(client.topics)))
        else:
            client.send(error_reply(op, ref, "unavailable", "not subscribed to Redis yet; "
                                    "retry"))

    def op_unsubscribe(self, client: Client, message: dict[str, Any], op: str,
                       ref: Any) -> None:
        topics = set(access.valid_topics(_topics(message)))
        self.hub.retopic(client, tuple(t for t in client.topics if t not in topics))
        client.send(reply(op, ref, topics=list(client.topics)))

    def op_read(self, client: Client, message: dict[str, Any], op: str, ref: Any) -> None:
        ids = reading.selection(message.get("ids"), message.get("all"))
        done = reading.mark_read(self.services.inbox, self.services.publisher, client.user,
                                 ids)
        client.send(reply(op, ref, marked=done.marked, unread=done.unread))


def _topics(message: dict[str, Any]) -> list[Any]:
    """The ``topics`` a command names: a non-empty list (its items are checked later)."""
    topics = message.get("topics")
    if not isinstance(topics, list) or not topics:
        raise invalid("topics", "must be a non-empty list of topics")
    return topics


def _refused(op: str, ref: Any, refusal: Refusal) -> bytes:
    """A refusal as a command's reply: ``"ok": false`` and the ``error`` object."""
    return reply(op, ref, False, error=refusal.error())


def parse(text: str) -> dict[str, Any]:
    """The command in ``text``, or ``Refusal``; nothing else escapes, whatever the text."""
    try:
        message = json.loads(text, parse_float=_finite, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        # ValueError covers malformed JSON and integers past Python's digit limit.
        raise Refusal(400, "invalid_json", "a command must be JSON (finite numbers, nested "
                      "at most a few hundred levels)") from None
    if not isinstance(message, dict) or not isinstance(message.get("op"), str):
        raise Refusal(400, "invalid_field", 'a command is {"op": ..., "ref": ...}', "op")
    return message


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number out of range: {text[:20]}")
    return value


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")
