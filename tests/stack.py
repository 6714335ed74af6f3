"""A real ``herald run`` for tests (``test_herald_run``, ``test_prometheus``): a clean
environment, an embedded Redis, every port (public and metrics) free, its output in
``run.log``.

HERALD_STREAMER_URL (where clients reach the streamer, and what `herald run` probes)
points at a ``Recorder``, which shows what the probe sends; ``streamer_direct`` is where
the streamer really listens.
"""

from __future__ import annotations

import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import httpx
import psutil

from herald import config as herald_config
from herald import endpoints
from herald.config import Config
from herald.stack import free_port

HERALD = str(Path(sys.executable).with_name("herald"))


def free_ports(count: int) -> int:
    """A base port such that it and the ``count - 1`` after it are free now.

    Below the kernel's ephemeral range (``ip_local_port_range``, 32768 and up by
    default), which ``free_port`` draws from: there the stack's own outgoing connections
    could take a port between this check and the bind.
    """
    for _ in range(200):
        base = random.randrange(20000, 32000 - count)
        probes = []
        try:
            for offset in range(count):
                probe = socket.socket()
                probes.append(probe)
                probe.bind(("127.0.0.1", base + offset))
            return base
        except OSError:
            continue
        finally:
            for probe in probes:
                probe.close()
    raise RuntimeError(f"no {count} free ports in a row")


def alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def command_line(process: psutil.Process | None) -> str:
    try:
        return " ".join(process.cmdline()) + " " if process else ""
    except psutil.NoSuchProcess:
        return ""


def get(url: str, **kwargs: object) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=2, **kwargs)  # type: ignore[arg-type]
    except httpx.HTTPError:
        return None


class Recorder(BaseHTTPRequestHandler):
    """Stands where HERALD_STREAMER_URL points (a proxy would): records each request."""

    seen: ClassVar[list[tuple[str, str | None]]] = []

    def do_GET(self) -> None:
        self.seen.append((self.path, self.headers.get("Authorization")))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


class Stack:
    """``herald <args>`` (``run`` and its options) with ``extra`` environment."""

    def __init__(self, args: list[str], workers: int = 1, streamers: int = 1,
                 extra: dict[str, str] | None = None) -> None:
        self.recorder = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
        threading.Thread(target=self.recorder.serve_forever, daemon=True).start()
        self.home = tempfile.mkdtemp(prefix="herald-run-")
        self.ports = {name: free_port() for name in ("redis", "api", "streamer", "flower")}
        self.flower_password = secrets.token_urlsafe(12)
        self.workers, self.streamers = workers, streamers
        self.env = {
            "PATH": os.environ["PATH"], "HOME": self.home, "LANG": "C.UTF-8",
            "HERALD_HOME": f"{self.home}/.herald",
            "REDIS_URL": f"redis://127.0.0.1:{self.ports['redis']}/0",  # nothing answers
            "HERALD_API_PORT": str(self.ports["api"]),
            "HERALD_STREAMER_PORT": str(self.ports["streamer"]),
            "HERALD_STREAMER_URL": f"http://127.0.0.1:{self.recorder.server_port}",
            "HERALD_FLOWER_PORT": str(self.ports["flower"]),
            "HERALD_FLOWER_AUTH": f"ops:{self.flower_password}",
            # Metrics ports of this stack's own, never the defaults another run may hold.
            "HERALD_API_METRICS_PORT": str(free_ports(1)),
            "HERALD_WORKER_METRICS_PORT": str(free_ports(workers + 1)),
            "HERALD_STREAMER_METRICS_PORT": str(free_ports(streamers)),
            **(extra or {}),
        }
        self.log_path = Path(self.home) / "run.log"
        with self.log_path.open("wb") as out:
            self.run = subprocess.Popen([HERALD, *args], env=self.env, cwd=self.home,
                                        stdout=out, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        self.seen: list[psutil.Process] = []
        self.exit_code: int | None = None

    @property
    def config(self) -> Config:
        """The stack's settings, Redis as ``herald run`` started it (embedded)."""
        return herald_config.load(self.env)

    def metrics(self) -> list[endpoints.Endpoint]:
        """Every /metrics of the stack, by the rule ``herald run`` follows."""
        return endpoints.topology(self.config, self.workers, self.streamers)

    def url(self, name: str, path: str = "") -> str:
        return f"http://127.0.0.1:{self.ports[name]}{path}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def up(self, name: str, path: str = "/healthz") -> bool:
        assert self.run.poll() is None, self.log()
        answer = get(self.url(name, path))
        return answer is not None and answer.status_code == 200

    def services(self, names: dict[str, str]) -> dict[str, int]:
        """Pid of each service's main process (the topmost whose command line has the
        service's part in ``names``)."""
        found = {}
        for process in self.descendants():
            for name, part in names.items():
                if part in command_line(process) and part not in command_line(
                        process.parent()):
                    found[name] = process.pid
        return found

    def descendants(self) -> list[psutil.Process]:
        every = psutil.Process(self.run.pid).children(recursive=True)
        self.seen += every
        return every

    def stop(self) -> int:
        if self.exit_code is None:
            self.descendants()
            self.run.send_signal(signal.SIGTERM)
            self.exit_code = self.run.wait(30)
            self.recorder.shutdown()
        return self.exit_code


@contextmanager
def started(args: list[str], **options: object) -> Iterator[Stack]:
    """``herald <args>`` (a ``Stack``), once its API and streamer answer and its banner is
    printed; stopped on exit, whatever happened."""
    from tests.conftest import wait_until

    running = Stack(args, **options)  # type: ignore[arg-type]
    try:
        wait_until(lambda: running.up("api") and running.up("streamer"), 90, every=0.3,
                   what="the stack")
        wait_until(lambda: "Herald is running" in running.log(), 60, what="the banner")
        yield running
    finally:
        running.stop()
