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
API about 0.25 ms of CPU and the worker more (measured on the batch route). ``deliver``
is the in-app work, a plain function; ``send_notification`` is the Celery task around it,
which owns retries and takes its services from its app (``services_of``). The
notification's ``status`` follows its channels' tasks (see ``herald.notifications``):
``delivered`` once each has run.

Guarantees of ``deliver``:
- idempotency: for each destination topic, recording the delivery, writing the inbox
  entry and publishing the event happen in one Lua script guarded by the destination's
  state. Running the task again (broker redelivery with ``acks_late``, a retry after a
  lost connection, a worker killed mid-task) finds the destinations already done and
  adds no inbox entry and no event: each recipient gets exactly one of each;
- preferences: a recipient who turned in-app off for the notification's category gets
  no inbox entry and no event, unless the notification is ``critical``; the destination
  is recorded ``skipped`` (``opted out``) in the same guarded step, so a run after the
  user changed their mind does not change what was decided. A topic notification has no
  known users: it is not filtered.
"""

from __future__ import annotations

import functools
import json
import logging
from typing import Any

import redis
from celery import Celery, Task, shared_task
from kombu.exceptions import BatchPublishError, OperationalError
from kombu.utils.functional import retry_over_time

from herald.channels import INAPP
from herald.errors import DispatchError
from herald.event import USER_TOPIC_PREFIX, encode_body
from herald.inbox import INBOX_ADD_FUNCTION
from herald.notifications import Created, NewNotification, Submitted
from herald.publisher import PUBLISH_FUNCTION
from herald.services import Services
from herald.times import iso
from tasks.factory import RETRY_ON_REDIS, NotificationTask, services_of
from tasks.outbound import dispatch_task_name, opted_out

log = logging.getLogger(__name__)

EVENT_TYPE = "notification"
SEND_NOTIFICATION = "herald.send_notification"  # the task's name on the broker
SEND_NOTIFICATIONS = "herald.send_notifications"  # in-app delivery of several
# A shared in-app task holds at most this many notifications and destinations, so that
# its run stays short (a retry redoes its checks, not its deliveries) and a batch
# spreads over the worker processes.
GROUP_NOTIFICATIONS = 50
GROUP_DESTINATIONS = 500

# KEYS: clock, stream, floor, state, events, inbox, unread
# ARGV: channel, rest, maxlen, ttl_ms, destination, notification id, retention,
#       inbox max, "1" to write the inbox, "1" to skip (opted out)
# Answers the event id, or '' for a skipped destination.
DELIVER_SCRIPT = PUBLISH_FUNCTION + INBOX_ADD_FUNCTION + """
local done = redis.call('HGET', KEYS[5], ARGV[5])
if done then return done end
local retention = tonumber(ARGV[7])
if redis.call('HGET', KEYS[4], ARGV[5]) == 'skipped' then return '' end
if ARGV[10] == '1' then
  redis.call('HSET', KEYS[4], ARGV[5], 'skipped')
  redis.call('EXPIRE', KEYS[4], retention)
  return ''
end
local id = herald_publish(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3],
                          tonumber(ARGV[4]))
redis.call('HSET', KEYS[4], ARGV[5], 'delivered')
redis.call('HSET', KEYS[5], ARGV[5], id)
redis.call('EXPIRE', KEYS[4], retention)
redis.call('EXPIRE', KEYS[5], retention)
if ARGV[9] == '1' then
  herald_inbox_add(KEYS[6], KEYS[7], ARGV[6], tonumber(ARGV[8]), retention)
end
return id
"""
# Destinations per round trip: bounds memory for large recipient lists, and progress
# is recorded as it goes (a redelivered task skips what is done).
DELIVERY_CHUNK = 100


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
    record has expired or was discarded is skipped.
    """
    record = svc.notifications.load(notification_id)
    if record is None:
        log.warning("notification %s has no record (expired or discarded); skipped",
                    notification_id)
        return {}
    svc.notifications.begin(notification_id)
    script = _deliver_script(svc.redis)
    destinations = svc.notifications.destinations(record)
    event_ids: list[str] = []
    for start in range(0, len(destinations), DELIVERY_CHUNK):
        chunk = destinations[start:start + DELIVERY_CHUNK]
        skipped = _opted_out_topics(svc, record, chunk)
        pipe = svc.redis.pipeline(transaction=False)
        for topic in chunk:
            _queue_delivery(svc, pipe, script, record, topic, topic in skipped)
        event_ids += [str(e) for e in pipe.execute()]
    svc.notifications.dispatched(notification_id, INAPP)
    return {topic: event for topic, event in zip(destinations, event_ids, strict=True)
            if event}


