"""``publish``: the one function any process calls to fan out an event.

It uses the process-wide ``herald.publisher.Publisher`` built from the environment's
configuration; see that module for the delivery guarantee. ``publish_event`` is the
same as a Celery task: when Redis is briefly unreachable it retries with backoff, under
one idempotency key (its task id), so the event lands in history once.
"""

from __future__ import annotations

from typing import Any

from herald import services
from tasks.app import RETRY_ON_REDIS, app


def publish(topic: str, data: Any, type: str = "message", key: str | None = None) -> str:
    """Publish ``data`` as an event of ``type`` on ``topic``; return the event id.

    ``key`` makes a retried call publish once (see ``Publisher.publish``). Raises
    ``herald.errors.InvalidEvent`` naming the bad field before anything is sent, and
    ``redis.RedisError`` when Redis cannot be reached.
    """
    return services.default().publisher.publish(topic, data, type, key)


@app.task(bind=True, name="herald.publish_event", **RETRY_ON_REDIS)
def publish_event(self: Any, topic: str, data: Any, type: str = "message") -> str:
    """Publish from a worker, retrying until Redis takes it; once, whatever the retries."""
    return publish(topic, data, type, key=f"task:{self.request.id}")
