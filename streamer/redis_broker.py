"""The one Redis pub/sub subscription of a streamer process: the ``Broker`` of production.

It keeps every promise of ``streamer.broker.Broker``; in particular:
- one connection per process, whatever the number of clients; a topic is subscribed
  while at least one local client wants it (``want``/``unwant``), in batches;
- delivery is at-most-once: an event published while this connection is down is not
  received here (the topic's history in Redis still holds it);
- a lost connection is retried forever with capped exponential backoff and jitter,
  each attempt logged at WARNING with its delay; on reconnecting every wanted topic is
  subscribed again, and once Redis has confirmed them all, ``on_resync`` fills the gap
  (from history) before any event received since the reconnection is delivered, so
  clients get what they missed first, then live events, in order;
- ``on_subscribed`` learns of every confirmed subscription (to record where it began);
- ``on_control`` receives the messages of the deployment's control channel;
- ``on_reconnected`` is called each time the subscription is made again after a loss
  (the first connection is not a reconnection);
- ``barrier()`` is set once every message Redis sent before it was asked for has been
  handed to ``deliver`` (a PING answered on the subscription connection, whose reply
  Redis queues behind those messages);
- an idle connection is sent a PING every ``keepalive`` seconds, and one that stays
  silent for ``silence`` seconds (no byte, not even the PING's reply) is treated as
  lost (``HERALD_PUBSUB_KEEPALIVE``, ``HERALD_PUBSUB_SILENCE``);
- ``ready`` / ``wait_ready`` become true only once Redis has confirmed the
  subscriptions, so a client whose handshake succeeded receives every event published
  after it.
"""

from __future__ import annotations

import itertools
import logging
import random
import time
from collections.abc import Callable
from typing import Any

import gevent
import gevent.event
import hiredis

from herald.keys import Keys
from streamer.broker import Batch
from streamer.pubsub import PubSubConnection, PubSubError, pack

log = logging.getLogger(__name__)

BATCH = 1000  # channels per SUBSCRIBE command


