"""The expiry schedule of open streams, driven by a clock the test sets."""

from __future__ import annotations

import math
import time

import gevent

from streamer.expiry import Deadlines


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def schedule(now: float = 1000.0) -> tuple[Deadlines[str], Clock, list[str]]:
    clock, expired = Clock(now), []
    deadlines: Deadlines[str] = Deadlines(expired.extend, clock)
    return deadlines, clock, expired


def test_an_item_expires_at_its_deadline_never_before():
    deadlines, clock, expired = schedule()
    deadlines.add("a", 1002)
    deadlines.add("b", 1001)
    clock.now = 1000.999
    deadlines.run_due()
    assert expired == []
    clock.now = 1001.0
    deadlines.run_due()
    assert expired == ["b"]
    clock.now = 1005.0
    deadlines.run_due()
    assert expired == ["b", "a"]
    assert len(deadlines) == 0
    deadlines.stop()


def test_a_forgotten_or_moved_item_is_not_expired_at_its_old_deadline():
    deadlines, clock, expired = schedule()
    deadlines.add("closed", 1001)
    deadlines.add("renewed", 1001)
    deadlines.discard("closed")
    deadlines.add("renewed", 1003)
    clock.now = 1002.0
    deadlines.run_due()
    assert expired == []
    clock.now = 1003.0
    deadlines.run_due()
    assert expired == ["renewed"]
    deadlines.stop()


def test_the_heap_holds_each_second_once_whatever_the_number_or_churn_of_items():
    deadlines, clock, expired = schedule()
    for n in range(10_000):
        deadlines.add(f"shared-token-{n}", 1060)
    for _ in range(1000):  # connections with one token come and go
        deadlines.add("churn", 1060)
        deadlines.discard("churn")
    assert len(deadlines._seconds) == 1
    clock.now = 1060.0
    deadlines.run_due()
    assert len(expired) == 10_000
    deadlines.stop()


def test_the_event_loop_timer_fires_at_the_deadline():
    fired: list[float] = []
    deadlines: Deadlines[str] = Deadlines(lambda items: fired.append(time.time()))
    deadline = time.time() + 0.3
    deadlines.add("a", deadline)
    for _ in range(100):
        if fired:
            break
        gevent.sleep(0.05)
    assert fired and fired[0] >= math.ceil(deadline)  # deadlines are whole seconds
    deadlines.stop()
