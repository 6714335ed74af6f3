"""Redis clients: one shared pool per process and URL, and a reachability probe.

``client()`` is for ordinary commands (redis-py's defaults: 5 s socket timeout,
retries). The streamer's subscription does not use it: it reads pub/sub through its
own connection (``streamer.pubsub``).
"""

from __future__ import annotations

import functools

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry


@functools.cache
def client(url: str) -> redis.Redis:
    """A decoded (str) client on a pool shared by the whole process."""
    return redis.Redis.from_url(url, decode_responses=True, health_check_interval=30)


def answers(url: str, timeout: float = 1.0) -> bool:
    """True when a Redis server answers PING at ``url``."""
    probe = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                 retry=Retry(NoBackoff(), 0))
    try:
        return bool(probe.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        probe.close()
