"""Notification records in Redis.

A record is a hash holding what was asked (title, body, data, channels, category,
critical, recipients or topic) and its status. The status is about dispatch, channel by
channel: ``queued`` when stored by the API, ``sending`` once a channel's task started,
``delivered`` once every requested channel's task has run (in-app: each destination got
its inbox entry and event, or was skipped; e-mail and webhooks: each target's delivery is
recorded and queued, and its outcome is in the delivery's own record), ``failed`` when a
channel's task gave up (Redis unreachable through all its retries) and until every
channel has run. Beside the record, a hash per notification maps each in-app destination
topic to its state (``delivered``, or ``skipped``: the user turned in-app off for the
category) and another to the id of the event that delivered it.

Guarantees: ``create`` stores a record and claims its idempotency key in one atomic
step, so two requests with the same key store one record; ``submit`` does the same for
many notifications at once, in the same atomic step as checking the caller's API key
and spending its rate budget (one round trip: nothing is stored for a refused caller,
and a revoked key is refused from the next request on); ``dispatched`` records a
channel's task as run and moves the status in one atomic step; every key of a
notification expires after ``HERALD_RETENTION`` seconds.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import redis

from herald import apikeys
from herald.apikeys import ApiKey
from herald.channels import DEFAULT_CATEGORY, INAPP
from herald.event import USER_TOPIC_PREFIX, id_key
from herald.ids import new_id
from herald.keys import Keys
from herald.ratelimit import TAKE_FUNCTION, RateLimiter
from herald.times import iso, now_ms

QUEUED, SENDING, DELIVERED, FAILED = "queued", "sending", "delivered", "failed"
# In-app destination states as stored, and as ``describe`` shows them.
PENDING, SKIPPED, SENT = "pending", "skipped", "sent"
OPTED_OUT = "opted out"  # the one reason an in-app destination is skipped
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

# KEYS: API keys, the key's rate bucket, then per notification its record and its
#       idempotency key (the record's own name again when it has none)
# ARGV: key id, digest of its secret, rate, burst, idempotency ttl, retention, count,
#       then per notification: id, fingerprint, "1" when keyed, number of fields, fields
# Answers {'unauthorized'}, {'limited', key record, wait} or {'ok', key record, then per
# notification '' (stored) or the earlier "<id> <fingerprint>" of its key}.
_SUBMIT = apikeys.CHECK_FUNCTION + TAKE_FUNCTION + """
local key = herald_apikey(KEYS[1], ARGV[1], ARGV[2])
if not key then return {'unauthorized'} end
local count = tonumber(ARGV[7])
local wait = herald_take(KEYS[2], tonumber(ARGV[3]), tonumber(ARGV[4]), count)
if wait > 0 then return {'limited', key, tostring(wait)} end
local answer, at = {'ok', key}, 8
for i = 1, count do
  local id, fingerprint, n = ARGV[at], ARGV[at + 1], tonumber(ARGV[at + 3])
  local earlier = ARGV[at + 2] == '1' and redis.call('GET', KEYS[2 + 2 * i])
  if earlier then
    answer[#answer + 1] = earlier
  else
    if ARGV[at + 2] == '1' then
      redis.call('SET', KEYS[2 + 2 * i], id .. ' ' .. fingerprint, 'EX', ARGV[5])
    end
    redis.call('HSET', KEYS[1 + 2 * i], unpack(ARGV, at + 4, at + 3 + n))
    redis.call('EXPIRE', KEYS[1 + 2 * i], ARGV[6])
    answer[#answer + 1] = ''
  end
  at = at + 4 + n
end
return answer
"""

# KEYS: record; ARGV: now. A channel's task starts: the record's fields as they were
# (none: no record), and ``queued`` becomes ``sending``.
_START = """
local fields = redis.call('HGETALL', KEYS[1])
if #fields > 0 and redis.call('HGET', KEYS[1], 'status') == 'queued' then
  redis.call('HSET', KEYS[1], 'status', 'sending', 'updated_at', ARGV[1])
end
return fields
"""

# KEYS: record; ARGV: channel, now. Answers the status after the change (false: gone).
_DISPATCHED = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
redis.call('HSET', KEYS[1], 'ran:' .. ARGV[1], '1')
local status = redis.call('HGET', KEYS[1], 'status')
for _, channel in ipairs(cjson.decode(redis.call('HGET', KEYS[1], 'channels'))) do
  if redis.call('HEXISTS', KEYS[1], 'ran:' .. channel) == 0 then
    if status ~= 'queued' then return status end
    redis.call('HSET', KEYS[1], 'status', 'sending', 'updated_at', ARGV[2])
    return 'sending'
  end
end
redis.call('HSET', KEYS[1], 'status', 'delivered', 'error', '', 'updated_at', ARGV[2])
return 'delivered'
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

    @staticmethod
    def of(notification_id: str, fingerprint: str, earlier: str | None) -> Created:
        """The outcome for ``notification_id`` given what its idempotency key held
        (None, or the earlier ``"<id> <fingerprint>"``)."""
        if not earlier:
            return Created(notification_id, True)
        earlier_id, _, earlier_fingerprint = earlier.partition(" ")
        return Created(earlier_id, False, conflict=earlier_fingerprint != fingerprint)


@dataclass(frozen=True)
class Submitted:
    """Outcome of ``submit``: the caller's key (None when unknown or revoked), the
    seconds to wait when its rate budget is spent, else one ``Created`` per notification."""

    key: ApiKey | None
    wait: float = 0.0
    created: tuple[Created, ...] = ()


class NotificationStore:
    """Reads and writes notification records."""

    def __init__(self, redis_client: redis.Redis, keys: Keys, retention: int) -> None:
        self.redis = redis_client
        self.keys = keys
        self.retention = retention
        self._create = redis_client.register_script(_CREATE)
        self._submit = redis_client.register_script(_SUBMIT)
        self._set_status = redis_client.register_script(_SET_STATUS)
        self._dispatched = redis_client.register_script(_DISPATCHED)
        self._start = redis_client.register_script(_START)

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
        return Created.of(notification_id, fingerprint, earlier)

    def submit(self, credential: tuple[str, str], limiter: RateLimiter,
               items: list[tuple[NewNotification, str | None]]) -> Submitted:
        """Check the API key ``credential`` (its id and the digest of its secret, see
        ``apikeys.split``), spend one unit of its budget in ``limiter`` per item, and
        store each ``(notification, idempotency key)`` as ``create`` does: all in one
        atomic script, one round trip.

        Nothing is stored for an unknown or revoked key, nor when the budget is spent
        (``wait``: seconds until it holds enough). Items sharing an idempotency key
        store one record: the later ones answer the first's id.
        """
        key_id, digest = credential
        names = [self.keys.apikeys, limiter.key_of(key_id)]
        args: list[Any] = [key_id, digest, limiter.rate, limiter.burst, IDEMPOTENCY_TTL,
                           self.retention, len(items)]
        ids, fingerprints = [], []
        for new, idempotency_key in items:
            notification_id, fingerprint = new_id("n"), new.fingerprint()
            record = self.keys.notification(notification_id)
            names += [record, self._idempotency_key(idempotency_key) if idempotency_key
                      else record]
            fields = self._fields(notification_id, new, idempotency_key)
            args += [notification_id, fingerprint, "1" if idempotency_key else "0",
                     len(fields), *fields]
            ids.append(notification_id)
            fingerprints.append(fingerprint)
        answer = self._submit(keys=names, args=args)
        if answer[0] == "unauthorized":
            return Submitted(None)
        key = apikeys.from_record(answer[1])
        if answer[0] == "limited":
            return Submitted(key, wait=float(answer[2]))
        return Submitted(key, created=tuple(
            Created.of(*item) for item in zip(ids, fingerprints, answer[2:], strict=True)))

    def discard(self, notification_id: str, idempotency_key: str | None = None) -> None:
        """Remove a record that could not be dispatched, and free its idempotency key."""
        self.discard_all([(notification_id, idempotency_key)])

    def discard_all(self, items: list[tuple[str, str | None]]) -> None:
        """``discard`` each ``(notification id, idempotency key)``, in one round trip."""
        names = [self.keys.notification(notification_id) for notification_id, _ in items]
        names += [self._idempotency_key(key) for _, key in items if key]
        if names:
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

    def start(self, notification_id: str) -> dict[str, str] | None:
        """A channel's task starts: the stored fields as they were, read in the same
        round trip that turns ``queued`` into ``sending`` (None: no record; nothing is
        then written)."""
        fields = self._start(keys=[self.keys.notification(notification_id)], args=[now_ms()])
        return dict(zip(fields[0::2], fields[1::2], strict=True)) or None

    def start_all(self, notification_ids: list[str]) -> list[dict[str, str] | None]:
        """``start`` each of ``notification_ids``, in one round trip (a pipeline)."""
        for attempt in range(2):
            pipe = self.redis.pipeline(transaction=False)
            for notification_id in notification_ids:
                pipe.evalsha(self._start.sha, 1, self.keys.notification(notification_id),
                             now_ms())
            try:
                answers = pipe.execute()
                break
            except redis.exceptions.NoScriptError:  # a restarted Redis; start is idempotent
                if attempt:
                    raise
                self.redis.script_load(_START)
        return [dict(zip(fields[0::2], fields[1::2], strict=True)) or None
                for fields in answers]

    def queue_dispatched(self, pipe: Any, notification_id: str, channel: str) -> None:
        """Put ``dispatched`` into ``pipe`` (a pipeline of this store's client), to run
        after what is already in it; its answer is the status it leaves, or None.

        The script is called by its hash: a pipeline that meets NOSCRIPT (a restarted
        Redis) is to be run again after ``load_scripts``.
        """
        pipe.evalsha(self._dispatched.sha, 1, self.keys.notification(notification_id),
                     channel, now_ms())

    def load_scripts(self) -> None:
        """Load the scripts ``queue_dispatched`` calls by hash (after NOSCRIPT)."""
        self.redis.script_load(_DISPATCHED)

    def dispatched(self, notification_id: str, channel: str) -> str | None:
        """Record that ``channel``'s task has run; answer the status it leaves (None:
        no record). The last of the requested channels makes it ``delivered``."""
        return self._dispatched(keys=[self.keys.notification(notification_id)],
                                args=[channel, now_ms()]) or None

    def describe(self, notification_id: str) -> dict[str, Any] | None:
        """The record as the API shows it, with its in-app deliveries (``inapp_items``);
        the outbound ones are ``herald.deliveries``' to show."""
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
        "deliveries": inapp_items(record, states, events),
    }


def inapp_items(record: dict[str, str], states: dict[str, str],
                events: dict[str, str]) -> list[dict[str, Any]]:
    """One item per in-app destination (none when in-app was not asked for).

    The target is the user (the topic for a topic notification); a stored ``delivered``
    shows as ``sent``, at the time of its event; a ``skipped`` one says why.
    """
    if INAPP not in json.loads(record["channels"]):
        return []
    return [_inapp_item(record, topic, states.get(topic, PENDING), events.get(topic))
            for topic in NotificationStore.destinations(record)]


def _inapp_item(record: dict[str, str], topic: str, state: str,
                event_id: str | None) -> dict[str, Any]:
    sent_at = iso(id_key(event_id)[0]) if event_id else None
    shown = SENT if state == DELIVERED else state
    return {
        "channel": INAPP,
        "target": topic.removeprefix(USER_TOPIC_PREFIX) if not record["topic"] else topic,
        "state": shown,
        "attempts": 1 if shown == SENT else 0,
        "error": OPTED_OUT if shown == SKIPPED else None,
        "next_attempt_at": None,
        "created_at": iso(record["created_at"]),
        "updated_at": sent_at or iso(record["updated_at"]),
        "sent_at": sent_at,
        "event_id": event_id,
    }
