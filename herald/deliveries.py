"""Delivery records of the outbound channels (e-mail, webhooks): one per target.

A delivery is one notification going to one target over one channel: a user's e-mail
address, or a webhook endpoint. Its id is derived from (notification, channel, target),
so it is the same on every attempt; the e-mail ``Message-ID`` and the ``webhook-id``
are made from it, and receivers can drop the rare duplicate.

States: ``pending`` (created, not tried yet), ``sending`` (an attempt holds its lease),
``sent``, ``skipped`` (opted out, no address: not tried), ``retrying`` (the last attempt
failed and another is due at ``next_attempt_at``), ``failed`` (a permanent failure) and
``dead`` (retries used up; listed in the channel's dead letters until retried).

Guarantees:
- ``create`` makes a record once: creating it again answers the existing state;
- ``claim`` lets one attempt at a time run: it refuses a delivery that is done
  (``sent``, ``skipped``, ``failed``, ``dead``) and one whose current attempt still holds
  its lease; a worker killed mid-attempt leaves a lease that runs out, so the next
  attempt may go on (at-least-once, never silently lost);
- every transition is one atomic script; ``dead`` adds the delivery to its channel's
  dead letters in the same step, and ``revive`` takes it out again;
- every key expires after ``HERALD_RETENTION`` seconds.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from typing import Any

import redis

from herald.keys import Keys
from herald.times import iso, now_ms

PENDING, SENDING, SENT, SKIPPED = "pending", "sending", "sent", "skipped"
RETRYING, FAILED, DEAD = "retrying", "failed", "dead"
STATES = (PENDING, SENDING, SENT, SKIPPED, RETRYING, FAILED, DEAD)
DONE = (SENT, SKIPPED, FAILED, DEAD)
BUSY = "busy"  # ``claim``: another attempt holds the lease

DELIVERY_ID_RULE = "d_[a-z2-7]{24}"
_DELIVERY_ID_RE = re.compile(DELIVERY_ID_RULE)

# KEYS: record, index; ARGV: id, notification, channel, target, state, error, now, retention
_CREATE = """
local state = redis.call('HGET', KEYS[1], 'state')
if state then return state end
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'notification_id', ARGV[2], 'channel', ARGV[3],
           'target', ARGV[4], 'state', ARGV[5], 'error', ARGV[6], 'attempts', 0,
           'next_attempt_at', '', 'lease_until', 0, 'created_at', ARGV[7],
           'updated_at', ARGV[7], 'sent_at', '')
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[8]))
redis.call('HSET', KEYS[2], ARGV[3] .. ' ' .. ARGV[4], ARGV[1])
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[8]))
return false
"""

# KEYS: record; ARGV: now, lease ms. Answers the attempt number, or why not.
_CLAIM = """
local state, lease = unpack(redis.call('HMGET', KEYS[1], 'state', 'lease_until'))
if not state then return 'missing' end
if state == 'sent' or state == 'skipped' or state == 'failed' or state == 'dead' then
  return state
end
local now = tonumber(ARGV[1])
if state == 'sending' and tonumber(lease) > now then return 'busy' end
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'state', 'sending', 'lease_until', now + tonumber(ARGV[2]),
           'next_attempt_at', '', 'updated_at', now)
return tostring(attempts)
"""

# KEYS: record, dead letters; ARGV: state, error, next attempt (ms or ''), now, id
_FINISH = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'error', ARGV[2], 'next_attempt_at', ARGV[3],
           'lease_until', 0, 'updated_at', ARGV[4])
if ARGV[1] == 'sent' then redis.call('HSET', KEYS[1], 'sent_at', ARGV[4]) end
if ARGV[1] == 'dead' then redis.call('ZADD', KEYS[2], tonumber(ARGV[4]), ARGV[5]) end
return 1
"""

# KEYS: record, dead letters; ARGV: now, id
_REVIVE = """
if redis.call('HGET', KEYS[1], 'state') ~= 'dead' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'pending', 'attempts', 0, 'error', '',
           'next_attempt_at', '', 'lease_until', 0, 'updated_at', ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[2])
return 1
"""


def delivery_id(notification_id: str, channel: str, target: str) -> str:
    """The id of ``notification_id``'s delivery to ``target`` over ``channel``: stable."""
    digest = hashlib.sha256(f"{notification_id}\n{channel}\n{target}".encode()).digest()
    return "d_" + base64.b32encode(digest[:15]).decode().lower()


def valid_delivery_id(value: object) -> bool:
    return isinstance(value, str) and _DELIVERY_ID_RE.fullmatch(value) is not None


