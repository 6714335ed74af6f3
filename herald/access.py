"""Who may listen to what: the one check of a token and of topics, on every surface.

The API (``api.auth``), the streamer's handshakes (``streamer.app``) and its WebSocket
commands (``streamer.commands``) all go through this module: a token is taken from a
request, verified, checked against revocation and admitted to topics the same way
everywhere, and refused in the same words (as a ``herald.errors.Refusal``).

Guarantees:
- ``credential`` takes a request's token from ``?token=``, else ``Authorization:
  Bearer``, else the ``herald_token`` cookie: the first one present wins, and the cookie
  header is parsed only when the other two are absent. The API takes ``Bearer`` only
  (``bearer``): a cookie would let any page its user visits call it.
- ``Gate.authenticate`` returns a ``Grant`` only for a token whose signature, claims and
  expiry check out (``herald.tokens.verify``, or a cache that returns what it returned)
  and whose id its ``Revocations`` does not deny, asked on every use of the token,
  verified before or not. Anything else is a 401 ``unauthorized`` with a
  ``WWW-Authenticate`` challenge, worded as ``verify`` words it (``token expired``,
  ``token invalid: ...``), ``token revoked``, or ``NO_TOKEN``.
- ``admit`` returns a connection's topics, without repeats, in the order given, or
  refuses them, naming the field ``topics``: one that breaks ``TOPIC_RULE`` (400, naming
  the rule), more than ``max_topics`` (400), one the grant does not cover (403, naming
  the topic).
- ``issue`` mints a token the deployment accepts: signed with the first of
  ``HERALD_TOKEN_ALGORITHMS``, for ``HERALD_TOKEN_TTL`` seconds unless told otherwise,
  and never for longer than ``HERALD_TOKEN_MAX_TTL`` (400 ``ttl``).

Revocations are read from Redis by the API (``herald.revocation.Revocations``, one read
a request) and from an in-process ``DenySet`` by a streamer (fed by the revocation
notices and a reread every few seconds, see ``streamer.server``); both answer
``is_revoked``, and ``Gate`` is the one place that asks.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from typing import Protocol

from herald import tokens
from herald.errors import Refusal, TokenError, invalid
from herald.event import TOPIC_RULE, valid_topic
from herald.tokens import Grant

TOKEN_COOKIE = "herald_token"
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="herald"'}
NO_TOKEN = "a token is required (?token=, Bearer or cookie)"
TOKEN_REVOKED = "token revoked"
QUERY, BEARER, COOKIE = "query", "bearer", "cookie"  # where a credential came from


class Revocations(Protocol):
    """A deny list of token ids."""

    def is_revoked(self, token_id: str) -> bool: ...


class DenySet(set[str]):
    """A deny list held in memory: the token ids it contains are revoked."""

    def is_revoked(self, token_id: str) -> bool:
        return token_id in self


class TokenSettings(Protocol):
    """The settings ``issue`` mints with (``herald.config.Config`` has them)."""

    @property
    def secret(self) -> str: ...
    @property
    def token_algorithms(self) -> tuple[str, ...]: ...
    @property
    def token_ttl(self) -> int: ...
    @property
    def token_max_ttl(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Credential:
    """A token as a request carried it, and where: ``QUERY``, ``BEARER`` or ``COOKIE``."""

    token: str
    source: str


def bearer(authorization: str | None) -> str | None:
    """The credential of an ``Authorization: Bearer <credential>`` header value."""
    scheme, _, value = (authorization or "").partition(" ")
    value = value.strip()
    return value or None if scheme.lower() == "bearer" else None


def credential(query: str | None, authorization: str | None,
               cookie_header: str | None) -> Credential | None:
    """The token of a request from its ``token`` query argument, its ``Authorization``
    header and its ``Cookie`` header, in that order of precedence; None without one."""
    if query:
        return Credential(query, QUERY)
    token = bearer(authorization)
    if token:
        return Credential(token, BEARER)
    token = _cookie(cookie_header, TOKEN_COOKIE)
    return Credential(token, COOKIE) if token else None


def _cookie(header: str | None, name: str) -> str | None:
    if not header:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header)
    except CookieError:
        return None
    morsel = jar.get(name)
    return morsel.value or None if morsel else None


def unauthorized(message: str, field: str) -> Refusal:
    """A 401 with the ``Bearer`` challenge."""
    return Refusal(401, "unauthorized", message, field, headers=CHALLENGE)


def forbidden(message: str, field: str) -> Refusal:
    """A 403: the credential is valid but does not allow this."""
    return Refusal(403, "forbidden", message, field)


def verifier(secret: str, algorithms: tuple[str, ...]) -> Callable[[str], Grant]:
    """``herald.tokens.verify`` for one deployment's secret and algorithms."""
    return functools.partial(tokens.verify, secret, algorithms=algorithms)


