"""Subscriber tokens: who may listen to which topics, until when.

A token is a JWT signed with HMAC (HS256 by default, ``HERALD_TOKEN_ALGORITHMS``) under
``HERALD_SECRET``. Its claims: ``sub`` (the user), ``topics`` (extra topic grants, exact
names or prefixes ending in ``*``), ``exp``, ``iat`` and ``jti`` (a token id, for
revocation).

Guarantees: only the algorithms given to ``verify`` are accepted (HMAC ones; never
``none``); a token whose signature, expiry or claims do not check out raises
``TokenError`` ("token expired", or "token invalid: <why>"); a valid token always grants
its user's own topic ``user:<sub>`` and the ``broadcast`` topic, and any other topic only
when a grant matches it.

``verify`` is hand-written, a measured hot path: when a streamer restarts, every client
reconnects at once and each distinct token is verified once. PyJWT's decode took 28 µs
of CPU a token here (20,000 distinct tokens; its check of the secret already made once
per secret), most of it generic work around one HMAC, and 10,000 clients with a token
each were all streaming in 1.25 s against a target of 1.0 s. This takes 11 µs; the
reconnect storm's figures before and after are in BENCHMARKS.md. It accepts exactly
the tokens PyJWT (2.15.1) accepts when decoding with our options (``algorithms``;
``sub``, ``exp`` and ``jti`` required; no audience, issuer or leeway) and refuses the
others with PyJWT's reason, in PyJWT's order, so that "expired" and "invalid" fall the
same way: ``tests/unit/test_tokens_pyjwt.py`` checks the two against each other on
generated, mutated and hand-picked tokens. PyJWT still mints tokens and checks the
secret (once per secret). Unlike PyJWT, a token that is no UTF-8 text (a lone
surrogate) is refused as invalid rather than raising ``UnicodeEncodeError``.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

import jwt

from herald.errors import TokenError
from herald.event import BROADCAST, TOPIC_RULE, USER_RE, user_topic

ALGORITHMS = ("HS256",)
HMAC_HASHES = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}
REQUIRED_CLAIMS = ("sub", "exp", "jti")
GRANT_RULE = TOPIC_RULE + r"\*?"
GRANT_RE = re.compile(GRANT_RULE)
MAX_GRANTS = 64

_BASE64URL_RE = re.compile(r"[A-Za-z0-9_-]*")
# The last character of a segment 2 or 3 characters past a multiple of 4 has 4 or 2
# bits that encode nothing; they must be zero (PyJWT refuses other spellings).
_LAST_OF_TWO = frozenset("AQgw")
_LAST_OF_THREE = frozenset("AEIMQUYcgkosw048")
_SUPPORTED_CRIT = frozenset({"b64"})
_JSON = json.JSONDecoder()  # what json.loads uses without arguments


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
        return any(grant_matches(pattern, topic) for pattern in self.topics)


def grant_matches(pattern: str, topic: str) -> bool:
    """True when the grant ``pattern`` (``room:42``, or a prefix ``room:*``) covers ``topic``."""
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


def verify(secret: str, token: str, algorithms: tuple[str, ...] = ALGORITHMS,
           now: float | None = None) -> Grant:
    """Check a token's signature, expiry and claims; raise ``TokenError`` saying why not.

    Only ``algorithms`` (HMAC ones, from configuration) are accepted, never ``none``;
    ``ValueError`` when one is not an HMAC algorithm. ``now`` (epoch seconds, default
    the clock) is what ``exp``, ``iat`` and ``nbf`` are compared with.
    """
    verifier = _verifier(secret, tuple(algorithms))
    claims, expires_at = verifier.claims(token, time.time() if now is None else now)
    return _grant(claims, expires_at)


class _Verifier:
    """Decodes JWTs signed with one secret under some HMAC algorithms, as PyJWT does."""

    def __init__(self, secret: str, algorithms: tuple[str, ...]) -> None:
        unknown = [name for name in algorithms if name not in HMAC_HASHES]
        if unknown or not algorithms:
            raise ValueError(f"algorithms must be among {', '.join(HMAC_HASHES)}: {unknown}")
        self.algorithms = algorithms
        # PyJWT's checks of an HMAC secret (not empty, not a PEM, SSH, DER or JWK key),
        # which it makes on every token: ``jwt.InvalidKeyError`` as before.
        key = jwt.get_algorithm_by_name(algorithms[0]).prepare_key(secret)
        # Keyed once: a token's HMAC starts from a copy (the key's two blocks hashed).
        self.keyed = {name: hmac.new(key, digestmod=HMAC_HASHES[name]) for name in algorithms}
        # The headers PyJWT writes when it mints, decoded once: most tokens carry one.
        minted = [jwt.encode({}, secret, algorithm=name) for name in algorithms]
        self.minted = {token.partition(".")[0]: jwt.get_unverified_header(token)
                       for token in minted}

    def claims(self, token: str, now: float) -> tuple[dict[str, Any], int]:
        """The token's claims and its expiry (``int(exp)``); ``TokenError`` if refused."""
        signing_input, dot, crypto = token.rpartition(".")
        header_segment, dot_, payload_segment = signing_input.partition(".")
        if not (dot and dot_):
            raise _invalid("Not enough segments")
        header = self.minted.get(header_segment) or _header(header_segment)
        detached = header.get("b64", True) is False
        if detached and payload_segment:
            raise _invalid("Payload segment must be empty when 'b64' is false.")
        payload = b"" if detached else _segment(payload_segment, "payload")
        signature = _segment(crypto, "crypto")
        mac = self.keyed[self._algorithm(header)].copy()
        mac.update(signing_input.encode())
        if not hmac.compare_digest(signature, mac.digest()):
            raise _invalid("Signature verification failed")
        claims = _json_object(payload, "payload")
        return claims, _check_claims(claims, now)

    def _algorithm(self, header: dict[str, Any]) -> str:
        """The header's ``alg`` once its other fields pass PyJWT's rules."""
        if "kid" in header and not isinstance(header["kid"], str):
            raise _invalid("Key ID header parameter must be a string")
        if "crit" in header:
            _check_crit(header)
        if header.get("b64", True) is False:
            crit = header.get("crit") or []
            if not isinstance(crit, list) or "b64" not in crit:
                raise _invalid("The 'b64' header parameter requires 'b64' to be listed in "
                               "'crit'.")
            raise _invalid('It is required that you pass in a value for the '
                           '"detached_payload" argument to decode a message having the b64 '
                           'header set to false.')
        if "alg" not in header:
            raise _invalid("Algorithm not specified")
        alg = header["alg"]
        if alg not in self.algorithms:  # a tuple: compared, never hashed
            raise _invalid("The specified alg value is not allowed")
        return alg


