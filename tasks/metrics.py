"""The workers' Prometheus metrics, served by each worker's main process.

What is counted, in whichever process runs the task (a prefork child, or the main
process of a gevent, threads or solo pool):
- ``herald_tasks_total{task,queue,outcome}``: tasks run, by name, the queue they came
  from and ``succeeded``, ``failed`` or ``retried`` (Celery's ``task_success``,
  ``task_failure``, ``task_retry`` signals; a retry is counted once per attempt that
  asked for one, and a task lost with its worker process and sent again counts
  ``retried``);
- ``herald_task_seconds{task,queue}``: each run's duration (``task_prerun`` to
  ``task_postrun``);
- ``herald_deliveries_total{channel,outcome}``: deliveries by the state an attempt left
  them in (``sent``, ``skipped``, ``retrying``, ``failed``, ``dead``: ``delivered``,
  called where ``tasks.outbound`` decides a delivery's state and, for in-app, once per
  run of ``tasks.notifications.deliver``: a redelivered in-app task counts its
  destinations again).

Read from Redis when Prometheus scrapes (``RedisGauges``: one pipeline of ``ZCARD`` per
outbound channel and one of ``LLEN`` per queue, whatever the traffic):
``herald_dead_letters{channel}`` and ``herald_queue_length{queue}`` (tasks waiting, not
those reserved by a worker; Redis broker only). Every worker reports the same figures:
aggregate them with ``max``, not ``sum``. A Redis that does not answer leaves them out of
that scrape (logged as a WARNING); the counters are still served.

Guarantees of the endpoint (``HERALD_METRICS_HOST``:``HERALD_WORKER_METRICS_PORT``,
never a public port): set up by Celery's ``worker_init`` in the worker's main process
before its pool starts, with a metrics directory of its own, created empty
(prometheus-client's multiprocess mode, ``PROMETHEUS_MULTIPROC_DIR``, inherited by the
pool's children); it answers the sum over the main process and every child the worker
has had (a replaced child's counts stay). ``worker_shutdown`` closes it and removes the
directory. Port 0: nothing is set up and nothing counted; a port that is taken is
logged as a WARNING and the worker runs without an endpoint.

prometheus-client is imported only once the directory is set (it picks its
multiprocess mode when imported), so importing this module (the API does, through
``tasks.outbound``) costs nothing and counts nothing.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import redis
from celery import signals
from redis.backoff import NoBackoff
from redis.retry import Retry

from herald.channels import OUTBOUND
from herald.config import Config
from herald.keys import Keys
from tasks.settings import queues

if TYPE_CHECKING:
    from prometheus_client import Counter, Histogram

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
SUCCEEDED, FAILED, RETRIED = "succeeded", "failed", "retried"
SCRAPE_TIMEOUT = 2.0  # seconds a scrape waits for Redis before leaving the gauges out
UNKNOWN = "unknown"


@dataclass
class WorkerMetrics:
    """The counters of one worker (all its processes write them; see the module)."""

    tasks: Counter
    seconds: Histogram
    deliveries: Counter
    started: dict[str, float] = field(default_factory=dict)  # task id -> perf_counter


@dataclass
class _Endpoint:
    metrics: WorkerMetrics
    directory: str
    server: Any = None  # (httpd, thread) of the main process, once serving


_state: dict[str, _Endpoint] = {}  # "endpoint": this worker's, once set up


def delivered(channel: str, outcome: str, count: int = 1) -> None:
    """Count ``count`` deliveries of ``channel`` left in ``outcome`` (no-op outside a
    worker with metrics)."""
    endpoint = _state.get("endpoint")
    if endpoint is not None and count:
        endpoint.metrics.deliveries.labels(channel, outcome).inc(count)


def inapp_delivered(channel: str, event_ids: Iterable[str]) -> None:
    """Count one in-app run's destinations: an event id is ``sent``, '' ``skipped``."""
    if "endpoint" in _state:
        answers = list(event_ids)
        sent = sum(1 for event in answers if event)
        delivered(channel, "sent", sent)
        delivered(channel, "skipped", len(answers) - sent)


def start(cfg: Config) -> None:
    """Set up this worker's metrics and serve them (see the module's guarantees)."""
    directory = tempfile.mkdtemp(prefix=f"herald-worker-metrics-{os.getpid()}-")
    os.environ[MULTIPROC_ENV] = directory
    endpoint = _Endpoint(_create(), directory)
    _state["endpoint"] = endpoint
    _connect_task_signals()
    endpoint.server = _serve(cfg, directory)


def stop() -> None:
    """Close the endpoint and remove the directory (the worker is shutting down)."""
    endpoint = _state.pop("endpoint", None)
    if endpoint is None:
        return
    if endpoint.server is not None:
        httpd, thread = endpoint.server
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
    os.environ.pop(MULTIPROC_ENV, None)
    shutil.rmtree(endpoint.directory, ignore_errors=True)


def _create() -> WorkerMetrics:
    """The counters, created after ``PROMETHEUS_MULTIPROC_DIR`` is set."""
    from prometheus_client import CollectorRegistry, Counter, Histogram, values

    if not getattr(values.ValueClass, "_multiprocess", False):
        # prometheus-client was imported before the directory was set: choose again.
        values.ValueClass = values.get_value_class()
    own = CollectorRegistry()  # never served: the directory is what is read
    return WorkerMetrics(
        tasks=Counter("herald_tasks", "Tasks run, by name, queue and outcome.",
                      ["task", "queue", "outcome"], registry=own),
        seconds=Histogram("herald_task_seconds", "Seconds a task ran.", ["task", "queue"],
                          registry=own,
                          buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30,
                                   60, 120, 300, 600)),
        deliveries=Counter("herald_deliveries", "Deliveries by channel and outcome.",
                           ["channel", "outcome"], registry=own),
    )


