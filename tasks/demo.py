"""Demonstration jobs: something visible to watch in the demo page and in Flower."""

from __future__ import annotations

import time

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.jobs import JobTask, job_kind

# Stays well inside the default HERALD_TASK_TIME_LIMIT (600 s).
MAX_DEMO_SECONDS = 300


class DemoFailure(RuntimeError):
    """Raised on purpose by a countdown asked to fail."""


class CountdownParams(BaseModel):
    """Parameters of ``demo.countdown``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    steps: int = Field(10, ge=1, le=1000, description="How many steps to count.")
    interval: float = Field(0.5, ge=0, le=10, description="Seconds between steps.")
    fail_at: int | None = Field(None, ge=1, description="Fail on reaching this step.")

    @model_validator(mode="after")
    def _short_enough(self) -> CountdownParams:
        if self.steps * self.interval > MAX_DEMO_SECONDS:
            raise ValueError(f"steps * interval must be at most {MAX_DEMO_SECONDS} seconds")
        return self


@job_kind("demo.countdown", CountdownParams,
          "Counts to `steps`, one step every `interval` seconds, reporting progress; "
          "fails at step `fail_at` when given.")
def countdown(self: JobTask, steps: int = 10, interval: float = 0.5,
              fail_at: int | None = None) -> dict[str, int]:
    """Count, publishing ``job.progress`` after each step."""
    for done in range(1, steps + 1):
        time.sleep(interval)
        if fail_at == done:
            raise DemoFailure(f"failed at step {done}, as asked by fail_at")
        self.progress(done, steps)
    return {"counted": steps}
