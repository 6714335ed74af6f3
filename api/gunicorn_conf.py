"""gunicorn's hooks for the API: one ``/metrics`` adding up every worker process.

Loaded by gunicorn's master with ``--config python:api.gunicorn_conf`` (the command
``herald.stack.services``, ``docker-compose.yml`` and the Dockerfile run). Each worker
counts its requests (``api.metrics``) in prometheus-client's multiprocess mode: into
files of its own in a directory its master made; the master serves their sum.

Guarantees, per API instance (one gunicorn master):
- its metrics directory is its own, created empty when the master starts and passed to
  the workers it forks as ``PROMETHEUS_MULTIPROC_DIR``; the master removes it when it
  exits, so a restarted instance never counts an earlier run's requests;
- ``GET /metrics`` on ``HERALD_METRICS_HOST``:``HERALD_API_METRICS_PORT`` (never the
  public port) answers the sum over every worker the instance has had: a counter does not
  go back when a worker exits or is replaced; an exited worker is marked dead
  (``mark_process_dead``) by the master;
- ``HERALD_API_METRICS_PORT=0``: no directory, no endpoint, workers count nothing. A
  port that is taken is logged as a WARNING and the API runs without its endpoint.

The master reads the two settings in a child process (``api.worker.master_view``) and
imports only the standard library and prometheus-client (which, like gunicorn itself,
imports ``ssl`` but nothing that keeps a reference into it), never the app: see
``api.worker``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

from api.worker import master_view

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_served: dict[str, Any] = {}  # the master's endpoint: its server and thread


def on_starting(server: Any) -> None:
    """Before the master forks anything: an empty metrics directory for this instance."""
    view = master_view()
    if view.problem is not None or not view.metrics_port:
        os.environ.pop(MULTIPROC_ENV, None)  # workers count nothing (api.metrics)
        return
    pid = os.getpid()
    os.environ[MULTIPROC_ENV] = tempfile.mkdtemp(prefix=f"herald-api-metrics-{pid}-")


def when_ready(server: Any) -> None:
    """Serve ``/metrics`` from the master, on the internal address."""
    directory = os.environ.get(MULTIPROC_ENV)
    if directory is None:
        return
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    view = master_view()
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)
    try:
        _served["endpoint"] = start_http_server(view.metrics_port, view.metrics_host,
                                                registry)
    except OSError as exc:
        server.log.warning("API metrics: cannot listen on %s:%d (%s); no /metrics",
                           view.metrics_host, view.metrics_port, exc)
        return
    server.log.info("API metrics at http://%s:%d/metrics", view.metrics_host,
                    view.metrics_port)


def child_exit(server: Any, worker: Any) -> None:
    """A worker exited: its live gauges go; its counts stay in the sum."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    """The master stops: close the endpoint and remove the directory."""
    endpoint = _served.pop("endpoint", None)
    if endpoint is not None:
        httpd, thread = endpoint
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
    directory = os.environ.pop(MULTIPROC_ENV, None)
    if directory:
        shutil.rmtree(directory, ignore_errors=True)
