"""A token bucket per name in Redis: ``rate`` per second, bursts of ``burst``.

The bucket is refilled and spent in one Lua script, so every process shares one limit
per name: the API's per API key, the workers' per outbound channel or webhook endpoint
(Celery's own ``rate_limit`` is per worker process). ``take`` answers how long to wait
when the bucket is empty.
"""

from __future__ import annotations

from collections.abc import Callable

import redis

# herald_take(key, rate, burst, n): spend ``n`` tokens of the bucket at ``key``; answers
# 0, or the seconds to wait. ``n`` is admitted once the bucket holds min(n, burst) tokens
# and may leave it below zero: a batch larger than the burst passes on a full bucket, and
# the caller's next sends wait until the debt is refilled, so over time no more than
# ``rate`` per second pass. Other scripts include it (the API's submit script).
TAKE_FUNCTION = """
local function herald_take(key, rate, burst, n)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
  local state = redis.call('HMGET', key, 'tokens', 'at')
  local tokens = tonumber(state[1]) or burst
  local at = tonumber(state[2]) or now
  tokens = math.min(burst, tokens + (now - at) * rate)
  local need = math.min(n, burst)
  if tokens < need then return (need - tokens) / rate end
  tokens = tokens - n
  redis.call('HSET', key, 'tokens', tostring(tokens), 'at', tostring(now))
  redis.call('EXPIRE', key, math.ceil((burst - tokens) / rate) + 1)
  return 0
end
"""

_TAKE = TAKE_FUNCTION + """
return tostring(herald_take(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), 1))
"""


class RateLimiter:
    """Shared token buckets, one per name, stored at ``key_of(name)`` (a ``Keys`` method)."""

    def __init__(self, redis_client: redis.Redis, key_of: Callable[[str], str], rate: float,
                 burst: int) -> None:
        self.redis = redis_client
        self.key_of = key_of
        self.rate = rate
        self.burst = burst
        self._take = redis_client.register_script(_TAKE)

    def take(self, name: str) -> float:
        """Spend one token of ``name``'s bucket: 0 if allowed, else seconds to wait."""
        wait = self._take(keys=[self.key_of(name)], args=[self.rate, self.burst])
        return float(wait)
