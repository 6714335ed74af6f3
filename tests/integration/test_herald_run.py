"""``herald run`` from a clean environment: everything up, then nothing left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
import pytest

from herald.stack import free_port
from tests.conftest import wait_until

pytestmark = pytest.mark.slow
HERALD = str(Path(sys.executable).with_name("herald"))


def _descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_herald_run_serves_and_stops_cleanly_with_embedded_redis():
    home = tempfile.mkdtemp(prefix="herald-run-")
    ports = {name: free_port() for name in ("redis", "api", "streamer", "flower")}
    env = {
        "PATH": os.environ["PATH"], "HOME": home, "LANG": "C.UTF-8",
        "HERALD_HOME": f"{home}/.herald",
        "REDIS_URL": f"redis://127.0.0.1:{ports['redis']}/0",  # nothing answers there
        "HERALD_API_PORT": str(ports["api"]),
        "HERALD_STREAMER_PORT": str(ports["streamer"]),
        "HERALD_FLOWER_PORT": str(ports["flower"]),
    }
    log = Path(home) / "run.log"
    with log.open("wb") as out:
        run = subprocess.Popen([HERALD, "run"], env=env, cwd=home, stdout=out,
                               stderr=subprocess.STDOUT, start_new_session=True)
    api = f"http://127.0.0.1:{ports['api']}/healthz"
    streamer = f"http://127.0.0.1:{ports['streamer']}/healthz"

    def up(url: str) -> bool:
        assert run.poll() is None, log.read_text()
        try:
            return httpx.get(url, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(lambda: up(api) and up(streamer), 90, every=0.3, what="the stack")
        assert httpx.get(api).json() == {"status": "ok", "redis": "ok", "broker": "ok"}
        demo = httpx.get(f"http://127.0.0.1:{ports['api']}/demo/")
        assert demo.status_code == 200 and "Herald" in demo.text
        wait_until(lambda: "Herald is running" in log.read_text(), 30, what="the banner")
        text = log.read_text()
        assert "embedded redis-server" in text
        assert f"http://127.0.0.1:{ports['flower']}" in text and "password" in text
        children = _descendants(run.pid)
        names = " ".join(" ".join(p.cmdline()) for p in children)
        for part in ("gunicorn", "celery", "worker", "streamer", "flower", "redis-server"):
            assert part in names
    finally:
        run.send_signal(signal.SIGTERM)
        started = time.monotonic()
        code = run.wait(30)
    assert code in (0, 143), log.read_text()
    assert time.monotonic() - started < 30
    time.sleep(0.5)
    left = [p for p in children if _alive(p)]
    assert left == [], f"left running: {[p.cmdline() for p in left]}"
