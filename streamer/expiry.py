"""Token expiry on open streams: when each connection's token runs out, and its last words.

A token is valid while ``time.time() < exp`` (as PyJWT checks it); a stream must not
outlive it. ``Deadlines`` keeps every open connection under the whole second its token
expires at and runs one event-loop timer, armed for the earliest second, for all of
them: no greenlet and no timer per connection. Adding, moving or forgetting a
connection is O(log n) at worst (a heap push for a second not yet scheduled, else O(1));
the heap holds each scheduled second once, so it is bounded by the distinct expiry
seconds ahead, not by the number of connections or by churn.

Guarantees:
- ``expire`` receives each connection at or after its deadline by the wall clock, never
  before (a timer that fires early, say after a clock step, is armed again);
- a connection forgotten (closed) or moved (its token swapped) before its deadline is
  not expired at the old one;
- the last words (each transport's ``expired``) carry no event id: they leave the
  client's position where its last event or ``ready`` put it, so a reconnection resumes
  with no gap and no duplicate.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

import gevent

TOKEN_EXPIRED = "token expired"
EXPIRED_EVENT = "token-expired"  # the SSE event and the WebSocket reply

Item = TypeVar("Item", bound=Hashable)


class Deadlines(Generic[Item]):
    """Items due at whole epoch seconds; ``expire`` gets those whose second has come."""

    def __init__(self, expire: Callable[[list[Item]], None],
                 clock: Callable[[], float] = time.time) -> None:
        self._expire = expire
        self._clock = clock
        self._due: dict[int, set[Item]] = {}  # second -> items due then (maybe empty)
        self._seconds: list[int] = []  # heap of the keys of ``_due``
        self._at: dict[Item, int] = {}
        self._timer: Any = None
        self._armed_for: int | None = None

    def __len__(self) -> int:
        return len(self._at)

    def add(self, item: Item, deadline: float) -> None:
        """Expire ``item`` at ``deadline`` (epoch seconds), instead of any earlier plan."""
        second = math.ceil(deadline)
        self.discard(item)
        self._at[item] = second
        bucket = self._due.get(second)
        if bucket is None:
            bucket = self._due[second] = set()
            heapq.heappush(self._seconds, second)
        bucket.add(item)
        if self._armed_for is None or second < self._armed_for:
            self._arm(second)

    def discard(self, item: Item) -> None:
        """Forget ``item`` (its empty second stays in the heap until it comes)."""
        second = self._at.pop(item, None)
        if second is not None:
            self._due[second].discard(item)

    def run_due(self) -> None:
        """Expire everything due by now, then arm the timer for what comes next."""
        now = self._clock()
        due: list[Item] = []
        while self._seconds and self._seconds[0] <= now:
            for item in self._due.pop(heapq.heappop(self._seconds)):
                del self._at[item]
                due.append(item)
        self._armed_for = None
        if self._seconds:
            self._arm(self._seconds[0])
        if due:
            self._expire(due)

    def _arm(self, second: int) -> None:
        self.stop()
        self._armed_for = second
        delay = max(0.0, second - self._clock())
        self._timer = gevent.get_hub().loop.timer(delay)
        self._timer.start(self.run_due)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer.close()
            self._timer = None
        self._armed_for = None


def expired(exp: int, now: float | None = None) -> bool:
    """True once a token with this ``exp`` no longer verifies."""
    return (time.time() if now is None else now) >= exp
