"""``herald.processes.Supervisor`` with real child processes (small Python scripts)."""

from __future__ import annotations

import io
import re
import sys
import threading
import time

import psutil

from herald.processes import Backoff, Command, Output, Supervisor
from tests.conftest import wait_until

STEADY = "import time; print('up', flush=True); time.sleep(600)"
CRASHING = "import sys; print('boom', flush=True); sys.exit(3)"
# Ignores SIGTERM and starts a grandchild in its process group that ignores it too.
STUBBORN = (
    "import signal, subprocess, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import signal, time; "
    "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)'])\n"
    "print('grandchild', child.pid, flush=True)\n"
    "time.sleep(600)\n"
)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _python(name: str, code: str) -> Command:
    return Command(name, [sys.executable, "-c", code])


class Running:
    """A supervisor running in a thread, its output collected."""

    def __init__(self, *commands: Command, backoff: Backoff | None = None,
                 grace: float = 10.0) -> None:
        self.stream = io.StringIO()
        self.supervisor = Supervisor(Output(self.stream), backoff, grace)
        for command in commands:
            self.supervisor.add(command)
        self.thread = threading.Thread(target=self.supervisor.run, daemon=True)
        self.thread.start()

    def text(self) -> str:
        return self.stream.getvalue()

    def stop(self, timeout: float = 15) -> float:
        started = time.monotonic()
        self.supervisor.request_stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), self.text()
        return time.monotonic() - started


def test_output_lines_are_prefixed_with_the_child_name():
    running = Running(_python("steady", STEADY))
    try:
        wait_until(lambda: re.search(r"\d\d:\d\d:\d\d steady +\| up\n", running.text()),
                   what="the prefixed line")
    finally:
        running.stop()


def test_a_crashing_child_is_restarted_with_doubling_delays_and_its_sibling_kept():
    running = Running(_python("steady", STEADY), _python("crashy", CRASHING),
                      backoff=Backoff(first=0.1, cap=0.4, reset_after=30))
    try:
        wait_until(lambda: running.text().count("crashy exited") >= 5, 20,
                   what="five crashes")
        steady_pid = running.supervisor.pids()["steady"]
    finally:
        running.stop()
    delays = re.findall(r"crashy exited \(exit status 3\) after [0-9.]+ s; "
                        r"restarting in ([0-9.]+) s", running.text())
    assert delays[:5] == ["0.1", "0.2", "0.4", "0.4", "0.4"], running.text()
    assert running.text().count("steady started") == 1
    assert _gone(steady_pid)


def test_stop_kills_what_ignores_sigterm_and_its_group_after_the_grace_period():
    running = Running(_python("stubborn", STUBBORN), _python("steady", STEADY), grace=1.0)
    wait_until(lambda: "grandchild" in running.text(), what="the grandchild")
    grandchild = int(re.search(r"grandchild (\d+)", running.text()).group(1))
    pids = [*running.supervisor.pids().values(), grandchild]
    took = running.stop()
    assert took >= 1.0, "killed before the grace period ended"
    assert "stubborn still running after 1 s: SIGKILL" in running.text()
    assert [pid for pid in pids if not _gone(pid)] == []
