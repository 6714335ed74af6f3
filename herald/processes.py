"""Child processes: each in its own process group, stopped with everything it started.

The one way Herald starts and stops child processes: ``herald run`` (``stack.py``), the
streamer's ``--processes N`` (``streamer/workers.py``), the embedded Redis
(``embedded.py``), the tests (``tests/conftest.py``) and the benchmark's servers
(``herald_bench``).

``Process`` runs one ``Command``. It guarantees:

- the child starts in a new session, so it leads its own process group: a signal to
  one child, or Ctrl-C in the terminal, reaches no other (unless its ``Command`` says
  ``own_group=False``: then it stays in our group, and what is said below of its group
  is said of it alone);
- its output (stdout and stderr) goes where the caller says: every line copied to an
  ``Output``, prefixed with the time and the child's name (``12:00:01 streamer | ...``,
  as honcho prints it), or appended to a log file, or left on our own stdout/stderr;
- ``stop(grace)`` sends SIGTERM to the child, then to what is left of its group once
  the child has exited, and SIGKILL to the group if anything of it is alive after
  ``grace`` seconds. It returns once no process of the group is left (zombies aside, and
  at most ``KILL_WAIT`` seconds after the SIGKILL), with the child's exit status.

``Supervisor`` runs a set of ``Command``s until it is told to stop. It guarantees:

- a child that exits while the supervisor runs is logged (its name, its exit status or
  signal, how long it ran, the delay) and started again after that delay, which doubles
  from ``Backoff.first`` to ``Backoff.cap`` for each quick exit in a row and starts
  over once the child has run ``Backoff.reset_after`` seconds. Only ``request_stop()``
  (which ``stop_on`` wires to signals) ends the run, or, with ``fail_fast``, a child
  that exits within that many seconds of its first start (a bad address or setting):
  ``run()`` then returns that child's status;
- then ``run()`` stops every child at once as ``Process.stop`` does and returns once no
  process of any group is left, and the output of every child has been copied.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import psutil

log = logging.getLogger(__name__)

POLL_SECONDS = 0.1
KILL_WAIT = 5.0  # seconds to wait for a SIGKILLed group to be gone
SUPERVISOR_NAME = "herald"


@dataclass(frozen=True)
class Command:
    """What to run: a name for its output lines, the argv, its environment and directory."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] | None = None  # the whole environment; None inherits ours
    cwd: str | Path | None = None
    own_group: bool = True  # False: stays in our process group (signals to it reach it)


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


Destination = Output | Path | None


class Process:
    """One ``Command`` run as the leader of its own process group (module docstring).

    ``output``: an ``Output`` (prefixed lines), a ``Path`` (a log file, appended to), or
    None (our own stdout and stderr). ``start`` may be called again once it has exited.
    """

    def __init__(self, command: Command, output: Destination = None) -> None:
        self.command = command
        self.output = output
        self.popen: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self._copiers: list[threading.Thread] = []

    @property
    def name(self) -> str:
        return self.command.name

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    @property
    def log_path(self) -> Path | None:
        return self.output if isinstance(self.output, Path) else None

    def start(self) -> None:
        """Start the process; raises ``OSError`` when it cannot be executed."""
        log_file = self.log_path.open("ab") if self.log_path else None
        piped = isinstance(self.output, Output)
        stdout = subprocess.PIPE if piped else log_file
        try:
            self.popen = subprocess.Popen(
                list(self.command.argv),
                env=dict(self.command.env) if self.command.env is not None else None,
                cwd=self.command.cwd, stdin=subprocess.DEVNULL, stdout=stdout,
                stderr=None if stdout is None else subprocess.STDOUT,
                start_new_session=self.command.own_group)
        finally:
            if log_file is not None:
                log_file.close()  # the child has its own descriptor
        self.started_at = time.monotonic()
        if isinstance(self.output, Output):
            assert self.popen.stdout is not None
            self._copiers = [t for t in self._copiers if t.is_alive()]  # one per restart
            self._copiers.append(self.output.copy(self.name, self.popen.stdout))

    def exited(self) -> int | None:
        """The exit status once the process has ended (and been reaped), else None."""
        return self.popen.poll() if self.popen else None

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def group_alive(self) -> bool:
        """True while a process of its group (or it, without a group of its own) lives."""
        if not self.command.own_group:
            return self.running()
        return self.popen is not None and group_alive(self.popen.pid)

    def signal_group(self, sig: signal.Signals) -> None:
        """Send ``sig`` to its process group (or to it alone, while it runs)."""
        if self.popen is None:
            return
        if self.command.own_group:
            signal_group(self.popen.pid, sig)
        elif self.running():
            self.popen.send_signal(sig)

    def pids(self) -> list[int]:
        """The process and its live descendants, parents first; [] once it has exited."""
        if not self.running():
            return []
        try:
            root = psutil.Process(self.pid)
            return [root.pid, *(p.pid for p in root.children(recursive=True))]
        except psutil.NoSuchProcess:
            return []

    def log(self) -> str:
        """What the process wrote to its log file ('' without one)."""
        path = self.log_path
        if path is None or not path.exists():
            return ""
        return path.read_text(errors="replace")

    def stop(self, grace: float = 10.0) -> int | None:
        """Stop the process and its group (module docstring); its exit status."""
        stop_all([self], grace)
        return self.exited()

    def join_output(self, timeout: float = 2.0) -> None:
        """Wait until the output copied so far has been written."""
        for copier in self._copiers:
            copier.join(timeout)


