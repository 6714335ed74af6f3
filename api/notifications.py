"""POST /api/notifications and GET /api/notifications/<id>.

A notification is checked whole before anything is stored: its fields (``api.schemas``)
and what depends on the configuration (a configured category; ``email`` only to
``recipients``, and in production only with ``HERALD_SMTP_URL``). Its record shows one
delivery per (channel, target): in-app per destination, outbound per delivery record.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, Response, jsonify, request, url_for

from api import auth, metrics
from api.context import celery, services
from api.schemas import IDEMPOTENCY_KEY_RULE, NotificationIn, parse
from herald.channels import EMAIL
from herald.config import Config
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
    metrics.accepted(new.channels if created.created else ())
    status_url = url_for("notifications.show", notification_id=created.id, _external=True)
    answer = jsonify(id=created.id, status_url=status_url, created=created.created)
    answer.headers["Location"] = status_url
    return answer, 202


@bp.get("/<notification_id>")
def show(notification_id: str) -> Response:
    """The record with its status, timestamps and its deliveries: in-app first, then
    e-mail and webhooks by channel and target."""
    auth.publisher()
    if not valid_id(notification_id, "n"):
        raise Refusal(404, "not_found", f"no notification {notification_id!r}", "id")
    svc = services()
    record = svc.notifications.describe(notification_id)
    if record is None:
        raise Refusal(404, "not_found", f"no notification {notification_id!r}", "id")
    outbound = sorted(svc.deliveries.of_notification(notification_id),
                      key=lambda item: (item["channel"], item["target"]))
    record["deliveries"] += [_outbound_item(item) for item in outbound]
    return jsonify(record)


def _outbound_item(delivery: dict[str, Any]) -> dict[str, Any]:
    """A delivery record as an item of a notification's ``deliveries``."""
    item = {"channel": delivery["channel"], "target": delivery["target"],
            "id": delivery["id"]}
    item.update((k, v) for k, v in delivery.items() if k not in item and
                k != "notification_id")
    return item


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
    _check_channels(services().config, body)
    return NewNotification(title=body.title, body=body.body, data=body.data,
                           channels=body.channels, recipients=recipients, topic=body.topic,
                           category=body.category, critical=body.critical)


def _check_channels(config: Config, body: NotificationIn) -> None:
    """What the channels and category need from the deployment and the request."""
    if body.category not in config.categories:
        raise invalid("category", f"must be one of {', '.join(config.categories)} "
                                  "(HERALD_CATEGORIES)")
    if EMAIL in body.channels and body.topic is not None:
        raise invalid("channels", "email needs recipients: a topic has no e-mail addresses")
    if EMAIL in body.channels and config.production and config.smtp_url is None:
        raise invalid("channels", "email is not configured (HERALD_SMTP_URL is unset)")
