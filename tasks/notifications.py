"""Notifications: submitting them to their channels, and delivering them in-app.

``submit`` stores a notification and sends one task per requested channel through the
producer's Celery app: ``herald.send_notification`` for in-app (task id: the notification
id), ``herald.<channel>.dispatch`` for e-mail and webhooks (task id
``<notification id>.<channel>``; see ``tasks.outbound``), each routed to its channel's
queue. ``submit_as`` does the same for many notifications of an API key's request,
checking the key and spending its budget in the same round trip as the records
(``NotificationStore.submit``). ``dispatch`` sends the tasks of any number of
notifications in one broker round trip on Redis (a kombu publish batch: each task
message and its ``task-sent`` event, which lets Flower show a task before a worker takes
it). Sent together, notifications share their in-app tasks: ``herald.send_notifications``
delivers up to ``GROUP_NOTIFICATIONS`` of them (``GROUP_DESTINATIONS`` destinations),
each exactly as its own ``send_notification`` would, since a Celery message costs the
API about 0.25 ms of CPU and the worker more (measured on the batch route). The API's
single POSTs get there too: its processes send through a ``tasks.grouping.GroupCommit``
around ``dispatch`` (``submit_as``'s ``send``), so requests that store their records
while a publish is in flight go out together in the next. ``deliver`` is the in-app
work, a plain function (``deliver_all`` for a shared task's notifications, in two round
trips for all); ``send_notification`` is the Celery task around it,
which owns retries and takes its services from its app (``services_of``). The
notification's ``status`` follows its channels' tasks (see ``herald.notifications``):
``delivered`` once each has run.

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
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import redis
from celery import Celery, Task, shared_task
from kombu.exceptions import BatchPublishError, OperationalError
from kombu.utils.functional import retry_over_time

from herald.channels import INAPP
from herald.errors import DispatchError, InvalidEvent
from herald.event import TOPIC_RULE, USER_TOPIC_PREFIX, valid_topic
from herald.inbox import INBOX_ADD_FUNCTION
from herald.notifications import Created, NewNotification, Submitted
from herald.preferences import field as preference_field
from herald.publisher import PUBLISH_FUNCTION, shared_rest
from herald.services import Services
from herald.times import iso
from tasks import metrics
from tasks.factory import RETRY_ON_REDIS, NotificationTask, services_of
from tasks.outbound import dispatch_task_name

log = logging.getLogger(__name__)

EVENT_TYPE = "notification"
SEND_NOTIFICATION = "herald.send_notification"  # the task's name on the broker
SEND_NOTIFICATIONS = "herald.send_notifications"  # in-app delivery of several
# A shared in-app task holds at most this many notifications and destinations, so that
# its run stays short (a retry redoes its checks, not its deliveries) and a batch
# spreads over the worker processes.
GROUP_NOTIFICATIONS = 50
GROUP_DESTINATIONS = 500

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
# Hands stored ``(id, notification)`` pairs to the broker (``dispatch`` with an app),
# or raises ``DispatchError``.
Send = Callable[[list[tuple[str, NewNotification]]], None]


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
        _skipped(notification_id)
        return {}
    destinations = svc.notifications.destinations(record)
    chunk = _Chunk.of(svc, record)
    event_ids: list[str] = []
    for start in range(0, max(len(destinations), 1), ROUND_TRIP):
        batch = destinations[start:start + ROUND_TRIP]
        last = start + ROUND_TRIP >= len(destinations)
        event_ids += _round_trip(svc, [(chunk, batch, last)])[0]
    metrics.inapp_delivered(INAPP, event_ids)
    return {topic: event for topic, event in zip(destinations, event_ids, strict=True)
            if event}


def deliver_all(svc: Services, notification_ids: list[str]) -> int:
    """``deliver`` each of ``notification_ids``; answer how many destinations have
    their event.

    The same guarantees as ``deliver``, notification by notification (each runs its own
    guarded scripts, then records its own channel dispatched), in fewer round trips:
    one starts them all, then one delivers as many whole notifications as
    ``ROUND_TRIP`` destinations hold (a shared task has at most ``GROUP_DESTINATIONS``:
    one); a notification with more goes alone, as ``deliver`` sends it.
    """
    records = svc.notifications.start_all(notification_ids)
    events, group, size = 0, [], 0
    for notification_id, record in zip(notification_ids, records, strict=True):
        if record is None:
            _skipped(notification_id)
            continue
        destinations = svc.notifications.destinations(record)
        if group and size + len(destinations) > ROUND_TRIP:
            events += _count(_round_trip(svc, group))
            group, size = [], 0
        if len(destinations) > ROUND_TRIP:
            events += len(deliver(svc, notification_id))
            continue
        group.append((_Chunk.of(svc, record), destinations, True))
        size += len(destinations)
    return events + (_count(_round_trip(svc, group)) if group else 0)


def _count(event_ids: list[list[str]]) -> int:
    """How many destinations have their event (and count them all in the metrics)."""
    flat = [event for ids in event_ids for event in ids]
    metrics.inapp_delivered(INAPP, flat)
    return sum(1 for event in flat if event)


def _skipped(notification_id: str) -> None:
    log.warning("notification %s has no record (expired or discarded); skipped",
                notification_id)


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


def _round_trip(svc: Services, parts: list[tuple[_Chunk, list[str], bool]]
                ) -> list[list[str]]:
    """Deliver each ``(chunk, topics, last)`` in one pipeline of ``DELIVERY_CHUNK``-sized
    script calls (recording its notification's channel dispatched when ``last``, after
    its own calls); answer each part's event ids.

    After NOSCRIPT (a restarted Redis) the scripts are loaded and the pipeline sent
    again: what ran already is found done.
    """
    calls = [[chunk.call(svc, topics[i:i + DELIVERY_CHUNK])
              for i in range(0, len(topics), DELIVERY_CHUNK)]
             for chunk, topics, _ in parts]
    for attempt in range(2):
        pipe = svc.redis.pipeline(transaction=False)
        for (chunk, _, last), own in zip(parts, calls, strict=True):
            for call in own:
                pipe.evalsha(*call)
            if last:
                svc.notifications.queue_dispatched(pipe, chunk.args[0], INAPP)
        try:
            answers = iter(pipe.execute())
            break
        except redis.exceptions.NoScriptError:
            if attempt:
                raise
            svc.redis.script_load(DELIVER_SCRIPT)
            svc.notifications.load_scripts()
    out = []
    for (_, _, last), own in zip(parts, calls, strict=True):
        out.append([str(event) for _ in own for event in next(answers)])
        if last:
            next(answers)  # the status dispatched left
    return out


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


@shared_task(base=NotificationTask, bind=True, name=SEND_NOTIFICATIONS, **RETRY_ON_REDIS)
def send_notifications(self: Task, notification_ids: list[str]) -> int:
    """Deliver each of ``notification_ids`` as ``send_notification`` does, in two
    round trips for all (``deliver_all``; idempotent: a retry or redelivery skips what
    is done); answer their number."""
    deliver_all(services_of(self), notification_ids)
    return len(notification_ids)


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
    if created.created:
        _dispatch_or_discard(svc, partial(dispatch, celery),
                             [(created, new, idempotency_key)])
    return created


def submit_as(svc: Services, send: Send, credential: tuple[str, str],
              items: list[tuple[NewNotification, str | None]]) -> Submitted:
    """Submit each ``(notification, idempotency key)`` for the API key ``credential``
    (``herald.apikeys.split``): the key is checked, one unit of its budget spent per
    item and the records stored in one round trip, then the new ones handed to
    ``send`` (``dispatch`` with the producer's app; the API's processes pass a
    ``tasks.grouping.GroupCommit`` around it, so that concurrent requests share it).

    Nothing is stored or sent for an unknown key or a spent budget (see ``Submitted``).
    Raises ``DispatchError`` when the broker cannot take the tasks: every record this
    call stored is removed with its idempotency key (as ``submit`` does), so nothing of
    the request stays stored.
    """
    submitted = svc.notifications.submit(credential, svc.limiter, items)
    fresh = [(created, new, key) for created, (new, key) in
             zip(submitted.created, items, strict=False) if created.created]
    if fresh:
        _dispatch_or_discard(svc, send, fresh)
    return submitted


def _dispatch_or_discard(svc: Services, send: Send,
                         stored: list[tuple[Created, NewNotification, str | None]]) -> None:
    try:
        send([(created.id, new) for created, new, _ in stored])
    except DispatchError:
        svc.notifications.discard_all([(created.id, key) for created, _, key in stored])
        raise


def dispatch(celery: Celery, notifications: list[tuple[str, NewNotification]]) -> None:
    """Send the tasks of each stored ``(id, notification)``, in one kombu publish batch:
    one round trip to a Redis broker, whatever their number (transports without batches
    publish one by one). In-app tasks first; several notifications share theirs
    (``send_notifications``).

    A batch that fails is sent again whole under the app's
    ``task_publish_retry_policy`` (a message that got through before the failure is
    then sent twice: the tasks are idempotent). Raises ``DispatchError`` when the
    broker still cannot take them.
    """
    tasks = _tasks(notifications)
    policy = {"max_retries": 3, "interval_start": 0, "interval_step": 0.2,
              "interval_max": 1, **(celery.conf.task_publish_retry_policy or {})}
    try:
        retry_over_time(_send_batch, BatchPublishError, args=(celery, tasks),
                        max_retries=policy["max_retries"],
                        interval_start=policy["interval_start"],
                        interval_step=policy["interval_step"],
                        interval_max=policy["interval_max"])
    except (OperationalError, BatchPublishError) as exc:
        raise DispatchError(f"broker unavailable: {exc}") from exc


# A task to send: its name, id and keyword arguments.
TaskMessage = tuple[str, str, dict[str, Any]]


def _tasks(notifications: list[tuple[str, NewNotification]]) -> list[TaskMessage]:
    """The tasks of ``notifications``: in-app ones grouped, then the outbound ones."""
    inapp = [(notification_id, len(new.recipients) if new.recipients else 1)
             for notification_id, new in notifications if INAPP in new.channels]
    tasks = [_inapp_task(group) for group in _groups(inapp)]
    for notification_id, new in notifications:
        for channel in sorted(set(new.channels) - {INAPP}):
            tasks.append((dispatch_task_name(channel), f"{notification_id}.{channel}",
                          {"notification_id": notification_id}))
    return tasks


def _groups(inapp: list[tuple[str, int]]) -> list[list[str]]:
    """Consecutive ids, at most ``GROUP_NOTIFICATIONS`` and (unless one alone has more)
    ``GROUP_DESTINATIONS`` destinations per group."""
    groups: list[list[str]] = []
    size = GROUP_DESTINATIONS
    for notification_id, destinations in inapp:
        if (not groups or len(groups[-1]) == GROUP_NOTIFICATIONS
                or size + destinations > GROUP_DESTINATIONS):
            groups.append([])
            size = 0
        groups[-1].append(notification_id)
        size += destinations
    return groups


def _inapp_task(ids: list[str]) -> TaskMessage:
    if len(ids) == 1:
        return SEND_NOTIFICATION, ids[0], {"notification_id": ids[0]}
    return SEND_NOTIFICATIONS, f"{ids[0]}..{ids[-1]}", {"notification_ids": ids}


def _send_batch(celery: Celery, tasks: list[TaskMessage]) -> None:
    # Two broker commands per task: the message and its task-sent event.
    with celery.producer_or_acquire() as producer, producer.batch(max_size=2 * len(tasks)):
        for name, task_id, kwargs in tasks:
            celery.send_task(name, kwargs=kwargs, task_id=task_id, producer=producer)
