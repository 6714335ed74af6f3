"""Who is calling the API: a publisher with an API key, or a user with their token.

``Authorization: Bearer hk_...`` is an API key: it may send, publish, start jobs, mint
and revoke tokens, and read anyone's data. ``Authorization: Bearer <token>`` is a
subscriber token (``POST /api/tokens``): its user may read and mark their own inbox and
read their own jobs, and nothing else. Missing or invalid credentials are answered
401 (with ``WWW-Authenticate``); valid ones without the right are answered 403.
A token is checked by ``herald.access`` (signature, expiry, revocation), as the
streamer checks it, and refused in the same words. Sending, publishing and starting
jobs spend the key's rate budget: 429 with ``Retry-After`` when it is empty. Checks run
before a request body is even parsed, except on the notification routes: there a valid
request is checked, charged and stored in one Redis round trip (``presented_key``), and
an invalid one is checked and charged (``sender``) before its 400 is answered, so the
answer is the same (401, 403 and 429 before 400) either way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from flask import request

from api.context import services
from herald import access, apikeys
from herald.apikeys import ApiKey, looks_like_key
from herald.errors import Refusal
from herald.tokens import Grant

FIELD = "Authorization"  # the one place the API takes credentials from


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: exactly one of ``key`` and ``grant`` is set."""

    key: ApiKey | None = None
    grant: Grant | None = None


def caller() -> Caller:
    """The caller of this request; raise 401 when there is none or it is invalid."""
    credential = access.bearer(request.headers.get("Authorization"))
    if credential is None:
        raise access.unauthorized("send Authorization: Bearer <API key or token>", FIELD)
    svc = services()
    if looks_like_key(credential):
        key = svc.apikeys.check(credential)
        if key is None:
            raise unknown_key()
        return Caller(key=key)
    cfg = svc.config
    gate = access.Gate(access.verifier(cfg.secret, cfg.token_algorithms), svc.revocations)
    return Caller(grant=gate.authenticate(credential, FIELD))


def publisher() -> ApiKey:
    """The caller's API key; 403 for a user token."""
    who = caller()
    if who.key is None:
        raise access.forbidden("this needs an API key, not a user token", FIELD)
    return who.key


def sender() -> ApiKey:
    """The caller's API key, spending one unit of its rate budget (429 when empty)."""
    key = publisher()
    wait = services().limiter.take(key.id)
    if wait > 0:
        raise rate_limited(key, wait)
    return key


def presented_key() -> tuple[str, str]:
    """The API key the caller presents, as ``herald.apikeys.split`` gives it, unchecked:
    for a script that checks it and spends its budget itself. Anything that is not
    shaped like an API key gets ``sender``'s answer (401 or 403)."""
    credential = access.bearer(request.headers.get("Authorization"))
    parts = apikeys.split(credential) if credential else None
    if parts is None:
        sender()  # raises: no credential, a malformed key or a user token
        raise AssertionError("unreachable")  # pragma: no cover
    return parts


def unknown_key() -> Refusal:
    """The 401 of an API key that is unknown or revoked."""
    return access.unauthorized("API key unknown or revoked", FIELD)


def rate_limited(key: ApiKey, wait: float) -> Refusal:
    """The 429 of ``key`` whose budget holds enough again in ``wait`` seconds."""
    return Refusal(429, "too_many_requests",
                   f"rate limit of API key {key.name!r} reached; retry in {wait:.2f}s",
                   FIELD, headers={"Retry-After": str(math.ceil(wait))})


def publisher_or_user(user: str) -> Caller:
    """An API key, or the token of ``user`` themselves; 403 for anyone else's token."""
    who = caller()
    if who.grant is not None and who.grant.user != user:
        raise access.forbidden(f"a token of {who.grant.user!r} cannot act for {user!r}",
                               FIELD)
    return who
