"""Fixtures: a real Redis, a real Celery worker process, the API on a real HTTP server
and a streamer process.

Isolation: data lives in Redis database 15 and the broker in 14, both flushed around
each test; every key and channel carries a prefix unique to this session, since pub/sub
channels are shared by all databases. When no Redis answers at ``REDIS_URL`` (default
127.0.0.1:6379) an embedded ``redis-server`` is started for the session.
"""

from __future__ import annotations

import os
import secrets
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
_HOME = tempfile.mkdtemp(prefix="herald-test-")
_embedded = None


def _test_redis_base() -> str:
    """``redis://host:port`` of a Redis that answers, starting one if needed."""
    global _embedded
    from herald.connection import answers
    from herald.embedded import EmbeddedRedis
    from herald.stack import free_port

    parts = urlsplit(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    base = urlunsplit((parts.scheme, parts.netloc, "", "", ""))
    if answers(base + "/15"):
        return base
    _embedded = EmbeddedRedis(free_port(), Path(_HOME) / "redis")
    _embedded.start()
    print(f"tests: no Redis at {base}; using an embedded one at {_embedded.url}")
    return f"redis://127.0.0.1:{_embedded.port}"


REDIS_BASE = _test_redis_base()
os.environ.update({
    "HERALD_ENV": "development",
    "HERALD_HOME": _HOME,
    "HERALD_PREFIX": f"herald-test-{secrets.token_hex(4)}",
    "REDIS_URL": f"{REDIS_BASE}/15",
    "CELERY_BROKER_URL": f"{REDIS_BASE}/14",
    "HERALD_HEARTBEAT": "0.5",
    "HERALD_RETRY_MS": "500",
    "HERALD_REVOCATION_POLL": "0.5",  # a lost revocation notice costs 0.5 s, not 3
    "HERALD_LOG_LEVEL": "INFO",
    "HERALD_PUBLISH_RATE": "100000",
    "HERALD_PUBLISH_BURST": "100000",
})
for _name in ("HERALD_SECRET", "HERALD_API_URL", "HERALD_STREAMER_URL", "HERALD_API_KEY",
              "HERALD_CORS_ORIGINS"):
    os.environ.pop(_name, None)

import httpx  # noqa: E402
import redis  # noqa: E402

from herald import config as herald_config  # noqa: E402
from herald import processes  # noqa: E402
from herald.config import Config  # noqa: E402
from herald.keys import Keys  # noqa: E402
from herald.services import Services  # noqa: E402
from herald.stack import free_port  # noqa: E402
from tests.sse import SSEClient  # noqa: E402

CHILD_ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def wait_until(check: Callable[[], bool], timeout: float = 10.0, every: float = 0.05,
               what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _embedded is not None:
        _embedded.stop()


@pytest.fixture(scope="session")
def config() -> Config:
    return herald_config.load()


@pytest.fixture(scope="session")
def keys(config: Config) -> Keys:
    return Keys(config.prefix)


@pytest.fixture(scope="session")
def services(config: Config) -> Services:
    from herald import services as herald_services

    return herald_services.build(config)


@pytest.fixture(scope="session")
def rdb(config: Config) -> redis.Redis:
    return redis.Redis.from_url(config.redis_url, decode_responses=True)


@pytest.fixture(scope="session")
def broker_db(config: Config) -> redis.Redis:
    return redis.Redis.from_url(config.broker_url, decode_responses=True)


@pytest.fixture
def clean(rdb: redis.Redis, broker_db: redis.Redis) -> Iterator[None]:
    """Empty data and broker databases before and after the test."""
    rdb.flushdb()
    broker_db.flushdb()
    yield
    rdb.flushdb()
    broker_db.flushdb()


class Process(processes.Process):
    """A child process (``herald.processes.Process``) started at once in the repository,
    its output going to a log file; ``stop`` ends its whole process group (SIGTERM, then
    SIGKILL after ``timeout``) and returns its exit status."""

    def __init__(self, name: str, command: list[str], env: dict[str, str]) -> None:
        log_path = Path(_HOME) / f"{name}-{time.monotonic_ns()}.log"
        super().__init__(processes.Command(name, command, env, ROOT), log_path)
        self.url = ""  # where it serves, for servers
        self.start()

    def stop(self, timeout: float = 10.0) -> int:  # type: ignore[override]
        return super().stop(timeout)  # type: ignore[return-value]


def start_worker(env: dict[str, str], name: str = "worker", pool: str = "prefork",
                 concurrency: int = 2) -> Process:
    """A real ``celery worker`` process, returned once it logs that it is ready."""
    node = f"{name}-{secrets.token_hex(3)}@test"
    command = [sys.executable, "-m", "celery", "-A", "tasks.app", "worker", "-P", pool,
               "-c", str(concurrency), "-l", "INFO", "-n", node, "--without-mingle",
               "--without-gossip"]
    process = Process(name, command, env)

    def ready() -> bool:
        if process.popen.poll() is not None:
            raise AssertionError(f"worker exited:\n{process.log()}")
        return f"{node} ready." in process.log()

    try:
        wait_until(ready, 30, every=0.1, what=f"worker {node}")
    except AssertionError:
        process.stop()
        raise
    return process


@pytest.fixture(scope="session")
def worker() -> Iterator[Process]:
    process = start_worker(CHILD_ENV)
    yield process
    process.stop()


def _wait_healthy(process: Process, url: str, timeout: float = 20) -> None:
    """Return once ``url`` answers 200; stop the process and fail if it exits first."""
    import httpx

    def healthy() -> bool:
        if process.popen.poll() is not None:
            raise AssertionError(f"{process.name} exited:\n{process.log()}")
        try:
            return httpx.get(url, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(healthy, timeout, what=f"{process.name} health")
    except AssertionError:
        process.stop()
        raise


def start_streamer(env: dict[str, str], port: int | None = None,
                   name: str = "streamer") -> tuple[Process, str]:
    """A streamer process on ``port`` (default: free), returned once /healthz says ok."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    process = Process(name, [sys.executable, "-m", "streamer", "--port", str(port)], env)
    _wait_healthy(process, f"{url}/healthz")
    return process, url


@pytest.fixture(scope="session")
def streamer() -> Iterator[str]:
    process, url = start_streamer(CHILD_ENV)
    yield url
    process.stop()


def start_api(env: dict[str, str], name: str = "api",
              healthy: bool = True) -> tuple[Process, str]:
    """The API under gunicorn, started with the command ``herald run`` uses, on a free
    port; returned once ``/healthz`` answers (200, or anything when not ``healthy``)."""
    from herald.stack import services as stack

    port = free_port()
    env = {**env, "HERALD_API_HOST": "127.0.0.1", "HERALD_API_PORT": str(port)}
    command = next(s.command for s in stack(herald_config.load(env)) if s.name == "api")
    process = Process(name, command, env)
    url = process.url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        if process.popen.poll() is not None:
            raise AssertionError(f"the API exited:\n{process.log()}")
        try:
            status = httpx.get(f"{url}/healthz", timeout=2).status_code
        except httpx.HTTPError:
            return False
        return status == 200 or not healthy

    try:
        wait_until(answers, 30, every=0.1, what=f"{name} /healthz")
    except AssertionError:
        process.stop()
        raise
    return process, url


@pytest.fixture(scope="session")
def api_server() -> Iterator[Process]:
    """The API under gunicorn as ``herald run`` starts it (gevent worker, head limits)."""
    process, _ = start_api(CHILD_ENV)
    yield process
    process.stop()


@pytest.fixture(scope="session")
def api_url(api_server: Process) -> str:
    return api_server.url


@pytest.fixture
def api_key(clean: None, services: Services) -> str:
    """A fresh publisher API key (the data database is flushed around each test)."""
    key, _ = services.apikeys.create("tests")
    return key


@pytest.fixture
def api(api_url: str, api_key: str) -> Iterator[httpx.Client]:
    """An HTTP client of the API that sends the publisher key."""
    with httpx.Client(base_url=api_url, headers={"Authorization": f"Bearer {api_key}"},
                      timeout=10) as client:
        yield client


@pytest.fixture
def mint(config: Config) -> Callable[..., str]:
    """Mint tokens as the deployment does (its algorithm: ``herald.access.issue``)."""
    from herald import access

    def make(user: str, topics: tuple[str, ...] = (), ttl: int = 600) -> str:
        return access.issue(config, user, topics, ttl)[0]

    return make


@pytest.fixture
def subscribe(streamer: str, mint: Callable[..., str]) -> Iterator[Callable[..., SSEClient]]:
    """Open SSE connections as a user; all are closed after the test."""
    opened: list[SSEClient] = []

    def open_stream(user: str, topics: list[str] | None = None,
                    grants: tuple[str, ...] = (), **kwargs: object) -> SSEClient:
        params = {"token": mint(user, grants)}
        if topics:
            params["topics"] = ",".join(topics)
        client = SSEClient(streamer, params, **kwargs)  # type: ignore[arg-type]
        opened.append(client)
        return client

    yield open_stream
    for client in opened:
        client.close()


@pytest.fixture
def wait_idle(broker_db: redis.Redis, keys: Keys) -> Callable[[float], None]:
    """Wait until the broker queue is empty and no worker runs or holds a task."""
    from tasks.app import app

    def idle() -> bool:
        if broker_db.llen(keys.task_queue_key):
            return False
        inspector = app.control.inspect(timeout=0.5)
        busy = [*(inspector.active() or {}).values(), *(inspector.reserved() or {}).values()]
        return not any(busy)

    def wait(timeout: float = 10.0) -> None:
        wait_until(idle, timeout, every=0.1, what="the workers to go idle")

    return wait


def _data_keys(rdb: redis.Redis, config: Config) -> set[str]:
    """Keys holding data (not the API key list or rate-limit buckets)."""
    bookkeeping = (f"{config.prefix}:apikeys", f"{config.prefix}:rate:")
    return {k for k in rdb.keys("*") if not k.startswith(bookkeeping)}


@pytest.fixture
def unchanged(api: httpx.Client, rdb: redis.Redis, broker_db: redis.Redis,
              config: Config) -> Iterator[None]:
    """Assert that the test stores, dispatches and publishes nothing."""
    listener = redis.Redis.from_url(config.redis_url).pubsub()
    listener.psubscribe(f"{config.prefix}:*")
    wait_until(lambda: listener.get_message(timeout=0.1) is not None, what="psubscribe")
    data_before = _data_keys(rdb, config)
    broker_before = _broker_sizes(broker_db)
    yield
    time.sleep(0.1)
    published = []
    while (message := listener.get_message(timeout=0.05)) is not None:
        if not message["channel"].endswith(b"/worker.heartbeat"):  # the workers' own
            published.append(message)
    listener.close()
    assert published == [], f"published: {published}"
    assert _data_keys(rdb, config) == data_before, "stored something"
    broker_after = _broker_sizes(broker_db)
    assert broker_after == broker_before, "dispatched something"


def _broker_sizes(db: redis.Redis) -> dict[str, int]:
    """Size of each broker key but the lock a worker's periodic restore sweep takes."""
    return {key: _size(db, key) for key in db.keys("*") if not key.endswith("unacked_mutex")}


def _size(db: redis.Redis, key: str) -> int:
    kind = db.type(key)
    return {"list": db.llen, "zset": db.zcard, "hash": db.hlen, "set": db.scard}.get(
        kind, lambda _key: 1)(key)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[object]:
    """A redis-server of the test's own, append-only, on a spare port: tests restart it."""
    from herald.embedded import EmbeddedRedis

    server = EmbeddedRedis(free_port(), tmp_path / "redis")
    server.start()
    yield server
    server.stop()


def own_env(server: object, **settings: str) -> dict[str, str]:
    """The child environment pointed at ``server`` (data in db 0, broker in db 1)."""
    url = server.url  # type: ignore[attr-defined]
    return {**CHILD_ENV, "REDIS_URL": url, "CELERY_BROKER_URL": url[:-1] + "1", **settings}
