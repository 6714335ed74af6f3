"""Verified tokens of one streamer process: each distinct token is checked once.

A token's signature and claims are most of a handshake's cost. A client reconnecting
with a token this process holds (a dropped connection, tabs or clients sharing a token)
skips the check; a crowd reconnecting to a fresh process (a restart) has its tokens
checked in batches by ``prefetch``, back to back, which costs about a third less than
one per handshake (the verifier's code stays in the CPU's caches).

Guarantees:
- ``verify`` returns exactly what ``herald.tokens.verify`` returned for the same token
  string (the same ``Grant``, with its ``expires_at``), or raises the ``TokenError``
  it raised;
- a held token is never returned at or after its expiry (``exp``): it is verified
  again, which refuses it as expired;
- a refusal is not held: a token refused by a ``prefetch`` is refused again without a
  second check only until the next ``prefetch`` (the next batch of connections), and a
  token refused by ``verify`` is checked in full again next time;
- at most ``size`` tokens are held (least recently used ones go first), so a flood of
  distinct valid tokens cannot grow the process' memory without bound;
- revocation is not decided here: the caller checks the ``Grant``'s token id against
  its deny list on every use, held or not.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from cachetools import TLRUCache

from herald import tokens
from herald.errors import TokenError
from herald.tokens import Grant

# Tokens held per process: twice the 10,000 clients one process is sized for; about
# 800 bytes each (token, Grant, bookkeeping), so at most ~16 MB.
CACHE_SIZE = 20_000


def _until_expiry(_token: str, grant: Grant, _now: float) -> float:
    return grant.expires_at


class TokenCache:
    """``herald.tokens.verify`` for one secret, remembering what it verified."""

    def __init__(self, secret: str, algorithms: tuple[str, ...], size: int = CACHE_SIZE,
                 clock: Callable[[], float] = time.time) -> None:
        self.secret = secret
        self.algorithms = algorithms
        # The clock is the one PyJWT checks ``exp`` against (epoch seconds).
        self._grants: TLRUCache[str, Grant] = TLRUCache(size, _until_expiry, timer=clock)
        self._refused: dict[str, str] = {}  # token -> why, from the last prefetch

    def verify(self, token: str) -> Grant:
        """The token's ``Grant``; raise ``TokenError`` saying why it is refused."""
        try:
            return self._grants[token]  # KeyError when absent, or at or after its expiry
        except KeyError:
            pass
        refused = self._refused.get(token)
        if refused is not None:
            raise TokenError(refused)
        grant = tokens.verify(self.secret, token, self.algorithms)
        self._grants[token] = grant
        return grant

    def prefetch(self, batch: Iterable[str]) -> None:
        """Verify those of ``batch`` not held yet, back to back (see the module's doc)."""
        self._refused = {}
        for token in batch:
            if token in self._grants or token in self._refused:
                continue
            try:
                self._grants[token] = tokens.verify(self.secret, token, self.algorithms)
            except TokenError as exc:
                self._refused[token] = str(exc)

    def __len__(self) -> int:
        return len(self._grants)