def _opted_out_topics(svc: Services, record: dict[str, str], topics: list[str]) -> set[str]:
    """The user topics among ``topics`` whose users turned in-app off (none for a topic
    notification, nor a critical one)."""
    if record["topic"]:
        return set()
    users = [topic[len(USER_TOPIC_PREFIX):] for topic in topics]
    return {USER_TOPIC_PREFIX + user for user in opted_out(svc, record, users, INAPP)}


@functools.cache
def _deliver_script(redis_client: redis.Redis) -> Any:
    return redis_client.register_script(DELIVER_SCRIPT)


def _queue_delivery(svc: Services, pipe: Any, script: Any, record: dict[str, str],
                    topic: str, skip: bool) -> None:
    rest = encode_body(topic, EVENT_TYPE, event_data(record))
    keys, args = svc.publisher.history_args(topic, rest)
    user = topic[len(USER_TOPIC_PREFIX):] if topic.startswith(USER_TOPIC_PREFIX) else None
    notification_id = record["id"]
    keys += [
        svc.keys.recipient_state(notification_id),
        svc.keys.recipient_event(notification_id),
        svc.keys.inbox(user or "-"),
        svc.keys.unread(user or "-"),
    ]
    in_inbox = user is not None and not record["topic"]
    args += [topic, notification_id, svc.config.retention, svc.config.inbox_max,
             "1" if in_inbox else "0", "1" if skip else "0"]
    script(keys=keys, args=args, client=pipe)


@shared_task(base=NotificationTask, bind=True, name=SEND_NOTIFICATION, **RETRY_ON_REDIS)
def send_notification(self: Task, notification_id: str) -> dict[str, str]:
    """Deliver notification ``notification_id`` (idempotent; see ``deliver``)."""
    return deliver(services_of(self), notification_id)


@shared_task(base=NotificationTask, bind=True, name=SEND_NOTIFICATIONS, **RETRY_ON_REDIS)
def send_notifications(self: Task, notification_ids: list[str]) -> int:
    """Deliver each of ``notification_ids`` in turn, as ``send_notification`` does
    (idempotent: a retry or redelivery skips what is done); answer their number."""
    svc = services_of(self)
    for notification_id in notification_ids:
        deliver(svc, notification_id)
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
        _dispatch_or_discard(svc, celery, [(created, new, idempotency_key)])
    return created


def submit_as(svc: Services, celery: Celery, credential: tuple[str, str],
              items: list[tuple[NewNotification, str | None]]) -> Submitted:
    """Submit each ``(notification, idempotency key)`` for the API key ``credential``
    (``herald.apikeys.split``): the key is checked, one unit of its budget spent per
    item and the records stored in one round trip, then the new ones dispatched
    together (``dispatch``).

    Nothing is stored or sent for an unknown key or a spent budget (see ``Submitted``).
    Raises ``DispatchError`` when the broker cannot take the tasks: every record this
    call stored is removed with its idempotency key (as ``submit`` does), so nothing of
    the request stays stored.
    """
    submitted = svc.notifications.submit(credential, svc.limiter, items)
    fresh = [(created, new, key) for created, (new, key) in
             zip(submitted.created, items, strict=False) if created.created]
    if fresh:
        _dispatch_or_discard(svc, celery, fresh)
    return submitted


def _dispatch_or_discard(svc: Services, celery: Celery,
                         stored: list[tuple[Created, NewNotification, str | None]]) -> None:
    try:
        dispatch(celery, [(created.id, new) for created, new, _ in stored])
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
            name, task_id = channel_task(channel, notification_id)
            tasks.append((name, task_id, {"notification_id": notification_id}))
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


def channel_task(channel: str, notification_id: str) -> tuple[str, str]:
    """The name and task id of ``channel``'s task for ``notification_id``."""
    if channel == INAPP:
        return SEND_NOTIFICATION, notification_id
    return dispatch_task_name(channel), f"{notification_id}.{channel}"
