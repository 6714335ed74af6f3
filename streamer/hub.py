"""The hub: which local clients want which topic, and fan-out to them.

Guarantees:
- each event is encoded into its SSE frame once, then offered to every local client
  of its topic with a non-blocking write (``Client.send``): dispatch never waits on a
  client, so a slow client delays no one;
- the hub asks the broker for a topic when its first local client arrives and lets it
  go when its last one leaves, so a streamer receives from Redis only what its clients
  want;
- a client is forgotten the moment it closes, not at the next event on its topics.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import gevent

from herald.event import Event, sse_comment, sse_frame
from streamer.client import Client

log = logging.getLogger(__name__)

HEARTBEAT = sse_comment("heartbeat")


class Hub:
    """Topic -> local clients, for one streamer process."""

    def __init__(self, want: Callable[[str], None], unwant: Callable[[str], None]) -> None:
        self._want = want
        self._unwant = unwant
        self.topics: dict[str, set[Client]] = {}
        self.clients: set[Client] = set()
        self.events_in = 0
        self.deliveries = 0

    def add(self, client: Client) -> None:
        """Register ``client`` for its topics, subscribing new topics at the broker."""
        self.clients.add(client)
        client.on_close(self.remove)
        for topic in client.topics:
            local = self.topics.get(topic)
            if local is None:
                local = self.topics[topic] = set()
                self._want(topic)
            local.add(client)

    def remove(self, client: Client) -> None:
        """Forget ``client``; topics left without a local client are unsubscribed."""
        if client not in self.clients:
            return
        self.clients.discard(client)
        for topic in client.topics:
            local = self.topics.get(topic)
            if local is None:
                continue
            local.discard(client)
            if not local:
                del self.topics[topic]
                self._unwant(topic)

    def dispatch(self, topic: str, envelope: bytes) -> None:
        """Offer one published event to the local clients of ``topic``."""
        clients = self.topics.get(topic)
        if not clients:
            return
        try:
            event = Event.from_json(envelope)
        except ValueError:
            log.warning("ignored a malformed event on topic %s: %.200r", topic, envelope)
            return
        frame = sse_frame(event.id, event.type, envelope)
        self.events_in += 1
        targets = tuple(clients)
        for client in targets:
            client.send(frame)
        self.deliveries += len(targets)

    def heartbeat(self) -> None:
        """Send a comment to every client: keeps proxies open and finds dead peers."""
        for client in tuple(self.clients):
            client.send(HEARTBEAT)

    def run_heartbeats(self, interval: float) -> gevent.Greenlet:
        def beat() -> None:
            while True:
                gevent.sleep(interval)
                self.heartbeat()

        return gevent.spawn(beat)

    def close_all(self, reason: str) -> None:
        for client in tuple(self.clients):
            client.close(reason)
