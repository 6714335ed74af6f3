"""The streamer's Prometheus metrics: one registry per process, served on an internal port.

What each process exposes (``herald_streamer_*``; the README's "Metrics" section):

- ``connections{transport}`` (gauge): open streams, joining or live, by transport;
- ``topics`` (gauge): topics this process is subscribed to for its local clients;
- ``events_received_total``: events read from Redis and dispatched (once each, whatever
  the number of clients);
- ``deliveries_total`` / ``bytes_written_total``: events and bytes of event frames the
  fan-out handed to clients (written, or queued behind what a client has not read yet);
- ``event_age_seconds`` (histogram): publish ``ts`` (Redis' clock) to the moment the
  fan-out of the event's batch was handed to the sockets, once per event; clocks that
  disagree count as age 0, never negative;
- ``handshakes_refused_total{reason}``: the HTTP status of a refused request (``401``,
  ``403``, ``429``, ``431``, ...) or ``slow_head`` (request head not complete in time);
- ``clients_dropped_total{reason}``: ``too_slow`` (its buffer passed
  HERALD_CLIENT_BUFFER) or ``stalled`` (its socket took nothing for HERALD_WRITE_TIMEOUT);
- ``resumes_total``, ``replayed_events_total``, ``resets_total{reason}`` (``retention``,
  ``trimmed``, ``expired``, ``ahead``, ``too_many_events``, ``too_many_bytes``);
- ``redis_reconnects_total``: the Redis subscription was lost and made again;
- the process' own (``process_*``: CPU seconds, memory, descriptors).

Guarantees:
- the fan-out pays nothing per client for metrics: connections, topics, events,
  deliveries and bytes are the hub's own integers, read when Prometheus scrapes (in the
  event loop, so a scrape sees one consistent moment); the age histogram is one
  lock-free bucket increment per event per batch, and none when metrics are off;
- every label has a bounded set of values (never a topic, a user or a free text);
- ``/metrics`` is served only by ``serve``, on its own address
  (``HERALD_METRICS_HOST``:``HERALD_STREAMER_METRICS_PORT``), never by the public
  listener; ``serve`` binds at once, so a port in use is an error at start-up.
"""

from __future__ import annotations

import logging
import os
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest, make_wsgi_app

from streamer.client import STALLED, TOO_SLOW

if TYPE_CHECKING:
    from gevent.pywsgi import WSGIServer

    from streamer.hub import Hub

log = logging.getLogger(__name__)

# Seconds; alerting looks at p99 around 0.1-1 s, a lost subscription shows beyond 5 s.
AGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
               10.0, 30.0, 60.0)
DROP_REASONS = {TOO_SLOW: "too_slow", STALLED: "stalled"}  # by ``Client.close_reason``
# A reset's reason (streamer.history) is a sentence naming a topic; its label is a word.
RESET_KINDS = (("older than the history's retention", "retention"),
               ("no longer reaches back", "trimmed"), ("lost events", "trimmed"),
               ("expired", "expired"), ("ahead of every", "ahead"),
               ("bytes of events", "too_many_bytes"), ("events were missed", "too_many_events"))
# Shown at 0 from the start, so that ``rate()`` and alerts see them before the first.
USUAL_REFUSALS = ("400", "401", "403", "429", "431", "503", "slow_head")


def reset_kind(reason: str) -> str:
    """The label of a reset's ``reason`` (see ``streamer.history``); ``other`` if unknown."""
    return next((kind for words, kind in RESET_KINDS if words in reason), "other")


class EventAges:
    """A histogram of event ages at hand-off, fed a batch at a time, without a lock.

    Only the event loop touches it (the fan-out and the scrape are both callbacks or
    greenlets of one thread), so plain integers suffice.
    """

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...] = AGE_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, now: float, stamps: Iterable[int]) -> None:
        """Count the events published at ``stamps`` (ms since the epoch) as of ``now``."""
        bounds, counts = self.bounds, self.counts
        total = 0.0
        for ts in stamps:
            if not ts:
                continue  # an envelope without a usable ``ts``: its age is unknown
            age = now - ts / 1000
            if age < 0:
                age = 0.0
            counts[bisect_left(bounds, age)] += 1
            total += age
        self.total += total

    def family(self, name: str, doc: str) -> HistogramMetricFamily:
        buckets, seen = [], 0
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            seen += count
            buckets.append((bound, seen))
        return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=self.total)


