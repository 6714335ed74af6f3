"""Timestamps: stored as integer milliseconds, shown as ISO 8601 UTC."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def now_ms() -> int:
    return int(time.time() * 1000)


def iso(ms: int | str | None) -> str | None:
    """``2026-11-28T01:40:00.123Z`` for a millisecond timestamp; None stays None."""
    if ms in (None, ""):
        return None
    moment = datetime.fromtimestamp(int(ms) / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
