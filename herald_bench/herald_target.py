"""Herald's streamer as a benchmark target, driven like the reference servers.

The streamer runs exactly as in production: ``python -m streamer`` (or ``--processes N``)
with token checks, heartbeats, per-client buffers and the Redis subscription all on.
Every client gets its own signed token, or, for a run with ``shared`` tokens, all the
clients of a topic send the same one (the per-user stream limit is raised so they may);
events are published with
``herald.publisher.Publisher``, the path every Herald process uses (history and pub/sub
in one Lua script).
"""

from __future__ import annotations

import os
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import redis

from herald import tokens
from herald.keys import Keys
from herald.processes import Command, Process
from herald.publisher import Publisher

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 20.0
STOP_GRACE = 20.0  # the streamer drains its clients on SIGTERM


class HeraldPublisher:
    """Publishes through Herald's own publisher; counts subscribers per topic via Redis."""

    def __init__(self, redis_url: str, prefix: str) -> None:
        self._redis = redis.Redis.from_url(redis_url, decode_responses=True)
        self._keys = Keys(prefix)
        self._publisher = Publisher(self._redis, self._keys, history_maxlen=1000,
                                    history_ttl=600)

    def publish(self, topic: str, data: dict[str, Any]) -> str:
        """Publish one event of type ``bench``; return its id."""
        return self._publisher.publish(topic, data, "bench")

    def subscribers(self, topic: str) -> int:
        """Streamer processes subscribed to ``topic`` (not clients: one per process)."""
        return int(self._redis.pubsub_numsub(self._keys.channel(topic))[0][1])

    def close(self) -> None:
        self._redis.close()


class HeraldTarget:
    """Starts and stops Herald streamer processes for one benchmark run."""

    name = "herald"
    uses_tokens = True  # runs can compare a token per client with one shared token

    def __init__(self, redis_url: str, processes: int = 1,
                 settings: dict[str, str] | None = None) -> None:
        self.redis_url = redis_url
        self.processes = processes
        self.settings = settings or {}
        self.prefix = f"bench-{secrets.token_hex(4)}"
        self.secret = secrets.token_urlsafe(48)
        self.port: int | None = None
        self._proc: Process | None = None
        self.log_path = Path(tempfile.mkdtemp(prefix="herald-bench-")) / "streamer.log"
        self._clients = 0
        self._shared: dict[str, str] = {}  # topic -> the token all its clients share

    @property
    def label(self) -> str:
        return "herald" if self.processes == 1 else f"herald x{self.processes}"

    @classmethod
    def locate(cls) -> str | None:
        return None

    def start(self, port: int) -> None:
        """Serve on 127.0.0.1:``port``; return once every process answers /healthz."""
        self.port = port
        env = {**os.environ, "HERALD_ENV": "development", "HERALD_SECRET": self.secret,
               "HERALD_PREFIX": self.prefix, "REDIS_URL": self.redis_url,
               "HERALD_LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1",
               "HERALD_MAX_CONNECTIONS_PER_USER": "100000", **self.settings}
        command = [sys.executable, "-m", "streamer", "--host", "127.0.0.1", "--port",
                   str(port), "--processes", str(self.processes)]
        self.log_path.unlink(missing_ok=True)
        self._proc = Process(Command(self.label, command, env, ROOT), self.log_path)
        self._proc.start()
        self._wait_healthy()

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        seen: set[int] = set()
        while len(seen) < self.processes:
            if self._proc is None or not self._proc.running():
                raise RuntimeError(f"streamer exited:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"streamer did not answer:\n{self.log_tail()}")
            try:
                seen.add(httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1)
                         .json()["pid"])
            except httpx.HTTPError:
                time.sleep(0.1)

    def log_tail(self) -> str:
        return self._proc.log()[-4000:] if self._proc is not None else ""

    def stop(self) -> None:
        """Stop the streamer and its process group (SIGKILL after ``STOP_GRACE`` s)."""
        if self._proc is not None:
            self._proc.stop(STOP_GRACE)

    def subscribe_path(self, topic: str, shared: bool = False) -> str:
        """A request target with a token of its own: user ``b<n>`` granted ``topic``.

        A ``user:<id>`` topic gets a token of that user instead (no extra grant). With
        ``shared``, every client of ``topic`` gets the one token of user ``bench``.
        """
        self._clients += 1
        if shared:
            if topic not in self._shared:
                self._shared[topic] = tokens.mint(self.secret, "bench", (topic,), 86400)[0]
            token = self._shared[topic]
        elif topic.startswith("user:"):
            token, _ = tokens.mint(self.secret, topic[5:], (), 86400)
        else:
            token, _ = tokens.mint(self.secret, f"b{self._clients}", (topic,), 86400)
        return f"/events?topics={quote(topic, safe=':')}&token={token}"

    def publisher(self) -> HeraldPublisher:
        return HeraldPublisher(self.redis_url, self.prefix)

    def server_pids(self) -> list[int]:
        """The streamer processes (a supervisor's children too)."""
        return self._proc.pids() if self._proc is not None else []
