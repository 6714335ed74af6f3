"""Revoked subscriber tokens: a deny list by token id, with a notice to streamers.

Revoking adds the token id to the sorted set ``<prefix>:revoked`` (scored by when the
entry may be forgotten: once the token would have expired anyway) and publishes
``revoke <id>`` on the control channel, so streamers close the token's connections at
once; streamers also reread the list every few seconds, so a missed notice delays a
revocation by seconds, never forever.
"""

from __future__ import annotations

import time

import redis

from herald.keys import Keys

NOTICE = b"revoke "


class Revocations:
    """Reads and writes the deny list of one deployment."""

    def __init__(self, redis_client: redis.Redis, keys: Keys) -> None:
        self.redis = redis_client
        self.key = f"{keys.prefix}:revoked"
        self.control = f"{keys.prefix}:control"

    def revoke(self, token_id: str, until: float) -> None:
        """Deny ``token_id`` until ``until`` (epoch seconds), and tell the streamers."""
        pipe = self.redis.pipeline()
        pipe.zadd(self.key, {token_id: until})
        pipe.zremrangebyscore(self.key, "-inf", time.time())
        pipe.publish(self.control, NOTICE + token_id.encode())
        pipe.execute()

    def is_revoked(self, token_id: str) -> bool:
        score = self.redis.zscore(self.key, token_id)
        return score is not None and score > time.time()

    def current(self) -> set[str]:
        """Every token id denied now."""
        ids = self.redis.zrangebyscore(self.key, time.time(), "+inf")
        return {i.decode() if isinstance(i, bytes) else i for i in ids}
