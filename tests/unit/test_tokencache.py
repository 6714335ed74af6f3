"""The streamer's verified-token cache: once per token, never past its expiry, bounded."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from herald import tokens
from herald.errors import TokenError
from herald.tokens import Grant
from streamer import tokencache
from streamer.tokencache import TokenCache
from tests.conftest import wait_until

SECRET = "s" * 64
ALGORITHMS = ("HS256",)


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The tokens the cache handed to ``herald.tokens.verify``, in order."""
    seen: list[str] = []
    real: Callable[..., Grant] = tokens.verify

    def counting(secret: str, token: str, algorithms: tuple[str, ...]) -> Grant:
        seen.append(token)
        return real(secret, token, algorithms)

    monkeypatch.setattr(tokencache.tokens, "verify", counting)
    return seen


def test_a_token_is_verified_once_and_gives_the_same_grant(verifications):
    cache = TokenCache(SECRET, ALGORITHMS)
    token, minted = tokens.mint(SECRET, "alice", ("room:*",), ttl=600)
    first, again = cache.verify(token), cache.verify(token)
    assert first == minted and again is first
    assert verifications == [token]


def test_a_refused_token_is_checked_in_full_every_time(verifications):
    cache = TokenCache(SECRET, ALGORITHMS)
    forged = tokens.mint("o" * 48, "alice")[0]
    for _ in range(2):
        with pytest.raises(TokenError, match="token invalid"):
            cache.verify(forged)
    assert verifications == [forged, forged] and len(cache) == 0


def test_a_cached_grant_is_not_served_at_its_expiry(verifications):
    now = [time.time()]
    cache = TokenCache(SECRET, ALGORITHMS, clock=lambda: now[0])
    token, grant = tokens.mint(SECRET, "alice", ttl=600)
    cache.verify(token)
    now[0] = grant.expires_at - 0.001
    cache.verify(token)
    assert verifications == [token]
    now[0] = grant.expires_at  # from here on the cache must ask again
    cache.verify(token)
    assert verifications == [token, token]


def test_an_expired_cached_token_is_refused():
    cache = TokenCache(SECRET, ALGORITHMS)
    token, grant = tokens.mint(SECRET, "alice", ttl=1)
    assert cache.verify(token) == grant
    wait_until(lambda: time.time() >= grant.expires_at, 3, what="the token's expiry")
    with pytest.raises(TokenError, match="token expired"):
        cache.verify(token)


def test_the_cache_holds_at_most_its_size_dropping_the_least_recently_used(verifications):
    cache = TokenCache(SECRET, ALGORITHMS, size=3)
    minted = [tokens.mint(SECRET, f"u{i}", ttl=600)[0] for i in range(10)]
    for token in minted:
        cache.verify(token)
        assert len(cache) <= 3
    cache.verify(minted[-1])  # still held: no new verification
    assert verifications == minted
    cache.verify(minted[0])  # long evicted: verified again
    assert verifications == [*minted, minted[0]]
    assert len(cache) == 3


def test_prefetch_verifies_a_batch_once_and_remembers_refusals_for_that_batch(verifications):
    cache = TokenCache(SECRET, ALGORITHMS)
    good = [tokens.mint(SECRET, f"u{i}", ttl=600)[0] for i in range(3)]
    forged = tokens.mint("o" * 48, "mallory")[0]
    cache.prefetch([*good, forged, good[0]])
    assert verifications == [*good, forged]
    assert [cache.verify(token).user for token in good] == ["u0", "u1", "u2"]
    with pytest.raises(TokenError, match="Signature verification failed"):
        cache.verify(forged)  # refused by the prefetch: not checked a second time
    assert verifications == [*good, forged]
    cache.prefetch([good[1]])  # a new batch: held tokens stay, refusals are forgotten
    with pytest.raises(TokenError, match="Signature verification failed"):
        cache.verify(forged)
    assert verifications == [*good, forged, forged]
