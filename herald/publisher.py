"""Publishing events: appending to history and fanning out, in one step.

``Publisher.publish(topic, data, type)`` appends the event to the topic's history (a
Redis Stream) and publishes it on the topic's channel in one Lua script, so an event is
either in both or in neither. It returns the event id.

Delivery guarantee: an event that ``publish`` returned an id for is in the history for
``HERALD_HISTORY_TTL`` seconds (at most about ``HERALD_HISTORY_MAXLEN`` per topic) and
was offered, at most once, to every streamer subscribed at that moment; streamers fill
what they missed from the history. A caller that retries after a connection error
without a key may publish the event twice (at-least-once); with a key (or, for
notifications, the delivery record) it lands once. When trimming drops events, the
topic's floor key records the first id kept, so a resume can tell a gap from silence.
"""

from __future__ import annotations

import hashlib
from typing import Any

import redis

from herald.errors import InvalidEvent
from herald.event import MAX_DATA_BYTES, encode_body
from herald.keys import Keys

_LONGEST_TOPIC = 128  # the bound of herald.event.TOPIC_RULE

# Lua functions shared by every script that publishes; its caller supplies the keys.
# Ids are <ms>-<seq>: Redis' clock (never going back) and one sequence for the whole
# deployment, so ids order all events of all topics and each is a valid stream id.
# ``herald_publish`` publishes one event; a script publishing many reads the clock once
# (``herald_clock``), takes its sequence numbers with one HINCRBY and calls
# ``herald_append`` per event, in increasing id order.
PUBLISH_FUNCTION = """
local function herald_clock(clock)
  local t = redis.call('TIME')
  local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local last_ms = tonumber(redis.call('HGET', clock, 'ms')) or 0
  if ms < last_ms then ms = last_ms end
  redis.call('HSET', clock, 'ms', string.format('%d', ms))
  return ms
end
local function herald_append(stream, floor, channel, id, ms, rest, maxlen, ttl_ms)
  local envelope = '{"id":"' .. id .. '","ts":' .. string.format('%d', ms) .. ',' .. rest
  redis.call('XADD', stream, id, 'e', envelope)
  local trimmed = redis.call('XTRIM', stream, 'MAXLEN', '~', maxlen)
    + redis.call('XTRIM', stream, 'MINID', '~', string.format('%d', ms - ttl_ms))
  if trimmed > 0 then
    local first = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)
    redis.call('SET', floor, first[1][1], 'PX', ttl_ms)
  end
  redis.call('PEXPIRE', stream, ttl_ms)
  redis.call('PUBLISH', channel, envelope)
end
local function herald_publish(clock, stream, floor, channel, rest, maxlen, ttl_ms)
  local ms = herald_clock(clock)
  local id = string.format('%d-%d', ms, redis.call('HINCRBY', clock, 'seq', 1))
  herald_append(stream, floor, channel, id, ms, rest, maxlen, ttl_ms)
  return id
end
"""

# KEYS: clock, stream, floor [, published key]; ARGV: channel, rest, maxlen, ttl_ms
PUBLISH_SCRIPT = PUBLISH_FUNCTION + """
if KEYS[4] then
  local done = redis.call('GET', KEYS[4])
  if done then return done end
end
local id = herald_publish(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3],
                          tonumber(ARGV[4]))
if KEYS[4] then redis.call('SET', KEYS[4], id, 'PX', tonumber(ARGV[4])) end
return id
"""


class Publisher:
    """Publishes events through one Redis client; safe to share between threads."""

    def __init__(self, redis_client: redis.Redis, keys: Keys, history_maxlen: int,
                 history_ttl: int) -> None:
        self.redis = redis_client
        self.keys = keys
        self.history_maxlen = history_maxlen
        self.history_ttl_ms = history_ttl * 1000
        self._script = redis_client.register_script(PUBLISH_SCRIPT)

    def publish(self, topic: str, data: Any, type: str = "message",
                key: str | None = None) -> str:
        """Append to history and fan out; return the event id.

        With ``key``, publishing is idempotent: while the event is in history, the same
        key returns the first call's id and publishes nothing (use it when a caller
        retries after a lost connection). Raises ``herald.errors.InvalidEvent`` (bad
        topic, type or data) before touching Redis, and ``redis.RedisError`` when Redis
        cannot be reached.
        """
        keys, args = self.history_args(topic, encode_body(topic, type, data))
        if key is not None:
            keys.append(self.keys.published(hashlib.sha256(key.encode()).hexdigest()))
        return _text(self._script(keys=keys, args=args))

    def history_args(self, topic: str, rest: str) -> tuple[list[str], list[Any]]:
        """Keys and arguments of ``herald_publish`` for one event, for composed scripts."""
        keys = [self.keys.clock, self.keys.stream(topic), self.keys.floor(topic)]
        args = [self.keys.channel(topic), rest, self.history_maxlen, self.history_ttl_ms]
        return keys, args


def shared_rest(type: str, data: Any) -> str:
    """What follows the topic in the envelope of events that differ only by topic.

    ``'"topic":"' + topic + '",' + shared_rest(type, data)`` is ``encode_body(topic,
    type, data)`` for every valid topic (the topic rule leaves nothing to escape), so a
    fan-out encodes its data once, not once per topic.
    Raises ``InvalidEvent`` as ``encode_body`` does (the size rule is checked with the
    longest topic the rule allows).
    """
    body = encode_body("x", type, data)
    shared = body[len('"topic":"x",'):]
    # encode_body counts "{" + body; the body's one-byte topic may be _LONGEST_TOPIC.
    if len(body.encode()) + _LONGEST_TOPIC > MAX_DATA_BYTES:
        raise InvalidEvent("data", f"encoded event must be at most {MAX_DATA_BYTES} bytes")
    return shared


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
