"""Verified tokens of one streamer process: each distinct token is checked once.

Checking a token's signature and claims is a good part of a handshake's cost (11 µs of
CPU, was 28 with PyJWT). A client reconnecting with a token this process holds (a
dropped connection, tabs or clients sharing a token) skips the check; a crowd
reconnecting to a fresh process (a restart) has its tokens checked in batches by
``prefetch``, back to back, which cost about a third less than one per handshake when
it was measured with PyJWT (the verifier's code stays in the CPU's caches).

Guarantees:
- ``verify`` returns exactly what ``herald.tokens.verify`` returned for the same token
  string (the same ``Grant``, with its ``expires_at``), or raises the ``TokenError``
  it raised;
- a held token is never returned at or after its expiry (``exp``): it is verified
  again, which refuses it as expired;
- a refusal is not held: a token refused by a ``prefetch`` is refused again without a
  second check only until the next ``prefetch`` (the next batch of connections), and a
  token refused by ``verify`` is checked in full again next time;
- at most ``size`` tokens are held (least recently used ones go first, expired ones
  with them), so a flood of distinct valid tokens cannot grow the process' memory
  without bound;
- revocation is not decided here: the caller checks the ``Grant``'s token id against
  its deny list on every use, held or not.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

from herald import tokens
from herald.errors import TokenError
from herald.tokens import Grant

# Tokens held per process: twice the 10,000 clients one process is sized for; about
# 620 bytes each (token ~240, Grant and entry ~380, measured), so at most ~13 MB.
CACHE_SIZE = 20_000


class TokenCache:
    """``herald.tokens.verify`` for one secret, remembering what it verified."""

    def __init__(self, secret: str, algorithms: tuple[str, ...], size: int = CACHE_SIZE,
                 clock: Callable[[], float] = time.time) -> None:
        self.secret = secret
        self.algorithms = algorithms
        self.size = size
        self._clock = clock  # the clock ``herald.tokens.verify`` checks ``exp`` against
        # An OrderedDict, least recently used first, rather than cachetools' TLRUCache,
        # whose expiry heap and layers took 3.6 µs of a distinct token's 18.5 (check,
        # insert, lookup; 1.5 µs here). An expired grant is not served, and goes in turn.
        self._grants: OrderedDict[str, Grant] = OrderedDict()
        self._refused: dict[str, str] = {}  # token -> why, from the last prefetch

    def verify(self, token: str) -> Grant:
        """The token's ``Grant``; raise ``TokenError`` saying why it is refused."""
        grant = self._grants.get(token)
        if grant is not None and self._clock() < grant.expires_at:
            self._grants.move_to_end(token)
            return grant
        refused = self._refused.get(token)
        if refused is not None:
            raise TokenError(refused)
        return self._hold(token, tokens.verify(self.secret, token, self.algorithms))

    def prefetch(self, batch: Iterable[str]) -> None:
        """Verify those of ``batch`` not held yet, back to back (see the module's doc)."""
        self._refused = {}
        for token in batch:
            if token in self._grants or token in self._refused:
                continue
            try:
                self._hold(token, tokens.verify(self.secret, token, self.algorithms))
            except TokenError as exc:
                self._refused[token] = str(exc)

    def _hold(self, token: str, grant: Grant) -> Grant:
        self._grants[token] = grant
        self._grants.move_to_end(token)  # it may replace an expired one
        if len(self._grants) > self.size:
            self._grants.popitem(last=False)
        return grant

    def __len__(self) -> int:
        return len(self._grants)