def _serve(cfg: Config, directory: str) -> Any:
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)
    registry.register(RedisGauges(cfg))
    host, port = cfg.metrics_host, cfg.worker_metrics_port
    try:
        server = start_http_server(port, host, registry)
    except OSError as exc:
        log.warning("worker metrics: cannot listen on %s:%d (%s); no /metrics", host, port,
                    exc)
        return None
    return server


class RedisGauges:
    """A collector of what is read from Redis at scrape time: dead letters per outbound
    channel, and tasks waiting per queue on a Redis broker."""

    def __init__(self, cfg: Config) -> None:
        self.keys = Keys(cfg.prefix)
        self.data = _scrape_client(cfg.redis_url)
        redis_broker = urlsplit(cfg.broker_url).scheme in ("redis", "rediss", "unix")
        self.broker = _scrape_client(cfg.broker_url) if redis_broker else None

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        dead = GaugeMetricFamily("herald_dead_letters",
                                 "Dead deliveries waiting to be retried, per channel.",
                                 labels=["channel"])
        for channel, size in self._sizes(self.data, "zcard", {
                channel: self.keys.dead_letters(channel) for channel in OUTBOUND}):
            dead.add_metric([channel], size)
        yield dead
        if self.broker is not None:
            waiting = GaugeMetricFamily("herald_queue_length",
                                        "Tasks waiting in a queue (not yet reserved).",
                                        labels=["queue"])
            for queue, size in self._sizes(self.broker, "llen", {
                    queue: self.keys.queue_key(queue) for queue in queues(self.keys)}):
                waiting.add_metric([queue], size)
            yield waiting

    def describe(self) -> list[Any]:
        return []  # read at scrape time only: registering never touches Redis

    @staticmethod
    def _sizes(client: redis.Redis, command: str,
               keys: dict[str, str]) -> list[tuple[str, int]]:
        """``command`` (``llen``, ``zcard``) of each key in one round trip; [] when Redis
        does not answer."""
        pipe = client.pipeline(transaction=False)
        for key in keys.values():
            getattr(pipe, command)(key)
        try:
            return list(zip(keys, pipe.execute(), strict=True))
        except (redis.RedisError, OSError) as exc:
            log.warning("worker metrics: Redis did not answer (%s); gauges left out", exc)
            return []


def _scrape_client(url: str) -> redis.Redis:
    """A client that fails fast rather than hold a scrape."""
    return redis.Redis.from_url(url, socket_timeout=SCRAPE_TIMEOUT,
                                socket_connect_timeout=SCRAPE_TIMEOUT,
                                retry=Retry(NoBackoff(), 0))


def connect() -> None:
    """Set up every worker this process starts (``tasks.app`` calls it once): its
    ``worker_init`` starts the metrics of a Herald app whose port is not 0, its
    ``worker_shutdown`` stops them. The task signals are connected once set up."""
    signals.worker_init.connect(_on_worker_init, weak=False)
    signals.worker_ready.connect(_on_worker_ready, weak=False)
    signals.worker_shutdown.connect(_on_worker_shutdown, weak=False)


def _on_worker_init(sender: Any = None, **_: Any) -> None:
    cfg = getattr(getattr(sender, "app", None), "herald_config", None)
    if isinstance(cfg, Config) and cfg.worker_metrics_port and "endpoint" not in _state:
        start(cfg)


def _on_worker_ready(**_: Any) -> None:
    """Say where the endpoint is, once the worker's logging is set up."""
    endpoint = _state.get("endpoint")
    if endpoint is not None and endpoint.server is not None:
        host, port = endpoint.server[0].server_address[:2]
        log.info("worker metrics at http://%s:%d/metrics", host, port)


def _on_worker_shutdown(**_: Any) -> None:
    stop()


def _on_process_shutdown(pid: int | None = None, **_: Any) -> None:
    """A prefork child exits: its live gauges go (mark_process_dead); its counts stay."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid or os.getpid())


def _on_prerun(task_id: str = "", **_: Any) -> None:
    endpoint = _state.get("endpoint")
    if endpoint is not None:
        endpoint.metrics.started[task_id] = time.perf_counter()


def _on_postrun(sender: Any = None, task_id: str = "", **_: Any) -> None:
    endpoint = _state.get("endpoint")
    began = endpoint.metrics.started.pop(task_id, None) if endpoint else None
    if endpoint is not None and began is not None:
        endpoint.metrics.seconds.labels(*_labels(sender)).observe(time.perf_counter() - began)


def _counter(outcome: str) -> Any:
    def count(sender: Any = None, request: Any = None, **_: Any) -> None:
        endpoint = _state.get("endpoint")
        if endpoint is not None:
            endpoint.metrics.tasks.labels(*_labels(sender, request), outcome).inc()

    return count


_HANDLERS = ((signals.task_prerun, _on_prerun), (signals.task_postrun, _on_postrun),
             (signals.task_success, _counter(SUCCEEDED)),
             (signals.task_failure, _counter(FAILED)),
             (signals.task_retry, _counter(RETRIED)),
             (signals.worker_process_shutdown, _on_process_shutdown))


def _connect_task_signals() -> None:
    for signal, handler in _HANDLERS:
        signal.connect(handler, weak=False)


def _labels(task: Any, request: Any = None) -> tuple[str, str]:
    """(task name, queue) of the task being run: the queue from its delivery info."""
    name = getattr(task, "name", None) or UNKNOWN
    if request is None:
        request = getattr(task, "request", None)
    info = getattr(request, "delivery_info", None) or {}
    return name, str(info.get("routing_key") or UNKNOWN)

