"""The OpenAPI 3.1 description of the API, served at ``GET /api/openapi.json``.

Request bodies come from the same pydantic models the handlers validate with; answers
are described by the models below. ``tests/integration/test_openapi.py`` checks real
answers against this document, and schemathesis fuzzes the live API with it, so it
cannot drift from what the API does.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from flask import Blueprint, Response, jsonify
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from api.schemas import (
    IDEMPOTENCY_KEY_RULE,
    MAX_BATCH_BODY_BYTES,
    MAX_BATCH_ITEMS,
    EventIn,
    JobIn,
    NotificationBatchIn,
    NotificationIn,
    PreferencesIn,
    ProfileIn,
    ReadIn,
    RevokeIn,
    TokenIn,
    WebhookIn,
)
from herald.channels import OUTBOUND
from herald.deliveries import DELIVERY_ID_RULE, STATES
from herald.event import USER_RULE
from herald.ids import id_rule
from herald.unsubscribe import TOKEN_RULE
from herald.webhooks import ID_PREFIX as WEBHOOK_ID_PREFIX

bp = Blueprint("openapi", __name__)


class Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorDetail(Out):
    field: str | None
    message: str
    code: str


class ErrorBody(Out):
    code: str
    message: str
    field: str | None
    details: list[ErrorDetail] | None = None


class Error(Out):
    error: ErrorBody


class NotificationAccepted(Out):
    id: str
    status_url: str
    created: bool


class BatchItemAccepted(Out):
    """A batch item stored and dispatched (``created``), or the earlier notification
    of its ``idempotency_key`` (``created`` false)."""

    index: int
    id: str
    status_url: str
    created: bool


class BatchItemRefused(Out):
    """A batch item refused alone: ``error.field`` is ``items[<index>].<field>``
    (``invalid_field``), or its key was used for a different request
    (``idempotency_key_reused``, the earlier id in the message)."""

    index: int
    error: ErrorBody


class BatchAccepted(Out):
    """One result per item, in the order of the request."""

    accepted: int
    refused: int
    items: list[BatchItemAccepted | BatchItemRefused]


DeliveryState = Literal[STATES]  # type: ignore[valid-type]  # herald.deliveries' states


class InappDelivery(Out):
    """A notification's in-app delivery to a user (or its topic)."""

    channel: Literal["inapp"]
    target: str
    state: Literal["pending", "sent", "skipped"]
    attempts: int
    error: str | None
    next_attempt_at: None
    created_at: str
    updated_at: str
    sent_at: str | None
    event_id: str | None


class OutboundDelivery(Out):
    """A notification's delivery to an e-mail recipient or a webhook endpoint."""

    channel: Literal["email", "webhook"]
    target: str
    id: str
    state: DeliveryState
    attempts: int
    error: str | None
    next_attempt_at: str | None
    created_at: str
    updated_at: str
    sent_at: str | None


class NotificationRecord(Out):
    id: str
    status: Literal["queued", "sending", "delivered", "failed"]
    title: str
    body: str
    data: dict[str, Any]
    channels: list[Literal["inapp", "email", "webhook"]]
    recipients: list[str] | None
    topic: str | None
    category: str
    critical: bool
    error: str | None
    created_at: str
    updated_at: str
    deliveries: list[Annotated[InappDelivery | OutboundDelivery,
                               Field(discriminator="channel")]]


class DeliveryRecord(OutboundDelivery):
    """An outbound delivery on its own (a dead letter, a retried one): it names its
    notification."""

    notification_id: str


class DeadLetters(Out):
    items: list[DeliveryRecord]


class InboxItem(Out):
    id: str
    title: str
    body: str
    data: dict[str, Any]
    created_at: str
    read: bool


class InboxPage(Out):
    items: list[InboxItem]
    unread: int
    next_cursor: str | None


class Marked(Out):
    marked: int
    unread: int


class EventAccepted(Out):
    id: str


class JobAccepted(Out):
    id: str
    status_url: str


class Progress(Out):
    done: int
    total: int


class JobRecord(Out):
    id: str
    kind: str
    owner: str
    params: dict[str, Any]
    state: Literal["queued", "started", "retrying", "succeeded", "failed"]
    progress: Progress
    result: Any
    error: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    updated_at: str


class TokenMinted(Out):
    token: str
    token_id: str
    user: str
    topics: list[str]
    expires_at: str
    stream_url: str


