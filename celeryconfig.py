"""Celery settings of Herald's workers and producers, loaded with ``config_from_object``.

Values come from ``herald.config`` (environment variables); the reliability choices
below are fixed because the delivery guarantees depend on them. Every name Celery uses
on the broker (queue, exchanges, Redis keys) comes from ``herald.keys.Keys``, so it
follows ``HERALD_PREFIX`` like the rest of Herald. Flower loads this module too
(``celery -A tasks.app flower``; it has no flags for these names), which is how it
finds the workers and task events of its own deployment.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from herald import config as _herald_config
from herald.errors import ConfigError
from herald.keys import Keys

try:
    _cfg = _herald_config.get()
except ConfigError as _exc:
    raise SystemExit(f"herald: configuration error: {_exc}") from None
_keys = Keys(_cfg.prefix)

broker_url = _cfg.broker_url
broker_connection_retry_on_startup = True
# Redis broker: a task whose worker died unacknowledged is delivered again after
# visibility_timeout (checked by every worker each restore interval). herald.config
# makes sure it exceeds the task time limit, so a running task is never delivered twice.
broker_transport_options = (
    {"confirm_publish": True}
    if urlsplit(broker_url).scheme.startswith(("amqp", "pyamqp"))
    else {"visibility_timeout": _cfg.visibility_timeout,
          "unacked_restore_interval": _cfg.restore_interval,
          "unacked_restore_throttle": 1,
          "global_keyprefix": _keys.broker_keyprefix}
)

imports = ("tasks.notifications", "tasks.demo", "tasks.events")
task_default_queue = _keys.task_queue
control_exchange = _keys.control_exchange
event_exchange = _keys.event_exchange
task_ignore_result = True  # state lives in Herald's own records, not a result backend

# At-least-once execution: acknowledge after the task, re-send it when its worker
# process dies (bounded by the task's max_retries). Tasks are idempotent.
task_acks_late = True
task_retry_on_worker_lost = True
worker_prefetch_multiplier = 1
worker_cancel_long_running_tasks_on_connection_loss = True
task_time_limit = _cfg.task_time_limit
task_soft_time_limit = max(1, _cfg.task_time_limit - min(30, _cfg.task_time_limit // 10))

# Events for Flower: received/started/succeeded from workers, sent from producers.
worker_send_task_events = True
task_send_sent_event = True

timezone = "UTC"
enable_utc = True
