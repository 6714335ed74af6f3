"""Reading topics' history: the replay for a resuming client, the gap fill after a
lost subscription.

Every published event is in its topic's Redis Stream (see ``herald.publisher``), with
its id as stream position, for ``HERALD_HISTORY_TTL`` seconds and about
``HERALD_HISTORY_MAXLEN`` events; when trimming removed events, the topic's *floor* key
holds the first id that was kept.

Guarantee: ``replay(topics, after)`` returns every event of ``topics`` with an id above
``after`` that history holds, merged in id order, or says why history cannot cover the
gap (``Replay.reset``): the position is malformed, ahead of every published event,
older than the retention, below a topic's floor, or more than ``limit`` events behind.
``since(positions)`` does the same per topic (``Replay.resets``). Neither ever returns
a partial replay without saying so.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import redis

from herald.event import id_key, valid_event_id
from herald.keys import Keys

Key = tuple[int, int]
Entry = tuple[Key, str, bytes]  # (position, topic, envelope)


@dataclass
class Replay:
    """What a resuming subscriber gets before live events."""

    events: list[Entry] = field(default_factory=list)
    resets: dict[str, str] = field(default_factory=dict)  # topic -> why it cannot replay
    position: str = "0-0"  # the latest published id when the history was read

    @property
    def reset(self) -> str | None:
        """Why the replay cannot be complete, or None when it is."""
        return next(iter(self.resets.values()), None)


class History:
    """Reads the streams of a deployment (``keys``) through ``redis_client`` (bytes)."""

    def __init__(self, redis_client: redis.Redis, keys: Keys, ttl: int, limit: int) -> None:
        self.redis = redis_client
        self.keys = keys
        self.ttl_ms = ttl * 1000
        self.limit = limit

    def position(self) -> str:
        """The id of the latest event published in the deployment ("0-0" if none)."""
        ms, seq = self.redis.hmget(self.keys.clock, "ms", "seq")
        return f"{int(ms or 0)}-{int(seq or 0)}"

    def replay(self, topics: tuple[str, ...], after: str) -> Replay:
        """Events of ``topics`` after position ``after``, or a reset with its reason."""
        if not valid_event_id(after):
            return Replay(resets={"*": "unknown position"}, position=self.position())
        key = id_key(after)
        # "0-0" asks for everything history holds; any other position older than the
        # retention may have had events that expired.
        if key != (0, 0) and key[0] < time.time() * 1000 - self.ttl_ms:
            return Replay(resets={"*": "position is older than the history's retention"},
                          position=self.position())
        replay = self.since(dict.fromkeys(topics, key))
        if replay.resets:
            replay.events = []
        return replay

    def since(self, positions: dict[str, Key]) -> Replay:
        """Events after each topic's own position; a reset if any topic has a gap.

        Used as is for the gap a lost subscription left: the positions are what this
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
        resets = _gaps(positions, rows, id_key(position), self.limit)
        return Replay(_merge(positions, rows, resets), resets, position)


def _gaps(positions: dict[str, Key], rows: list[Any], latest: Key,
          limit: int) -> dict[str, str]:
    resets = {}
    for (topic, key), floor, entries in zip(positions.items(), rows[0::2], rows[1::2],
                                            strict=True):
        if key > latest:
            resets[topic] = "position is ahead of every published event"
        elif floor and id_key(floor.decode()) > key:
            resets[topic] = f"history of {topic} no longer reaches back to the position"
        elif len(entries) > limit:
            resets[topic] = f"more than {limit} events were missed on {topic}"
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


def reset_envelope(position: str, reason: str, last_event_id: str | None) -> bytes:
    """The ``reset`` event: history cannot cover the gap, refetch your state.

    Its id is the deployment's latest position, so a client that reconnects after it
    resumes from there.
    """
    ms = int(time.time() * 1000)
    body = {"id": position, "ts": ms, "topic": None, "type": "reset",
            "data": {"reason": reason, "last_event_id": last_event_id}}
    return json.dumps(body, separators=(",", ":")).encode()