class Revoked(Out):
    token_id: str
    revoked: bool


class Profile(Out):
    """A user's profile; null where unset."""

    email: str | None
    name: str | None
    locale: str | None


class Preferences(Out):
    """Every channel a user chooses with every category of the deployment
    (HERALD_CATEGORIES, in order): true when on (the default), false when turned off.
    A settings page renders one switch per (channel, category) from it, and may
    ``PUT`` it back changed."""

    inapp: dict[str, bool]
    email: dict[str, bool]


class Webhook(Out):
    id: str
    url: str
    topics: list[str]
    categories: list[str]
    description: str
    created_at: str


class WebhookCreated(Webhook):
    secret: str


class WebhookList(Out):
    items: list[Webhook]


class WebhookTestSent(Out):
    delivery_id: str
    notification_id: str
    status_url: str


class Health(Out):
    status: Literal["ok", "unavailable"]
    redis: str
    broker: str


MODELS: list[type[BaseModel]] = [
    NotificationIn, NotificationBatchIn, BatchAccepted, EventIn, JobIn, TokenIn, ReadIn,
    RevokeIn, Error, NotificationAccepted,
    NotificationRecord, InboxPage, Marked, EventAccepted, JobAccepted, JobRecord,
    TokenMinted, Revoked, Health, DeliveryRecord, DeadLetters, ProfileIn, PreferencesIn,
    Profile, Preferences, WebhookIn, Webhook, WebhookCreated, WebhookList,
    WebhookTestSent,
]
ERRORS = {
    "400": "A field breaks its rule (the error names it), or the body is not JSON.",
    "401": "No valid API key or token in `Authorization: Bearer`.",
    "403": "The credentials do not allow this.",
    "404": "No such resource.",
    "405": "Method not allowed on this path.",
    "413": "Body over 64 KiB (a batch: over its own limit, see its description).",
    "415": "Body is not `application/json`.",
    "422": "The Idempotency-Key was used for a different request.",
    "429": "The API key's rate limit is reached (see `Retry-After`).",
    "503": "Redis or the broker is unavailable (retry after `Retry-After` seconds); "
           "nothing was stored, dispatched or published.",
}
USER = {"name": "user", "in": "path", "required": True,
        "schema": {"type": "string", "pattern": f"^{USER_RULE}$"}}
LIMIT = {"name": "limit", "in": "query", "required": False,
         "schema": {"type": "integer", "minimum": 1, "maximum": 100}}


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(model: type[BaseModel], description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": _ref(model)}}}


def _operation(summary: str, ok: tuple[str, type[BaseModel], str], errors: list[str],
               body: type[BaseModel] | None = None, params: list[dict] | None = None,
               auth: bool = True) -> dict[str, Any]:
    status, model, description = ok
    responses = {status: _json(model, description)}
    if auth:  # every authenticated call reads Redis, which may be away
        errors = [*dict.fromkeys([*errors, "503"])]
    responses.update({code: _json(Error, ERRORS[code]) for code in errors})
    operation: dict[str, Any] = {"summary": summary, "responses": responses}
    if body is not None:
        operation["requestBody"] = {
            "required": True, "content": {"application/json": {"schema": _ref(body)}}}
    if params:
        operation["parameters"] = params
    operation["security"] = [{"bearer": []}] if auth else []
    return operation


def _path_id(name: str, pattern: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True,
            "schema": {"type": "string", "pattern": pattern}}


SENDING = ["400", "401", "403", "413", "415", "429", "503"]
WRITING = ["400", "401", "403", "413", "415"]


def _html(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"text/html": {"schema": {"type": "string"}}}}


def _unsubscribe(summary: str, description: str, ok: str) -> dict[str, Any]:
    """An operation of the unsubscribe pages: HTML, the signed token its credential."""
    not_found = _html("The token's category is no longer sent (HTML page), or the path "
                      "is not a token.")
    not_found["content"]["application/json"] = {"schema": _ref(Error)}
    return {
        "summary": summary, "description": description, "security": [],
        "parameters": [_path_id("token", f"^{TOKEN_RULE}$")],
        "responses": {
            "200": _html(ok),
            "400": _html("The token was altered or cut short, or the body is not "
                         "`List-Unsubscribe=One-Click`; nothing changed."),
            "404": not_found,
            "413": _json(Error, ERRORS["413"]),
            "503": _json(Error, ERRORS["503"]),
        },
    }


