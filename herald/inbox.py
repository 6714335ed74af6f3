"""A user's inbox: the notifications delivered to them, newest first, with read flags.

The inbox is a sorted set of notification ids (all score 0, so ordered by id, which is
ordered by creation time) plus a set of the unread ones. Entries are written by
``INBOX_ADD_FUNCTION``, a Lua function that the delivery script in ``tasks.notifications``
runs in the same step as the event it publishes; ``Inbox`` reads them and marks them read.

Guarantees: pages are stable under concurrent delivery (a cursor is the last id seen,
not an offset); the unread count never counts an entry that is no longer listed; the
newest ``HERALD_INBOX_MAX`` entries are kept.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import redis

from herald.keys import Keys
from herald.times import iso

_FIELDS = ("id", "title", "body", "data", "created_at")

# A Lua function for scripts that deliver (the caller supplies ``Keys.inbox`` and
# ``Keys.unread`` of the user): adds notification ``id`` as unread, keeps the newest
# ``max`` entries (a dropped entry leaves the unread set too, so the count matches what
# is listed) and keeps both keys ``retention`` seconds from now.
INBOX_ADD_FUNCTION = """
local function herald_inbox_add(inbox, unread, id, max, retention)
  redis.call('ZADD', inbox, 0, id)
  redis.call('SADD', unread, id)
  local extra = redis.call('ZCARD', inbox) - max
  if extra > 0 then
    local old = redis.call('ZRANGE', inbox, 0, extra - 1)
    redis.call('ZREMRANGEBYRANK', inbox, 0, extra - 1)
    redis.call('SREM', unread, unpack(old))
  end
  redis.call('EXPIRE', inbox, retention)
  redis.call('EXPIRE', unread, retention)
end
"""


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    unread: int
    next_cursor: str | None


class Inbox:
    """Reads and updates users' inboxes."""

    def __init__(self, redis_client: redis.Redis, keys: Keys) -> None:
        self.redis = redis_client
        self.keys = keys

    def page(self, user: str, cursor: str | None, limit: int) -> Page:
        """Up to ``limit`` entries older than ``cursor`` (or the newest), newest first."""
        top = f"({cursor}" if cursor else "+"
        ids = self.redis.zrange(self.keys.inbox(user), top, "-", desc=True, bylex=True,
                                offset=0, num=limit + 1)
        more = len(ids) > limit
        ids = ids[:limit]
        items = self._items(user, ids)
        next_cursor = ids[-1] if more and ids else None
        return Page(items, self.unread(user), next_cursor)

    def unread(self, user: str) -> int:
        return self.redis.scard(self.keys.unread(user))

    def mark_read(self, user: str, ids: list[str]) -> int:
        """Mark ``ids`` read; return how many were unread."""
        if not ids:
            return 0
        return self.redis.srem(self.keys.unread(user), *ids)

    def mark_all_read(self, user: str) -> int:
        """Mark every entry read; return how many were unread."""
        pipe = self.redis.pipeline()
        pipe.scard(self.keys.unread(user))
        pipe.delete(self.keys.unread(user))
        count, _ = pipe.execute()
        return count

    def _items(self, user: str, ids: list[str]) -> list[dict[str, Any]]:
        if not ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for notification_id in ids:
            pipe.hmget(self.keys.notification(notification_id), _FIELDS)
        pipe.smismember(self.keys.unread(user), ids)
        *rows, unread_flags = pipe.execute()
        items, expired = [], []
        for notification_id, row, unread in zip(ids, rows, unread_flags, strict=True):
            if row[0] is None:
                expired.append(notification_id)
                continue
            items.append(_item(row, bool(unread)))
        if expired:
            self._forget(user, expired)
        return items

    def _forget(self, user: str, ids: list[str]) -> None:
        """Drop entries whose record has expired, so counts match what is listed."""
        pipe = self.redis.pipeline()
        pipe.zrem(self.keys.inbox(user), *ids)
        pipe.srem(self.keys.unread(user), *ids)
        pipe.execute()


def _item(row: list[str | None], unread: bool) -> dict[str, Any]:
    record = dict(zip(_FIELDS, row, strict=True))
    return {
        "id": record["id"],
        "title": record["title"],
        "body": record["body"],
        "data": json.loads(record["data"] or "{}"),
        "created_at": iso(record["created_at"]),
        "read": not unread,
    }
