"""Subscriber tokens (pure functions)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest

from herald import tokens
from herald.errors import TokenError

SECRET = "s" * 64


def test_round_trip_and_grants():
    token, grant = tokens.mint(SECRET, "alice", ("room:*", "news"), ttl=60)
    checked = tokens.verify(SECRET, token)
    assert checked == grant
    assert checked.allows("user:alice") and checked.allows("broadcast")
    assert checked.allows("room:1") and checked.allows("room:") and checked.allows("news")
    assert not checked.allows("user:bob")
    assert not checked.allows("news:sports") and not checked.allows("rooms")


@pytest.mark.parametrize("forge", [
    lambda: tokens.mint("o" * 48, "alice")[0],
    lambda: tokens.mint(SECRET, "alice", ttl=1, now=time.time() - 10)[0],
    lambda: jwt.encode({"sub": "alice", "exp": time.time() + 60, "jti": "x"}, None,
                       algorithm="none"),
    lambda: jwt.encode({"sub": "alice", "exp": time.time() + 60, "jti": "x"}, SECRET,
                       algorithm="HS512"),
    lambda: jwt.encode({"sub": "alice", "jti": "x"}, SECRET, algorithm="HS256"),
    lambda: jwt.encode({"sub": "Bad User", "exp": time.time() + 60, "jti": "x"}, SECRET,
                       algorithm="HS256"),
    lambda: jwt.encode({"sub": "alice", "exp": time.time() + 60, "jti": "x",
                        "topics": ["*"]}, SECRET, algorithm="HS256"),
    lambda: "a.b.c",
])
def test_forged_or_broken_tokens_are_refused(forge):
    with pytest.raises(TokenError):
        tokens.verify(SECRET, forge())


@pytest.mark.parametrize(("user", "topics", "ttl"), [
    ("Alice", (), 60), ("alice", ("*",), 60), ("alice", ("a b",), 60), ("alice", (), 0),
])
def test_mint_refuses_bad_input(user, topics, ttl):
    with pytest.raises(ValueError):
        tokens.mint(SECRET, user, topics, ttl)


def test_each_secret_verifies_only_its_own_tokens():
    other = "o" * 48
    ours, theirs = tokens.mint(SECRET, "alice")[0], tokens.mint(other, "bob")[0]
    assert tokens.verify(SECRET, ours).user == "alice"
    assert tokens.verify(other, theirs).user == "bob"
    for secret, token in ((SECRET, theirs), (other, ours)):
        with pytest.raises(TokenError, match="Signature verification failed"):
            tokens.verify(secret, token)


# The rules of the hand-written verification, one by one (the differential test in
# test_tokens_pyjwt.py checks all of them against PyJWT at once).

NOW = 1_800_000_000


def signed(header: dict, claims: dict, secret: str = SECRET, alg: str = "HS256",
           pad: bool = False) -> str:
    """A token of exactly this header and these claims (PyJWT adds its own header)."""
    def b64(data: bytes) -> str:
        text = base64.urlsafe_b64encode(data).decode()
        return text if pad else text.rstrip("=")
    signing_input = (f"{b64(json.dumps(header).encode())}."
                     f"{b64(json.dumps(claims).encode())}")
    digest = hmac.new(secret.encode(), signing_input.encode(), HASHES[alg]).digest()
    return f"{signing_input}.{b64(digest)}"


HASHES = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}
HEADER = {"alg": "HS256", "typ": "JWT"}
CLAIMS = {"sub": "alice", "exp": NOW + 60, "jti": "t-1"}


def refusal(token: str, algorithms: tuple[str, ...] = ("HS256",), now: float = NOW) -> str:
    with pytest.raises(TokenError) as refused:
        tokens.verify(SECRET, token, algorithms, now=now)
    return str(refused.value)


def test_only_the_configured_hmac_algorithms_are_accepted():
    for alg in ("HS256", "HS384", "HS512"):
        token = signed({"alg": alg}, CLAIMS, alg=alg)
        assert tokens.verify(SECRET, token, (alg,), now=NOW).user == "alice"
        others = tuple(a for a in HASHES if a != alg)
        assert refusal(token, others) == "token invalid: The specified alg value is not allowed"
    for header in ({"alg": "none"}, {"alg": "RS256"}, {"alg": "hs256"}, {"alg": ["HS256"]}):
        assert refusal(signed(header, CLAIMS)) == (
            "token invalid: The specified alg value is not allowed")
    assert refusal(signed({"typ": "JWT"}, CLAIMS)) == "token invalid: Algorithm not specified"
    with pytest.raises(ValueError, match="HS256, HS384, HS512"):
        tokens.verify(SECRET, signed(HEADER, CLAIMS), ("HS256", "RS256"))


def test_the_header_and_payload_are_json_objects_and_crit_names_only_what_is_understood():
    payload = signed(HEADER, CLAIMS).split(".")[1]
    array = base64.urlsafe_b64encode(b"[1]").decode().rstrip("=")
    assert refusal(f"{array}.{payload}.x") == (
        "token invalid: Invalid header string: must be a json object")
    assert refusal(signed(HEADER, ["alice"])) == (  # type: ignore[arg-type]
        "token invalid: Invalid payload string: must be a json object")
    assert refusal(signed({**HEADER, "crit": ["exp"], "exp": 1}, CLAIMS)) == (
        "token invalid: Unsupported critical extension: exp")
    assert refusal(signed({**HEADER, "b64": False, "crit": ["b64"]}, CLAIMS)) == (
        "token invalid: Payload segment must be empty when 'b64' is false.")
    assert refusal(signed({**HEADER, "kid": 7}, CLAIMS)) == (
        "token invalid: Key ID header parameter must be a string")
    extra = signed({**HEADER, "kid": "k1", "cty": "x", "crit": ["b64"], "b64": True}, CLAIMS)
    assert tokens.verify(SECRET, extra, now=NOW).user == "alice"


def test_a_token_has_three_segments_of_strict_base64url():
    token = signed(HEADER, CLAIMS)
    header, payload, signature = token.split(".")
    assert refusal(f"{header}.{payload}") == "token invalid: Not enough segments"
    assert refusal(f"{token}.{signature}") == "token invalid: Invalid payload padding"
    assert tokens.verify(SECRET, signed(HEADER, CLAIMS, pad=True), now=NOW).user == "alice"
    assert refusal(token + "==") == "token invalid: Invalid crypto padding"  # 43 + 2
    # The 43rd character of an HS256 signature carries two bits that must be zero.
    last = signature[-1]
    other = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[
        ("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".index(last) | 1)]
    assert refusal(token[:-1] + other) == "token invalid: Invalid crypto padding"
    for spelled in (f"{header}.{payload}+.{signature}", f"{header}.{payload} .{signature}",
                    f"{header}.{payload}é.{signature}", f"{header}.{payload}\ud800.{signature}"):
        assert refusal(spelled) == "token invalid: Invalid payload padding"


def test_a_tampered_signature_or_payload_is_refused():
    token = signed(HEADER, CLAIMS)
    header, _, signature = token.split(".")
    bob = signed(HEADER, {**CLAIMS, "sub": "bob"}).split(".")[1]
    assert refusal(f"{header}.{bob}.{signature}") == (
        "token invalid: Signature verification failed")
    assert refusal(f"{header}.{token.split('.')[1]}.") == (
        "token invalid: Signature verification failed")


def test_expiry_is_exp_at_or_before_now_and_time_claims_are_checked_first():
    token = signed(HEADER, CLAIMS)
    assert tokens.verify(SECRET, token, now=NOW + 59.999).expires_at == NOW + 60
    assert refusal(token, now=NOW + 60) == "token expired"
    # A fractional exp counts from its whole second, as PyJWT counts it.
    assert refusal(signed(HEADER, {**CLAIMS, "exp": NOW + 0.9}), now=NOW + 0.5) == (
        "token expired")
    future = signed(HEADER, {**CLAIMS, "iat": NOW + 1, "exp": NOW - 1})
    assert refusal(future) == "token invalid: The token is not yet valid (iat)"
    assert tokens.verify(SECRET, signed(HEADER, {**CLAIMS, "iat": NOW}), now=NOW)
    assert refusal(signed(HEADER, {**CLAIMS, "nbf": NOW + 1})) == (
        "token invalid: The token is not yet valid (nbf)")
    assert refusal(signed(HEADER, {**CLAIMS, "exp": "later"})) == (
        "token invalid: Expiration Time claim (exp) must be an integer.")
    assert refusal(signed(HEADER, {**CLAIMS, "iat": None})) == (
        "token invalid: Issued At claim (iat) must be an integer.")


def test_sub_exp_and_jti_are_required_and_typed():
    for claim in ("sub", "exp", "jti"):
        missing = {k: v for k, v in CLAIMS.items() if k != claim}
        assert refusal(signed(HEADER, missing)) == (
            f'token invalid: Token is missing the "{claim}" claim')
        assert refusal(signed(HEADER, {**CLAIMS, claim: None})) == (
            f'token invalid: Token is missing the "{claim}" claim')
    assert refusal(signed(HEADER, {**CLAIMS, "sub": 5})) == (
        "token invalid: Subject must be a string")
    assert refusal(signed(HEADER, {**CLAIMS, "jti": 5})) == (
        "token invalid: JWT ID must be a string")
    assert refusal(signed(HEADER, {**CLAIMS, "aud": "someone"})) == (
        "token invalid: Invalid audience")


def test_a_secret_pyjwt_would_not_take_is_refused_as_pyjwt_refuses_it():
    pem = ("-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n"
           "-----END PUBLIC KEY-----")
    with pytest.raises(jwt.InvalidKeyError):
        tokens.verify(pem, signed(HEADER, CLAIMS, secret=pem))