@dataclass(frozen=True)
class Claim:
    """What ``claim`` answered: ``attempt`` (1, 2, ...) when this attempt may run,
    else ``state``: the delivery is done (its state), ``busy`` or ``missing``."""

    attempt: int = 0
    state: str = ""


class DeliveryStore:
    """Reads and moves outbound delivery records (see the module's guarantees)."""

    def __init__(self, redis_client: redis.Redis, keys: Keys, retention: int) -> None:
        self.redis = redis_client
        self.keys = keys
        self.retention = retention
        self._create = redis_client.register_script(_CREATE)
        self._claim = redis_client.register_script(_CLAIM)
        self._finish = redis_client.register_script(_FINISH)
        self._revive = redis_client.register_script(_REVIVE)

    def create(self, notification_id: str, channel: str, target: str,
               state: str = PENDING, error: str = "") -> tuple[str, str | None]:
        """Record a delivery (``pending``, or ``skipped`` with the reason in ``error``).

        Answers its id and ``None`` when this call created it, or the state it already
        had.
        """
        did = delivery_id(notification_id, channel, target)
        existing = self._create(
            keys=[self.keys.delivery(did), self.keys.deliveries_of(notification_id)],
            args=[did, notification_id, channel, target, state, error, now_ms(),
                  self.retention])
        return did, existing or None

    def annotate(self, did: str, name: str, value: str) -> None:
        """Keep ``name: value`` on a delivery's record, for its channel to read."""
        self.redis.hset(self.keys.delivery(did), name, value)

    def discard(self, notification_id: str, did: str) -> None:
        """Remove a delivery that could not be sent, and its notification's index of
        deliveries."""
        self.redis.delete(self.keys.delivery(did), self.keys.deliveries_of(notification_id))

    def load(self, did: str) -> dict[str, str] | None:
        """The raw stored fields, or None."""
        return self.redis.hgetall(self.keys.delivery(did)) or None

    def claim(self, did: str, lease_seconds: float) -> Claim:
        """Start an attempt holding a lease of ``lease_seconds`` (see the guarantees)."""
        answer = self._claim(keys=[self.keys.delivery(did)],
                             args=[now_ms(), int(lease_seconds * 1000)])
        return Claim(attempt=int(answer)) if answer.isdigit() else Claim(state=answer)

    def finish(self, did: str, channel: str, state: str, error: str = "",
               next_attempt_ms: int | None = None) -> bool:
        """End an attempt in ``state``; False when the record no longer exists."""
        done = self._finish(
            keys=[self.keys.delivery(did), self.keys.dead_letters(channel)],
            args=[state, error[:500], "" if next_attempt_ms is None else next_attempt_ms,
                  now_ms(), did])
        return bool(done)

    def revive(self, did: str, channel: str) -> bool:
        """Take a dead delivery out of the dead letters, as ``pending`` with no attempts.

        False when it is not dead (or gone): nothing changes.
        """
        return bool(self._revive(
            keys=[self.keys.delivery(did), self.keys.dead_letters(channel)],
            args=[now_ms(), did]))

    def of_notification(self, notification_id: str) -> list[dict[str, Any]]:
        """The notification's outbound deliveries, as the API shows them."""
        ids = self.redis.hvals(self.keys.deliveries_of(notification_id))
        return [public(record) for record in self._load_many(ids)]

    def dead_letters(self, channel: str, limit: int = 100) -> list[dict[str, Any]]:
        """The newest ``limit`` dead deliveries of ``channel``, newest first."""
        ids = self.redis.zrevrange(self.keys.dead_letters(channel), 0, limit - 1)
        return [public(record) for record in self._load_many(ids)]

    def _load_many(self, ids: list[str]) -> list[dict[str, str]]:
        pipe = self.redis.pipeline(transaction=False)
        for did in ids:
            pipe.hgetall(self.keys.delivery(did))
        return [record for record in pipe.execute() if record]


def public(record: dict[str, str]) -> dict[str, Any]:
    """A delivery record as the API shows it (times in ISO 8601, UTC)."""
    return {
        "id": record["id"],
        "notification_id": record["notification_id"],
        "channel": record["channel"],
        "target": record["target"],
        "state": record["state"],
        "attempts": int(record["attempts"]),
        "error": record["error"] or None,
        "next_attempt_at": iso(record["next_attempt_at"] or None),
        "created_at": iso(record["created_at"]),
        "updated_at": iso(record["updated_at"]),
        "sent_at": iso(record["sent_at"] or None),
    }
