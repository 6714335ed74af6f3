"""Reading topics' history: the replay for a resuming client, the gap fill after a lost
subscription.

Every published event is in its topic's Redis Stream (see ``herald.publisher``), with
its id as stream position, for ``HERALD_HISTORY_TTL`` seconds and about
``HERALD_HISTORY_MAXLEN`` events; when trimming removed events, the topic's *floor* key
holds the first id that was kept.

Guarantees:

- ``plan(topics, after)`` says from one pipeline of small reads (no event is read)
  whether history can replay ``topics`` after ``after`` up to ``end``, the deployment's
  latest position at that moment, or why not (``Plan.reset``): the position is
  malformed (not ``<ms>-<seq>`` with both parts below 2^64), ahead of every published
  event, older than the retention, or below a topic's floor.
- ``Pager`` then reads a plan's events in pages of about ``budget`` bytes, merged across
  topics in id order, each once; between pages it holds at most one fetch per topic,
  each sized to the page. It returns at most ``limit`` events per topic and ``max_bytes``
  bytes of envelopes in all, and it stops (``Pager.stopped`` says why) before the first
  event past those bounds, and before any event past a loss when history lost events it
  has not returned yet (trimmed, or expired, while the replay went on): a replay is
  complete, or a prefix that says it is one; never a silent gap.
- ``since(positions)`` reads what a lost subscription missed, per topic
  (``Replay.resets`` names the topics it cannot cover); never a partial replay without
  saying so.
"""

from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import redis

from herald.event import id_key, valid_event_id
from herald.keys import Keys

Key = tuple[int, int]
Entry = tuple[Key, str, bytes]  # (position, topic, envelope)

MAX_FETCH = 256  # most entries one fetch reads from one topic
SIZE_GUESS = 16 * 1024  # envelope size assumed for a topic before its first fetch


@dataclass
class Replay:
    """What a lost subscription missed: events, and the topics it cannot cover."""

    events: list[Entry] = field(default_factory=list)
    resets: dict[str, str] = field(default_factory=dict)  # topic -> why it cannot replay
    position: str = "0-0"  # the latest published id when the history was read


@dataclass
class Plan:
    """A replay decided on: the events of ``topics`` in (``after``, ``end``]."""

    after: Key
    position: str  # the deployment's latest id when planned: the replay ends there
    reset: str | None = None  # why history cannot replay at all, or None
    topics: tuple[str, ...] = ()
    # When each topic's history could expire at the earliest (time.monotonic()), if ever.
    expiry: dict[str, float] = field(default_factory=dict)

    @property
    def end(self) -> Key:
        return id_key(self.position)


class History:
    """Reads the streams of a deployment (``keys``) through ``redis_client`` (bytes)."""

    def __init__(self, redis_client: redis.Redis, keys: Keys, ttl: int, limit: int,
                 max_bytes: int) -> None:
        self.redis = redis_client
        self.keys = keys
        self.ttl_ms = ttl * 1000
        self.limit = limit
        self.max_bytes = max_bytes

    def position(self) -> str:
        """The id of the latest event published in the deployment ("0-0" if none)."""
        ms, seq = self.redis.hmget(self.keys.clock, "ms", "seq")
        return f"{int(ms or 0)}-{int(seq or 0)}"

    def plan(self, topics: tuple[str, ...], after: str) -> Plan:
        """Whether history can replay ``topics`` after position ``after``, up to now.

        One pipeline of small reads; no event is read.
        """
        if not valid_event_id(after):
            return Plan((0, 0), self.position(), "unknown position")
        key = id_key(after)
        # "0-0" asks for everything history holds; any other position older than the
        # retention may have had events that expired.
        if key != (0, 0) and key[0] < time.time() * 1000 - self.ttl_ms:
            return Plan(key, self.position(), "position is older than the history's retention")
        pipe = self.redis.pipeline(transaction=False)
        pipe.hmget(self.keys.clock, "ms", "seq")
        for topic in topics:
            pipe.get(self.keys.floor(topic))
            pipe.pttl(self.keys.stream(topic))
        now = time.monotonic()  # before the read: the expiries it gives are no later
        clock, *rows = pipe.execute()
        plan = Plan(key, f"{int(clock[0] or 0)}-{int(clock[1] or 0)}", topics=topics,
                    expiry={topic: now + pttl / 1000
                            for topic, pttl in zip(topics, rows[1::2], strict=True)
                            if pttl >= 0})
        gaps = _gaps(dict.fromkeys(topics, key), rows[0::2], plan.end)
        plan.reset = next(iter(gaps.values()), None)
        return plan

    def pager(self, plan: Plan) -> Pager:
        """Reads ``plan``'s events page by page (see ``Pager``)."""
        return Pager(self.redis, self.keys, plan, self.limit, self.max_bytes)

    def since(self, positions: dict[str, Key]) -> Replay:
        """Events after each topic's own position; a reset if any topic has a gap.

        Used for the gap a lost subscription left: the positions are what this
        process last delivered, so age alone says nothing about missed events.
        """
        pipe = self.redis.pipeline(transaction=False)
        pipe.hmget(self.keys.clock, "ms", "seq")
        for topic, key in positions.items():
            pipe.get(self.keys.floor(topic))
            pipe.xrange(self.keys.stream(topic), f"({key[0]}-{key[1]}", "+",
                        count=self.limit + 1)
        clock, *rows = pipe.execute()
        position = f"{int(clock[0] or 0)}-{int(clock[1] or 0)}"
        resets = _gaps(positions, rows[0::2], id_key(position))
        for topic, entries in zip(positions, rows[1::2], strict=True):
            if topic not in resets and len(entries) > self.limit:
                resets[topic] = f"more than {self.limit} events were missed on {topic}"
        return Replay(_merge(positions, rows, resets), resets, position)