class RedisBroker:
    """Subscribes the topics local clients want and hands their events to ``deliver``.

    ``deliver`` receives batches of ``(topic, envelope)`` in publication order: all the
    messages one read from Redis returned, so that under load one write per client
    carries several events, and when idle a lone event goes out at once.
    """

    def __init__(self, redis_url: str, keys: Keys, deliver: Callable[[Batch], None],
                 *, max_backoff: float = 5.0, keepalive: float = 15.0,
                 silence: float = 45.0,
                 on_resync: Callable[[], None] | None = None,
                 on_subscribed: Callable[[list[str]], None] | None = None,
                 on_control: Callable[[bytes], None] | None = None,
                 on_reconnected: Callable[[], None] | None = None) -> None:
        self._url = redis_url
        self._keys = keys
        self._prefix = keys.channel_prefix.encode()
        self._control = keys.control.encode()
        self._deliver = deliver
        self._on_resync = on_resync
        self._on_subscribed = on_subscribed
        self._on_control = on_control
        self._on_reconnected = on_reconnected
        self._was_connected = False  # a confirmed subscription before this one
        self._resyncing = False  # reconnected, the gap not yet filled
        self._held: Batch = []  # events received meanwhile
        self._newly: list[str] = []  # confirmed in the current read
        self._barriers: dict[bytes, gevent.event.AsyncResult] = {}
        self._passed: list[gevent.event.AsyncResult] = []  # reached while resyncing
        self._tokens = itertools.count(1)
        self._max_backoff = max_backoff
        self._keepalive_every = keepalive  # seconds between PINGs on an idle connection
        self._silence = silence  # no byte for this long: the connection is dead
        self._wanted: set[str] = set()
        self._subscribed: set[str] = set()
        self._confirmed: set[str] = set()
        self._inflight: dict[str, int] = {}  # SUBSCRIBEs sent, not yet confirmed
        self._waiters: dict[str, gevent.event.Event] = {}
        self._changed = gevent.event.Event()
        self._greenlet: gevent.Greenlet | None = None
        self._connection: PubSubConnection | None = None
        self._last_read = time.monotonic()
        self.connected = False

    def want(self, topic: str) -> None:
        if topic not in self._wanted:
            self._wanted.add(topic)
            self._changed.set()

    def unwant(self, topic: str) -> None:
        if topic in self._wanted:
            self._wanted.discard(topic)
            self._changed.set()
            waiter = self._waiters.pop(topic, None)
            if waiter is not None:
                waiter.set()

    def ready(self, topics: tuple[str, ...]) -> bool:
        """True when Redis has confirmed every one of ``topics``."""
        confirmed, wanted = self._confirmed, self._wanted
        return all(topic in confirmed and topic in wanted for topic in topics)

    def wait_ready(self, topics: tuple[str, ...], timeout: float) -> bool:
        """Wait until ``ready(topics)``; False after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        for topic in topics:
            while not self.ready((topic,)):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or topic not in self._wanted:
                    return False
                waiter = self._waiters.get(topic)
                if waiter is None:
                    waiter = self._waiters[topic] = gevent.event.Event()
                waiter.wait(remaining)
        return True

    def barrier(self) -> gevent.event.AsyncResult:
        """A result set once everything Redis sent before this call has been delivered.

        It fails with ``PubSubError`` if the connection is lost first; ``barrier``
        itself raises ``PubSubError`` when not connected.
        """
        connection = self._connection
        if connection is None or not self.connected:
            raise PubSubError("not connected to Redis")
        token = b"barrier:%d" % next(self._tokens)
        passed = self._barriers[token] = gevent.event.AsyncResult()
        connection.send(pack(b"PING", token))
        return passed

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
            try:
                self._session()
            except PubSubError as exc:
                error: Exception = exc
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
        connection = PubSubConnection(self._url)
        connection.connect()
        self._connection = connection
        self._last_read = time.monotonic()
        connection.send(pack(b"SUBSCRIBE", self._control))
        reader = gevent.getcurrent()
        syncer = gevent.spawn(self._sync, connection)
        # A failed SUBSCRIBE or a silent connection ends the session like a failed read.
        syncer.link_exception(lambda dead: reader.kill(dead.exception, block=False))
        try:
            while True:
                replies = connection.read()
                self._last_read = time.monotonic()
                batch: Batch = []
                for reply in replies:
                    if self._is_barrier(reply):
                        batch = self._pass_barrier(reply[1], batch)
                        continue
                    self._handle(reply, self._held if self._resyncing else batch)
                    if self._resyncing and self._resynced():
                        self._finish_resync()
                if self._newly and self._on_subscribed is not None:
                    newly, self._newly = self._newly, []
                    self._on_subscribed(newly)
                if batch:
                    self._deliver(batch)
        finally:
            syncer.kill()
            self._close()

    def _sync(self, connection: PubSubConnection) -> None:
        """Bring the subscriptions in line with what clients want; keep the link alive."""
        while True:
            self._changed.wait(self._keepalive_every)
            if not self._changed.is_set():
                self._keepalive(connection)
                continue
            self._changed.clear()
            add = sorted(self._wanted - self._subscribed)
            drop = sorted(self._subscribed - self._wanted)
            for start in range(0, len(add), BATCH):
                batch = add[start:start + BATCH]
                self._subscribed.update(batch)
                for topic in batch:
                    self._inflight[topic] = self._inflight.get(topic, 0) + 1
                connection.send(pack(b"SUBSCRIBE", *(self._keys.channel(t) for t in batch)))
            for start in range(0, len(drop), BATCH):
                batch = drop[start:start + BATCH]
                self._subscribed.difference_update(batch)
                self._confirmed.difference_update(batch)
                connection.send(pack(b"UNSUBSCRIBE", *(self._keys.channel(t) for t in batch)))

    def _keepalive(self, connection: PubSubConnection) -> None:
        if time.monotonic() - self._last_read > self._silence:
            raise PubSubError(f"no reply from Redis for {self._silence:g}s")
        connection.send(pack(b"PING"))

    def _handle(self, reply: Any, batch: Batch) -> None:
        if isinstance(reply, hiredis.ReplyError):
            raise PubSubError(f"Redis refused a command: {reply}")
        kind = reply[0]
        if kind == b"message":
            channel = reply[1]
            if channel.startswith(self._prefix):
                batch.append((channel[len(self._prefix):].decode(), reply[2]))
            elif channel == self._control and self._on_control is not None:
                self._on_control(reply[2])
        elif kind == b"subscribe":
            self._confirm(reply[1])

    @staticmethod
    def _is_barrier(reply: Any) -> bool:
        return (isinstance(reply, list) and reply[0] == b"pong"
                and reply[1].startswith(b"barrier:"))

    def _pass_barrier(self, token: bytes, batch: Batch) -> Batch:
        """Deliver what came before the barrier, then release its waiter."""
        if batch:
            self._deliver(batch)
        passed = self._barriers.pop(token, None)
        if passed is not None:
            if self._resyncing:
                self._passed.append(passed)
            else:
                passed.set(True)
        return []

    def _resynced(self) -> bool:
        """Connected again and every topic wanted is confirmed (or on its way out)."""
        return self.connected and not self._inflight and not self._changed.is_set()

    def _finish_resync(self) -> None:
        """Fill the gap, then deliver what arrived meanwhile; live delivery resumes."""
        if self._on_resync is not None:
            self._on_resync()
        held, self._held = self._held, []
        self._resyncing = False
        log.info("resubscribed %d topics; gap filled, %d events held meanwhile",
                 len(self._confirmed), len(held))
        if held:
            self._deliver(held)
        passed, self._passed = self._passed, []
        for barrier in passed:
            barrier.set(True)

    def _confirm(self, channel: bytes) -> None:
        if channel == self._control:
            self.connected = True
            log.info("subscribed to Redis (%d topics)", len(self._wanted))
            if self._was_connected and self._on_reconnected is not None:
                self._on_reconnected()
            self._was_connected = True
            self._changed.set()
            if self._on_subscribed is not None:
                self._on_subscribed([])  # connected: a position can be established
            return
        topic = channel[len(self._prefix):].decode()
        inflight = self._inflight.pop(topic, 1) - 1
        if inflight > 0:
            self._inflight[topic] = inflight
            return  # a later SUBSCRIBE of this topic is still on its way
        if topic in self._subscribed:
            self._confirmed.add(topic)
            self._newly.append(topic)
            waiter = self._waiters.pop(topic, None)
            if waiter is not None:
                waiter.set()

    def _lost(self) -> None:
        self.connected = False
        self._resyncing = True
        self._newly = []
        for barrier in (*self._barriers.values(), *self._passed):
            barrier.set_exception(PubSubError("Redis subscription lost"))
        self._barriers.clear()
        self._passed = []
        self._subscribed.clear()
        self._confirmed.clear()
        self._inflight.clear()

    def _close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()
