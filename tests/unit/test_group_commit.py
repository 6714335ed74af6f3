"""Group commit (``tasks.grouping``): callers in real threads, a send that waits on cue."""

from __future__ import annotations

import threading
import time

import pytest

from herald.errors import DispatchError
from tasks.grouping import GroupCommit


class Sender:
    """A ``send`` that records its calls; the first call waits until ``release``."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[list[int]] = []
        self.started, self.gate = threading.Event(), threading.Event()
        self.fail = fail

    def __call__(self, items: list[int]) -> None:
        self.calls.append(items)
        if len(self.calls) == 1:
            self.started.set()
            assert self.gate.wait(10)
        if self.fail:
            raise DispatchError("broker unavailable")


def _call(commit: GroupCommit[int], items: list[int], outcomes: dict[int, str]) -> None:
    try:
        commit(items)
        outcomes[items[0]] = "sent"
    except DispatchError:
        outcomes[items[0]] = "refused"


def _waiting(commit: GroupCommit[int], count: int) -> None:
    deadline = time.monotonic() + 10
    while len(commit._waiting) < count:  # the test's one look inside
        assert time.monotonic() < deadline
        time.sleep(0.001)


def _run_group(sender: Sender) -> dict[int, str]:
    """One caller sends alone and is held; three come meanwhile; then release."""
    commit, outcomes = GroupCommit(sender), {}
    first = threading.Thread(target=_call, args=(commit, [0], outcomes))
    first.start()
    assert sender.started.wait(10)
    others = [threading.Thread(target=_call, args=(commit, [n, n + 1], outcomes))
              for n in (10, 20, 30)]
    for n, thread in enumerate(others, start=1):
        thread.start()
        _waiting(commit, n)  # in this order
    sender.gate.set()
    for thread in (first, *others):
        thread.join(10)
        assert not thread.is_alive()
    return outcomes


def test_a_caller_alone_is_sent_at_once():
    sent: list[list[str]] = []
    commit = GroupCommit(sent.append)
    commit(["a"])
    commit(["b", "c"])
    assert sent == [["a"], ["b", "c"]]


def test_callers_that_come_during_a_send_share_the_next_one_in_order():
    sender = Sender()
    outcomes = _run_group(sender)
    assert sender.calls == [[0], [10, 11, 20, 21, 30, 31]]
    assert outcomes == {0: "sent", 10: "sent", 20: "sent", 30: "sent"}


def test_a_failed_send_fails_every_member_and_the_next_group_still_goes():
    sender = Sender(fail=True)
    outcomes = _run_group(sender)
    assert sender.calls == [[0], [10, 11, 20, 21, 30, 31]]
    assert set(outcomes.values()) == {"refused"}
    sender.fail = False
    commit = GroupCommit(sender)
    commit([40])  # nothing is left busy after a failure
    assert sender.calls[-1] == [40]


def test_an_interrupted_sender_hands_the_lead_on():
    calls: list[list[int]] = []

    def send(items: list[int]) -> None:
        calls.append(items)
        if items == [1]:
            raise KeyboardInterrupt  # not an Exception: the group still wakes

    commit = GroupCommit(send)
    with pytest.raises(KeyboardInterrupt):
        commit([1])
    commit([2])
    assert calls == [[1], [2]]
