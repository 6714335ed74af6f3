"""Reading topics' history: the replay for a resuming client, the gap fill after a lost
subscription.

Every published event is in its topic's Redis Stream (see ``herald.publisher``), with
its id as stream position, for ``HERALD_HISTORY_TTL`` seconds and about
``HERALD_HISTORY_MAXLEN`` events; when trimming removed events, the topic's *floor* key
holds the first id that was kept.

Guarantees:

- ``plan(topics, after)`` decides, without reading any event into this process, whether
  history can replay every event of ``topics`` after ``after`` up to ``end`` (the
  deployment's latest position at that moment) within ``limit`` events per topic and
  ``max_bytes`` bytes of envelopes in all, or why not (``Plan.reset``): the position is
  malformed, ahead of every published event, older than the retention, below a topic's
  floor, or too far behind. The events are counted and measured inside Redis (a
  read-only script that stops past the bounds), so what it costs Redis is bounded too.
- ``Pager`` then reads a plan's events in pages of about ``budget`` bytes, merged across
  topics in id order: exactly the events counted, each once. Between pages it holds at
  most one fetch per topic (each sized to the page). If history loses an event it has
  not returned yet (trimmed meanwhile), ``next_page`` raises ``HistoryGap`` before
  returning any event after the loss: never a silent gap.
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

MEASURE_CHUNK = 100  # entries per XRANGE inside the measuring script
MAX_FETCH = 256  # most entries one fetch reads from one topic

# Counts and sizes the events of each stream (KEYS) in (ARGV[1], ARGV[2]]; stops counting
# a stream past ARGV[3] events and every stream once ARGV[4] bytes are passed. Returns
# {count, bytes} per stream. Read-only; envelopes are field "e", the only field.
MEASURE_SCRIPT = """
local limit, budget, chunk = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local total, out = 0, {}
for _, stream in ipairs(KEYS) do
  local count, bytes, start = 0, 0, '(' .. ARGV[1]
  while count <= limit and total <= budget do
    local entries = redis.call('XRANGE', stream, start, ARGV[2], 'COUNT', chunk)
    for _, entry in ipairs(entries) do
      local size = #entry[2][2]
      count, bytes, total = count + 1, bytes + size, total + size
    end
    if #entries < chunk then break end
    start = '(' .. entries[#entries][1]
  end
  out[#out + 1] = count
  out[#out + 1] = bytes
end
return out
"""


class HistoryGap(Exception):
    """History lost events a replay had not returned yet; the message says which topic."""


@dataclass
class Replay:
    """What a lost subscription missed: events, and the topics it cannot cover."""

    events: list[Entry] = field(default_factory=list)
    resets: dict[str, str] = field(default_factory=dict)  # topic -> why it cannot replay
    position: str = "0-0"  # the latest published id when the history was read


@dataclass
class Plan:
    """A replay decided on: the events of ``counts`` topics in (``after``, ``end``]."""

    after: Key
    position: str  # the deployment's latest id when planned: the replay ends there
    reset: str | None = None  # why history cannot replay, or None
    counts: dict[str, int] = field(default_factory=dict)  # events per topic
    sizes: dict[str, int] = field(default_factory=dict)  # envelope bytes per topic

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
        self._measure = redis_client.register_script(MEASURE_SCRIPT)

    def position(self) -> str:
        """The id of the latest event published in the deployment ("0-0" if none)."""
        ms, seq = self.redis.hmget(self.keys.clock, "ms", "seq")
        return f"{int(ms or 0)}-{int(seq or 0)}"

    def plan(self, topics: tuple[str, ...], after: str) -> Plan:
        """Whether, and what, to replay of ``topics`` after position ``after``."""
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
        clock, *floors = pipe.execute()
        plan = Plan(key, f"{int(clock[0] or 0)}-{int(clock[1] or 0)}")
        plan.reset = next(iter(_gaps(dict.fromkeys(topics, key), floors, plan.end).values()),
                          None)
        if plan.reset is None and key < plan.end:
            self._count(plan, topics)
        return plan

    def _count(self, plan: Plan, topics: tuple[str, ...]) -> None:
        """Count and measure the plan's events in Redis; set its reset past the bounds."""
        streams = [self.keys.stream(topic) for topic in topics]
        after = f"{plan.after[0]}-{plan.after[1]}"
        out = self._measure(keys=streams, args=[after, plan.position, self.limit,
                                                self.max_bytes, MEASURE_CHUNK])
        plan.counts = dict(zip(topics, out[0::2], strict=True))
        plan.sizes = dict(zip(topics, out[1::2], strict=True))
        over = [topic for topic, count in plan.counts.items() if count > self.limit]
        if over:
            plan.reset = f"more than {self.limit} events were missed on {over[0]}"
        elif sum(plan.sizes.values()) > self.max_bytes:
            plan.reset = f"more than {self.max_bytes} bytes of events were missed"

    def pager(self, plan: Plan) -> Pager:
        """Reads ``plan``'s events page by page (see ``Pager``)."""
        return Pager(self.redis, self.keys, plan)

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
    (sized from the plan's average event size so a page's fetches are about one page),
    and an event is returned only once every topic that still has events has one
    fetched: the next event in id order is then known.
    """

    def __init__(self, redis_client: redis.Redis, keys: Keys, plan: Plan) -> None:
        self.redis = redis_client
        self.keys = keys
        self.plan = plan
        self._end = plan.position
        self._cursor = dict.fromkeys(plan.counts, plan.after)
        self._left = dict(plan.counts)  # events not fetched yet
        self._ahead: dict[str, deque[Entry]] = {topic: deque() for topic in plan.counts}
        self._size = {topic: plan.sizes[topic] // max(1, count)
                      for topic, count in plan.counts.items()}

    def next_page(self, budget: int) -> list[Entry]:
        """The next events in id order, about ``budget`` envelope bytes (at least one
        event); an empty list once every event was returned.

        Raises ``HistoryGap`` when history lost events not returned yet, and
        ``redis.RedisError`` when Redis cannot be read (the page is then not returned).
        """
        page: list[Entry] = []
        size = 0
        while size < budget:
            self._refill(budget)
            ahead = [queue for queue in self._ahead.values() if queue]
            if not ahead:
                break
            while size < budget:
                queue = min(ahead, key=lambda q: q[0][0])
                entry = queue.popleft()
                page.append(entry)
                size += len(entry[2])
                if not queue:
                    if self._left[entry[1]]:
                        break  # its next events are unknown: fetch them first
                    ahead.remove(queue)
                    if not ahead:
                        break
        return page

    def _refill(self, budget: int) -> None:
        """Fetch the next events of every topic that has some left and none fetched."""
        need = [t for t, queue in self._ahead.items() if not queue and self._left[t]]
        if not need:
            return
        share = max(1, budget // len(need))
        counts = {t: min(self._left[t], MAX_FETCH, max(1, share // max(1, self._size[t])))
                  for t in need}
        pipe = self.redis.pipeline(transaction=False)
        for topic in need:
            cursor = self._cursor[topic]
            pipe.get(self.keys.floor(topic))
            pipe.xrange(self.keys.stream(topic), f"({cursor[0]}-{cursor[1]}", self._end,
                        count=counts[topic])
        rows = pipe.execute()
        for topic, floor, entries in zip(need, rows[0::2], rows[1::2], strict=True):
            self._take(topic, floor, entries, counts[topic])

    def _take(self, topic: str, floor: bytes | None, entries: list[Any], asked: int) -> None:
        cursor = self._cursor[topic]
        if (floor and id_key(floor.decode()) > cursor) or len(entries) < asked:
            raise HistoryGap(f"history of {topic} lost events during the replay")
        queue = self._ahead[topic]
        for entry_id, fields in entries:
            queue.append((id_key(entry_id.decode()), topic, fields[b"e"]))
        self._cursor[topic] = queue[-1][0]
        self._left[topic] -= len(entries)


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
