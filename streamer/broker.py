"""The one Redis pub/sub subscription of a streamer process.

Guarantees:
- one connection per process, whatever the number of clients; a topic is subscribed
  while at least one local client wants it (``want``/``unwant``), in batches;
- delivery is at-most-once: an event published while this connection is down is not
  received here (the topic's history in Redis still holds it);
- a lost connection is retried forever with capped exponential backoff and jitter,
  each attempt logged at WARNING with its delay; on reconnecting every wanted topic is
  subscribed again, and ``on_reconnect`` is called so the gap can be filled;
- ``wait_ready`` returns only once Redis has confirmed the subscriptions, so a client
  whose handshake succeeded receives every event published after it.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Callable
from typing import Any

import gevent
import gevent.event
import redis

from herald.connection import blocking_client
from herald.keys import Keys

log = logging.getLogger(__name__)

BATCH = 1000  # channels per SUBSCRIBE command


class Broker:
    """Subscribes the topics local clients want and hands their events to ``deliver``."""

    def __init__(self, redis_url: str, keys: Keys, deliver: Callable[[str, bytes], None],
                 *, max_backoff: float = 5.0,
                 on_reconnect: Callable[[], None] | None = None) -> None:
        self._url = redis_url
        self._keys = keys
        self._prefix = keys.channel_prefix.encode()
        self._control = f"{keys.prefix}:control"
        self._deliver = deliver
        self._on_reconnect = on_reconnect
        self._max_backoff = max_backoff
        self._wanted: set[str] = set()
        self._subscribed: set[str] = set()
        self._confirmed: dict[str, gevent.event.Event] = {}
        self._changed = gevent.event.Event()
        self._greenlet: gevent.Greenlet | None = None
        self._pubsub: Any = None
        self.connected = False
        self.reconnects = 0

    @property
    def topics(self) -> int:
        return len(self._wanted)

    def want(self, topic: str) -> None:
        if topic not in self._wanted:
            self._wanted.add(topic)
            self._confirmed[topic] = gevent.event.Event()
            self._changed.set()

    def unwant(self, topic: str) -> None:
        if topic in self._wanted:
            self._wanted.discard(topic)
            self._confirmed.pop(topic, None)
            self._changed.set()

    def wait_ready(self, topics: tuple[str, ...], timeout: float) -> bool:
        """True once Redis confirmed every topic; False after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        for topic in topics:
            confirmed = self._confirmed.get(topic)
            if confirmed is None or not confirmed.wait(max(0.0, deadline - time.monotonic())):
                return False
        return True

    def start(self) -> None:
        self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill()
        self._close()

    def _run(self) -> None:
        delay = 0.0
        while True:
            started = time.monotonic()
            error: Exception | None = None
            try:
                self._session()
            except (redis.RedisError, OSError) as exc:
                error = exc
            except Exception as exc:  # a bug must not end the subscription for good
                log.exception("subscription loop failed")
                error = exc
            self._lost()
            if time.monotonic() - started > 10:
                delay = 0.0  # the session was healthy for a while: retry quickly
            delay = min(self._max_backoff, delay * 2 or 0.1)
            pause = delay * random.uniform(0.5, 1.0)
            log.warning("Redis subscription lost (%s); reconnecting in %.2fs", error, pause)
            gevent.sleep(pause)

    def _session(self) -> None:
        pubsub = blocking_client(self._url).pubsub(ignore_subscribe_messages=False)
        self._pubsub = pubsub
        pubsub.subscribe(self._control)
        reader = gevent.getcurrent()
        syncer = gevent.spawn(self._sync, pubsub)
        # A failed SUBSCRIBE ends the session like a failed read does.
        syncer.link_exception(lambda dead: reader.kill(dead.exception, block=False))
        try:
            while True:
                message = pubsub.get_message(timeout=None)
                if message is not None:
                    self._handle(message)
        finally:
            syncer.kill()
            self._close()

    def _sync(self, pubsub: Any) -> None:
        """Bring the connection's subscriptions in line with what clients want."""
        while True:
            self._changed.wait()
            self._changed.clear()
            add = sorted(self._wanted - self._subscribed)
            drop = sorted(self._subscribed - self._wanted)
            for start in range(0, len(add), BATCH):
                batch = add[start:start + BATCH]
                pubsub.subscribe(*(self._keys.channel(t) for t in batch))
                self._subscribed.update(batch)
            for start in range(0, len(drop), BATCH):
                batch = drop[start:start + BATCH]
                pubsub.unsubscribe(*(self._keys.channel(t) for t in batch))
                self._subscribed.difference_update(batch)

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        channel = message["channel"]
        if kind == "message":
            if channel.startswith(self._prefix):
                self._deliver(channel[len(self._prefix):].decode(), message["data"])
        elif kind == "subscribe":
            self._confirm(channel.decode())

    def _confirm(self, channel: str) -> None:
        if channel == self._control:
            self.connected = True
            log.info("subscribed to Redis (%d topics)", len(self._wanted))
            self._changed.set()
            if self.reconnects and self._on_reconnect is not None:
                self._on_reconnect()
            return
        topic = channel[len(self._keys.channel_prefix):]
        confirmed = self._confirmed.get(topic)
        if confirmed is not None:
            confirmed.set()

    def _lost(self) -> None:
        self.connected = False
        self.reconnects += 1
        self._subscribed.clear()
        for confirmed in self._confirmed.values():
            confirmed.clear()

    def _close(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(redis.RedisError, OSError):
                pubsub.close()
