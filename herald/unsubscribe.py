"""One-click unsubscribe links: a signed (user, category) pair in a URL of the API.

``url(config, user, category)`` is what an e-mail's ``List-Unsubscribe`` header (and its
footer) carries: ``<api_url>/api/unsubscribe/<token>``. The token is the pair signed
with ``HERALD_SECRET`` (``itsdangerous``, HMAC-SHA1 over a salt of its own, so no other
signed value of Herald's can pass for one): the signature is the credential, whoever
holds the link may turn that user's e-mail off for that category, and nothing else.
Links do not expire (RFC 8058 asks that they keep working); a new ``HERALD_SECRET``
voids them all. ``verify`` refuses an altered or malformed token (400) and the token of
a category the deployment no longer has (404), as ``Refusal`` with field ``token``.
"""

from __future__ import annotations

from itsdangerous import BadSignature, URLSafeSerializer

from herald.channels import valid_category
from herald.config import Config
from herald.errors import Refusal
from herald.event import valid_user

SALT = "herald.unsubscribe.v1"
# What ``token`` answers: base64url payload (``.``-prefixed when compressed), a dot, the
# base64url signature.
TOKEN_RULE = r"\.?[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+"
PATH = "/api/unsubscribe/"
FIELD = "token"


def _serializer(config: Config) -> URLSafeSerializer:
    return URLSafeSerializer(config.secret, salt=SALT)


def token(config: Config, user: str, category: str) -> str:
    """The signed token of (``user``, ``category``): URL-safe, stable for the pair."""
    return str(_serializer(config).dumps([user, category]))


def url(config: Config, user: str, category: str) -> str:
    """The one-click unsubscribe URL of ``user`` for ``category`` e-mails."""
    return f"{str(config.api_url).rstrip('/')}{PATH}{token(config, user, category)}"


def verify(config: Config, signed: str) -> tuple[str, str]:
    """The (user, category) ``signed`` stands for; ``Refusal`` when it is not valid."""
    try:
        pair = _serializer(config).loads(signed)
    except BadSignature:
        raise Refusal(400, "invalid_token", "this unsubscribe link is not valid: it was "
                      "altered or cut short", FIELD) from None
    if not (isinstance(pair, list) and len(pair) == 2 and valid_user(pair[0])
            and valid_category(pair[1])):
        raise Refusal(400, "invalid_token", "this unsubscribe link is not valid", FIELD)
    user, category = pair
    if category not in config.categories:
        raise Refusal(404, "not_found", f"there are no {category!r} e-mails any more",
                      FIELD)
    return user, category
