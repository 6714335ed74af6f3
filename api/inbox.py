"""A user's inbox: GET /api/users/<user>/notifications and POST .../read.

Marking read (and telling the user's other tabs) is ``herald.reading``, the same as
the streamer's WebSocket ``read`` command.
"""

from __future__ import annotations

import re

from flask import Blueprint, Response, jsonify, request

from api import auth
from api.context import services
from api.schemas import ReadIn, parse
from herald import reading
from herald.errors import invalid
from herald.event import USER_RULE, valid_user
from herald.ids import valid_id

bp = Blueprint("inbox", __name__, url_prefix="/api/users/<user>/notifications")

DEFAULT_LIMIT, MAX_LIMIT = 20, 100
ASCII_DIGITS = re.compile(r"[0-9]{1,9}")


@bp.get("")
def page(user: str) -> Response:
    """Newest first, ``limit`` at a time; ``next_cursor`` fetches the next page."""
    _check_user(user)
    auth.publisher_or_user(user)
    limit = _limit()
    cursor = request.args.get("cursor") or None
    if cursor is not None and not valid_id(cursor, "n"):
        raise invalid("cursor", "must be a next_cursor value from an earlier page")
    result = services().inbox.page(user, cursor, limit)
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


def _limit() -> int:
    raw = request.args.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    # ASCII digits only: str.isdigit() and int() also take "²" and "٣".
    if not ASCII_DIGITS.fullmatch(raw) or not 1 <= int(raw) <= MAX_LIMIT:
        raise invalid("limit", f"must be an integer from 1 to {MAX_LIMIT} (ASCII digits)")
    return int(raw)
