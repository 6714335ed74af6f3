"""POST /api/notifications, POST /api/notifications/batch and GET /api/notifications/<id>.

A notification is checked whole before anything is stored: its fields (``api.schemas``)
and what depends on the configuration (a configured category; ``email`` only to
``recipients``, and in production only with ``HERALD_SMTP_URL``). Its record shows one
delivery per (channel, target): in-app per destination, outbound per delivery record.

A valid request costs two round trips: one Lua script checks the API key, spends its
rate budget and stores the records (``tasks.notifications.submit_as``), one kombu batch
sends the tasks, shared with the requests of this process that stored theirs while the
previous batch was in flight (``tasks.grouping``: their in-app notifications then share
one ``herald.send_notifications`` task). When that batch fails, each of its requests
answers 503 and its records are removed, as for a request alone. An invalid one is
checked and charged first (``auth.sender``), so it gets 401, 403 or 429 before its 400,
as every route answers.

A batch (``MAX_BATCH_ITEMS`` notifications, ``MAX_BATCH_BODY_BYTES``) is checked item
by item: an invalid item is refused alone, in its place in the answer, naming
``items[<index>].<field>``; the others are stored and dispatched together, each
spending one unit of the key's rate budget. When every item is invalid the answer is
the 400 of the first. When the broker cannot take the tasks, every record of the
request is removed again and the answer is 503: nothing of it stays stored.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, Response, jsonify, request, url_for
from werkzeug.exceptions import HTTPException

from api import auth, metrics
from api.context import send, services
from api.schemas import (
    IDEMPOTENCY_KEY_RULE,
    MAX_BATCH_BODY_BYTES,
    BatchEnvelope,
    BatchItemIn,
    NotificationIn,
    parse,
    validate,
)
from herald.channels import EMAIL
from herald.config import Config
from herald.errors import Refusal, invalid
from herald.ids import valid_id
from herald.notifications import Created, NewNotification, Submitted
from tasks import notifications as delivery

bp = Blueprint("notifications", __name__, url_prefix="/api/notifications")

IDEMPOTENCY_HEADER = "Idempotency-Key"
IDEMPOTENCY_RULE = re.compile(IDEMPOTENCY_KEY_RULE)


@bp.post("")
def create() -> tuple[Response, int]:
    """Store a notification and dispatch its delivery; answer 202 with its id."""
    credential = auth.presented_key()
    try:
        key = _idempotency_key(credential[0], request.headers.get(IDEMPOTENCY_HEADER),
                               IDEMPOTENCY_HEADER)
        new = _validated(parse(request, NotificationIn))
    except (Refusal, HTTPException):
        auth.sender()  # 401, 403 and 429 come before the 400
        raise
    created = _admitted(delivery.submit_as(services(), send(), credential,
                                           [(new, key)]))[0]
    if created.conflict:
        raise _reused(created, IDEMPOTENCY_HEADER)
    metrics.accepted(new.channels if created.created else ())
    status_url = url_for("notifications.show", notification_id=created.id, _external=True)
    answer = jsonify(id=created.id, status_url=status_url, created=created.created)
    answer.headers["Location"] = status_url
    return answer, 202


@bp.post("/batch")
def create_batch() -> tuple[Response, int]:
    """Store and dispatch the valid items of a batch; answer 202 with one result per
    item, in order: its ``id`` (``created``, ``status_url``) or its ``error``."""
    credential = auth.presented_key()
    try:
        items = parse(request, BatchEnvelope, MAX_BATCH_BODY_BYTES).items
    except (Refusal, HTTPException):
        auth.sender()
        raise
    checked = [_checked_item(credential[0], index, item) for index, item in enumerate(items)]
    results: dict[int, Refusal | Created] = {
        index: item for index, item in enumerate(checked) if isinstance(item, Refusal)}
    valid = [(index, item) for index, item in enumerate(checked)
             if not isinstance(item, Refusal)]
    if not valid:
        auth.sender()
        raise results[0]  # type: ignore[misc]  # every item is a Refusal
    created = _admitted(delivery.submit_as(services(), send(), credential,
                                           [item for _, item in valid]))
    for (index, (new, _)), outcome in zip(valid, created, strict=True):
        results[index] = (_reused(outcome, f"items[{index}].idempotency_key")
                          if outcome.conflict else outcome)
        metrics.accepted(new.channels if outcome.created else ())
    base = url_for("notifications.create", _external=True)
    answer = [_result(index, results[index], base) for index in range(len(checked))]
    accepted = sum(1 for outcome in results.values() if isinstance(outcome, Created))
    return jsonify(accepted=accepted, refused=len(checked) - accepted, items=answer), 202


def _checked_item(scope: str, index: int,
                  item: Any) -> tuple[NewNotification, str | None] | Refusal:
    """Item ``index`` of a batch, validated, with its scoped idempotency key; or the
    refusal naming its field (``items[3].title``)."""
    prefix = f"items[{index}]"
    try:
        body = validate(item, BatchItemIn, prefix)
        key = _idempotency_key(scope, body.idempotency_key, f"{prefix}.idempotency_key")
        return _validated(body), key
    except Refusal as refusal:
        if refusal.field is not None and not refusal.field.startswith(prefix):
            field = f"{prefix}.{refusal.field}"
            return invalid(field, refusal.message.removeprefix(f"{refusal.field}: "))
        return refusal


def _result(index: int, outcome: Refusal | Created, base: str) -> dict[str, Any]:
    if isinstance(outcome, Refusal):
        return {"index": index, "error": outcome.error()}
    return {"index": index, "id": outcome.id, "status_url": f"{base}/{outcome.id}",
            "created": outcome.created}


def _admitted(submitted: Submitted) -> tuple[Created, ...]:
    """The outcomes of a submission its API key was allowed; 401 or 429 otherwise."""
    if submitted.key is None:
        raise auth.unknown_key()
    if submitted.wait > 0:
        raise auth.rate_limited(submitted.key, submitted.wait)
    return submitted.created


def _reused(created: Created, field: str) -> Refusal:
    return Refusal(422, "idempotency_key_reused",
                   f"{field} was used for a different request "
                   f"(notification {created.id})", field)


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


def _idempotency_key(scope: str, key: str | None, field: str) -> str | None:
    """An idempotency key (given in ``field``), scoped to the API key ``scope`` (two
    publishers never collide)."""
    if key is None:
        return None
    if not IDEMPOTENCY_RULE.fullmatch(key):
        raise invalid(field, "must be 1-255 visible ASCII characters")
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
