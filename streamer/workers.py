"""``--processes N``: several streamer processes sharing one port.

Each child is a complete streamer (its own Redis subscription and hub) bound to the same
address with ``SO_REUSEPORT``, so the kernel spreads new connections across them. The
parent only supervises.

Guarantees: SIGTERM or SIGINT to the parent is passed to every child, and the parent
exits once they have (killing any that outlive ``STOP_GRACE`` seconds); a child that
dies on its own is restarted after a capped backoff, unless it dies within
``FAST_FAIL`` seconds of its first start (a bad address or configuration), which stops
the whole group with that child's status.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time

import gevent

log = logging.getLogger(__name__)

STOP_GRACE = 15.0
FAST_FAIL = 3.0
MAX_BACKOFF = 10.0


class Supervisor:
    """Starts, restarts and stops ``count`` streamer child processes."""

    def __init__(self, count: int, child_args: list[str]) -> None:
        self.count = count
        self.child_args = child_args
        self.children: dict[int, subprocess.Popen[bytes]] = {}
        self.started: dict[int, float] = {}
        self.stopping = False
        self.status = 0

    def _spawn(self, index: int) -> None:
        command = [sys.executable, "-m", "streamer", *self.child_args, "--reuse-port"]
        self.children[index] = subprocess.Popen(command)
        self.started.setdefault(index, time.monotonic())

    def stop(self, *_: object) -> None:
        if self.stopping:
            return
        self.stopping = True
        for child in self.children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    def run(self) -> int:
        for index in range(self.count):
            self._spawn(index)
        log.info("supervising %d streamer processes (pids %s)", self.count,
                 ", ".join(str(c.pid) for c in self.children.values()))
        backoff = dict.fromkeys(self.children, 0.5)
        while not self.stopping:
            gevent.sleep(0.2)
            for index, child in list(self.children.items()):
                if child.poll() is None or self.stopping:
                    continue
                if time.monotonic() - self.started[index] < FAST_FAIL:
                    log.error("streamer process %d exited at start (status %s); stopping",
                              child.pid, child.returncode)
                    self.status = child.returncode or 1
                    self.stop()
                    break
                log.warning("streamer process %d exited (status %s); restarting in %.1fs",
                            child.pid, child.returncode, backoff[index])
                gevent.sleep(backoff[index])
                backoff[index] = min(MAX_BACKOFF, backoff[index] * 2)
                self._spawn(index)
        return self._reap()

    def _reap(self) -> int:
        deadline = time.monotonic() + STOP_GRACE
        for child in self.children.values():
            while child.poll() is None and time.monotonic() < deadline:
                gevent.sleep(0.05)
            if child.poll() is None:
                log.warning("streamer process %d did not stop; killing it", child.pid)
                child.kill()
                child.wait()
        return self.status