class HubCollector:
    """Reads the hub's own counters and gauges at scrape time (nothing on the hot path)."""

    def __init__(self, hub: Hub, ages: EventAges) -> None:
        self.hub = hub
        self.ages = ages

    def collect(self) -> Iterator[Metric]:
        hub = self.hub
        connections = GaugeMetricFamily("herald_streamer_connections",
                                        "Open streams (joining or live) by transport.",
                                        labels=["transport"])
        for transport, count in sorted(hub.connections.items()):
            connections.add_metric([transport], count)
        yield connections
        yield GaugeMetricFamily("herald_streamer_topics",
                                "Topics subscribed from Redis for local clients.",
                                value=hub.topic_count())
        yield CounterMetricFamily("herald_streamer_events_received",
                                  "Events read from Redis and dispatched.", value=hub.events_in)
        yield CounterMetricFamily("herald_streamer_deliveries",
                                  "Events handed to clients by the fan-out.",
                                  value=hub.deliveries)
        yield CounterMetricFamily("herald_streamer_bytes_written",
                                  "Bytes of event frames handed to clients by the fan-out.",
                                  value=hub.bytes_out)
        yield self.ages.family("herald_streamer_event_age_seconds",
                               "Seconds from an event's publication to its hand-off to "
                               "the sockets.")


class StreamerMetrics:
    """The metrics of one streamer process; ``enabled`` is False when nobody reads them.

    Components report what happens to them through the methods below (each called where
    the event is decided); the hub's counters are read at scrape time (``follow``).
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.registry = CollectorRegistry(auto_describe=True)
        self.ages = EventAges()
        self._refused = self._counter("handshakes_refused", "Requests refused, by reason.",
                                      "reason")
        self._dropped = self._counter("clients_dropped", "Clients disconnected for not "
                                      "reading fast enough, by reason.", "reason")
        self._resumes = self._counter("resumes", "Streams opened with a resume position.")
        self._replayed = self._counter("replayed_events", "Events replayed from history.")
        self._resets = self._counter("resets", "reset events sent (history cannot cover a "
                                     "gap), by reason.", "reason")
        self._reconnects = self._counter("redis_reconnects",
                                         "Redis subscriptions made again after a loss.")
        for reason in USUAL_REFUSALS:
            self._refused.labels(reason)
        for label in DROP_REASONS.values():
            self._dropped.labels(label)
        for _, kind in RESET_KINDS:
            self._resets.labels(kind)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)

    def _counter(self, name: str, doc: str, *labels: str) -> Counter:
        return Counter(f"herald_streamer_{name}", doc, labels, registry=self.registry)

    def follow(self, hub: Hub) -> None:
        """Expose ``hub``'s connections, topics, events, deliveries, bytes and ages."""
        self.registry.register(HubCollector(hub, self.ages))  # type: ignore[arg-type]

    def refused(self, reason: str) -> None:
        """A request refused: its HTTP status (``"401"``) or ``"slow_head"``."""
        self._refused.labels(reason).inc()

    def dropped(self, close_reason: str) -> None:
        """A client closed for ``close_reason``; counted if it was dropped as slow."""
        label = DROP_REASONS.get(close_reason)
        if label is not None:
            self._dropped.labels(label).inc()

    def resumed(self) -> None:
        """A stream opened with a resume position (``Last-Event-ID``)."""
        self._resumes.inc()

    def replayed(self, events: int) -> None:
        self._replayed.inc(events)

    def reset(self, reason: str) -> None:
        """A ``reset`` sent for ``reason`` (a sentence of ``streamer.history``)."""
        self._resets.labels(reset_kind(reason)).inc()

    def reconnected(self) -> None:
        self._reconnects.inc()

    def exposition(self) -> bytes:
        """What ``/metrics`` answers (for tests and ``herald status``)."""
        return generate_latest(self.registry)

    def serve(self, host: str, port: int) -> WSGIServer:
        """Serve ``/metrics`` on ``host``:``port`` in this process' event loop.

        Raises ``OSError`` when the address cannot be bound. Logs where it serves.
        """
        from gevent.pywsgi import WSGIServer

        disable_created_metrics()  # ``*_created`` series: noise for counters of a process
        server = WSGIServer((host, port), make_wsgi_app(self.registry), log=None)
        server.start()
        bound_host, bound_port = server.address[:2]
        log.info("streamer metrics on http://%s:%d/metrics (pid %d)", bound_host, bound_port,
                 os.getpid())
        return server
