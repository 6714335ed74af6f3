"""``publish`` for scripts and tests, and ``publish_event``, the same as a Celery task.

Code that has ``Services`` publishes with ``services.publisher.publish`` (the API, the
tasks, the CLI); see ``herald.publisher`` for the delivery guarantee. ``publish`` is for
code that has none (a script, a test): it uses the services of ``tasks.app.app``, the
Celery entry point configured from the environment. ``publish_event`` retries with
backoff while Redis is briefly unreachable, under one idempotency key (its task id), so
the event lands in history once.
"""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task

from tasks.factory import RETRY_ON_REDIS, services_of


def publish(topic: str, data: Any, type: str = "message", key: str | None = None) -> str:
    """Publish ``data`` as an event of ``type`` on ``topic``; return the event id.

    ``key`` makes a retried call publish once (see ``Publisher.publish``). Raises
    ``herald.errors.InvalidEvent`` naming the bad field before anything is sent, and
    ``redis.RedisError`` when Redis cannot be reached.
    """
    from tasks.app import app  # the entry point: configured from the environment

    return app.services.publisher.publish(topic, data, type, key)


@shared_task(bind=True, name="herald.publish_event", **RETRY_ON_REDIS)
def publish_event(self: Task, topic: str, data: Any, type: str = "message") -> str:
    """Publish from a worker, retrying until Redis takes it; once, whatever the retries."""
    return services_of(self).publisher.publish(topic, data, type, key=f"task:{self.request.id}")
