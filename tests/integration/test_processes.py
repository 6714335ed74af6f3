"""``herald.processes``: ``Process`` and ``Supervisor`` with real child processes (small
Python scripts)."""

from __future__ import annotations

import io
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from herald.processes import Backoff, Command, Output, Process, Supervisor
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
# Stops on SIGTERM, leaving behind a grandchild in its process group.
PARENT = (
    "import subprocess, sys, time\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
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
                 grace: float = 10.0, fail_fast: float | None = None) -> None:
        self.stream = io.StringIO()
        self.supervisor = Supervisor(Output(self.stream), backoff, grace, fail_fast)
        for command in commands:
            self.supervisor.add(command)
        self.status: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.status = self.supervisor.run()

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


def _grandchild(text: str) -> int:
    return int(re.search(r"grandchild (\d+)", text).group(1))


def test_a_process_writes_its_log_file_and_stop_ends_its_whole_group(tmp_path: Path):
    process = Process(_python("stubborn", STUBBORN), tmp_path / "stubborn.log")
    process.start()
    wait_until(lambda: "grandchild" in process.log(), what="the grandchild")
    grandchild = _grandchild(process.log())
    assert process.pids() == [process.pid, grandchild]
    assert process.stop(grace=0.5) == -signal.SIGKILL
    assert _gone(grandchild) and not process.group_alive() and process.pids() == []


def test_stop_sends_sigterm_to_what_the_leader_leaves_behind(tmp_path: Path):
    process = Process(_python("parent", PARENT), tmp_path / "parent.log")
    process.start()
    wait_until(lambda: "grandchild" in process.log(), what="the grandchild")
    grandchild = psutil.Process(_grandchild(process.log()))
    assert process.stop(grace=30) == -signal.SIGTERM
    assert not process.group_alive()
    assert _gone(grandchild.pid)


def test_a_child_that_fails_at_start_stops_a_fail_fast_supervisor_with_its_status():
    running = Running(_python("steady", STEADY), _python("crashy", CRASHING), fail_fast=30)
    running.thread.join(15)
    assert not running.thread.is_alive(), running.text()
    assert running.status == 3
    assert "crashy exited (exit status 3)" in running.text()
    assert "at start: stopping" in running.text() and "restarting" not in running.text()
    assert _gone(running.supervisor.pids()["steady"])


def test_without_an_output_children_write_to_ours_and_the_supervisor_logs(
        capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture):
    supervisor = Supervisor(None, grace=5)
    supervisor.add(_python("steady", STEADY))
    thread = threading.Thread(target=supervisor.run, daemon=True)
    with caplog.at_level("INFO", logger="herald.processes"):
        thread.start()
        seen = ""

        def printed() -> bool:
            nonlocal seen
            seen += capfd.readouterr().out
            return "up\n" in seen

        wait_until(printed, what="the child's line on our stdout")
        supervisor.request_stop()
        thread.join(10)
    assert "| up" not in seen
    assert any(r.getMessage().startswith("steady started (pid ") for r in caplog.records)
    assert any(r.getMessage() == "stopped" for r in caplog.records)


def test_a_process_kept_in_our_group_is_stopped_alone(tmp_path: Path):
    ignoring = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                "print('up', flush=True); time.sleep(600)")
    command = Command("kept", [sys.executable, "-c", ignoring], own_group=False)
    process = Process(command, tmp_path / "kept.log")
    process.start()
    wait_until(lambda: "up" in process.log(), what="the child")
    assert os.getpgid(process.pid) == os.getpgrp()
    assert process.stop(grace=0.5) == -signal.SIGKILL
    assert not process.group_alive() and os.getpgrp() == os.getpgid(0)  # we are untouched
