"""Backoff of outbound retries: exponential ceiling, full jitter, Retry-After honoured."""

from __future__ import annotations

import pytest

from tasks.outbound import backoff


@pytest.mark.parametrize(("attempt", "ceiling"), [(1, 2.0), (2, 4.0), (3, 8.0), (6, 60.0),
                                                   (30, 60.0)])
def test_the_ceiling_doubles_per_attempt_up_to_the_cap(attempt: int, ceiling: float) -> None:
    assert backoff(attempt, 2.0, 60.0, rand=lambda: 1.0) == ceiling
    assert backoff(attempt, 2.0, 60.0, rand=lambda: 0.0) == 0.0
    assert backoff(attempt, 2.0, 60.0, rand=lambda: 0.5) == ceiling / 2


def test_full_jitter_spreads_delays_over_the_whole_range() -> None:
    delays = [backoff(4, 1.0, 60.0) for _ in range(2000)]
    assert 0 <= min(delays) < 0.5 and 7.5 < max(delays) <= 8.0


def test_retry_after_is_never_undercut_but_is_capped() -> None:
    assert backoff(1, 2.0, 60.0, retry_after=30, rand=lambda: 0.1) == 30
    assert backoff(5, 2.0, 60.0, retry_after=1, rand=lambda: 1.0) == 32
    assert backoff(1, 2.0, 60.0, retry_after=3600, rand=lambda: 0.0) == 60
