"""``herald status`` against a known state: a real streamer (its /metrics), real workers,
real Redis; its screen, ``--json`` and exit status.

The state: 2 clients on the streamer, a worker that consumes every queue but e-mail's,
and 1 task waiting in the e-mail queue. Unhealthy (no worker consumes a queue that holds
a task); then a second worker takes the e-mail queue and it is healthy. Its own prefix,
so a session worker consuming every queue of the session's prefix never takes the task.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest

from herald import access
from herald import config as herald_config
from herald.channels import EMAIL, queues
from herald.keys import Keys
from herald.stack import free_port
from tasks.factory import make_celery
from tasks.outbound import dispatch_task_name
from tests.conftest import Process, start_streamer, start_worker, wait_until
from tests.sse import SSEClient
from tests.stack import HERALD

pytestmark = pytest.mark.usefixtures("clean")


@pytest.fixture
def env(child_env: dict[str, str]) -> dict[str, str]:
    return {**child_env, "HERALD_PREFIX": f"{child_env['HERALD_PREFIX']}-status",
            "HERALD_STREAMER_METRICS_PORT": str(free_port()),
            "HERALD_WORKER_METRICS_PORT": "0"}


@pytest.fixture
def started(env: dict[str, str]) -> Iterator[list[Process]]:
    """Processes a test starts, stopped after it."""
    processes: list[Process] = []
    yield processes
    for process in processes:
        process.stop()


def _status(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HERALD, "status", "--timeout", "2", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def _report(env: dict[str, str]) -> tuple[int, dict]:
    done = _status(env, "--json")
    return done.returncode, json.loads(done.stdout)


def test_status_of_two_clients_and_one_queued_task(env, started):
    cfg = herald_config.load(env)
    keys = Keys(cfg.prefix)
    streamer, url = start_streamer(env, name="streamer-status")
    started.append(streamer)
    others = [q for q in queues(keys) if q != keys.channel_queue(EMAIL)]
    started.append(start_worker(env, name="status-worker", pool="solo", queues=others))
    clients = [SSEClient(url, {"token": access.issue(cfg, user, (), 600)[0]})
               for user in ("ann", "bob")]
    try:
        assert [c.status for c in clients] == [200, 200]
        make_celery(cfg).send_task(dispatch_task_name(EMAIL),
                                   kwargs={"notification_id": "n-waits"})

        code, report = _report(env)
        assert code == 1 and not report["healthy"]
        [seen] = report["streamers"]
        assert seen["error"] is None and seen["clients"] == 2 and seen["topics"] == 2
        assert [len(v) for v in report["workers"].values()] == [len(others)]
        waiting = {q["name"]: (q["length"], q["consumers"]) for q in report["queues"]}
        assert waiting[keys.channel_queue(EMAIL)] == (1, [])
        assert all(length == 0 and consumers for name, (length, consumers)
                   in waiting.items() if name != keys.channel_queue(EMAIL))
        assert report["problems"] == [f"queue {keys.channel_queue(EMAIL)}: no online worker "
                                      "consumes it; 1 task(s) waiting"]
        assert report["dead_letters"] == {"email": 0, "webhook": 0}
        assert report["redis"]["used_memory"] > 0

        screen = _status(env)
        assert screen.returncode == 1
        assert "UNHEALTHY" in screen.stdout and "no online worker consumes" in screen.stdout
        assert "clients" in screen.stdout and f"{keys.channel_queue(EMAIL)}" in screen.stdout

        started.append(start_worker(env, name="status-mail", pool="solo",
                                    queues=[keys.channel_queue(EMAIL)]))
        wait_until(lambda: _report(env)[0] == 0, 30, every=0.5, what="a healthy status")
        code, report = _report(env)
        assert report["healthy"] and report["problems"] == [] and len(report["workers"]) == 2
        assert report["streamers"][0]["clients"] == 2
        screen = _status(env)
        assert screen.returncode == 0 and "Healthy." in screen.stdout
    finally:
        for client in clients:
            client.close()


def test_unhealthy_without_workers_or_a_streamer_and_dead_letters_only_warn(env, rdb):
    cfg = herald_config.load(env)
    keys = Keys(cfg.prefix)
    rdb.zadd(keys.dead_letters("webhook"), {"d-1": 1})
    try:
        code, report = _report(env)
        assert code == 1
        problems = " | ".join(report["problems"])
        assert "no worker online" in problems
        assert "/metrics" in problems and report["streamers"][0]["error"]
        assert report["dead_letters"]["webhook"] == 1
        assert any("dead letter" in w for w in report["warnings"])
        assert not any("dead letter" in p for p in report["problems"])
    finally:
        rdb.delete(keys.dead_letters("webhook"))
