"""A user's inbox: GET /api/users/<user>/notifications and POST .../read."""

from __future__ import annotations

import re

from flask import Blueprint, Response, jsonify, request

from api import auth
from api.context import services
from api.errors import invalid
from api.schemas import ReadIn, parse
from herald.event import USER_RULE, user_topic, valid_user
from herald.ids import valid_id

bp = Blueprint("inbox", __name__, url_prefix="/api/users/<user>/notifications")

DEFAULT_LIMIT, MAX_LIMIT = 20, 100
ASCII_DIGITS = re.compile(r"[0-9]{1,9}")
READ_EVENT = "notification.read"


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
    if (body.ids is None) == (body.all is None) or body.all is False:
        raise invalid("ids", "give either ids (a list) or all: true")
    svc = services()
    if body.all:
        marked = svc.inbox.mark_all_read(user)
    else:
        marked = svc.inbox.mark_read(user, body.ids or [])
    unread = svc.inbox.unread(user)
    if marked:
        svc.publisher.publish(user_topic(user),
                              {"ids": body.ids, "all": bool(body.all), "unread": unread},
                              READ_EVENT)
    return jsonify(marked=marked, unread=unread)


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
