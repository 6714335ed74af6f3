"""A user's inbox: GET /api/users/<user>/notifications and POST .../read.

Marking read (and telling the user's other tabs) is ``herald.reading``, the same as
the streamer's WebSocket ``read`` command.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from api import auth
from api.context import services
from api.schemas import ReadIn, limit, parse
from herald import reading
from herald.errors import invalid
from herald.event import USER_RULE, valid_user
from herald.ids import valid_id

bp = Blueprint("inbox", __name__, url_prefix="/api/users/<user>/notifications")


@bp.get("")
def page(user: str) -> Response:
    """Newest first, ``limit`` at a time; ``next_cursor`` fetches the next page."""
    _check_user(user)
    auth.publisher_or_user(user)
    size = limit(request)
    cursor = request.args.get("cursor") or None
    if cursor is not None and not valid_id(cursor, "n"):
        raise invalid("cursor", "must be a next_cursor value from an earlier page")
    result = services().inbox.page(user, cursor, size)
    return jsonify(items=result.items, unread=result.unread, next_cursor=result.next_cursor)


@bp.post("/read")
def mark_read(user: str) -> Response:
    """Mark ``ids`` (or ``all``) read; other tabs learn it from a ``notification.read``."""
    _check_user(user)
    auth.publisher_or_user(user)
    body = parse(request, ReadIn)
    ids = reading.selection(body.ids, body.all)
    svc = services()
    done = reading.mark_read(svc.inbox, svc.publisher, user, ids)
    return jsonify(marked=done.marked, unread=done.unread)


def _check_user(user: str) -> None:
    if not valid_user(user):
        raise invalid("user", f"must match {USER_RULE}")
