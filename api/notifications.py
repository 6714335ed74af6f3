"""POST /api/notifications and GET /api/notifications/<id>."""

from __future__ import annotations

import re

from flask import Blueprint, Response, jsonify, request, url_for

from api import auth
from api.context import celery, services
from api.schemas import IDEMPOTENCY_KEY_RULE, NotificationIn, parse
from herald.errors import Refusal, invalid
from herald.ids import valid_id
from herald.notifications import NewNotification
from tasks import notifications as delivery

bp = Blueprint("notifications", __name__, url_prefix="/api/notifications")

IDEMPOTENCY_HEADER = "Idempotency-Key"
IDEMPOTENCY_RULE = re.compile(IDEMPOTENCY_KEY_RULE)


@bp.post("")
def create() -> tuple[Response, int]:
    """Store a notification and dispatch its delivery; answer 202 with its id."""
    api_key = auth.sender()
    key = _idempotency_key(api_key.id)
    body = parse(request, NotificationIn)
    new = _validated(body)
    created = delivery.submit(services(), celery(), new, key)
    if created.conflict:
        raise Refusal(422, "idempotency_key_reused",
                      f"{IDEMPOTENCY_HEADER} was used for a different request "
                      f"(notification {created.id})", IDEMPOTENCY_HEADER)
    status_url = url_for("notifications.show", notification_id=created.id, _external=True)
    answer = jsonify(id=created.id, status_url=status_url, created=created.created)
    answer.headers["Location"] = status_url
    return answer, 202


@bp.get("/<notification_id>")
def show(notification_id: str) -> Response:
    """The record with its status, timestamps and per-destination delivery state."""
    auth.publisher()
    if not valid_id(notification_id, "n"):
        raise Refusal(404, "not_found", f"no notification {notification_id!r}", "id")
    record = services().notifications.describe(notification_id)
    if record is None:
        raise Refusal(404, "not_found", f"no notification {notification_id!r}", "id")
    return jsonify(record)


def _idempotency_key(scope: str) -> str | None:
    """The request's key, scoped to the API key (two publishers never collide)."""
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return None
    if not IDEMPOTENCY_RULE.fullmatch(key):
        raise invalid(IDEMPOTENCY_HEADER, "must be 1-255 visible ASCII characters")
    return f"{scope}:{key}"


def _validated(body: NotificationIn) -> NewNotification:
    if (body.recipients is None) == (body.topic is None):
        raise invalid("recipients", "give either recipients or topic, not both")
    recipients = list(dict.fromkeys(body.recipients)) if body.recipients else None
    limit = services().config.max_recipients
    if recipients is not None and len(recipients) > limit:
        raise invalid("recipients", f"at most {limit} recipients; use a topic for more")
    return NewNotification(title=body.title, body=body.body, data=body.data,
                           channels=list(dict.fromkeys(body.channels)),
                           recipients=recipients, topic=body.topic)
