"""Child processes run together: each in its own process group, its output prefixed,
restarted when it crashes, all stopped on request.

``Supervisor`` runs a set of ``Command``s (``herald run``'s services) until it is told to
stop. It guarantees:

- every child starts in a new session, so it leads its own process group: a signal to
  one child, or Ctrl-C in the terminal, reaches no other;
- every line a child writes (stdout and stderr) is copied to one output, prefixed with
  the time and the child's name (``12:00:01 streamer | ...``, as honcho prints it);
- a child that exits while the supervisor runs is logged (its name, its exit status or
  signal, how long it ran, the delay) and started again after that delay, which doubles
  from ``Backoff.first`` to ``Backoff.cap`` for each quick exit in a row and starts
  over once the child has run ``Backoff.reset_after`` seconds. It never gives up: only
  ``request_stop()`` (which ``stop_on`` wires to signals) ends the run;
- then ``run()`` sends SIGTERM to each child, and to what is left of its group once the
  child has exited; SIGKILL goes to every group still alive after ``grace`` seconds.
  ``run()`` returns once no process of any group is left (zombies aside), and the
  output of every child has been copied.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import psutil

POLL_SECONDS = 0.1
SUPERVISOR_NAME = "herald"


@dataclass(frozen=True)
class Command:
    """What to run: a name for its output lines, the argv, its environment and directory."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] | None = None  # the whole environment; None inherits ours
    cwd: str | None = None


@dataclass(frozen=True)
class Backoff:
    """Restart delays: ``first``, doubling per quick exit in a row, at most ``cap``."""

    first: float = 1.0
    cap: float = 30.0
    reset_after: float = 30.0  # a child that ran this long starts over at ``first``

    def delay(self, quick_exits: int) -> float:
        return min(self.cap, self.first * 2 ** max(0, quick_exits - 1))


