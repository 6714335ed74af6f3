"""POST /api/events: publish a raw event, for callers that only need fan-out."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from api import auth
from api.context import services
from api.schemas import EventIn, parse
from herald.errors import InvalidEvent, invalid

bp = Blueprint("events", __name__, url_prefix="/api/events")


@bp.post("")
def publish() -> tuple[Response, int]:
    """Append to the topic's history and fan out; answer 202 with the event id."""
    auth.sender()
    body = parse(request, EventIn)
    try:
        event_id = services().publisher.publish(body.topic, body.data, body.type)
    except InvalidEvent as exc:
        raise invalid(exc.field, exc.message) from exc
    return jsonify(id=event_id), 202
