"""The one check of tokens and topics (``herald.access``), without a network.

Revocation is the in-memory ``DenySet`` the streamer uses; the API's Redis deny list
answers the same ``is_revoked`` (tests/security/test_api_auth.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import jwt
import pytest

from herald import access, reading, tokens
from herald.access import BEARER, COOKIE, QUERY, Credential, DenySet, Gate
from herald.errors import Refusal, TokenError
from herald.event import TOPIC_RULE
from streamer.tokencache import TokenCache

SECRET = "s" * 64


@dataclass(frozen=True)
class Settings:
    secret: str = SECRET
    token_algorithms: tuple[str, ...] = ("HS256",)
    token_ttl: int = 600
    token_max_ttl: int = 3600


def _gate(deny: DenySet | None = None, algorithms: tuple[str, ...] = ("HS256",)) -> Gate:
    return Gate(access.verifier(SECRET, algorithms), deny if deny is not None else DenySet())


def _refusal(call, *args) -> Refusal:
    with pytest.raises(Refusal) as caught:
        call(*args)
    return caught.value


@pytest.mark.parametrize(("query", "authorization", "cookie", "found"), [
    ("q", "Bearer b", "herald_token=c", Credential("q", QUERY)),
    (None, "Bearer b", "herald_token=c", Credential("b", BEARER)),
    ("", "bearer  b ", None, Credential("b", BEARER)),
    (None, None, "theme=dark; herald_token=c", Credential("c", COOKIE)),
    (None, "Basic dXNlcjpwdw==", "herald_token=c", Credential("c", COOKIE)),
    (None, "Bearer ", None, None),
    (None, None, "theme=dark", None),
    (None, None, 'herald_token="unterminated', None),
    (None, None, None, None),
])
def test_a_credential_comes_from_the_query_then_bearer_then_the_cookie(
        query, authorization, cookie, found):
    assert access.credential(query, authorization, cookie) == found


def test_the_api_takes_bearer_only():
    assert access.bearer("Bearer hk_x") == "hk_x"
    assert access.bearer("Token hk_x") is None
    assert access.bearer(None) is None


def test_a_valid_token_gives_its_grant():
    token, grant = tokens.mint(SECRET, "alice", ("room:*",), ttl=60)
    assert _gate().authenticate(token) == grant


@pytest.mark.parametrize(("token", "words"), [
    (None, access.NO_TOKEN),
    ("", access.NO_TOKEN),
    ("not-a-token", "token invalid"),
    (tokens.mint("o" * 48, "alice")[0], "token invalid"),
    (tokens.mint(SECRET, "alice", ttl=1, now=0)[0], "token expired"),
    (jwt.encode({"sub": "alice", "exp": 2**40, "jti": "x"}, None, algorithm="none"),
     "token invalid"),
])
def test_a_bad_token_is_a_401_with_the_challenge(token, words):
    refusal = _refusal(_gate().authenticate, token, "Authorization")
    assert (refusal.status, refusal.code, refusal.field) == (401, "unauthorized",
                                                             "Authorization")
    assert words in refusal.message
    assert refusal.headers == {"WWW-Authenticate": 'Bearer realm="herald"'}


def test_a_revoked_token_is_refused_even_when_its_verification_is_cached():
    deny = DenySet()
    cache = TokenCache(SECRET, ("HS256",))
    gate = Gate(cache.verify, deny)
    token, grant = tokens.mint(SECRET, "alice", ttl=60)
    assert gate.authenticate(token) == grant  # verified, and now held by the cache
    deny.add(grant.token_id)
    refusal = _refusal(gate.authenticate, token)
    assert (refusal.status, refusal.message, refusal.field) == (401, "token revoked", "token")
    deny.discard(grant.token_id)
    assert gate.authenticate(token) == grant


def test_each_refusal_has_its_own_headers():
    first = _refusal(_gate().authenticate, None)
    first.headers["Access-Control-Allow-Origin"] = "https://app.example.com"
    assert _refusal(_gate().authenticate, None).headers == access.CHALLENGE
    assert access.CHALLENGE == {"WWW-Authenticate": 'Bearer realm="herald"'}


def test_admit_keeps_the_order_and_drops_repeats():
    grant = tokens.mint(SECRET, "alice", ("room:*",))[1]
    topics = ["room:2", "user:alice", "room:2", "broadcast", "room:1"]
    assert access.admit(grant, topics, 4) == ("room:2", "user:alice", "broadcast", "room:1")


@pytest.mark.parametrize(("topics", "status", "words"), [
    (["user:alice", "Bad Topic"], 400, f"topics: 'Bad Topic' must match {TOPIC_RULE}"),
    ([5], 400, "topics: 5 must match"),
    ([["room:1"]], 400, "topics: ['room:1'] must match"),
    (["x" * 500], 400, "must match"),
    ([f"room:{n}" for n in range(4)], 400, "topics: at most 3 per connection"),
    (["room:1", "user:bob"], 403, "token of 'alice' does not grant topic 'user:bob'"),
    (["secret"], 403, "does not grant topic 'secret'"),
])
def test_admit_refuses_naming_the_topics_field(topics, status, words):
    grant = tokens.mint(SECRET, "alice", ("room:*",))[1]
    refusal = _refusal(access.admit, grant, topics, 3)
    assert (refusal.status, refusal.field) == (status, "topics")
    assert refusal.code == ("forbidden" if status == 403 else "invalid_field")
    assert words in refusal.message
    assert len(refusal.message) < 300


def test_a_fresh_token_takes_over_only_for_the_same_user_and_topics():
    grant = tokens.mint(SECRET, "alice", ("room:*",))[1]
    assert access.reauthorize(grant, "alice", ("user:alice", "room:9")) is grant
    other = _refusal(access.reauthorize, grant, "bob", ("user:bob",))
    assert (other.status, other.field) == (403, "token") and "'alice'" in other.message
    narrow = tokens.mint(SECRET, "alice")[1]
    missing = _refusal(access.reauthorize, narrow, "alice", ("user:alice", "room:9"))
    assert missing.status == 403 and "room:9" in missing.message


def test_issue_signs_with_the_first_configured_algorithm():
    settings = Settings(token_algorithms=("HS512", "HS256"))
    token, grant = access.issue(settings, "alice", ("room:*",))
    assert jwt.get_unverified_header(token)["alg"] == "HS512"
    assert _gate(algorithms=("HS512",)).authenticate(token) == grant
    with pytest.raises(TokenError):
        tokens.verify(SECRET, token, ("HS256",))


def test_issue_applies_the_default_and_longest_lifetimes():
    _, grant = access.issue(Settings(), "alice")
    _, longest = access.issue(Settings(), "alice", ttl=3600)
    assert longest.expires_at - grant.expires_at in (3000, 3001)
    refusal = _refusal(access.issue, Settings(), "alice", (), 3601)
    assert (refusal.status, refusal.field, refusal.message) == (
        400, "ttl", "ttl: must be at most 3600 seconds")
    with pytest.raises(ValueError, match="user"):
        access.issue(Settings(), "Not A User")


def test_a_refusal_has_the_one_error_shape():
    refusal = Refusal(429, "too_many_requests", "slow down", "Authorization",
                      headers={"Retry-After": "2"})
    assert refusal.body() == {"error": {"code": "too_many_requests", "message": "slow down",
                                        "field": "Authorization"}}


IDS = ["n_01M8FXDK8WXPWT8MAE5X1406RT", "n_01M8FXDK8WXPWT8MAE5X1406RV"]


@pytest.mark.parametrize(("ids", "everything", "chosen"), [
    (IDS, None, IDS), (None, True, None)])
def test_reading_selects_ids_or_all(ids, everything, chosen):
    assert reading.selection(ids, everything) == chosen


@pytest.mark.parametrize(("ids", "everything"), [
    (None, None), (None, False), (IDS, True), (IDS, False), ([], None), ("n_1", None),
    (["nope"], None), ([IDS[0]] * 1001, None), ([5], None), (None, "yes")])
def test_reading_refuses_anything_else_naming_ids(ids, everything):
    refusal = _refusal(reading.selection, ids, everything)
    assert (refusal.status, refusal.code, refusal.field) == (400, "invalid_field", "ids")
    assert "either" in refusal.message
