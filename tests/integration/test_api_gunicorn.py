"""The API's gunicorn, started as ``herald run`` starts it: several instances on one
machine each keep their own control socket (``gunicornc`` reaches each one)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import psutil

from tests.conftest import Process, start_api, wait_until

GUNICORNC = str(Path(sys.executable).with_name("gunicornc"))


def _control_socket(process: Process) -> str:
    """The path the instance says its control socket listens at."""
    pattern = re.compile(r"Control socket listening at (\S+)")
    wait_until(lambda: pattern.search(process.log()) is not None, 20,
               what=f"{process.name}'s control socket")
    return pattern.search(process.log()).group(1)  # type: ignore[union-attr]


def test_each_instance_keeps_its_own_control_socket(tmp_path, child_env):
    env = {**child_env, "HOME": str(tmp_path)}  # gunicorn's default lives under $HOME
    env.pop("XDG_RUNTIME_DIR", None)
    first, _ = start_api(env, name="api-first")
    second, _ = start_api(env, name="api-second")
    try:
        assert _control_socket(first) != _control_socket(second)
        path = _control_socket(second)
        first.stop()
        answer = subprocess.run([GUNICORNC, "-s", path, "-c", "show workers", "-j"],
                                capture_output=True, text=True, timeout=30)
        assert answer.returncode == 0, answer.stdout + answer.stderr
        workers = {w["pid"] for w in json.loads(answer.stdout)["workers"]}
        assert workers == {c.pid for c in psutil.Process(second.popen.pid).children()}
    finally:
        first.stop()
        second.stop()
    assert not Path(path).exists(), "the instance left its control socket behind"
