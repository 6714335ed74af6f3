"""Fixtures and helpers of the suite.

Importing this module does nothing: no Redis is looked for or started and the
environment is left alone, so ``tests/unit`` runs with no Redis at all (and its own
conftest refuses sockets). Everything that needs Redis comes from session fixtures,
set up the first time a test asks for ``config`` (directly or through ``rdb``,
``clean``, ``worker``, ``streamer``, ...):

- ``redis_base``: the Redis at ``REDIS_URL`` (default 127.0.0.1:6379) when it answers,
  else an embedded ``redis-server`` started for the session;
- ``child_env``: the environment of every child process (worker, streamer, API);
- ``config``: the session's configuration; until the session ends it is also the
  environment of the in-process code that still reads ``os.environ`` (the Celery app,
  ``tasks.events.publish``).

Isolation: data lives in Redis database 15 and the broker in 14, both flushed around
each test (``clean``); every key and channel carries a prefix unique to this session,
since pub/sub channels are shared by all databases.

"Nothing arrived" is proven with a sentinel published after whatever must not arrive
(``before_sentinel``, ``SSEClient.events_before``, ``unchanged``), never with a sleep.
"""

from __future__ import annotations

import functools
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
import redis

from herald import config as herald_config
from herald import processes
from herald.config import Config
from herald.keys import Keys
from herald.services import Services
from herald.stack import free_port
from tests.sse import SSEClient, SSEEvent

ROOT = Path(__file__).resolve().parent.parent
# Settings of the session's own, never inherited from the shell that runs the tests.
_NOT_INHERITED = ("HERALD_SECRET", "HERALD_API_URL", "HERALD_STREAMER_URL", "HERALD_API_KEY",
                  "HERALD_CORS_ORIGINS")


@functools.cache
def session_home() -> Path:
    """This session's directory: ``HERALD_HOME`` of its processes, and their logs."""
    return Path(tempfile.mkdtemp(prefix="herald-test-"))


