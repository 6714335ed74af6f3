"""Dead letters: GET /api/dead-letters and POST /api/dead-letters/<id>/retry.

A dead letter is an outbound delivery (e-mail, webhook) that used up its attempts
(``herald.deliveries``). Both calls need an API key. The list is newest first (by the
time the delivery died), ``limit`` at a time, one channel's (``channel``) or both
channels' merged. A retry revives the delivery (``pending``, no attempts) and sends its
channel's send task again (``tasks.outbound.redeliver``), answering 202 with it; a
delivery that is not dead (unknown, already retried, sent) is 404 and stays as it is.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from api import auth
from api.context import celery, services
from api.schemas import limit
from herald.channels import OUTBOUND
from herald.deliveries import valid_delivery_id
from herald.errors import Refusal, invalid
from tasks.outbound import redeliver

bp = Blueprint("deadletters", __name__, url_prefix="/api/dead-letters")


@bp.get("")
def listing() -> Response:
    """``items``: the newest ``limit`` dead deliveries, of ``channel`` or of all."""
    auth.publisher()
    channel = request.args.get("channel")
    if channel is not None and channel not in OUTBOUND:
        raise invalid("channel", f"must be one of {', '.join(OUTBOUND)}")
    size = limit(request)
    store = services().deliveries
    items: list[dict[str, Any]] = []
    for name in [channel] if channel else OUTBOUND:
        items += store.dead_letters(name, size)
    # A dead letter's last update is its death (a revived one leaves the list).
    items.sort(key=lambda item: item["updated_at"], reverse=True)
    return jsonify(items=items[:size])


@bp.post("/<delivery_id>/retry")
def retry(delivery_id: str) -> tuple[Response, int]:
    """Send a dead delivery again; 202 with it (now ``pending``)."""
    auth.sender()
    revived = redeliver(services(), celery(), delivery_id) if valid_delivery_id(
        delivery_id) else None
    if revived is None:
        raise Refusal(404, "not_found", f"no dead letter {delivery_id!r}", "id")
    return jsonify(revived), 202
