"""Herald's Celery applications: ``make_celery(config)`` builds one from a ``Config``.

Guarantees:
- building an app reads no environment variable and opens no connection: its Celery
  settings come from the ``Config`` it is given (``tasks.settings``), applied when
  Celery first needs one;
- every app runs the same tasks: they are declared with ``shared_task`` in
  ``tasks.settings.TASK_MODULES``, and a producer sends them by name through its app;
- a task reaches Redis only through ``services_of(task)``: the ``Services`` of the app
  running it, built once per app (and process) from that app's ``Config``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import cached_property
from typing import Any

import redis
from celery import Celery, Task

from herald import services as herald_services
from herald.config import Config
from herald.notifications import FAILED
from herald.services import Services
from tasks.settings import celery_settings

log = logging.getLogger(__name__)

# The retry policy of tasks whose work is Redis writes: retried with capped, jittered
# backoff while Redis is unreachable, and at once after a lost worker process (the
# tasks are idempotent, so running again is safe).
RETRY_ON_REDIS = {
    "autoretry_for": (redis.ConnectionError, redis.TimeoutError),
    "retry_backoff": True,
    "retry_backoff_max": 60,
    "retry_jitter": True,
    "max_retries": 10,
    "default_retry_delay": 1,
}


class HeraldCelery(Celery):
    """A Celery app carrying the Herald ``Config`` it was built for, and its services.

    ``config`` is a ``Config``, or a function returning one that is called once, when
    the app first needs its settings (``tasks.app`` reads the environment that way).
    """

    def __init__(self, config: Config | Callable[[], Config], *,
                 set_as_current: bool = False) -> None:
        super().__init__("herald", set_as_current=set_as_current)
        self._herald_config = config
        self.add_defaults(lambda: celery_settings(self.herald_config))

    @cached_property
    def herald_config(self) -> Config:
        """The configuration this app was built for."""
        source = self._herald_config
        return source if isinstance(source, Config) else source()

    @cached_property
    def services(self) -> Services:
        """The stores and publisher this app's tasks use (one Redis pool per process)."""
        return herald_services.build(self.herald_config)


def make_celery(config: Config) -> HeraldCelery:
    """A Celery app for ``config``: to send tasks (the API) or run them (a worker)."""
    return HeraldCelery(config)


def services_of(task: Task) -> Services:
    """The services a running task uses: those of the app it runs in.

    The one way a task reaches Herald's stores and publisher.
    """
    app = task.app
    if not isinstance(app, HeraldCelery):
        raise TypeError(f"task {task.name} runs in {app!r}, not a Herald Celery app")
    return app.services


class NotificationTask(Task):
    """A task of one notification's channel (``notification_id``), or of several
    (``notification_ids``): marks each notification ``failed``, with the reason, once
    its retries are exhausted."""

    def on_failure(self, exc: BaseException, task_id: str, args: tuple, kwargs: dict,
                   einfo: Any) -> None:
        ids = kwargs.get("notification_ids") or [
            kwargs.get("notification_id") or (args[0] if args else None)]
        for notification_id in filter(None, ids):
            try:
                services_of(self).notifications.set_status(notification_id, FAILED,
                                                           f"{type(exc).__name__}: {exc}")
            except redis.RedisError:
                log.exception("could not mark notification %s failed", notification_id)
