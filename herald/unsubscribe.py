"""One-click unsubscribe links (RFC 8058): signed, so only Herald can make one.

``url(config, user, category)`` is the link an e-mail's ``List-Unsubscribe`` header
carries: ``{api_url}/api/unsubscribe/<token>``, the token signing ``[user, category]``
with ``HERALD_SECRET`` (salted for this use only), so a link turns off exactly one
user's e-mail for one category and cannot be forged or altered.
"""

from __future__ import annotations

from itsdangerous import URLSafeSerializer

from herald.config import Config

SALT = "herald.unsubscribe"


def serializer(config: Config) -> URLSafeSerializer:
    """Signs and checks unsubscribe tokens with the deployment's secret."""
    return URLSafeSerializer(config.secret, salt=SALT)


def url(config: Config, user: str, category: str) -> str:
    """The one-click unsubscribe URL of ``user``'s e-mail in ``category``."""
    token = serializer(config).dumps([user, category])
    return f"{config.api_url}/api/unsubscribe/{token}"
