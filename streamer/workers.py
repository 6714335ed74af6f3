"""``--processes N``: several streamer processes sharing one port.

Each child is a complete streamer (its own Redis subscription and hub) bound to the same
address with ``SO_REUSEPORT``, so the kernel spreads new connections across them. The
parent only supervises, with ``herald.processes.Supervisor`` (the helper ``herald run``
uses too). The children stay in the parent's process group and write to its stdout and
stderr, so Ctrl-C in a terminal, or a signal to the group, reaches them all, and their
log lines are the streamer's own.

Guarantees: SIGTERM or SIGINT to the parent is passed to every child, and the parent
exits once they have (killing any that outlive ``STOP_GRACE`` seconds); a child that
dies on its own is restarted after a capped backoff, unless it dies within
``FAST_FAIL`` seconds of its first start (a bad address or configuration), which stops
the whole group with that child's status. Child i (from 0) serves its metrics on the given
metrics port + i (``--metrics-port``; none when that port is 0).
"""

from __future__ import annotations

import sys

from herald import processes

STOP_GRACE = 15.0
FAST_FAIL = 3.0
BACKOFF = processes.Backoff(first=0.5, cap=10.0, reset_after=30.0)


class Supervisor(processes.Supervisor):
    """Starts, restarts and stops ``count`` streamer child processes."""

    def __init__(self, count: int, child_args: list[str], metrics_port: int = 0) -> None:
        super().__init__(None, BACKOFF, STOP_GRACE, fail_fast=FAST_FAIL)
        argv = [sys.executable, "-m", "streamer", *child_args, "--reuse-port"]
        for index in range(count):
            metrics = ["--metrics-port", str(metrics_port + index if metrics_port else 0)]
            self.add(processes.Command(f"streamer-{index + 1}", [*argv, *metrics],
                                       own_group=False))

    def stop(self, *_: object) -> None:
        """Stop every child and return from ``run()`` (a signal handler)."""
        self.request_stop()
