"""An in-process ``Broker``: publishing and delivery inside one process, without Redis.

It keeps the promises of ``streamer.broker.Broker`` the way ``RedisBroker`` does, so
the hub and the handlers can be tested in milliseconds against the same behaviour:

- a subscription is confirmed on a later turn of the event loop, as Redis answers a
  SUBSCRIBE later; an event published on a topic whose subscription is not confirmed
  yet, or while disconnected, is lost (pub/sub is at most once);
- everything published during one turn of the event loop is delivered as one batch, in
  publication order, as one read from Redis returns everything that arrived;
- ``barrier()`` is set once everything published before it was delivered;
- ``disconnect()`` loses the connection (pending barriers fail); ``reconnect()``
  confirms every wanted topic again, then calls ``on_resync`` before anything
  published since is delivered.

``publish`` assigns ids as Redis does (``<ms>-<seq>``, one total order) and builds the
envelope as publishers do; ``publish_raw`` sends any bytes, as a hostile writer to
Redis could.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import gevent
import gevent.event

from streamer.broker import Batch

Queued = tuple[str, bytes] | gevent.event.AsyncResult


class MemoryBroker:
    """A ``Broker`` whose publishers are in the same process (see the module)."""

    def __init__(self, deliver: Callable[[Batch], None], *,
                 on_resync: Callable[[], None] | None = None,
                 on_subscribed: Callable[[list[str]], None] | None = None,
                 on_control: Callable[[bytes], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._deliver = deliver
        self._on_resync = on_resync
        self._on_subscribed = on_subscribed
        self._on_control = on_control
        self._clock = clock
        self.connected = False
        self.wanted: set[str] = set()
        self.confirmed: set[str] = set()
        self._connecting = False
        self._resyncing = False
        self._to_confirm: list[str] = []
        self._queue: list[Queued] = []
        self._waiters: dict[str, gevent.event.Event] = {}
        self._scheduled = False
        self._last = (0, 0)

    @property
    def position(self) -> str:
        """The id of the last event published ("0-0" if none)."""
        return f"{self._last[0]}-{self._last[1]}"

    def want(self, topic: str) -> None:
        if topic not in self.wanted:
            self.wanted.add(topic)
            self._to_confirm.append(topic)
            self._schedule()

    def unwant(self, topic: str) -> None:
        self.wanted.discard(topic)
        self.confirmed.discard(topic)
        waiter = self._waiters.pop(topic, None)
        if waiter is not None:
            waiter.set()

    def ready(self, topics: tuple[str, ...]) -> bool:
        return all(topic in self.confirmed and topic in self.wanted for topic in topics)

    def wait_ready(self, topics: tuple[str, ...], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        for topic in topics:
            while not self.ready((topic,)):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or topic not in self.wanted:
                    return False
                waiter = self._waiters.setdefault(topic, gevent.event.Event())
                waiter.wait(remaining)
        return True

    def barrier(self) -> gevent.event.AsyncResult:
        if not self.connected:
            raise ConnectionError("not connected")
        passed = gevent.event.AsyncResult()
        self._queue.append(passed)
        self._schedule()
        return passed

    def start(self) -> None:
        self._connecting = True
        self._to_confirm = sorted(self.wanted)
        self._schedule()

    def stop(self) -> None:
        self.disconnect()

    def disconnect(self) -> None:
        """Lose the connection: what was not delivered yet is lost, barriers fail."""
        self.connected = False
        self._connecting = False
        self._resyncing = True
        self.confirmed.clear()
        for item in self._queue:
            if isinstance(item, gevent.event.AsyncResult):
                item.set_exception(ConnectionError("subscription lost"))
        self._queue = []

    def reconnect(self) -> None:
        """Connect again: every wanted topic is confirmed, the gap filled, then live."""
        self.start()

    def publish(self, topic: str, data: Any, type: str = "message") -> str:
        """Publish an event as publishers do; returns its id."""
        now = int(self._clock() * 1000)
        ms, seq = self._last
        self._last = (now, 0) if now > ms else (ms, seq + 1)
        event_id = self.position
        envelope = {"id": event_id, "ts": self._last[0], "topic": topic, "type": type,
                    "data": data}
        self.publish_raw(topic, json.dumps(envelope, separators=(",", ":")).encode())
        return event_id

    def publish_raw(self, topic: str, envelope: bytes) -> None:
        """Publish any bytes on ``topic``, as anything that can write to Redis could."""
        if self.connected and topic in self.confirmed:
            self._queue.append((topic, envelope))
            self._schedule()

    def control(self, message: bytes) -> None:
        """A message on the deployment's control channel (see ``on_control``)."""
        if self.connected and self._on_control is not None:
            gevent.get_hub().loop.run_callback(self._on_control, message)

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            gevent.get_hub().loop.run_callback(self._turn)

    def _turn(self) -> None:
        """One read's worth: confirmations first, then the batch, barriers in place."""
        self._scheduled = False
        newly = self._confirm()
        if newly and self._on_subscribed is not None:
            self._on_subscribed(newly)
        batch: Batch = []
        queue, self._queue = self._queue, []
        for item in queue:
            if isinstance(item, gevent.event.AsyncResult):
                if batch:
                    self._deliver(batch)
                batch = []
                item.set(True)
            else:
                batch.append(item)
        if batch:
            self._deliver(batch)

    def _confirm(self) -> list[str]:
        """Confirm the subscriptions asked for; on (re)connecting, resync first."""
        if self._connecting:
            self._connecting = False
            self.connected = True
            if self._on_subscribed is not None:
                self._on_subscribed([])
        if not self.connected:
            return []
        newly = [topic for topic in dict.fromkeys(self._to_confirm) if topic in self.wanted]
        self._to_confirm = []
        self.confirmed.update(newly)
        for topic in newly:
            waiter = self._waiters.pop(topic, None)
            if waiter is not None:
                waiter.set()
        if self._resyncing:
            self._resyncing = False
            if self._on_resync is not None:
                self._on_resync()
        return newly
