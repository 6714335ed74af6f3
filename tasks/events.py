"""``publish``: fan out an event from any Python process configured by its environment.

A shortcut to the ``Publisher`` of the process-wide services (``herald.services``), for
scripts and tests; see ``herald.publisher`` for the delivery guarantee. The API, the
workers and the CLI call their own ``Services.publisher``, the same code.
"""

from __future__ import annotations

from typing import Any

from herald import services


def publish(topic: str, data: Any, type: str = "message", key: str | None = None) -> str:
    """Publish ``data`` as an event of ``type`` on ``topic``; return the event id.

    ``key`` makes a retried call publish once (see ``Publisher.publish``). Raises
    ``herald.errors.InvalidEvent`` naming the bad field before anything is sent, and
    ``redis.RedisError`` when Redis cannot be reached.
    """
    return services.default().publisher.publish(topic, data, type, key)
