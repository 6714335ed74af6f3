"""Notifications: submitting one to its channels, and delivering it in-app.

``submit`` stores a notification and sends one task per requested channel through the
producer's Celery app: ``herald.send_notification`` for in-app (task id: the notification
id), ``herald.<channel>.dispatch`` for e-mail and webhooks (task id
``<notification id>.<channel>``; see ``tasks.outbound``), each routed to its channel's
queue. ``deliver`` is the in-app work, a plain function; ``send_notification`` is the
Celery task around it, which owns retries and takes its services from its app
(``services_of``). The notification's ``status`` follows its channels' tasks (see
``herald.notifications``): ``delivered`` once each has run.

Guarantees of ``deliver``:
- idempotency: for each destination topic, recording the delivery, writing the inbox
  entry and publishing the event happen in one Lua script call (one per chunk of
  ``DELIVERY_CHUNK`` destinations) guarded by the destination's state. Running the task
  again (broker redelivery with ``acks_late``, a retry after a lost connection, a worker
  killed mid-task) finds the destinations already done and adds no inbox entry and no
  event: each recipient gets exactly one of each;
- preferences: a recipient who turned in-app off for the notification's category gets
  no inbox entry and no event, unless the notification is ``critical``; the preference
  is read and the destination recorded ``skipped`` (``opted out``) in the same guarded
  step, so a run after the user changed their mind does not change what was decided. A
  topic notification has no known users: it is not filtered;
- cost: one round trip reads the record and marks it ``sending``, then one per
  ``ROUND_TRIP`` destinations; the last also records the channel dispatched. The event
  body is encoded once per notification (``herald.publisher.shared_rest``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any

import redis
from celery import Celery, Task, shared_task
from kombu.exceptions import OperationalError

from herald.channels import INAPP
from herald.errors import DispatchError, InvalidEvent
from herald.event import TOPIC_RULE, USER_TOPIC_PREFIX, valid_topic
from herald.inbox import INBOX_ADD_FUNCTION
from herald.notifications import Created, NewNotification
from herald.preferences import field as preference_field
from herald.publisher import PUBLISH_FUNCTION, shared_rest
from herald.services import Services
from herald.times import iso
from tasks.factory import RETRY_ON_REDIS, NotificationTask, services_of
from tasks.outbound import dispatch_task_name

log = logging.getLogger(__name__)

EVENT_TYPE = "notification"
SEND_NOTIFICATION = "herald.send_notification"  # the task's name on the broker

# One call delivers a chunk of destinations. KEYS: clock, state, events, then per
# destination: stream, floor [, inbox, unread, preferences] (the bracketed three when
# the destinations are users). ARGV: notification id, the event's shared rest
# (``shared_rest``), maxlen, ttl_ms, retention, inbox max, "1" when the destinations are
# users, the preference field to ask ('' : ask none), the channel prefix, then the
# destination topics. Answers each destination's event id, '' for a skipped one.
# A destination already ``delivered`` answers its event id and changes nothing; one
# ``skipped`` answers ''; the others are decided (preferences) and written now.
DELIVER_SCRIPT = PUBLISH_FUNCTION + INBOX_ADD_FUNCTION + """
local users, field, first = ARGV[7] == '1', ARGV[8], 10
local stride = users and 5 or 2
local states = redis.call('HMGET', KEYS[2], unpack(ARGV, first))
local events = redis.call('HMGET', KEYS[3], unpack(ARGV, first))
local out, fresh, decided = {}, {}, {}
for i = 1, #ARGV - first + 1 do
  local topic, state = ARGV[first + i - 1], states[i]
  out[i] = ''
  if state == 'delivered' then
    out[i] = events[i] or ''
  elseif state ~= 'skipped' then
    local opted_out = users and field ~= ''
      and redis.call('HGET', KEYS[3 + (i - 1) * stride + 5], field) == '0'
    if opted_out then
      decided[#decided + 1] = topic
      decided[#decided + 1] = 'skipped'
    else
      fresh[#fresh + 1] = i
    end
  end
end
local retention = tonumber(ARGV[5])
if #fresh > 0 then
  local ms = herald_clock(KEYS[1])
  local seq = redis.call('HINCRBY', KEYS[1], 'seq', #fresh) - #fresh
  local sent = {}
  for j, i in ipairs(fresh) do
    local k, topic = 3 + (i - 1) * stride, ARGV[first + i - 1]
    local id = string.format('%d-%d', ms, seq + j)
    herald_append(KEYS[k + 1], KEYS[k + 2], ARGV[9] .. topic, id, ms,
                  '"topic":"' .. topic .. '",' .. ARGV[2], ARGV[3], tonumber(ARGV[4]))
    if users then
      herald_inbox_add(KEYS[k + 3], KEYS[k + 4], ARGV[1], tonumber(ARGV[6]), retention)
    end
    out[i] = id
    decided[#decided + 1] = topic
    decided[#decided + 1] = 'delivered'
    sent[#sent + 1] = topic
    sent[#sent + 1] = id
  end
  redis.call('HSET', KEYS[3], unpack(sent))
  redis.call('EXPIRE', KEYS[3], retention)
end
if #decided > 0 then
  redis.call('HSET', KEYS[2], unpack(decided))
  redis.call('EXPIRE', KEYS[2], retention)
end
return out
"""
DELIVER_SHA = hashlib.sha1(DELIVER_SCRIPT.encode()).hexdigest()
# Destinations per script call: one call holds Redis for its whole run, so a chunk
# bounds that pause for other clients; each call records its progress, so a task that
# runs again skips the chunks done. Measured for 1,000 recipients: the worker's CPU is
# the same from 25 to 1,000 per call (about 2.8 ms); the longest call holds Redis about
# 28 µs per destination (5 ms at 100, 28 ms at 1,000).
DELIVERY_CHUNK = 100
# Destinations per round trip (chunks sent in one pipeline). The last round trip also
# records the channel as dispatched.
ROUND_TRIP = 1000


def event_data(record: dict[str, str]) -> dict[str, Any]:
    """What subscribers receive in a ``notification`` event's ``data``."""
    return {
        "id": record["id"],
        "title": record["title"],
        "body": record["body"],
        "data": json.loads(record["data"]),
        "created_at": iso(record["created_at"]),
    }


def deliver(svc: Services, notification_id: str) -> dict[str, str]:
    """Deliver a stored notification in-app; return destination topic -> event id (the
    destinations that got one: not the skipped).

    Safe to call any number of times (see the module's guarantees). A notification whose
    record has expired or was discarded is skipped. Round trips: one to read the record
    (and mark it ``sending``), then one per ``ROUND_TRIP`` destinations, the last of
    which records the channel as dispatched.
    """
    record = svc.notifications.start(notification_id)
    if record is None:
        log.warning("notification %s has no record (expired or discarded); skipped",
                    notification_id)
        return {}
    destinations = svc.notifications.destinations(record)
    chunk = _Chunk.of(svc, record)
    event_ids: list[str] = []
    for start in range(0, max(len(destinations), 1), ROUND_TRIP):
        batch = destinations[start:start + ROUND_TRIP]
        last = start + ROUND_TRIP >= len(destinations)
        event_ids += _round_trip(svc, chunk, batch, last)
    return {topic: event for topic, event in zip(destinations, event_ids, strict=True)
            if event}


@dataclass(frozen=True)
class _Chunk:
    """What every script call of one notification's delivery shares."""

    keys: list[str]
    args: list[Any]
    users: bool

    @classmethod
    def of(cls, svc: Services, record: dict[str, str]) -> _Chunk:
        notification_id, users = record["id"], not record["topic"]
        asked = users and record.get("critical") != "1"
        keys = [svc.keys.clock, svc.keys.recipient_state(notification_id),
                svc.keys.recipient_event(notification_id)]
        args = [notification_id, shared_rest(EVENT_TYPE, event_data(record)),
                svc.publisher.history_maxlen, svc.publisher.history_ttl_ms,
                svc.config.retention, svc.config.inbox_max, "1" if users else "0",
                preference_field(INAPP, record["category"]) if asked else "",
                svc.keys.channel_prefix]
        return cls(keys, args, users)

    def call(self, svc: Services, topics: list[str]) -> list[Any]:
        """``EVALSHA`` arguments delivering ``topics``."""
        keys = list(self.keys)
        stream, floor, k = svc.keys.stream, svc.keys.floor, svc.keys
        for topic in topics:
            if not valid_topic(topic):
                raise InvalidEvent("topic", f"must match {TOPIC_RULE}")
            keys += (stream(topic), floor(topic))
            if self.users:
                user = topic[len(USER_TOPIC_PREFIX):]
                keys += (k.inbox(user), k.unread(user), k.preferences(user))
        return [DELIVER_SHA, len(keys), *keys, *self.args, *topics]


def _round_trip(svc: Services, chunk: _Chunk, topics: list[str], last: bool) -> list[str]:
    """Deliver ``topics`` in one pipeline of ``DELIVERY_CHUNK``-sized script calls (and
    record the channel dispatched when ``last``); answer their event ids.

    After NOSCRIPT (a restarted Redis) the scripts are loaded and the pipeline sent
    again: what ran already is found done.
    """
    calls = [chunk.call(svc, topics[i:i + DELIVERY_CHUNK])
             for i in range(0, len(topics), DELIVERY_CHUNK)]
    for attempt in range(2):
        pipe = svc.redis.pipeline(transaction=False)
        for call in calls:
            pipe.evalsha(*call)
        if last:
            svc.notifications.queue_dispatched(pipe, chunk.args[0], INAPP)
        try:
            answers = pipe.execute()
            break
        except redis.exceptions.NoScriptError:
            if attempt:
                raise
            svc.redis.script_load(DELIVER_SCRIPT)
            svc.notifications.load_scripts()
    return [str(event) for answer in answers[:len(calls)] for event in answer]


@shared_task(base=NotificationTask, bind=True, name=SEND_NOTIFICATION, **RETRY_ON_REDIS)
def send_notification(self: Task, notification_id: str) -> dict[str, int]:
    """Deliver notification ``notification_id`` (idempotent; see ``deliver``); answer
    how many destinations have their event (what the worker log and Flower show).

    A count, not ``deliver``'s map: a prefork child pickles its task's answer to the
    pool's parent, which formats it for the log and the task event; with a 1,000-entry
    map the parent spent about 3.0 ms of CPU per 1,000-recipient task, with the count
    2.5 ms (20 tasks, psutil's 10 ms ticks: a rough figure).
    """
    return {"events": len(deliver(services_of(self), notification_id))}


def submit(svc: Services, celery: Celery, new: NewNotification,
           idempotency_key: str | None = None) -> Created:
    """Store a notification and send one task per requested channel through ``celery``
    (in-app first); return its id.

    A repeated ``idempotency_key`` stores and dispatches nothing (see
    ``NotificationStore.create``). Raises ``DispatchError`` when the broker cannot take
    a task; the record and the key are then removed, so nothing stays stored, and a
    channel's task already sent finds no record and does nothing (unless a worker ran
    it in the instant before the removal).
    """
    created = svc.notifications.create(new, idempotency_key)
    if not created.created:
        return created
    try:
        for channel in sorted(new.channels, key=lambda name: name != INAPP):
            name, task_id = channel_task(channel, created.id)
            celery.send_task(name, kwargs={"notification_id": created.id}, task_id=task_id)
    except OperationalError as exc:
        svc.notifications.discard(created.id, idempotency_key)
        raise DispatchError(f"broker unavailable: {exc}") from exc
    return created


def channel_task(channel: str, notification_id: str) -> tuple[str, str]:
    """The name and task id of ``channel``'s task for ``notification_id``."""
    if channel == INAPP:
        return SEND_NOTIFICATION, notification_id
    return dispatch_task_name(channel), f"{notification_id}.{channel}"