class Output:
    """One text stream that several threads write whole prefixed lines to."""

    def __init__(self, stream: IO[str] | None = None, width: int = 8) -> None:
        self.stream = stream or sys.stdout
        self.width = width
        self._lock = threading.Lock()

    def line(self, name: str, text: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        self.write(f"{stamp} {name.ljust(self.width)} | {text}\n")

    def write(self, text: str) -> None:
        """Write ``text`` as is (a banner), never interleaved with a child's line."""
        with self._lock, contextlib.suppress(OSError, ValueError):  # a closed terminal
            self.stream.write(text)
            self.stream.flush()

    def copy(self, name: str, pipe: IO[bytes]) -> threading.Thread:
        """Copy ``pipe`` line by line, prefixed with ``name``, until its end, in a thread."""
        def pump() -> None:
            with pipe:
                for raw in pipe:
                    self.line(name, raw.decode("utf-8", "replace").rstrip("\r\n"))

        thread = threading.Thread(target=pump, name=f"output-{name}", daemon=True)
        thread.start()
        return thread


def describe(returncode: int) -> str:
    """``exit status 3`` or ``killed by SIGKILL``."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


def group_alive(pgid: int) -> bool:
    """True while process group ``pgid`` has a member that is not a zombie."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    for process in psutil.process_iter(["status"]):
        with contextlib.suppress(psutil.Error, OSError):
            if (process.info["status"] != psutil.STATUS_ZOMBIE
                    and os.getpgid(process.pid) == pgid):
                return True
    return False


def signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


@dataclass
class Child:
    """One command and its current process (its own session and process group)."""

    command: Command
    output: Output
    popen: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restart_at: float | None = None
    quick_exits: int = 0
    copiers: list[threading.Thread] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.command.name

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def start(self) -> None:
        """Start the process; raises ``OSError`` when it cannot be executed."""
        self.restart_at = None
        self.popen = subprocess.Popen(
            list(self.command.argv), env=dict(self.command.env) if self.command.env else None,
            cwd=self.command.cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True)
        self.started_at = time.monotonic()
        assert self.popen.stdout is not None
        self.copiers = [t for t in self.copiers if t.is_alive()]  # a crash loop adds one each
        self.copiers.append(self.output.copy(self.name, self.popen.stdout))

    def exited(self) -> int | None:
        """The exit status once the process has ended (and been reaped), else None."""
        return self.popen.poll() if self.popen else None

    def group_alive(self) -> bool:
        return self.popen is not None and group_alive(self.popen.pid)


class Supervisor:
    """Runs ``Command``s until ``request_stop()``; see the module docstring."""

    def __init__(self, output: Output | None = None, backoff: Backoff | None = None,
                 grace: float = 10.0) -> None:
        self.output = output or Output()
        self.backoff = backoff or Backoff()
        self.grace = grace
        self.children: list[Child] = []
        self._stop_requested = False  # a plain bool: set from signal handlers

    @property
    def stopping(self) -> bool:
        return self._stop_requested

    def add(self, command: Command) -> None:
        self.children.append(Child(command, self.output))
        self.output.width = max(self.output.width, len(command.name))

    def pids(self) -> dict[str, int | None]:
        return {child.name: child.pid for child in self.children}

    def request_stop(self, *_: Any) -> None:
        """Make ``run()`` stop every child and return; safe in a signal handler."""
        self._stop_requested = True

    def say(self, text: str) -> None:
        self.output.line(SUPERVISOR_NAME, text)

    def run(self) -> None:
        """Start every child, keep them running until a stop is requested, stop them."""
        try:
            for child in self.children:
                if not self._stop_requested:
                    self._start(child)
            while not self._stop_requested:
                self._check()
                time.sleep(POLL_SECONDS)
        finally:
            self._stop_all()

    def _start(self, child: Child) -> None:
        try:
            child.start()
        except OSError as exc:
            self._schedule_restart(child, f"could not start: {exc}")
            return
        self.say(f"{child.name} started (pid {child.pid})")

    def _check(self) -> None:
        now = time.monotonic()
        for child in self.children:
            if child.restart_at is not None:
                if now >= child.restart_at:
                    self._start(child)
                continue
            code = child.exited()
            if code is not None:
                ran = now - child.started_at
                signal_group(child.popen.pid, signal.SIGTERM)  # type: ignore[union-attr]
                self._schedule_restart(child, f"exited ({describe(code)}) after {ran:.1f} s",
                                       ran)

    def _schedule_restart(self, child: Child, what: str, ran: float = 0.0) -> None:
        child.quick_exits = 1 if ran >= self.backoff.reset_after else child.quick_exits + 1
        delay = self.backoff.delay(child.quick_exits)
        child.restart_at = time.monotonic() + delay
        self.say(f"{child.name} {what}; restarting in {delay:.1f} s")

    def _stop_all(self) -> None:
        running = [c for c in self.children if c.popen is not None and c.exited() is None]
        for child in running:
            self.say(f"stopping {child.name} (pid {child.pid})")
            child.popen.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        groups = [c for c in self.children if c.popen is not None]
        self._wait_groups(groups, time.monotonic() + self.grace)
        for child in groups:
            if child.group_alive():
                self.say(f"{child.name} still running after {self.grace:.0f} s: SIGKILL")
                signal_group(child.popen.pid, signal.SIGKILL)  # type: ignore[union-attr]
            child.popen.wait()  # type: ignore[union-attr]
        for child in self.children:
            for copier in child.copiers:
                copier.join(timeout=2)
        if self.children:
            self.say("stopped")

    def _wait_groups(self, children: list[Child], deadline: float) -> None:
        """Until ``deadline``: wait for each group to empty, SIGTERM orphans once."""
        orphans_told: set[int] = set()
        while time.monotonic() < deadline:
            alive = [c for c in children if c.exited() is None or c.group_alive()]
            if not alive:
                return
            for child in alive:
                pgid = child.popen.pid  # type: ignore[union-attr]
                if child.exited() is not None and pgid not in orphans_told:
                    signal_group(pgid, signal.SIGTERM)
                    orphans_told.add(pgid)
            time.sleep(0.05)


@contextlib.contextmanager
def stop_on(supervisor: Supervisor, *signals: signal.Signals) -> Iterator[None]:
    """While inside, each of ``signals`` asks ``supervisor`` to stop (and nothing else)."""
    previous = {sig: signal.signal(sig, supervisor.request_stop) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
