"""Replaying history to a resuming client, a page at a time as its socket drains.

The events and the decision come from ``streamer.history`` (``History.plan``, ``Pager``);
this module paces them to one client. Guarantees:

- exact: a client whose position history covers gets every event of its topics after
  that position up to the plan's end, in id order, each once, then ``resumed`` (how many
  were replayed); the caller then sends ``ready`` and the live events after the end;
- bounded in memory: a page is about half the client's buffer (HERALD_CLIENT_BUFFER),
  and the next page is read only once the client's queue is down to an eighth of it,
  so however long a replay and however slowly its client reads, this process holds
  about one page (and one fetch per topic) for it;
- bounded in size: a replay stops before the first event past HERALD_REPLAY_MAX events
  on a topic or HERALD_REPLAY_MAX_BYTES bytes in all, and the client gets a ``reset``
  there instead of ``resumed`` (counting needs the events read, so this is known only
  as the replay goes; a client that does not read makes Redis read no more than what
  it is about to be sent);
- counted: every planned resume, the events it replays and the ``reset`` it ends with
  (if any) are reported to ``streamer.metrics``;
- fair: at most HERALD_REPLAY_CONCURRENCY replays read history at once per process. A
  replay holds its slot while it plans or reads and encodes a page, never while it waits
  for its client, so a slow or stalled reader keeps no one else waiting; a client beyond
  the bound waits its turn (its handshake waits; a slot is held for one read);
- never a silent gap: if history loses events not sent yet (trimmed while a slow client
  read), the client gets a ``reset`` at that point instead of ``resumed``. Either way
  the events before a ``reset`` are exact and in order, and the ``reset`` carries the
  plan's end as its id, where live events take over. If Redis fails mid-replay the
  connection is closed, and the client resumes from the last event it received.
"""

from __future__ import annotations

import logging

import gevent.lock
import redis

from streamer.client import Client
from streamer.history import History, Plan
from streamer.hub import decode
from streamer.metrics import StreamerMetrics

log = logging.getLogger(__name__)

PAGE_SHARE = 2  # a page is about 1/2 of the client's buffer
LOW_WATER_SHARE = 8  # the next page is read once 1/8 of it is left queued


class Replays:
    """Plans and sends the replays of one streamer process (``concurrency`` at a time)."""

    def __init__(self, history: History, concurrency: int,
                 metrics: StreamerMetrics | None = None) -> None:
        self.history = history
        self.metrics = metrics if metrics is not None else StreamerMetrics(enabled=False)
        self._slots = gevent.lock.BoundedSemaphore(concurrency)

    def plan(self, topics: tuple[str, ...], last_id: str) -> Plan:
        """What to replay after ``last_id`` (see ``History.plan``); raises RedisError.

        Counts a resume, and its ``reset`` when history cannot cover the gap at all.
        """
        with self._slots:
            plan = self.history.plan(topics, last_id)
        self.metrics.resumed()
        if plan.reset is not None:
            self.metrics.reset(plan.reset)
        return plan

    def send(self, client: Client, plan: Plan, last_id: str) -> bool | None:
        """Feed ``plan``'s events to ``client`` page by page, then ``resumed``.

        Returns True once the replay is complete, False when it ended with a ``reset``
        (beyond a bound, or history lost events meanwhile), None when the client is
        closed (it left, was too slow, or Redis failed).
        """
        pager = self.history.pager(plan)
        budget = max(1, client.limit // PAGE_SHARE)
        low_water = client.limit // LOW_WATER_SHARE
        replayed = 0
        try:
            while client.drained(low_water):
                with self._slots:
                    page = pager.next_page(budget)
                    frames = [f.for_transport(client.transport) for f in
                              (decode(topic, envelope) for _, topic, envelope in page)
                              if f is not None]
                replayed += len(frames)
                self.metrics.replayed(len(frames))
                client.feed(b"".join(frames))
                if pager.stopped is not None:
                    return self._cut(client, plan, last_id, pager.stopped)
                if not page:
                    break
        except redis.RedisError as exc:
            log.warning("client %s of %s: history unavailable mid-replay (%s); closing it",
                        client.peer, client.user, exc)
            client.close("history unavailable mid-replay")
        if client.closed:
            return None
        client.feed(client.transport.resumed(replayed, last_id))
        return True

    def _cut(self, client: Client, plan: Plan, last_id: str, reason: str) -> bool:
        """End a replay part-way with a ``reset``: the events before it were exact."""
        self.metrics.reset(reason)
        log.info("client %s of %s resuming from %r: reset mid-replay (%s)", client.peer,
                 client.user, last_id[:40], reason)
        client.feed(client.transport.reset(plan.position, reason, last_id))
        return False