def users() -> dict[str, Any]:
    """The profile and preferences of a user."""
    token_or_key = "An API key, or the user's own token (another user's: 403)."
    return {
        "/api/users/{user}/profile": {
            "get": _operation("A user's profile", ("200", Profile, "The profile."),
                              ["400", "401", "403"], params=[USER])
            | {"description": token_or_key},
            "put": _operation("Replace a user's profile", ("200", Profile, "As stored."),
                              WRITING, ProfileIn, [USER])
            | {"description": "An API key only: the address is the publisher's data "
                              "(Herald does not verify that a user owns it), so a user's "
                              "token is answered 403."}},
        "/api/users/{user}/preferences": {
            "get": _operation("A user's preferences, every channel and category",
                              ("200", Preferences, "The preferences."),
                              ["400", "401", "403"], params=[USER])
            | {"description": token_or_key},
            "put": _operation("Replace a user's preferences",
                              ("200", Preferences, "As stored, as GET answers them."),
                              WRITING, PreferencesIn, [USER])
            | {"description": f"{token_or_key} A pair left out is on; a category not "
                              "in HERALD_CATEGORIES is answered 400 naming it "
                              "(`email.promo`)."}},
    }


def unsubscribe() -> dict[str, Any]:
    """The one-click unsubscribe pages (RFC 8058)."""
    one_click = {"type": "object", "required": ["List-Unsubscribe"],
                 "properties": {"List-Unsubscribe": {"const": "One-Click"}}}
    post = _unsubscribe(
        "Unsubscribe: turn the user's e-mail off for the token's category",
        "RFC 8058 one-click unsubscribe, also what the page's button posts. The signed "
        "token is the credential. Posting again changes nothing more.",
        "Done (or done before); a confirmation page.")
    post["requestBody"] = {"required": True, "content": {
        "application/x-www-form-urlencoded": {"schema": one_click}}}
    return {"/api/unsubscribe/{token}": {
        "get": _unsubscribe(
            "The unsubscribe page: a question and its button",
            "Changes nothing (mail scanners open links); the button POSTs.",
            "The page."),
        "post": post}}


def _batch() -> dict[str, Any]:
    operation = _operation(
        "Store and dispatch up to 1,000 notifications at once",
        ("202", BatchAccepted, "The valid items are stored and dispatched; each item's "
                               "result is its id or its error."),
        SENDING, NotificationBatchIn)
    operation["description"] = (
        f"1 to {MAX_BATCH_ITEMS} notifications, a body of at most {MAX_BATCH_BODY_BYTES} "
        "bytes (413 beyond). Each item is checked on its own: an invalid one is refused "
        "alone (its `error.field` is `items[<index>].<field>`) and the others are stored "
        "and dispatched; 400 only when the list itself is invalid or every item is (the "
        "error names the first). Each item may carry its own `idempotency_key`, in the "
        "same namespace as the `Idempotency-Key` header. Each stored item spends one unit "
        "of the API key's rate budget: the batch is admitted when the budget holds as "
        "many (or a full burst, for a batch larger than the burst, which the key then "
        "repays before its next send), else 429 and nothing is stored. 503: the broker "
        "could not take the tasks and nothing of the request was stored.")
    return operation