class Pager:
    """The events of a ``Plan``, read in pages merged across topics in id order.

    Each topic is read from where its last fetch ended, one fetch per topic at a time
    (sized from the sizes seen so that a page's fetches come to about one page), and an
    event is returned only once every topic that may still have events has one fetched:
    the next event in id order is then known. ``limit`` events per topic and
    ``max_bytes`` bytes of envelopes in all are returned at most.
    """

    def __init__(self, redis_client: redis.Redis, keys: Keys, plan: Plan, limit: int,
                 max_bytes: int) -> None:
        self.redis = redis_client
        self.keys = keys
        self.plan = plan
        self.limit = limit
        self.max_bytes = max_bytes
        self.stopped: str | None = None  # why the replay cannot go on, once it cannot
        self._cursor = dict.fromkeys(plan.topics, plan.after)
        self._ahead: dict[str, deque[Entry]] = {topic: deque() for topic in plan.topics}
        self._more = dict.fromkeys(plan.topics, plan.after < plan.end)  # may have events
        self._size = dict.fromkeys(plan.topics, SIZE_GUESS)
        self._sent = dict.fromkeys(plan.topics, 0)
        self._bytes = 0

    def next_page(self, budget: int) -> list[Entry]:
        """The next events in id order, about ``budget`` envelope bytes (at least one
        unless none is left); an empty list once every event was returned.

        When the replay cannot go on (history lost events not returned yet, or the next
        event would pass ``limit`` or ``max_bytes``), ``stopped`` says why and the page
        holds the events before that point. Raises ``redis.RedisError`` when Redis
        cannot be read.
        """
        page: list[Entry] = []
        size = 0
        while size < budget and self.stopped is None:
            self._refill(budget)
            ahead = [queue for queue in self._ahead.values() if queue]
            while ahead and size < budget:
                queue = min(ahead, key=lambda q: q[0][0])
                if not self._admit(queue[0]):
                    break
                entry = queue.popleft()
                page.append(entry)
                size += len(entry[2])
                if not queue:
                    if self._more[entry[1]]:
                        break  # its next events are unknown: fetch them first
                    ahead.remove(queue)
            if not ahead:
                break
        return page

    def _admit(self, entry: Entry) -> bool:
        """Count ``entry`` as returned, or stop the replay if it passes a bound."""
        _, topic, envelope = entry
        if self._sent[topic] >= self.limit:
            self.stopped = f"more than {self.limit} events were missed on {topic}"
        elif self._bytes + len(envelope) > self.max_bytes:
            self.stopped = f"more than {self.max_bytes} bytes of events were missed"
        else:
            self._sent[topic] += 1
            self._bytes += len(envelope)
        return self.stopped is None

    def _refill(self, budget: int) -> None:
        """Fetch the next events of every topic that may have more and has none fetched."""
        need = [t for t, queue in self._ahead.items() if not queue and self._more[t]]
        if not need:
            return
        share = max(1, budget // len(need))
        counts = {t: min(MAX_FETCH, max(1, share // self._size[t])) for t in need}
        pipe = self.redis.pipeline(transaction=False)
        for topic in need:
            cursor = self._cursor[topic]
            pipe.get(self.keys.floor(topic))
            pipe.xrange(self.keys.stream(topic), f"({cursor[0]}-{cursor[1]}",
                        self.plan.position, count=counts[topic])
        rows = pipe.execute()
        for topic, floor, entries in zip(need, rows[0::2], rows[1::2], strict=True):
            self._take(topic, floor, entries, counts[topic])

    def _take(self, topic: str, floor: bytes | None, entries: list[Any], asked: int) -> None:
        cursor = self._cursor[topic]
        if floor and id_key(floor.decode()) > cursor:
            self.stopped = f"history of {topic} lost events during the replay"
        elif len(entries) < asked and time.monotonic() >= self.plan.expiry.get(topic, 1e308):
            # Its stream may have expired under the replay: an end is no proof of none.
            self.stopped = f"history of {topic} expired during the replay"
        if self.stopped is not None:
            return
        queue = self._ahead[topic]
        for entry_id, fields in entries:
            queue.append((id_key(entry_id.decode()), topic, fields[b"e"]))
        if entries:
            self._cursor[topic] = queue[-1][0]
            self._size[topic] = max(1, sum(len(e[2]) for e in queue) // len(queue))
        self._more[topic] = len(entries) == asked


def _gaps(positions: dict[str, Key], floors: list[Any], latest: Key) -> dict[str, str]:
    """Topics whose position history cannot resume from, with the reason."""
    resets = {}
    for (topic, key), floor in zip(positions.items(), floors, strict=True):
        if key > latest:
            resets[topic] = "position is ahead of every published event"
        elif floor and id_key(floor.decode()) > key:
            resets[topic] = f"history of {topic} no longer reaches back to the position"
    return resets


def _merge(positions: dict[str, Key], rows: list[Any], resets: dict[str, str]) -> list[Entry]:
    merged: list[Entry] = []
    for topic, entries in zip(positions, rows[1::2], strict=True):
        if topic in resets:
            continue
        for entry_id, fields in entries:
            merged.append((id_key(entry_id.decode()), topic, fields[b"e"]))
    merged.sort(key=lambda entry: entry[0])
    return merged


def reset_envelope(position: str, reason: str, last_id: str | None) -> bytes:
    """The ``reset`` event: history cannot cover the gap, refetch your state.

    Its id is the deployment's latest position, so a client that reconnects after it
    resumes from there.
    """
    ms = int(time.time() * 1000)
    body = {"id": position, "ts": ms, "topic": None, "type": "reset",
            "data": {"reason": reason, "last_event_id": last_id}}
    return json.dumps(body, separators=(",", ":")).encode()
