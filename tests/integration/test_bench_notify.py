"""``herald bench notify`` end to end at a tiny size: both stacks started as the benchmark
starts them, the C poster and the C SSE load generator, every row measured and rendered.

No figure is asserted (speed is the benchmark's business, on a quiet machine): only that
the machinery works and that what was accepted was delivered exactly once.
"""

from __future__ import annotations

from typing import Any

import pytest

from herald_bench import notify, report, verdicts
from herald_bench.refs.naive import NaiveStack
from herald_bench.scenarios import Sizes
from herald_bench.stack_target import HeraldStack

TINY = Sizes(notify_users=5, notify_rates=(20,), notify_seconds=1.0, notify_steady_rate=20,
             notify_steady_seconds=1.0, batch_size=5, batch_rates=(50,), batch_seconds=1.0,
             wide_users=20, wide_count=2, warmup_seconds=0.5)


def _rows(stack_class: type, redis_url: str) -> list[dict[str, Any]]:
    target = stack_class(redis_url)
    try:
        target.start()
        rows = list(notify.steps(target, TINY))
    finally:
        target.close()
    for row in rows:
        row["target"] = stack_class.name
        if "missing" not in row:
            row["within_budget"] = notify.within_budget(row)
    return rows


@pytest.fixture(scope="module")
def rows(redis_base: str) -> list[dict[str, Any]]:
    url = redis_base + "/15"
    return _rows(HeraldStack, url) + _rows(NaiveStack, url)


def test_every_row_is_measured_for_both_stacks(rows: list[dict[str, Any]]) -> None:
    kinds = {(r["target"], r["kind"]) for r in rows}
    for target in ("herald", "naive"):
        assert {(target, "single"), (target, "steady"), (target, "wide")} <= kinds
    assert ("herald", "batch") in kinds  # measured, or missing until the endpoint exists
    assert ("naive", "batch") not in kinds


def test_what_was_accepted_arrived_exactly_once(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        if "missing" in row:
            continue
        assert row["accepted"] == row["count"], row
        assert row["exactly_once"] and row["delivered"] == row["accepted"], row
        assert row["events_received"] == row["count"] * row["recipients"], row
        assert row["e2e_ms"]["p50"] is not None and row["api_ms"]["p50"] is not None
        if row["kind"] == "wide":
            assert row["after_answer_ms"]["p50"] is not None


def test_the_report_shows_the_rows_and_the_verdicts(rows: list[dict[str, Any]]) -> None:
    document = {"scenario": "notify", "command": "herald bench notify", "quick": True,
                "finished": "now", "machine": report.machine(), "results": rows,
                "notes": verdicts.ratios("notify", rows)}
    text = report.render({"notify": document}, verdicts.verdicts({"notify": document}))
    table = [line for line in text.splitlines() if line.startswith("| herald |")
             or line.startswith("| naive |")]
    assert len(table) == sum(1 for r in rows if "missing" not in r)
    for number in ("11.", "12.", "13.", "14."):
        assert any(line.startswith(number) for line in text.splitlines()), text
