"""Users' notification preferences: each channel on or off per category.

Stored as a hash per user, ``<channel>:<category>`` -> ``0`` or ``1``; what is not set
is on. ``put`` replaces a user's preferences; ``turn_off`` changes one (the one-click
unsubscribe); ``opted_out`` answers, for many users at once, who turned a channel off for
a category. A ``critical`` notification is not asked about (see ``tasks``). Preferences
do not expire.

A user sets preferences for ``USER_CHANNELS``, the channels that reach the user: in-app
and e-mail. A webhook goes to an endpoint of the publisher's, on behalf of no one user,
so there is no user's preference to ask. ``effective`` answers every (channel, category)
pair of a deployment, on or off: what a settings page shows.
"""

from __future__ import annotations

from collections.abc import Iterable

import redis

from herald.channels import EMAIL, INAPP
from herald.keys import Keys

Preferences = dict[str, dict[str, bool]]  # channel -> category -> on
USER_CHANNELS: tuple[str, ...] = (INAPP, EMAIL)


def field(channel: str, category: str) -> str:
    """The hash field holding ``channel``'s setting for ``category`` (``0``: off)."""
    return f"{channel}:{category}"


def effective(stored: Preferences, categories: Iterable[str]) -> Preferences:
    """Every channel of ``USER_CHANNELS`` with every one of ``categories``: on unless
    ``stored`` turns it off. Stored pairs outside those are left out."""
    names = tuple(categories)
    return {channel: {category: stored.get(channel, {}).get(category, True)
                      for category in names}
            for channel in USER_CHANNELS}


class PreferenceStore:
    """Reads and writes users' preferences."""

    def __init__(self, redis_client: redis.Redis, keys: Keys) -> None:
        self.redis = redis_client
        self.keys = keys

    def get(self, user: str) -> Preferences:
        """What ``user`` set, by channel then category (unset pairs are on)."""
        out: Preferences = {}
        for name, value in self.redis.hgetall(self.keys.preferences(user)).items():
            channel, _, category = name.partition(":")
            out.setdefault(channel, {})[category] = value == "1"
        return out

    def put(self, user: str, preferences: Preferences) -> Preferences:
        """Replace the preferences of ``user``; answer them as ``get`` would."""
        fields = {field(channel, category): "1" if on else "0"
                  for channel, categories in preferences.items()
                  for category, on in categories.items()}
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(self.keys.preferences(user))
        if fields:
            pipe.hset(self.keys.preferences(user), mapping=fields)
        pipe.execute()
        return self.get(user)

    def turn_off(self, user: str, channel: str, category: str) -> None:
        """Turn ``channel`` off for ``category`` (the rest of the preferences stay)."""
        self.redis.hset(self.keys.preferences(user), field(channel, category), "0")

    def opted_out(self, users: list[str], channel: str, category: str) -> set[str]:
        """Those of ``users`` who turned ``channel`` off for ``category``."""
        pipe = self.redis.pipeline(transaction=False)
        for user in users:
            pipe.hget(self.keys.preferences(user), field(channel, category))
        return {user for user, value in zip(users, pipe.execute(), strict=True)
                if value == "0"}
