"""Redis clients, one shared pool per process and URL.

``client()`` is for ordinary commands (redis-py's defaults: 5 s socket timeout,
retries). ``blocking_client()`` is for readers that block longer than that (pub/sub,
``XREAD BLOCK``): no socket timeout, no hidden retries, so the caller sees a lost
connection and decides how to reconnect.
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


@functools.cache
def raw_client(url: str) -> redis.Redis:
    """Like ``client`` but returning bytes (for payloads written straight to sockets)."""
    return redis.Redis.from_url(url, decode_responses=False, health_check_interval=30)


def blocking_client(url: str, connect_timeout: float = 5.0) -> redis.Redis:
    """A new client for a long blocking read; the caller owns its connection."""
    return redis.Redis.from_url(
        url,
        decode_responses=False,
        socket_timeout=None,
        socket_connect_timeout=connect_timeout,
        socket_keepalive=True,
        retry=Retry(NoBackoff(), 0),
        single_connection_client=False,
    )


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
