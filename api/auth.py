"""Who is calling the API: a publisher with an API key, or a user with their token.

``Authorization: Bearer hk_...`` is an API key: it may send, publish, start jobs, mint
and revoke tokens, and read anyone's data. ``Authorization: Bearer <token>`` is a
subscriber token (``POST /api/tokens``): its user may read and mark their own inbox and
read their own jobs, and nothing else. Missing or invalid credentials are answered
401 (with ``WWW-Authenticate``); valid ones without the right are answered 403.
Sending, publishing and starting jobs spend the key's rate budget: 429 with
``Retry-After`` when it is empty. Checks run before a request body is even parsed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from flask import request

from api.context import services
from api.errors import ApiError
from herald import tokens
from herald.apikeys import ApiKey, looks_like_key
from herald.errors import TokenError
from herald.tokens import Grant

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="herald"'}


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: exactly one of ``key`` and ``grant`` is set."""

    key: ApiKey | None = None
    grant: Grant | None = None


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, "Authorization", headers=CHALLENGE)


def caller() -> Caller:
    """The caller of this request; raise 401 when there is none or it is invalid."""
    scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential:
        raise _unauthorized("send Authorization: Bearer <API key or token>")
    svc = services()
    if looks_like_key(credential):
        key = svc.apikeys.check(credential)
        if key is None:
            raise _unauthorized("API key unknown or revoked")
        return Caller(key=key)
    try:
        grant = tokens.verify(svc.config.secret, credential, svc.config.token_algorithms)
    except TokenError as exc:
        raise _unauthorized(str(exc)) from None
    if svc.revocations.is_revoked(grant.token_id):
        raise _unauthorized("token revoked")
    return Caller(grant=grant)


def publisher() -> ApiKey:
    """The caller's API key; 403 for a user token."""
    who = caller()
    if who.key is None:
        raise ApiError(403, "forbidden", "this needs an API key, not a user token",
                       "Authorization")
    return who.key


def sender() -> ApiKey:
    """The caller's API key, spending one unit of its rate budget (429 when empty)."""
    key = publisher()
    wait = services().limiter.take(key.id)
    if wait > 0:
        raise ApiError(429, "too_many_requests",
                       f"rate limit of API key {key.name!r} reached; retry in {wait:.2f}s",
                       "Authorization", headers={"Retry-After": str(math.ceil(wait))})
    return key


def publisher_or_user(user: str) -> Caller:
    """An API key, or the token of ``user`` themselves; 403 for anyone else's token."""
    who = caller()
    if who.grant is not None and who.grant.user != user:
        raise ApiError(403, "forbidden", f"a token of {who.grant.user!r} cannot act for "
                       f"{user!r}", "Authorization")
    return who