class Gate:
    """Verifies tokens with ``verify`` and refuses those ``revocations`` denies."""

    def __init__(self, verify: Callable[[str], Grant], revocations: Revocations) -> None:
        self.verify = verify
        self.revocations = revocations

    def authenticate(self, token: str | None, field: str = "token") -> Grant:
        """What ``token`` allows; a 401 naming ``field`` when it is missing, invalid,
        expired or revoked."""
        if not token:
            raise unauthorized(NO_TOKEN, field)
        try:
            grant = self.verify(token)
        except TokenError as exc:
            raise unauthorized(str(exc), field) from None
        if self.revocations.is_revoked(grant.token_id):
            raise unauthorized(TOKEN_REVOKED, field)
        return grant


def valid_topics(topics: Iterable[object]) -> tuple[str, ...]:
    """``topics`` without repeats, in order; a 400 naming the first that breaks the rule."""
    names = list(topics)
    for topic in names:
        if not valid_topic(topic):
            raise invalid("topics", f"{_shown(topic)} must match {TOPIC_RULE}")
    return tuple(dict.fromkeys(names))  # type: ignore[arg-type]  # all are str now


def admit(grant: Grant, topics: Iterable[object], max_topics: int) -> tuple[str, ...]:
    """The topics a connection holding ``grant`` may follow: ``topics`` without repeats,
    in order; a 400 for a malformed topic or more than ``max_topics``, a 403 for one
    the grant does not cover."""
    names = valid_topics(topics)
    if len(names) > max_topics:
        raise invalid("topics", f"at most {max_topics} per connection")
    for topic in names:
        if not grant.allows(topic):
            raise forbidden(f"token of {grant.user!r} does not grant topic {topic!r}",
                            "topics")
    return names


def reauthorize(grant: Grant, user: str, topics: Iterable[str]) -> Grant:
    """``grant``, when it may take over a connection of ``user`` following ``topics``:
    the same user, and every topic granted (a 403 naming the field ``token`` otherwise)."""
    if grant.user != user:
        raise forbidden(f"token is for {grant.user!r}, this connection for {user!r}",
                        "token")
    for topic in topics:
        if not grant.allows(topic):
            raise forbidden(f"token does not grant topic {topic!r}, which this "
                            "connection follows (unsubscribe first)", "token")
    return grant


def issue(settings: TokenSettings, user: str, topics: Sequence[str] = (),
          ttl: int | None = None) -> tuple[str, Grant]:
    """Mint a token for ``user`` granting ``topics`` as ``settings`` say (see the module).

    Raises ``Refusal`` (400 ``ttl``) past the longest lifetime, and ``ValueError`` (from
    ``herald.tokens.mint``) for a user, grant or lifetime that breaks its rule.
    """
    lifetime = settings.token_ttl if ttl is None else ttl
    if lifetime > settings.token_max_ttl:
        raise invalid("ttl", f"must be at most {settings.token_max_ttl} seconds")
    return tokens.mint(settings.secret, user, tuple(topics), lifetime,
                       algorithm=settings.token_algorithms[0])


def _shown(topic: object) -> str:
    """``topic`` for an error message: quoted, and cut short."""
    return repr(topic[:140]) if isinstance(topic, str) else repr(topic)[:140]
