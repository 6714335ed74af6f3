"""Request bodies of the API and the rules each field follows.

Models are strict (no type coercion) and forbid unknown fields; a body that breaks a
rule is answered 400 naming the field and the rule (see ``api.errors``), one that is
not a JSON object 400 ``body: ...``, and one over ``MAX_BODY_BYTES`` (a batch of
notifications: ``MAX_BATCH_BODY_BYTES``) 413, whether its length is declared
(``Content-Length``) or not (chunked). The same
models describe the API in OpenAPI (JSON Schema 2020-12).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, TypeVar

from flask import Request
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
)

from api.errors import from_validation
from herald import profiles
from herald.channels import CATEGORY_RULE, DEFAULT_CATEGORY, INAPP
from herald.errors import Refusal, invalid
from herald.event import TOPIC_RULE, TYPE_RULE, USER_RULE
from herald.ids import id_rule
from herald.reading import MAX_READ_IDS
from herald.tokens import GRANT_RULE, MAX_GRANTS
from herald.webhooks import MAX_URL_LENGTH

MAX_BODY_BYTES = 64 * 1024
MAX_BATCH_ITEMS = 1000
# A batch of MAX_BATCH_ITEMS notifications with titles and bodies at their limits, and
# room for data: 1,000 x (200 + 4,000 characters) is about 4.2 MB.
MAX_BATCH_BODY_BYTES = 8 * 1024 * 1024
IDEMPOTENCY_KEY_RULE = r"[\x21-\x7e]{1,255}"  # visible ASCII
DEFAULT_LIMIT, MAX_LIMIT = 20, 100  # a page of a list: the inbox, the dead letters
ASCII_DIGITS = re.compile(r"[0-9]{1,9}")

UserName = Annotated[str, StringConstraints(pattern=f"^{USER_RULE}$")]
TopicName = Annotated[str, StringConstraints(pattern=f"^{TOPIC_RULE}$")]
TopicGrant = Annotated[str, StringConstraints(pattern=f"^{GRANT_RULE}$")]
EventType = Annotated[str, StringConstraints(pattern=f"^{TYPE_RULE}$")]
NotificationId = Annotated[str, StringConstraints(pattern=f"^{id_rule('n')}$")]
Channel = Literal["inapp", "email", "webhook"]  # herald.channels.CHANNELS
Category = Annotated[str, StringConstraints(pattern=f"^{CATEGORY_RULE}$")]


def _unique(channels: list[str]) -> list[str]:
    if len(set(channels)) != len(channels):
        raise ValueError("each channel at most once")
    return channels


Channels = Annotated[list[Channel], AfterValidator(_unique),
                     Field(min_length=1, json_schema_extra={"uniqueItems": True})]

# The profile's rules are herald.profiles' (their messages state them); the JSON Schema
# of each says the same for OpenAPI.
EmailAddress = Annotated[str, AfterValidator(profiles.email_address), WithJsonSchema(
    {"type": "string", "format": "email", "maxLength": profiles.EMAIL_MAX})]
DisplayName = Annotated[str, AfterValidator(profiles.display_name), WithJsonSchema(
    {"type": "string", "minLength": 1, "maxLength": profiles.NAME_MAX,
     "pattern": r"^[^\x00-\x1f\x7f-\x9f\u2028\u2029]*$"})]
LocaleTag = Annotated[str, AfterValidator(profiles.locale_tag), WithJsonSchema(
    {"type": "string", "maxLength": profiles.LOCALE_MAX,
     "pattern": f"^{profiles.LOCALE_RULE}$"})]
CategorySwitches = dict[str, bool]  # category -> on; categories checked by the handler


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class NotificationIn(Strict):
    """POST /api/notifications. Give ``recipients`` or ``topic``, not both.

    ``category`` must also be one of ``HERALD_CATEGORIES``, and ``email`` needs
    ``recipients`` (and, in production, ``HERALD_SMTP_URL``): ``api.notifications``
    checks what depends on the configuration.
    """

    recipients: list[UserName] | None = Field(None, min_length=1)
    topic: TopicName | None = None
    title: str = Field(min_length=1, max_length=200)
    body: str = Field("", max_length=4000)
    data: dict[str, Any] = Field(default_factory=dict)
    channels: Channels = Field(default_factory=lambda: [INAPP])
    category: Category = DEFAULT_CATEGORY
    critical: bool = False


class BatchItemIn(NotificationIn):
    """One notification of ``POST /api/notifications/batch``: the fields of
    ``NotificationIn``, and its own ``idempotency_key`` (the ``Idempotency-Key`` rule
    and namespace: a key used on ``POST /api/notifications`` is the same key here)."""

    idempotency_key: str | None = Field(None, pattern=f"^{IDEMPOTENCY_KEY_RULE}$")


class NotificationBatchIn(Strict):
    """POST /api/notifications/batch: 1 to ``MAX_BATCH_ITEMS`` notifications. Each
    item is checked on its own: one that breaks a rule is refused alone (its answer
    item names ``items[<index>].<field>``), the others are stored and dispatched."""

    items: list[BatchItemIn] = Field(min_length=1, max_length=MAX_BATCH_ITEMS)


class BatchEnvelope(Strict):
    """What the batch handler validates whole: the list, whose items it checks one by
    one against ``BatchItemIn`` (so an invalid item fails alone)."""

    items: list[Any] = Field(min_length=1, max_length=MAX_BATCH_ITEMS)


class WebhookIn(Strict):
    """POST /api/webhooks: ``topics`` (grants: ``orders``, ``user:*``) and/or
    ``categories`` the endpoint wants (``herald.webhooks``); the URL rule is checked by
    the handler (it depends on the deployment)."""

    url: str = Field(min_length=1, max_length=MAX_URL_LENGTH)
    topics: list[TopicGrant] = Field(default_factory=list, max_length=MAX_GRANTS)
    categories: list[Category] = Field(default_factory=list, max_length=32)
    description: str = Field("", max_length=500)


class EventIn(Strict):
    """POST /api/events: a raw event for callers that only need fan-out."""

    topic: TopicName
    type: EventType = "message"
    data: Any = None


class JobIn(Strict):
    """POST /api/jobs. ``params`` are checked against the kind's own rules."""

    kind: str = Field(min_length=1, max_length=100)
    params: dict[str, Any] = Field(default_factory=dict)
    owner: UserName


