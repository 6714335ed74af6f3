"""Subscriber tokens (pure functions)."""

from __future__ import annotations

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
