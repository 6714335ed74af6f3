"""Delivering notifications: inbox entries plus one event per destination.

``deliver`` is a plain function; ``send_notification`` is the Celery task around it,
which owns retries and takes its services from its app (``services_of``); ``submit``
stores a notification and sends that task through the producer's Celery app.

Guarantee (idempotency): for each destination topic, recording the delivery, writing
the inbox entry and publishing the event happen in one Lua script guarded by the
destination's state. Running the task again (broker redelivery with ``acks_late``, a
retry after a lost connection, a worker killed mid-task) finds the destinations already
delivered and adds no inbox entry and no event: each recipient gets exactly one of each.
"""

from __future__ import annotations

import functools
import json
import logging
from typing import Any

import redis
from celery import Celery, Task, shared_task
from kombu.exceptions import OperationalError

from herald.channels import INAPP
from herald.errors import DispatchError
from herald.event import USER_TOPIC_PREFIX, encode_body
from herald.inbox import INBOX_ADD_FUNCTION
from herald.notifications import DELIVERED, FAILED, SENDING, Created, NewNotification
from herald.publisher import PUBLISH_FUNCTION
from herald.services import Services
from herald.times import iso
from tasks.factory import RETRY_ON_REDIS, services_of
from tasks.outbound import dispatch_task_name

log = logging.getLogger(__name__)

EVENT_TYPE = "notification"
SEND_NOTIFICATION = "herald.send_notification"  # the task's name on the broker

# KEYS: clock, stream, floor, state, events, inbox, unread
# ARGV: channel, rest, maxlen, ttl_ms, destination, notification id, retention,
#       inbox max, "1" to write the inbox
DELIVER_SCRIPT = PUBLISH_FUNCTION + INBOX_ADD_FUNCTION + """
local done = redis.call('HGET', KEYS[5], ARGV[5])
if done then return done end
local id = herald_publish(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3],
                          tonumber(ARGV[4]))
local retention = tonumber(ARGV[7])
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
    """Deliver a stored notification; return destination topic -> event id.

    Safe to call any number of times (see the module's guarantee). A notification whose
    record has expired or was discarded is skipped.
    """
    record = svc.notifications.load(notification_id)
    if record is None:
        log.warning("notification %s has no record (expired or discarded); skipped",
                    notification_id)
        return {}
    if record["status"] != DELIVERED:
        svc.notifications.set_status(notification_id, SENDING)
    script = _deliver_script(svc.redis)
    destinations = svc.notifications.destinations(record)
    event_ids: list[str] = []
    for start in range(0, len(destinations), DELIVERY_CHUNK):
        pipe = svc.redis.pipeline(transaction=False)
        for topic in destinations[start:start + DELIVERY_CHUNK]:
            _queue_delivery(svc, pipe, script, record, topic)
        event_ids += [str(e) for e in pipe.execute()]
    svc.notifications.set_status(notification_id, DELIVERED)
    return dict(zip(destinations, event_ids, strict=True))


@functools.cache
def _deliver_script(redis_client: redis.Redis) -> Any:
    return redis_client.register_script(DELIVER_SCRIPT)


def _queue_delivery(svc: Services, pipe: Any, script: Any, record: dict[str, str],
                    topic: str) -> None:
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
             "1" if in_inbox else "0"]
    script(keys=keys, args=args, client=pipe)


class NotificationTask(Task):
    """Marks the notification ``failed`` once retries are exhausted."""

    def on_failure(self, exc: BaseException, task_id: str, args: tuple, kwargs: dict,
                   einfo: Any) -> None:
        notification_id = kwargs.get("notification_id") or (args[0] if args else None)
        if notification_id:
            try:
                services_of(self).notifications.set_status(notification_id, FAILED,
                                                           f"{type(exc).__name__}: {exc}")
            except redis.RedisError:
                log.exception("could not mark notification %s failed", notification_id)


@shared_task(base=NotificationTask, bind=True, name=SEND_NOTIFICATION, **RETRY_ON_REDIS)
def send_notification(self: Task, notification_id: str) -> dict[str, str]:
    """Deliver notification ``notification_id`` (idempotent; see ``deliver``)."""
    return deliver(services_of(self), notification_id)


def submit(svc: Services, celery: Celery, new: NewNotification,
           idempotency_key: str | None = None) -> Created:
    """Store a notification and send one task per channel through ``celery`` (in-app:
    ``send_notification``, task id the notification id; outbound: the channel's
    dispatch, task id ``<id>.<channel>``); return its id.

    A repeated ``idempotency_key`` stores and dispatches nothing (see
    ``NotificationStore.create``). Raises ``DispatchError`` when the broker cannot take
    the task; the record and the key are then removed, so nothing stays stored.
    """
    created = svc.notifications.create(new, idempotency_key)
    if not created.created:
        return created
    try:
        for channel in new.channels:
            if channel == INAPP:
                celery.send_task(SEND_NOTIFICATION, kwargs={"notification_id": created.id},
                                 task_id=created.id)
            else:
                celery.send_task(dispatch_task_name(channel),
                                 kwargs={"notification_id": created.id},
                                 task_id=f"{created.id}.{channel}")
    except OperationalError as exc:
        svc.notifications.discard(created.id, idempotency_key)
        raise DispatchError(f"broker unavailable: {exc}") from exc
    return created