@functools.lru_cache(maxsize=8)
def _verifier(secret: str, algorithms: tuple[str, ...]) -> _Verifier:
    return _Verifier(secret, algorithms)


def _segment(text: str, name: str) -> bytes:
    """A base64url segment's bytes, refused unless it is spelled as PyJWT requires:
    URL-safe alphabet, unused bits zero, no padding or exactly the right padding."""
    stripped = text.rstrip("=")
    padding, extra = len(text) - len(stripped), len(stripped) % 4
    if ((padding and (padding > 2 or len(text) % 4)) or extra == 1
            or _BASE64URL_RE.fullmatch(stripped) is None
            or (extra == 2 and stripped[-1] not in _LAST_OF_TWO)
            or (extra == 3 and stripped[-1] not in _LAST_OF_THREE)):
        raise _invalid(f"Invalid {name} padding")
    return base64.urlsafe_b64decode(stripped + "=" * (-extra % 4))


def _header(segment: str) -> dict[str, Any]:
    return _json_object(_segment(segment, "header"), "header")


def _json_object(data: bytes, name: str) -> dict[str, Any]:
    """``json.loads(data)``, a JSON object, as PyJWT requires."""
    try:
        if data[:2] == b'{"':
            # What json.loads(data) does with bytes that start so (read as UTF-8, with
            # 'surrogatepass'), less its guess of their encoding: ~1 µs of ~10.
            value = _JSON.decode(data.decode("utf-8", "surrogatepass"))
        else:
            value = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise _invalid(f"Invalid {name} string: {exc}") from exc
    if not isinstance(value, dict):
        raise _invalid(f"Invalid {name} string: must be a json object")
    return value


def _check_crit(header: dict[str, Any]) -> None:
    crit = header["crit"]
    if not isinstance(crit, list) or not crit:
        raise _invalid("Invalid 'crit' header: must be a non-empty list")
    for extension in crit:
        if not isinstance(extension, str):
            raise _invalid("Invalid 'crit' header: values must be strings")
        if extension not in _SUPPORTED_CRIT:
            raise _invalid(f"Unsupported critical extension: {extension}")
        if extension not in header:
            raise _invalid(f"Critical extension '{extension}' is missing from headers")


def _check_claims(claims: dict[str, Any], now: float) -> int:
    """PyJWT's claim checks, in its order; the expiry, ``int(exp)``."""
    for claim in REQUIRED_CLAIMS:
        if claims.get(claim) is None:
            raise _invalid(f'Token is missing the "{claim}" claim')
    if "iat" in claims and _integer(claims["iat"], "Issued At claim (iat)") > now:
        raise _invalid("The token is not yet valid (iat)")
    if "nbf" in claims and _integer(claims["nbf"], "Not Before claim (nbf)") > now:
        raise _invalid("The token is not yet valid (nbf)")
    expires_at = _integer(claims["exp"], "Expiration Time claim (exp)")
    if expires_at <= now:
        raise TokenError("token expired")
    if claims.get("aud"):
        raise _invalid("Invalid audience")
    if not isinstance(claims["sub"], str):
        raise _invalid("Subject must be a string")
    if not isinstance(claims["jti"], str):
        raise _invalid("JWT ID must be a string")
    return expires_at


def _integer(value: Any, name: str) -> int:
    """``int(value)`` as PyJWT takes a time claim (it truncates floats, reads strings)."""
    try:
        return int(value)
    except (ValueError, TypeError, OverflowError):
        raise _invalid(f"{name} must be an integer.") from None


def _invalid(why: str) -> TokenError:
    return TokenError(f"token invalid: {why}")


def _grant(claims: dict[str, Any], expires_at: int) -> Grant:
    user, topics = claims["sub"], claims.get("topics", [])
    if USER_RE.fullmatch(user) is None:
        raise TokenError("token invalid: bad sub claim")
    if not isinstance(topics, list) or not all(valid_grant(t) for t in topics):
        raise TokenError("token invalid: bad topics claim")
    return Grant(user, tuple(topics), expires_at, claims["jti"])
