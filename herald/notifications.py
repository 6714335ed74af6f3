"""Notification records in Redis.

A record is a hash holding what was asked (title, body, data, channels, recipients or
topic) and its status: ``queued`` when stored by the API, ``sending`` while a worker
delivers it, then ``delivered`` or ``failed``. Beside it, a hash per notification maps
each destination topic to its delivery state and the id of the event that delivered it.

Guarantees: ``create`` stores a record and claims its idempotency key in one atomic
step, so two requests with the same key store one record; every key of a notification
expires after ``HERALD_RETENTION`` seconds.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import redis

from herald.channels import DEFAULT_CATEGORY
from herald.ids import new_id
from herald.keys import Keys
from herald.times import iso, now_ms

QUEUED, SENDING, DELIVERED, FAILED = "queued", "sending", "delivered", "failed"
PENDING = "pending"
# Long enough to cover any client's retry loop, short enough to bound the key count.
IDEMPOTENCY_TTL = 24 * 3600

# KEYS: record [, idempotency key]; ARGV: id, fingerprint, key ttl, retention, fields...
_CREATE = """
if KEYS[2] then
  local existing = redis.call('GET', KEYS[2])
  if existing then return existing end
  redis.call('SET', KEYS[2], ARGV[1] .. ' ' .. ARGV[2], 'EX', tonumber(ARGV[3]))
end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
return false
"""

_SET_STATUS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'updated_at', ARGV[2], 'error', ARGV[3])
return 1
"""


@dataclass
class NewNotification:
    """A validated request to notify ``recipients`` (users) or everyone on ``topic``."""

    title: str
    body: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    channels: list[str] = field(default_factory=lambda: ["inapp"])
    recipients: list[str] | None = None
    topic: str | None = None
    category: str = DEFAULT_CATEGORY
    critical: bool = False

    def fingerprint(self) -> str:
        """A hash of the request, to tell a retry from a different request."""
        canonical = json.dumps(self.__dict__, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Created:
    """Outcome of ``create``: the id, and whether this call stored it."""

    id: str
    created: bool
    conflict: bool = False


class NotificationStore:
    """Reads and writes notification records."""

    def __init__(self, redis_client: redis.Redis, keys: Keys, retention: int) -> None:
        self.redis = redis_client
        self.keys = keys
        self.retention = retention
        self._create = redis_client.register_script(_CREATE)
        self._set_status = redis_client.register_script(_SET_STATUS)

    def create(self, new: NewNotification, idempotency_key: str | None = None) -> Created:
        """Store ``new`` as ``queued``, unless ``idempotency_key`` was used already.

        With a used key, nothing is stored: the earlier id comes back, with
        ``conflict=True`` when the earlier request differed from this one.
        """
        notification_id = new_id("n")
        fingerprint = new.fingerprint()
        names = [self.keys.notification(notification_id)]
        if idempotency_key:
            names.append(self._idempotency_key(idempotency_key))
        fields = self._fields(notification_id, new, idempotency_key)
        earlier = self._create(
            keys=names,
            args=[notification_id, fingerprint, IDEMPOTENCY_TTL, self.retention, *fields],
        )
        if not earlier:
            return Created(notification_id, True)
        earlier_id, _, earlier_fingerprint = earlier.partition(" ")
        return Created(earlier_id, False, conflict=earlier_fingerprint != fingerprint)

    def discard(self, notification_id: str, idempotency_key: str | None = None) -> None:
        """Remove a record that could not be dispatched, and free its idempotency key."""
        names = [self.keys.notification(notification_id)]
        if idempotency_key:
            names.append(self._idempotency_key(idempotency_key))
        self.redis.delete(*names)

    def load(self, notification_id: str) -> dict[str, str] | None:
        """The raw stored fields, or None when there is no such record."""
        fields = self.redis.hgetall(self.keys.notification(notification_id))
        return fields or None

    def set_status(self, notification_id: str, status: str, error: str = "") -> bool:
        """Set the status of an existing record; False when it no longer exists."""
        done = self._set_status(keys=[self.keys.notification(notification_id)],
                                args=[status, now_ms(), error])
        return bool(done)

    def describe(self, notification_id: str) -> dict[str, Any] | None:
        """The record as the API shows it, with per-destination delivery state."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(self.keys.notification(notification_id))
        pipe.hgetall(self.keys.recipient_state(notification_id))
        pipe.hgetall(self.keys.recipient_event(notification_id))
        record, states, events = pipe.execute()
        if not record:
            return None
        return _public(record, states, events)

    @staticmethod
    def destinations(record: dict[str, str]) -> list[str]:
        """The topics a stored notification goes to."""
        if record.get("topic"):
            return [record["topic"]]
        return ["user:" + user for user in json.loads(record["recipients"])]

    def _idempotency_key(self, key: str) -> str:
        return self.keys.idempotency(hashlib.sha256(key.encode()).hexdigest())

    @staticmethod
    def _fields(notification_id: str, new: NewNotification, key: str | None) -> list[Any]:
        now = now_ms()
        values = {
            "id": notification_id,
            "title": new.title,
            "body": new.body,
            "data": json.dumps(new.data),
            "channels": json.dumps(new.channels),
            "recipients": json.dumps(new.recipients) if new.recipients is not None else "",
            "topic": new.topic or "",
            "category": new.category,
            "critical": "1" if new.critical else "0",
            "status": QUEUED,
            "error": "",
            "created_at": now,
            "updated_at": now,
            "idempotency_key": key or "",
        }
        return [item for pair in values.items() for item in pair]


def _public(record: dict[str, str], states: dict[str, str],
            events: dict[str, str]) -> dict[str, Any]:
    destinations = NotificationStore.destinations(record)
    return {
        "id": record["id"],
        "status": record["status"],
        "title": record["title"],
        "body": record["body"],
        "data": json.loads(record["data"]),
        "channels": json.loads(record["channels"]),
        "recipients": json.loads(record["recipients"]) if record["recipients"] else None,
        "topic": record["topic"] or None,
        "category": record.get("category") or DEFAULT_CATEGORY,
        "critical": record.get("critical") == "1",
        "error": record.get("error") or None,
        "created_at": iso(record["created_at"]),
        "updated_at": iso(record["updated_at"]),
        "deliveries": {
            topic: {"state": states.get(topic, PENDING), "event_id": events.get(topic)}
            for topic in destinations
        },
    }