class TokenIn(Strict):
    """POST /api/tokens. ``ttl`` defaults to HERALD_TOKEN_TTL."""

    user: UserName
    topics: list[TopicGrant] = Field(default_factory=list, max_length=MAX_GRANTS)
    ttl: int | None = Field(None, ge=1)


class RevokeIn(Strict):
    """POST /api/tokens/revoke: the ``token_id`` that ``POST /api/tokens`` answered."""

    token_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")


class ReadIn(Strict):
    """POST /api/users/<user>/notifications/read: ``ids`` or ``all``."""

    ids: list[NotificationId] | None = Field(None, min_length=1, max_length=MAX_READ_IDS)
    all: bool | None = None


class ProfileIn(Strict):
    """PUT /api/users/<user>/profile: replaces the profile (a field left out or null is
    removed). ``email`` is stored normalised, ``locale`` in its conventional case."""

    email: EmailAddress | None = None
    name: DisplayName | None = None
    locale: LocaleTag | None = None


class PreferencesIn(Strict):
    """PUT /api/users/<user>/preferences: per channel, category -> on (true) or off
    (false); replaces the preferences (a pair left out is on). Categories must be those
    of HERALD_CATEGORIES (checked by the handler: the model knows no deployment)."""

    inapp: CategorySwitches = Field(default_factory=dict)
    email: CategorySwitches = Field(default_factory=dict)


Model = TypeVar("Model", bound=BaseModel)


def parse(request: Request, model: type[Model], max_bytes: int = MAX_BODY_BYTES) -> Model:
    """Validate a JSON request body of at most ``max_bytes`` against ``model``; raise
    ``Refusal`` otherwise."""
    if not request.is_json:
        raise Refusal(415, "unsupported_media_type",
                      "Content-Type must be application/json")
    # Werkzeug stops reading a streamed (chunked) body at max_content_length without a
    # word; it is set one byte over the limit (create_app: MAX_BODY_BYTES; a route with
    # its own limit sets it for its request) so a longer body shows here.
    request.max_content_length = max_bytes + 1
    body = request.get_data(cache=True)
    if len(body) > max_bytes:
        raise too_large(max_bytes)
    try:
        return model.model_validate_json(body or b"")
    except ValidationError as exc:
        raise from_validation(exc) from None


def validate(item: Any, model: type[Model], prefix: str) -> Model:
    """Validate ``item`` (decoded JSON) against ``model``; a ``Refusal`` names its
    fields under ``prefix`` (``items[3]``)."""
    try:
        return model.model_validate(item)
    except ValidationError as exc:
        raise from_validation(exc, prefix) from None


def too_large(max_bytes: int = MAX_BODY_BYTES) -> Refusal:
    """The 413 for a body over ``max_bytes``, declared or streamed."""
    return Refusal(413, "payload_too_large",
                   f"request body must be at most {max_bytes} bytes")


def limit(request: Request) -> int:
    """The ``limit`` query parameter of a list: 1 to ``MAX_LIMIT``, ``DEFAULT_LIMIT``
    when absent; 400 otherwise."""
    raw = request.args.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    # ASCII digits only: str.isdigit() and int() also take "²" and "٣".
    if not ASCII_DIGITS.fullmatch(raw) or not 1 <= int(raw) <= MAX_LIMIT:
        raise invalid("limit", f"must be an integer from 1 to {MAX_LIMIT} (ASCII digits)")
    return int(raw)
