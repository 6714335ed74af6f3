"""Webhook endpoints: register, list, show, delete, send a test (API key only).

``POST /api/webhooks`` answers the endpoint with its signing ``secret``: the only answer
that shows it. ``POST /api/webhooks/<id>/test`` sends a ``webhook.test`` delivery through
the webhook channel and answers its ids and ``status_url``
(``GET /api/webhooks/<id>/deliveries/<delivery id>``: its state, attempts and last
error, as for any delivery to that endpoint). The rules are ``herald.webhooks``'s.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request, url_for

from api import auth
from api.context import celery, services
from api.schemas import WebhookIn, parse
from herald.channels import WEBHOOK
from herald.deliveries import public, valid_delivery_id
from herald.errors import Refusal, invalid
from herald.webhooks import Endpoint, TooManyEndpoints, UrlRefused, check_url, valid_endpoint_id
from tasks import webhooks as channel

bp = Blueprint("webhooks", __name__, url_prefix="/api/webhooks")


@bp.post("")
def create() -> tuple[Response, int]:
    """Register an endpoint; answer 201 with it and its secret."""
    auth.publisher()
    body = parse(request, WebhookIn)
    _check(body)
    try:
        endpoint = services().webhooks.create(body.url, body.topics, body.categories,
                                              body.description)
    except TooManyEndpoints as exc:
        raise Refusal(400, "limit_reached", str(exc)) from None
    answer = jsonify(**endpoint.public(), secret=endpoint.secret)
    answer.headers["Location"] = url_for("webhooks.show", endpoint_id=endpoint.id,
                                         _external=True)
    return answer, 201


@bp.get("")
def index() -> Response:
    """Every endpoint, oldest first, without secrets."""
    auth.publisher()
    return jsonify(items=[endpoint.public() for endpoint in services().webhooks.list()])


@bp.get("/<endpoint_id>")
def show(endpoint_id: str) -> Response:
    auth.publisher()
    return jsonify(_endpoint(endpoint_id).public())


@bp.delete("/<endpoint_id>")
def delete(endpoint_id: str) -> tuple[str, int]:
    """Remove an endpoint: 204; deliveries to it still due fail ("endpoint deleted")."""
    auth.publisher()
    if not (valid_endpoint_id(endpoint_id) and services().webhooks.delete(endpoint_id)):
        raise _no_endpoint(endpoint_id)
    return "", 204


@bp.post("/<endpoint_id>/test")
def test(endpoint_id: str) -> tuple[Response, int]:
    """Send a ``webhook.test`` delivery to the endpoint; answer 202 with its ids."""
    auth.sender()
    endpoint = _endpoint(endpoint_id)
    sent = channel.send_test(services(), celery(), endpoint)
    status_url = url_for("webhooks.delivery", endpoint_id=endpoint.id,
                         delivery_id=sent.delivery_id, _external=True)
    answer = jsonify(delivery_id=sent.delivery_id, notification_id=sent.notification_id,
                     status_url=status_url)
    answer.headers["Location"] = status_url
    return answer, 202


@bp.get("/<endpoint_id>/deliveries/<delivery_id>")
def delivery(endpoint_id: str, delivery_id: str) -> Response:
    """A delivery to the endpoint: state, attempts, last error, timestamps."""
    auth.publisher()
    record = services().deliveries.load(delivery_id) if valid_delivery_id(delivery_id) else None
    if record is None or record["channel"] != WEBHOOK or record["target"] != endpoint_id:
        raise Refusal(404, "not_found", f"no delivery {delivery_id!r} to {endpoint_id!r}",
                      "delivery_id")
    return jsonify(public(record))


def _check(body: WebhookIn) -> None:
    """The rules the model cannot check: known categories, something wanted, the URL."""
    cfg = services().config
    unknown = [name for name in body.categories if name not in cfg.categories]
    if unknown:
        raise invalid("categories", f"unknown category {unknown[0]!r}; must be among "
                                    f"{', '.join(cfg.categories)}")
    if not (body.topics or body.categories):
        raise invalid("topics", "give topics, categories or both: what the endpoint wants")
    try:
        check_url(body.url, cfg.webhooks_may_reach_private)
    except UrlRefused as exc:
        raise invalid("url", str(exc)) from None


def _endpoint(endpoint_id: str) -> Endpoint:
    found = services().webhooks.get(endpoint_id) if valid_endpoint_id(endpoint_id) else None
    if found is None:
        raise _no_endpoint(endpoint_id)
    return found


def _no_endpoint(endpoint_id: str) -> Refusal:
    return Refusal(404, "not_found", f"no webhook endpoint {endpoint_id!r}", "id")
