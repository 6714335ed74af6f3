"""Marking a user's inbox entries read, and telling the user's other tabs.

The one implementation behind ``POST /api/users/<user>/notifications/read`` and the
WebSocket ``read`` command.

Guarantees:
- ``selection`` accepts either ``ids`` (1 to ``MAX_READ_IDS`` notification ids) or
  ``all`` true, and refuses anything else with a 400 ``invalid_field`` naming ``ids``;
- ``mark_read`` marks the entries read and answers how many were unread and how many
  remain unread; when it marked any, it publishes one ``notification.read`` event on the
  user's own topic, ``{"ids", "all", "unread"}`` (``ids`` None when ``all``), so every
  tab of the user updates its count. Nothing is published when nothing changed.
"""

from __future__ import annotations

from dataclasses import dataclass

from herald.errors import invalid
from herald.event import user_topic
from herald.ids import valid_id
from herald.inbox import Inbox
from herald.publisher import Publisher

READ_EVENT = "notification.read"
MAX_READ_IDS = 1000


@dataclass(frozen=True, slots=True)
class Marked:
    """How many entries were unread and are read now, and how many remain unread."""

    marked: int
    unread: int


def selection(ids: object, everything: object) -> list[str] | None:
    """The ids a request to mark read names, or None for all of them."""
    if everything is True and ids is None:
        return None
    if (everything is not None or not isinstance(ids, list) or not ids
            or len(ids) > MAX_READ_IDS or not all(valid_id(i, "n") for i in ids)):
        raise invalid("ids", f'give either "ids" (1-{MAX_READ_IDS} notification ids) or '
                      '"all": true')
    return ids


def mark_read(inbox: Inbox, publisher: Publisher, user: str, ids: list[str] | None) -> Marked:
    """Mark ``ids`` (None: all) of ``user``'s inbox read and announce it (see the module)."""
    marked = inbox.mark_all_read(user) if ids is None else inbox.mark_read(user, ids)
    unread = inbox.unread(user)
    if marked:
        publisher.publish(user_topic(user), {"ids": ids, "all": ids is None, "unread": unread},
                          READ_EVENT)
    return Marked(marked, unread)
