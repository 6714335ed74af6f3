"""``publish``: the one function any process calls to fan out an event.

It uses the process-wide ``herald.publisher.Publisher`` built from the environment's
configuration; see that module for the delivery guarantee.
"""

from __future__ import annotations

from typing import Any

from herald import services


def publish(topic: str, data: Any, type: str = "message") -> str:
    """Publish ``data`` as an event of ``type`` on ``topic``; return the event id.

    Raises ``herald.errors.InvalidEvent`` naming the bad field before anything is sent,
    and ``redis.RedisError`` when Redis cannot be reached.
    """
    return services.default().publisher.publish(topic, data, type)
