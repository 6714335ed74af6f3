"""Group commit: concurrent callers in one process share one send.

``GroupCommit(send)`` is called with a list of items (an API request's stored
notifications) and returns once they were sent, or raises. While a send is in flight,
the callers that come meanwhile wait; as soon as it is done, everything that waits goes
out in one call of ``send``. There is no timer: a caller alone is sent at once (its
latency does not grow), and under load groups form by themselves, one per round trip of
``send``. The API gives each of its processes one, around ``tasks.notifications.dispatch``:
single POSTs that arrive together then share their in-app task and its kombu publish
batch, which cost the API about 0.5 ms of CPU and the worker about 1.3 ms per message.

Guarantees:
- each caller returns only once its items were handed to ``send`` and ``send``
  returned; when that ``send`` raised, every caller of the group raises
  ``DispatchError`` (the caller whose thread ran it raises what ``send`` raised), so each
  can undo what it stored: a failed group fails all its members;
- no caller is left waiting: whenever items wait, one of their callers runs ``send``
  (the leader); when it is done it wakes its group and hands the lead to the first of
  those that came meanwhile, even when ``send`` raised or the leader was interrupted.
  A process that stops gracefully (gunicorn waits for its requests) therefore drains;
- items keep their callers' order within a group; a caller's items are never split.

Built on ``threading``: under gevent's monkey patching (gunicorn's gevent worker) its
lock and events are gevent's, and the leader is a request's own greenlet, so there is
no greenlet or thread of its own to start or stop; with real threads it works the same.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from herald.errors import DispatchError

T = TypeVar("T")


@dataclass(eq=False)
class _Caller(Generic[T]):
    """One caller's items, and how its wait ended."""

    items: list[T]
    woken: threading.Event = field(default_factory=threading.Event)
    leads: bool = False  # woken to send the next group, not because its group was sent
    error: BaseException | None = None


class GroupCommit(Generic[T]):
    """Sends callers' items through ``send``, as few calls as concurrency allows."""

    def __init__(self, send: Callable[[list[T]], None]) -> None:
        self._send = send
        self._lock = threading.Lock()
        self._waiting: list[_Caller[T]] = []
        self._busy = False  # a leader is sending (or about to)

    def __call__(self, items: list[T]) -> None:
        """Send ``items`` with whatever else waits; return once sent. Raises
        ``DispatchError`` when the group's ``send`` failed (see the module)."""
        me = _Caller(items)
        with self._lock:
            self._waiting.append(me)
            me.leads, self._busy = not self._busy, True
        if not me.leads:
            me.woken.wait()
        if me.leads:
            return self._lead(me)
        if me.error is not None:
            raise DispatchError(str(me.error)) from me.error
        return None

    def _lead(self, me: _Caller[T]) -> None:
        """Send every waiting caller's items (``me``'s among them), wake them, and hand
        the lead to the first caller that came meanwhile."""
        with self._lock:
            group, self._waiting = self._waiting, []
        try:
            self._send([item for caller in group for item in caller.items])
        except BaseException as exc:
            self._wake(group, me, exc)
            raise
        self._wake(group, me, None)

    def _wake(self, group: list[_Caller[T]], me: _Caller[T],
              failure: BaseException | None) -> None:
        with self._lock:
            leader = self._waiting[0] if self._waiting else None
            self._busy = leader is not None
        for caller in group:
            if caller is not me:
                caller.error = failure
                caller.woken.set()
        if leader is not None:
            leader.leads = True
            leader.woken.set()
