"""Whole notification stacks as benchmark targets: a POST path in front of Herald's streamer.

``StackTarget`` holds what both stacks of ``herald bench notify`` share: a Herald
configuration of their own (a fresh ``HERALD_PREFIX`` and secret, free ports, a temporary
``HERALD_HOME``) and Herald's streamer, started with the command ``herald run`` uses
(``herald.stack.services``). Subclasses add the processes that accept notifications:
``HeraldStack`` (here) Herald's API and in-app worker, ``refs.naive.NaiveStack`` the
naive Flask + Celery reference. Both publish Herald's events on ``user:<id>`` topics, so
the same streamer and the same SSE clients read either; only the path in front differs.

Guarantees: ``start`` returns once every process answers (HTTP health, or a Celery
worker's ``ready`` line) and raises ``RuntimeError`` with the log tails otherwise;
``stop`` ends every process it started (SIGTERM to its group, SIGKILL after a grace) and
may be called any number of times. Processes run with the process counts of ``herald
run``'s defaults (API 2 workers, worker concurrency 2, one streamer) unless the
environment sets Herald's variables otherwise.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from herald import tokens
from herald.apikeys import ApiKeyStore
from herald.config import Config, as_environ, load
from herald.connection import client
from herald.keys import Keys
from herald.processes import Command, Process
from herald.stack import Service, free_port, services

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 60.0
STOP_GRACE = 10.0
WORKER_READY = " ready."  # Celery's "celery@host ready." line at INFO
TOKEN_TTL = 86400
# The rate limit is per API key and the benchmark is one sender: 50/s would refuse it.
BENCH_SETTINGS = {"HERALD_ENV": "development", "HERALD_LOG_LEVEL": "WARNING",
                  "HERALD_PUBLISH_RATE": "1000000", "HERALD_PUBLISH_BURST": "10000000",
                  "HERALD_MAX_CONNECTIONS_PER_USER": "100000"}


class StackTarget:
    """Herald's streamer plus the subclass' POST path; see the module docstring."""

    name = "stack"
    post_path = "/api/notifications"
    batch_path: str | None = None

    def __init__(self, redis_url: str) -> None:
        self.home = Path(tempfile.mkdtemp(prefix=f"herald-bench-{self.name}-"))
        self.config: Config = load({
            **os.environ, **BENCH_SETTINGS, "REDIS_URL": redis_url,
            "CELERY_BROKER_URL": redis_url, "HERALD_HOME": str(self.home),
            "HERALD_PREFIX": f"bench-{secrets.token_hex(4)}",
            "HERALD_SECRET": secrets.token_urlsafe(48),
            "HERALD_API_PORT": str(free_port()), "HERALD_STREAMER_PORT": str(free_port())})
        self.keys = Keys(self.config.prefix)
        self.headers: list[str] = []  # extra request headers of every POST
        self._procs: dict[str, Process] = {}

    @classmethod
    def locate(cls) -> str | None:
        """None: everything a stack needs is Herald's own dependencies."""
        return None

    @property
    def api_port(self) -> int:
        return self.config.api_port

    @property
    def streamer_port(self) -> int:
        return self.config.streamer_port

    def environ(self) -> dict[str, str]:
        """The environment ``herald run`` gives its services for this configuration."""
        return {**os.environ, **as_environ(self.config), "PYTHONUNBUFFERED": "1"}

    def start(self) -> None:
        """Start the streamer and the subclass' processes; return once all answer."""
        streamer = _service(self.config, "streamer")
        self._spawn(streamer.name, streamer.command, self.environ())
        try:
            self._start_front()
            self._wait_http("streamer", f"{self.config.streamer_url}/healthz")
        except BaseException:
            self.stop()
            raise

    def _start_front(self) -> None:
        """The processes in front of the streamer (the subclass')."""
        raise NotImplementedError

    def stop(self) -> None:
        procs, self._procs = self._procs, {}
        for proc in procs.values():
            proc.stop(STOP_GRACE)

    def close(self) -> None:
        """Stop, and remove the temporary ``HERALD_HOME`` (logs included)."""
        self.stop()
        shutil.rmtree(self.home, ignore_errors=True)

    def pids(self) -> dict[str, list[int]]:
        """Process ids by role (``api``, ``worker``, ``streamer``), children included."""
        return {name: proc.pids() for name, proc in self._procs.items()}

    def subscribe_path(self, user: str) -> str:
        """The streamer request target of ``user``'s own topic, with a token of theirs."""
        token, _ = tokens.mint(self.config.secret, user, (), TOKEN_TTL)
        return f"/events?topics={quote('user:' + user, safe=':')}&token={token}"

    def channel(self, user: str) -> str:
        """The pub/sub channel of ``user``'s topic (to wait until the streamer listens)."""
        return self.keys.channel("user:" + user)

    def log_tails(self) -> str:
        return "\n".join(f"--- {name} ---\n{proc.log()[-3000:]}"
                         for name, proc in self._procs.items())

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> Process:
        proc = Process(Command(name, argv, env, ROOT), self.home / f"{name}.log")
        proc.start()
        self._procs[name] = proc
        return proc

    def _wait(self, name: str, ready: Any) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        proc = self._procs[name]
        while not ready():
            if not proc.running():
                raise RuntimeError(f"{self.name} {name} exited:\n{self.log_tails()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} {name} did not start:\n{self.log_tails()}")
            time.sleep(0.1)

    def _wait_http(self, name: str, url: str) -> None:
        self._wait(name, lambda: _answers(url))

    def _wait_worker(self, name: str) -> None:
        self._wait(name, lambda: WORKER_READY in self._procs[name].log())


class HeraldStack(StackTarget):
    """Herald's API and in-app worker as ``herald run`` starts them, and its streamer."""

    name = "herald"
    batch_path = "/api/notifications/batch"

    def _start_front(self) -> None:
        key, _ = ApiKeyStore(client(self.config.redis_url), self.keys).create("bench")
        self.headers = [f"Authorization: Bearer {key}"]
        for name in ("api", "worker"):
            service = _service(self.config, name)
            self._spawn(name, service.command, self.environ())
        self._wait_http("api", f"{self.config.api_url}/healthz")
        self._wait_worker("worker")


def _service(cfg: Config, name: str) -> Service:
    return next(s for s in services(cfg) if s.name == name)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False
