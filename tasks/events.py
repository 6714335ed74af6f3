"""``publish``: fan out an event from a script or a test, configured by its environment.

Code that has ``Services`` publishes with ``services.publisher.publish`` (the API, the
tasks, the CLI), the same code; see ``herald.publisher`` for the delivery guarantee.
``publish`` is for code that has none: it uses the services of ``tasks.app.app``, the
Celery entry point configured from the environment.
"""

from __future__ import annotations

from typing import Any


def publish(topic: str, data: Any, type: str = "message", key: str | None = None) -> str:
    """Publish ``data`` as an event of ``type`` on ``topic``; return the event id.

    ``key`` makes a retried call publish once (see ``Publisher.publish``). Raises
    ``herald.errors.InvalidEvent`` naming the bad field before anything is sent, and
    ``redis.RedisError`` when Redis cannot be reached.
    """
    from tasks.app import app  # the entry point: configured from the environment

    return app.services.publisher.publish(topic, data, type, key)
