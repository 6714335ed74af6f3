"""Users' profiles: the ``email``, ``name`` and ``locale`` the outbound channels use.

A profile is a Redis hash per user. ``put`` replaces the whole profile (a field left
out is removed); ``emails`` reads many users' addresses in one round trip. Profiles do
not expire: they are the publisher's data, removed with ``delete``.
"""

from __future__ import annotations

import redis

from herald.keys import Keys

FIELDS = ("email", "name", "locale")


class ProfileStore:
    """Reads and writes users' profiles."""

    def __init__(self, redis_client: redis.Redis, keys: Keys) -> None:
        self.redis = redis_client
        self.keys = keys

    def get(self, user: str) -> dict[str, str | None]:
        """The profile of ``user``: every field of ``FIELDS``, None where unset."""
        stored = self.redis.hgetall(self.keys.profile(user))
        return {name: stored.get(name) or None for name in FIELDS}

    def put(self, user: str, profile: dict[str, str | None]) -> dict[str, str | None]:
        """Replace the profile of ``user`` with the fields of ``profile`` that are set."""
        given = {name: value for name, value in profile.items() if name in FIELDS and value}
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(self.keys.profile(user))
        if given:
            pipe.hset(self.keys.profile(user), mapping=given)
        pipe.execute()
        return {name: given.get(name) for name in FIELDS}

    def delete(self, user: str) -> None:
        self.redis.delete(self.keys.profile(user))

    def emails(self, users: list[str]) -> dict[str, str | None]:
        """User -> e-mail address (None when the profile has none)."""
        pipe = self.redis.pipeline(transaction=False)
        for user in users:
            pipe.hget(self.keys.profile(user), "email")
        return dict(zip(users, pipe.execute(), strict=True))