def stop_all(processes: Iterable[Process], grace: float,
             say: Callable[[str], None] | None = None) -> None:
    """Stop every one of ``processes`` and its group, all at once (see ``Process.stop``)."""
    started = [p for p in processes if p.popen is not None]
    for process in started:
        if process.exited() is None:
            if say:
                say(f"stopping {process.name} (pid {process.pid})")
            process.popen.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
    _wait_groups(started, time.monotonic() + grace)
    killed = []
    for process in started:
        if process.group_alive():
            if say:
                say(f"{process.name} still running after {grace:.0f} s: SIGKILL")
            process.signal_group(signal.SIGKILL)
            killed.append(process)
        process.popen.wait()  # type: ignore[union-attr]
    _wait_groups(killed, time.monotonic() + KILL_WAIT)
    for process in started:
        process.join_output()


def _wait_groups(processes: list[Process], deadline: float) -> None:
    """Until ``deadline``: wait for each group to empty, SIGTERM orphans once."""
    orphans_told: set[int] = set()  # ids of the processes whose orphans got SIGTERM
    while time.monotonic() < deadline:
        alive = [p for p in processes if p.exited() is None or p.group_alive()]
        if not alive:
            return
        for process in alive:
            if process.exited() is not None and id(process) not in orphans_told:
                process.signal_group(signal.SIGTERM)
                orphans_told.add(id(process))
        time.sleep(0.05)


@dataclass
class _Slot:
    """A supervised process and its restart bookkeeping."""

    process: Process
    first_started_at: float | None = None
    restart_at: float | None = None
    quick_exits: int = 0


class Supervisor:
    """Runs ``Command``s until ``request_stop()``; see the module docstring.

    ``output`` receives every child's lines, prefixed, and the supervisor's own; with
    ``output=None`` the children write to our stdout and stderr and the supervisor's
    lines go to this module's logger.
    """

    def __init__(self, output: Output | None = None, backoff: Backoff | None = None,
                 grace: float = 10.0, fail_fast: float | None = None) -> None:
        self.output = output
        self.backoff = backoff or Backoff()
        self.grace = grace
        self.fail_fast = fail_fast
        self.status = 0
        self._slots: list[_Slot] = []
        self._stop_requested = False  # a plain bool: set from signal handlers

    @property
    def stopping(self) -> bool:
        return self._stop_requested

    @property
    def children(self) -> list[Process]:
        return [slot.process for slot in self._slots]

    def add(self, command: Command) -> None:
        self._slots.append(_Slot(Process(command, self.output)))
        if self.output is not None:
            self.output.width = max(self.output.width, len(command.name))

    def pids(self) -> dict[str, int | None]:
        return {slot.process.name: slot.process.pid for slot in self._slots}

    def request_stop(self, *_: Any) -> None:
        """Make ``run()`` stop every child and return; safe in a signal handler."""
        self._stop_requested = True

    def say(self, text: str, level: int = logging.INFO) -> None:
        if self.output is not None:
            self.output.line(SUPERVISOR_NAME, text)
        else:
            log.log(level, "%s", text)

    def run(self) -> int:
        """Start every child, keep them running until a stop, stop them; the status."""
        try:
            for slot in self._slots:
                if not self._stop_requested:
                    self._start(slot)
            while not self._stop_requested:
                self._check()
                time.sleep(POLL_SECONDS)
        finally:
            stop_all(self.children, self.grace, self.say)
            if self._slots:
                self.say("stopped")
        return self.status

    def _start(self, slot: _Slot) -> None:
        slot.restart_at = None
        try:
            slot.process.start()
        except OSError as exc:
            self._schedule_restart(slot, f"could not start: {exc}")
            return
        if slot.first_started_at is None:
            slot.first_started_at = slot.process.started_at
        self.say(f"{slot.process.name} started (pid {slot.process.pid})")

    def _check(self) -> None:
        now = time.monotonic()
        for slot in self._slots:
            if slot.restart_at is not None:
                if now >= slot.restart_at:
                    self._start(slot)
                continue
            code = slot.process.exited()
            if code is None:
                continue
            slot.process.signal_group(signal.SIGTERM)  # what it left behind
            what = f"exited ({describe(code)}) after {now - slot.process.started_at:.1f} s"
            if self._failed_at_start(slot, now):
                self.say(f"{slot.process.name} {what}, at start: stopping", logging.ERROR)
                self.status = code if code > 0 else 1
                self.request_stop()
                return
            self._schedule_restart(slot, what, now - slot.process.started_at)

    def _failed_at_start(self, slot: _Slot, now: float) -> bool:
        return (self.fail_fast is not None and slot.first_started_at is not None
                and now - slot.first_started_at < self.fail_fast)

    def _schedule_restart(self, slot: _Slot, what: str, ran: float = 0.0) -> None:
        slot.quick_exits = 1 if ran >= self.backoff.reset_after else slot.quick_exits + 1
        delay = self.backoff.delay(slot.quick_exits)
        slot.restart_at = time.monotonic() + delay
        self.say(f"{slot.process.name} {what}; restarting in {delay:.1f} s", logging.WARNING)


@contextlib.contextmanager
def stop_on(supervisor: Supervisor, *signals: signal.Signals) -> Iterator[None]:
    """While inside, each of ``signals`` asks ``supervisor`` to stop (and nothing else)."""
    previous = {sig: signal.signal(sig, supervisor.request_stop) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
