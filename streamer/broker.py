"""What a broker is: the pub/sub that feeds a streamer process the events its clients want.

A broker delivers, at most once and in publication order, the events of the topics
wanted of it, in batches; a streamer's exactly-once delivery comes from history
(``streamer.history``) filling what the broker missed. Two implementations keep the
same promises: ``streamer.redis_broker.RedisBroker`` (one Redis subscription per
process, in production) and ``streamer.memory_broker.MemoryBroker`` (in-process, for
testing the logic above it without Redis).

A broker is built with ``deliver`` (receives each batch) and, optionally,
``on_resync`` (after a lost connection, called once every wanted topic is subscribed
again and before anything received since is delivered: it fills the gap), ``on_subscribed``
(the topics whose subscriptions were just confirmed; ``[]`` once connected) and
``on_control`` (the deployment's control messages).
"""

from __future__ import annotations

from typing import Protocol

import gevent.event

Batch = list[tuple[str, bytes]]  # (topic, envelope), in publication order


class Broker(Protocol):
    """The pub/sub interface the hub and the handlers use (see the module's promises)."""

    connected: bool  # subscribed and receiving

    def want(self, topic: str) -> None:
        """Subscribe ``topic`` (once, however many ask), soon: see ``ready``."""

    def unwant(self, topic: str) -> None:
        """Let ``topic`` go: nothing of it is delivered once its unsubscription is done."""

    def ready(self, topics: tuple[str, ...]) -> bool:
        """True when every one of ``topics`` is wanted and its subscription confirmed:
        every event published on them from now on is delivered."""

    def wait_ready(self, topics: tuple[str, ...], timeout: float) -> bool:
        """Wait until ``ready(topics)``; False after ``timeout`` seconds or when one of
        them is no longer wanted."""

    def barrier(self) -> gevent.event.AsyncResult:
        """A result set once everything received before this call has been delivered;
        it fails (``ConnectionError``) if the connection is lost first. Raises
        ``ConnectionError`` when not connected."""

    def start(self) -> None:
        """Connect, and keep connecting after every loss, until ``stop``."""

    def stop(self) -> None:
        """Disconnect for good."""