def wait_until(check: Callable[[], bool], timeout: float = 10.0, every: float = 0.05,
               what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


@pytest.fixture(scope="session")
def redis_base() -> Iterator[str]:
    """``redis://host:port`` of a Redis that answers: the one at ``REDIS_URL``, or an
    embedded ``redis-server`` started for the session (and stopped at its end)."""
    from herald.connection import answers
    from herald.embedded import EmbeddedRedis

    parts = urlsplit(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    base = urlunsplit((parts.scheme, parts.netloc, "", "", ""))
    if answers(base + "/15"):
        yield base
        return
    embedded = EmbeddedRedis(free_port(), session_home() / "redis")
    embedded.start()
    print(f"tests: no Redis at {base}; using an embedded one at {embedded.url}")
    try:
        yield f"redis://127.0.0.1:{embedded.port}"
    finally:
        embedded.stop()


@pytest.fixture(scope="session")
def child_env(redis_base: str) -> dict[str, str]:
    """The environment of every child process the tests start: data in database 15 and
    the broker in 14 of ``redis_base``, a prefix of the session's own, short timings."""
    inherited = {k: v for k, v in os.environ.items() if k not in _NOT_INHERITED}
    return {
        **inherited,
        "HERALD_ENV": "development",
        "HERALD_HOME": str(session_home()),
        "HERALD_PREFIX": f"herald-test-{secrets.token_hex(4)}",
        "REDIS_URL": f"{redis_base}/15",
        "CELERY_BROKER_URL": f"{redis_base}/14",
        "HERALD_HEARTBEAT": "0.5",
        "HERALD_RETRY_MS": "500",
        "HERALD_REVOCATION_POLL": "0.5",  # a lost revocation notice costs 0.5 s, not 3
        "HERALD_LOG_LEVEL": "INFO",
        # Internal /metrics ports are off unless a test asks for one (on a free port).
        "HERALD_STREAMER_METRICS_PORT": "0",
        "HERALD_PUBLISH_RATE": "100000",
        "HERALD_PUBLISH_BURST": "100000",
        # Outbound channels: retries in fractions of a second, so tests see them all.
        "HERALD_RETRY_BASE": "0.2",
        "HERALD_RETRY_MAX": "2",
        "HERALD_DELIVERY_ATTEMPTS": "4",
        "HERALD_EMAIL_RATE": "1000",
        "HERALD_WEBHOOK_RATE": "1000",
        # No /metrics unless a test asks for one on a free port (the default ports would
        # collide between the processes of a test, and with other runs on the machine).
        "HERALD_API_METRICS_PORT": "0",
        "HERALD_WORKER_METRICS_PORT": "0",
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture(scope="session")
def config(child_env: dict[str, str]) -> Iterator[Config]:
    """The session's configuration (that of ``child_env``).

    Until the session ends, ``os.environ`` holds the same settings, for the in-process
    code configured from the environment rather than handed a ``Config``: the Celery
    entry point ``tasks.app`` and ``tasks.events.publish``, which uses its services.
    """
    loaded = herald_config.load(child_env)
    with pytest.MonkeyPatch.context() as patch:
        for name in _NOT_INHERITED:
            patch.delenv(name, raising=False)
        for name, value in child_env.items():
            if os.environ.get(name) != value:
                patch.setenv(name, value)
        _refuse_a_celery_app_configured_elsewhere(loaded)
        yield loaded


def _refuse_a_celery_app_configured_elsewhere(cfg: Config) -> None:
    """Fail when the in-process Celery app read its settings before the session's were
    set: its tasks would go to another broker (possibly someone else's Redis)."""
    entry = sys.modules.get("tasks.app")
    configured = entry.app.__dict__.get("herald_config") if entry is not None else None
    if configured is not None and configured.broker_url != cfg.broker_url:
        pytest.fail(f"the Celery app was configured for {configured.broker_url} before the "
                    "test session's settings: use the config fixture before tasks.app")


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
        log_path = session_home() / f"{name}-{time.monotonic_ns()}.log"
        super().__init__(processes.Command(name, command, env, ROOT), log_path)
        self.url = ""  # where it serves, for servers
        self.start()

    def stop(self, timeout: float = 10.0) -> int:  # type: ignore[override]
        return super().stop(timeout)  # type: ignore[return-value]


def start_worker(env: dict[str, str], name: str = "worker", pool: str = "prefork",
                 concurrency: int = 2, queues: list[str] | None = None) -> Process:
    """A real ``celery worker`` process, returned once it logs that it is ready.

    ``queues``: the only queues it consumes (``-Q``); default every queue.
    """
    node = f"{name}-{secrets.token_hex(3)}@test"
    command = [sys.executable, "-m", "celery", "-A", "tasks.app", "worker", "-P", pool,
               "-c", str(concurrency), "-l", "INFO", "-n", node, "--without-mingle",
               "--without-gossip", *(["-Q", ",".join(queues)] if queues else [])]
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
def worker(child_env: dict[str, str]) -> Iterator[Process]:
    process = start_worker(child_env)
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
def streamer(child_env: dict[str, str]) -> Iterator[str]:
    process, url = start_streamer(child_env)
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
def api_server(child_env: dict[str, str]) -> Iterator[Process]:
    """The API under gunicorn as ``herald run`` starts it (gevent worker, head limits)."""
    process, _ = start_api(child_env)
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
    from tasks.settings import queues

    def idle() -> bool:
        if any(broker_db.llen(keys.queue_key(queue)) for queue in queues(keys)):
            return False
        inspector = app.control.inspect(timeout=0.5)
        busy = [*(inspector.active() or {}).values(), *(inspector.reserved() or {}).values()]
        return not any(busy)

    def wait(timeout: float = 10.0) -> None:
        wait_until(idle, timeout, every=0.1, what="the workers to go idle")

    return wait


@pytest.fixture
def before_sentinel(services: Services) -> Callable[[SSEClient, str], list[SSEEvent]]:
    """``before_sentinel(client, topic)``: publish a sentinel event on ``topic`` now, wait
    until ``client`` receives it, and return the events it received before it.

    How a test proves that something did not arrive: whatever was published before the
    sentinel, on any topic the client follows, reaches it before the sentinel (a
    streamer has one Redis subscription and event ids are one total order). What goes
    through a worker must be done first (a delivered status, the last event of a job).
    """
    def received_before(client: SSEClient, topic: str) -> list[SSEEvent]:
        sentinel = services.publisher.publish(topic, "sentinel", "test.sentinel")
        return client.events_before(sentinel)

    return received_before


class Changes:
    """What happens under the session's prefix from its creation to ``found()``: events
    and Celery task events published, keys stored in the data database, broker changes.

    ``found()`` publishes a sentinel on a channel under the prefix and reads everything
    published before it, so a publish that came first cannot be missed.
    """

    def __init__(self, rdb: redis.Redis, broker_db: redis.Redis, config: Config) -> None:
        self._rdb, self._broker_db, self._config = rdb, broker_db, config
        self._listener = redis.Redis.from_url(config.redis_url).pubsub()
        self._listener.psubscribe(f"{config.prefix}:*")
        wait_until(lambda: self._listener.get_message(timeout=0.1) is not None,
                   what="psubscribe")
        self._data = _data_keys(rdb, config)
        self._broker = _broker_sizes(broker_db)

    def found(self, timeout: float = 10.0) -> list[str]:
        """Every change since creation, described; ``[]`` when there was none."""
        changes = [f"published on {channel}: {data!r}"
                   for channel, data in self._published(timeout)]
        stored = _data_keys(self._rdb, self._config) ^ self._data
        changes += [f"stored or removed {key}" for key in sorted(stored)]
        broker = _broker_sizes(self._broker_db)
        if broker != self._broker:
            changes.append(f"dispatched: broker {self._broker} became {broker}")
        return changes

    def _published(self, timeout: float) -> list[tuple[str, bytes]]:
        channel, marker = f"{self._config.prefix}:test-sentinel", secrets.token_hex(8)
        self._rdb.publish(channel, marker)
        published, deadline = [], time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                message = self._listener.get_message(timeout=0.5)
                if message is None or message["type"] != "pmessage":
                    continue
                name, data = message["channel"].decode(), message["data"]
                if (name, data) == (channel, marker.encode()):
                    return published
                if not name.endswith("/worker.heartbeat"):  # the workers' own
                    published.append((name, data))
            raise AssertionError(f"the sentinel on {channel} never came back")
        finally:
            self._listener.close()


def _data_keys(rdb: redis.Redis, config: Config) -> set[str]:
    """Keys holding data (not the API key list or rate-limit buckets)."""
    bookkeeping = (f"{config.prefix}:apikeys", f"{config.prefix}:rate:")
    return {k for k in rdb.keys("*") if not k.startswith(bookkeeping)}


@pytest.fixture
def unchanged(api: httpx.Client, rdb: redis.Redis, broker_db: redis.Redis,
              config: Config) -> Iterator[None]:
    """Assert that the test stores, dispatches and publishes nothing."""
    changes = Changes(rdb, broker_db, config)
    yield
    assert changes.found() == []


def _broker_sizes(db: redis.Redis) -> dict[str, int]:
    """Size of each broker key but the lock a worker's periodic restore sweep takes."""
    return {key: _size(db, key) for key in db.keys("*") if not key.endswith("unacked_mutex")}


def _size(db: redis.Redis, key: str) -> int:
    kind = db.type(key)
    return {"list": db.llen, "zset": db.zcard, "hash": db.hlen, "set": db.scard}.get(
        kind, lambda _key: 1)(key)


def _embedded_redis(directory: Path) -> Iterator[object]:
    from herald.embedded import EmbeddedRedis

    server = EmbeddedRedis(free_port(), directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[object]:
    """A redis-server of the test's own, append-only, on a spare port: tests restart it."""
    yield from _embedded_redis(tmp_path / "redis")


@pytest.fixture(scope="module")
def module_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A redis-server of the test module's own, for a stack that serves all its tests."""
    yield from _embedded_redis(tmp_path_factory.mktemp("redis"))


@pytest.fixture(scope="session")
def own_env(child_env: dict[str, str]) -> Callable[..., dict[str, str]]:
    """``own_env(server, **settings)``: the child environment pointed at ``server`` (an
    ``own_redis`` or ``module_redis``: data in database 0, broker in 1), with
    ``settings`` added."""
    def make(server: object, **settings: str) -> dict[str, str]:
        url = server.url  # type: ignore[attr-defined]
        return {**child_env, "REDIS_URL": url, "CELERY_BROKER_URL": url[:-1] + "1",
                **settings}

    return make
