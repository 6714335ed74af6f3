"""Subscriber tokens: who may listen to which topics, until when.

A token is a JWT signed with HMAC-SHA256 under ``HERALD_SECRET`` (PyJWT). Its claims:
``sub`` (the user), ``topics`` (extra topic grants, exact names or prefixes ending in
``*``), ``exp``, ``iat`` and ``jti`` (a token id, for revocation).

Guarantees: only the algorithms in ``ALGORITHMS`` are accepted (never ``none``); a token
whose signature, expiry or claims do not check out raises ``TokenError``; a valid token
always grants its user's own topic ``user:<sub>`` and the ``broadcast`` topic, and any
other topic only when a grant matches it.

PyJWT checks the secret itself (that it is no PEM, SSH or JSON key) on every token, a
third of a token's verification while a restarted streamer's clients reconnect.
``verify`` decodes with a PyJWT decoder per secret whose HMAC algorithms hold the key
checked once; everything about each token is checked by PyJWT as before.
"""

from __future__ import annotations

import functools
import re
import secrets
import time
from dataclasses import dataclass

import jwt
from jwt.algorithms import HMACAlgorithm, get_default_algorithms

from herald.errors import TokenError
from herald.event import BROADCAST, TOPIC_RULE, USER_RE, user_topic

ALGORITHMS = ("HS256",)
GRANT_RULE = TOPIC_RULE + r"\*?"
GRANT_RE = re.compile(GRANT_RULE)
MAX_GRANTS = 64


@dataclass(frozen=True, slots=True)
class Grant:
    """What a verified token allows."""

    user: str
    topics: tuple[str, ...]
    expires_at: int
    token_id: str

    def allows(self, topic: str) -> bool:
        """True when this grant may receive events of ``topic``."""
        if topic in (user_topic(self.user), BROADCAST):
            return True
        return any(_matches(pattern, topic) for pattern in self.topics)


def _matches(pattern: str, topic: str) -> bool:
    if pattern.endswith("*"):
        return topic.startswith(pattern[:-1])
    return topic == pattern


def valid_grant(pattern: object) -> bool:
    return isinstance(pattern, str) and GRANT_RE.fullmatch(pattern) is not None


def mint(secret: str, user: str, topics: tuple[str, ...] = (), ttl: int = 3600,
         now: float | None = None, algorithm: str = ALGORITHMS[0]) -> tuple[str, Grant]:
    """Sign a token for ``user`` granting ``topics`` for ``ttl`` seconds.

    Raises ``ValueError`` when the user, a grant or the ttl breaks its rule.
    """
    if USER_RE.fullmatch(user) is None:
        raise ValueError("user does not match the user rule")
    if len(topics) > MAX_GRANTS or not all(valid_grant(t) for t in topics):
        raise ValueError(f"topics must be at most {MAX_GRANTS} grants matching {GRANT_RULE}")
    if ttl < 1:
        raise ValueError("ttl must be at least 1 second")
    issued = int(time.time() if now is None else now)
    grant = Grant(user, tuple(topics), issued + ttl, secrets.token_urlsafe(12))
    claims = {"sub": user, "topics": list(topics), "iat": issued, "exp": grant.expires_at,
              "jti": grant.token_id}
    return jwt.encode(claims, secret, algorithm=algorithm), grant


def verify(secret: str, token: str, algorithms: tuple[str, ...] = ALGORITHMS) -> Grant:
    """Check a token's signature, expiry and claims; raise ``TokenError`` saying why not.

    Only ``algorithms`` (HMAC ones, from configuration) are accepted, never ``none``.
    """
    try:
        claims = _decoder(secret, algorithms).decode(token, secret, algorithms=list(algorithms))
    except jwt.ExpiredSignatureError as exc:
        raise TokenError("token expired") from exc
    except jwt.InvalidTokenError as exc:
        raise TokenError(f"token invalid: {exc}") from exc
    return _grant(claims)


class _KeyedHMAC(HMACAlgorithm):
    """An HMAC algorithm whose one secret PyJWT checks once rather than on every token."""

    def __init__(self, hash_alg: object, secret: str) -> None:
        super().__init__(hash_alg)  # type: ignore[arg-type]
        self._secret = secret
        self._key = super().prepare_key(secret)

    def prepare_key(self, key: str | bytes) -> bytes:
        return self._key if key == self._secret else super().prepare_key(key)


@functools.lru_cache(maxsize=8)
def _decoder(secret: str, algorithms: tuple[str, ...]) -> jwt.PyJWT:
    """A PyJWT decoder for tokens signed with ``secret``; its HMAC keys are prepared."""
    decoder = jwt.PyJWT(options={"require": ["sub", "exp", "jti"]})
    signatures = decoder._jws  # PyJWS of this decoder (PyJWT 2.11+): its algorithm registry
    for name in algorithms:
        default = get_default_algorithms().get(name)
        if isinstance(default, HMACAlgorithm):
            signatures.unregister_algorithm(name)
            signatures.register_algorithm(name, _KeyedHMAC(default.hash_alg, secret))
    return decoder


def _grant(claims: dict) -> Grant:
    user, topics = claims.get("sub"), claims.get("topics", [])
    if not isinstance(user, str) or USER_RE.fullmatch(user) is None:
        raise TokenError("token invalid: bad sub claim")
    if not isinstance(topics, list) or not all(valid_grant(t) for t in topics):
        raise TokenError("token invalid: bad topics claim")
    return Grant(user, tuple(topics), int(claims["exp"]), str(claims["jti"]))