def paths() -> dict[str, Any]:
    idempotency = {"name": "Idempotency-Key", "in": "header", "required": False,
                   "schema": {"type": "string", "pattern": f"^{IDEMPOTENCY_KEY_RULE}$"}}
    return {
        "/api/notifications": {"post": _operation(
            "Store a notification and dispatch its delivery",
            ("202", NotificationAccepted, "Accepted (or the earlier one, same key)."),
            [*SENDING, "422"], NotificationIn, [idempotency])},
        "/api/notifications/batch": {"post": _batch()},
        "/api/notifications/{id}": {"get": _operation(
            "A notification with its delivery state",
            ("200", NotificationRecord, "The record."), ["401", "403", "404"],
            params=[_path_id("id", "^.+$")])},
        "/api/users/{user}/notifications": {"get": _operation(
            "A user's inbox, newest first",
            ("200", InboxPage, "One page."), ["400", "401", "403"],
            params=[USER,
                    {"name": "cursor", "in": "query", "required": False,
                     "schema": {"type": "string"}},
                    LIMIT])},
        "/api/users/{user}/notifications/read": {"post": _operation(
            "Mark inbox entries read", ("200", Marked, "How many were unread."),
            ["400", "401", "403", "413", "415"], ReadIn, [USER])},
        "/api/events": {"post": _operation(
            "Publish a raw event", ("202", EventAccepted, "Published; its id."), SENDING,
            EventIn)},
        "/api/jobs": {"post": _operation(
            "Start a background job", ("202", JobAccepted, "Queued."), SENDING, JobIn)},
        "/api/jobs/{id}": {"get": _operation(
            "A job's state", ("200", JobRecord, "The record."), ["401", "403", "404"],
            params=[_path_id("id", "^.+$")])},
        "/api/tokens": {"post": _operation(
            "Mint a subscriber token", ("201", TokenMinted, "The token."),
            ["400", "401", "403", "413", "415"], TokenIn)},
        "/api/tokens/revoke": {"post": _operation(
            "Revoke a subscriber token", ("200", Revoked, "Revoked."),
            ["400", "401", "403", "413", "415"], RevokeIn)},
        "/api/dead-letters": {"get": _operation(
            "Dead letters, newest first", ("200", DeadLetters, "One page."),
            ["400", "401", "403"],
            params=[{"name": "channel", "in": "query", "required": False,
                     "schema": {"type": "string", "enum": list(OUTBOUND)}}, LIMIT])},
        "/api/dead-letters/{id}/retry": {"post": _operation(
            "Send a dead letter again",
            ("202", DeliveryRecord, "Revived (pending) and sent to its channel's queue."),
            ["401", "403", "404", "429"], params=[_path_id("id", "^.+$")])},
        **webhook_paths(),
        "/healthz": {"get": _operation(
            "Redis and broker health", ("200", Health, "Both answer."), [], auth=False)
            | {"responses": {"200": _json(Health, "Both answer."),
                             "503": _json(Health, "One does not answer.")}}},
    } | users() | unsubscribe()


def webhook_paths() -> dict[str, Any]:
    endpoint = _path_id("id", f"^{id_rule(WEBHOOK_ID_PREFIX)}$")
    reading = ["401", "403", "404"]
    deleted = _operation("Delete a webhook endpoint", ("204", Webhook, ""), reading,
                         params=[endpoint])
    deleted["responses"]["204"] = {"description": "Deleted; no body."}
    return {
        "/api/webhooks": {
            "post": _operation(
                "Register a webhook endpoint",
                ("201", WebhookCreated, "The endpoint with its signing secret (shown once)."),
                ["400", "401", "403", "413", "415"], WebhookIn),
            "get": _operation("Webhook endpoints, oldest first (no secrets)",
                              ("200", WebhookList, "Every endpoint."), ["401", "403"])},
        "/api/webhooks/{id}": {
            "get": _operation("A webhook endpoint (no secret)", ("200", Webhook, "It."),
                              reading, params=[endpoint]),
            "delete": deleted},
        "/api/webhooks/{id}/test": {"post": _operation(
            "Send a `webhook.test` delivery to the endpoint",
            ("202", WebhookTestSent, "Queued; follow `status_url`."), [*reading, "429"],
            params=[endpoint])},
        "/api/webhooks/{id}/deliveries/{delivery_id}": {"get": _operation(
            "A delivery to a webhook endpoint",
            ("200", DeliveryRecord, "Its state, attempts and last error."), reading,
            params=[endpoint, _path_id("delivery_id", f"^{DELIVERY_ID_RULE}$")])},
    }


def document() -> dict[str, Any]:
    _, definitions = models_json_schema(
        [(model, "validation" if model.__name__.endswith("In") else "serialization")
         for model in MODELS], ref_template="#/components/schemas/{model}")
    return {
        "openapi": "3.1.0",
        "info": {"title": "Herald API", "version": "1.0.0",
                 "description": "Notifications, raw events, jobs and subscriber tokens. "
                                "Events reach browsers through the streamer's "
                                "`GET /events` (Server-Sent Events)."},
        "paths": paths(),
        "components": {
            "schemas": definitions.get("$defs", {}),
            "securitySchemes": {"bearer": {
                "type": "http", "scheme": "bearer",
                "description": "An API key (`hk_...`) or a subscriber token."}},
        },
    }


@bp.get("/api/openapi.json")
def openapi() -> Response:
    return jsonify(document())
