"""The event envelope: its fields, their rules, its JSON.

An event is the JSON object ``{"id", "ts", "topic", "type", "data"}``:

- ``id`` is ``"<ms>-<seq>"``, assigned by Redis when the event is published. Ids are one
  total order across every topic of a deployment (a global sequence number behind a
  clock that never goes back), so a single id is a resume position for a client that
  follows several topics. It is also the event's position in its topic's history, so
  both parts are below 2^64 (a Redis Stream id): ``valid_event_id`` is the one check
  every surface uses, and anything it refuses is no position at all.
- ``ts`` is the publish time in milliseconds since the epoch (Redis' clock).
- ``topic`` and ``type`` follow ``TOPIC_RULE`` and ``TYPE_RULE``; neither can hold CR, LF
  or NUL, so neither can inject a field into a wire format (the streamer checks again
  what it reads back from Redis: ``streamer.transport.check_event``).
- ``data`` is any JSON value; ``encode_body`` makes the envelope one line of JSON, so no
  payload can start a new field or event.

This module imports neither gevent nor Celery: the API, the workers and the streamer all
use it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from herald.errors import InvalidEvent

TOPIC_RULE = "[a-z0-9][a-z0-9._:-]{0,127}"
TYPE_RULE = "[A-Za-z][A-Za-z0-9._:-]{0,63}"
USER_RULE = "[a-z0-9][a-z0-9._-]{0,63}"
EVENT_ID_RULE = "[0-9]{1,20}-[0-9]{1,20}"
TOPIC_RE = re.compile(TOPIC_RULE)
TYPE_RE = re.compile(TYPE_RULE)
USER_RE = re.compile(USER_RULE)
EVENT_ID_RE = re.compile(EVENT_ID_RULE)
ID_PART_LIMIT = 2**64  # each part of a Redis Stream id is an unsigned 64-bit integer

MAX_DATA_BYTES = 64 * 1024
BROADCAST = "broadcast"
USER_TOPIC_PREFIX = "user:"


def user_topic(user: str) -> str:
    """The topic a user's personal events go to."""
    return USER_TOPIC_PREFIX + user


def valid_topic(topic: object) -> bool:
    return isinstance(topic, str) and TOPIC_RE.fullmatch(topic) is not None


def valid_user(user: object) -> bool:
    return isinstance(user, str) and USER_RE.fullmatch(user) is not None


def valid_event_id(event_id: object) -> bool:
    """True when ``event_id`` is a position Redis can hold: ``<ms>-<seq>``, each < 2^64."""
    return position(event_id) is not None


def position(event_id: object) -> tuple[int, int] | None:
    """The sort key of ``event_id`` (see ``id_key``), or None when it is no position."""
    if not isinstance(event_id, str) or EVENT_ID_RE.fullmatch(event_id) is None:
        return None
    ms, seq = id_key(event_id)
    return (ms, seq) if ms < ID_PART_LIMIT and seq < ID_PART_LIMIT else None


def id_key(event_id: str) -> tuple[int, int]:
    """Sort key of an event id: ids compare by (ms, seq), not as strings."""
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq)


def encode_body(topic: str, type: str, data: Any) -> str:
    """Validate an event and encode everything but ``id`` and ``ts``.

    Returns the tail of the envelope JSON (``"topic":...,"data":...}``); the publisher
    prepends ``{"id":...,"ts":...,`` once Redis has assigned them.
    Raises ``InvalidEvent`` naming the field and the rule.
    """
    if not valid_topic(topic):
        raise InvalidEvent("topic", f"must match {TOPIC_RULE}")
    if not isinstance(type, str) or TYPE_RE.fullmatch(type) is None:
        raise InvalidEvent("type", f"must match {TYPE_RULE}")
    try:
        body = json.dumps(
            {"topic": topic, "type": type, "data": data},
            ensure_ascii=False,
            separators=(",", ":"),
            allow_nan=False,
        )
    except (TypeError, ValueError) as exc:
        raise InvalidEvent("data", f"must be JSON-serialisable ({exc})") from exc
    if len(body.encode()) > MAX_DATA_BYTES:
        raise InvalidEvent("data", f"encoded event must be at most {MAX_DATA_BYTES} bytes")
    return body[1:]


@dataclass(frozen=True, slots=True)
class Event:
    """A published event, as clients receive it."""

    id: str
    ts: int
    topic: str
    type: str
    data: Any

    @classmethod
    def from_json(cls, raw: str | bytes) -> Event:
        """Parse an envelope; raise ``ValueError`` when it is not one."""
        obj = json.loads(raw)
        if not isinstance(obj, dict):
            raise ValueError("envelope must be a JSON object")
        try:
            return cls(obj["id"], obj["ts"], obj["topic"], obj["type"], obj.get("data"))
        except KeyError as exc:
            raise ValueError(f"envelope lacks {exc}") from exc

