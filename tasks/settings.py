"""Celery settings of Herald's workers and producers, built from a ``Config``.

``celery_settings(config)`` is what ``tasks.factory.make_celery`` gives every Celery app:
values from the configuration, plus reliability choices that are fixed because the
delivery guarantees depend on them. Every name Celery uses on the broker (queue,
exchanges, Redis keys) comes from ``herald.keys.Keys``, so it follows ``HERALD_PREFIX``
like the rest of Herald; Flower (``celery -A tasks.app flower``; it has no flags for
these names) finds the workers and task events of its own deployment that way.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from kombu import Exchange, Queue

from herald.channels import CHANNELS, INAPP, queues
from herald.config import Config
from herald.keys import Keys

__all__ = ["TASK_MODULES", "celery_settings", "queues", "routes"]  # queues: from herald.channels

# The modules whose tasks a worker runs (Celery's ``imports``; ``tasks.jobs.kinds``).
TASK_MODULES = ("tasks.notifications", "tasks.email", "tasks.webhooks", "tasks.demo")


def celery_settings(config: Config) -> dict[str, Any]:
    """Celery's settings (lowercase names) for ``config``."""
    keys = Keys(config.prefix)
    limit = config.task_time_limit
    return {
        # Celery prefers CELERY_BROKER_URL from the environment to broker_url, but reads
        # these two first: an app uses its Config's broker whatever the environment says.
        "broker_url": config.broker_url,
        "broker_read_url": config.broker_url,
        "broker_write_url": config.broker_url,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": _transport_options(config, keys),
        "imports": TASK_MODULES,
        "task_default_queue": keys.task_queue,
        # One queue per channel, so a slow outside service never holds up in-app
        # delivery: a worker started without -Q consumes all of them.
        "task_queues": [Queue(name, Exchange(name), routing_key=name) for name in queues(keys)],
        "task_routes": routes(keys),
        "control_exchange": keys.control_exchange,
        "event_exchange": keys.event_exchange,
        "task_ignore_result": True,  # state lives in Herald's own records, no result backend
        # At-least-once execution: acknowledge after the task, re-send it when its worker
        # process dies (bounded by the task's max_retries). Tasks are idempotent.
        "task_acks_late": True,
        "task_retry_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "task_time_limit": limit,
        "task_soft_time_limit": max(1, limit - min(30, limit // 10)),
        # Events for Flower: received/started/succeeded from workers, sent from producers.
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "timezone": "UTC",
        "enable_utc": True,
    }


def routes(keys: Keys) -> dict[str, dict[str, str]]:
    """Celery's ``task_routes``: each channel's tasks to the channel's queue."""
    inapp = {"queue": keys.channel_queue(INAPP)}
    table = {"herald.send_notification": inapp, "herald.send_notifications": inapp}
    for channel in CHANNELS:
        table[f"herald.{channel}.*"] = {"queue": keys.channel_queue(channel)}
    return table


def _transport_options(config: Config, keys: Keys) -> dict[str, Any]:
    """RabbitMQ: confirmed publishing. Redis: redelivery of a dead worker's tasks.

    On Redis a task whose worker died unacknowledged is delivered again after the
    visibility timeout (checked by every worker each restore interval); ``Config``
    makes sure it exceeds the task time limit, so a running task is never delivered twice.
    """
    if urlsplit(config.broker_url).scheme.startswith(("amqp", "pyamqp")):
        return {"confirm_publish": True}
    return {"visibility_timeout": config.visibility_timeout,
            "unacked_restore_interval": config.restore_interval,
            "unacked_restore_throttle": 1,
            "global_keyprefix": keys.broker_keyprefix}
