"""The naive Flask + Celery reference stack (``refs/naive_app.py``) as a benchmark target.

``NaiveStack`` runs the app under ``gunicorn -w <HERALD_API_WORKERS>`` (sync workers, as
gunicorn defaults) and its Celery worker with ``-c <HERALD_WORKER_CONCURRENCY>`` (prefork,
Celery's default pool), so it has the process counts of Herald's stack in the same run,
on the same Redis, in front of the same Herald streamer (``StackTarget``). gunicorn's
sync workers close the connection after each answer: that is part of what is measured.
"""

from __future__ import annotations

import sys

from herald_bench.stack_target import StackTarget

APP = "herald_bench.refs.naive_app"


class NaiveStack(StackTarget):
    """Flask POST -> ``task.delay()`` -> Celery worker -> one Herald publish per recipient."""

    name = "naive"
    batch_path = None  # the naive app has no batch endpoint

    def _start_front(self) -> None:
        env = {**self.environ(), "NAIVE_PREFIX": self.config.prefix,
               "NAIVE_QUEUE": f"{self.config.prefix}.naive"}
        cfg = self.config
        self._spawn("api", [
            sys.executable, "-m", "gunicorn", "--workers", str(cfg.api_workers),
            "--bind", f"127.0.0.1:{cfg.api_port}", "--worker-tmp-dir", str(self.home),
            "--no-control-socket", f"{APP}:app"], env)
        self._spawn("worker", [
            sys.executable, "-m", "celery", "-A", f"{APP}:celery", "worker", "-Q",
            env["NAIVE_QUEUE"], "-c", str(cfg.worker_concurrency), "-l", "INFO",
            "-n", f"naive-{cfg.prefix}@%h"], env)
        self._wait_http("api", f"{cfg.api_url}/healthz")
        self._wait_worker("worker")
