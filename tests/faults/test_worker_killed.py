"""Fault: the worker dies in the middle of ``send_notification``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
import redis

from herald.keys import Keys
from tests.conftest import ROOT, start_worker, wait_until

pytestmark = pytest.mark.faults

RECIPIENTS = 30000  # enough work that the kill lands mid-task (3,000 take ~60 ms now)
SUBMIT = """
from herald import config, services
from herald.notifications import NewNotification
from tasks.factory import make_celery
from tasks.notifications import submit
cfg = config.load()
users = [f"u{i}" for i in range(%d)]
new = NewNotification(title="big", recipients=users)
print(submit(services.build(cfg), make_celery(cfg), new).id)
"""


def _submit(env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-c", SUBMIT % RECIPIENTS], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _delivered(db: redis.Redis, keys: Keys, notification_id: str) -> int:
    return db.hlen(keys.recipient_state(notification_id))


def _kill_mid_task(db: redis.Redis, keys: Keys, notification_id: str, victims: list[int]) -> int:
    wait_until(lambda: _delivered(db, keys, notification_id) > 0, 30, every=0.002,
               what="delivery to start")
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    return _delivered(db, keys, notification_id)


def _check_exactly_once(db: redis.Redis, keys: Keys, notification_id: str) -> None:
    wait_until(lambda: db.hget(keys.notification(notification_id), "status") == "delivered",
               60, every=0.2, what="redelivery to finish")
    pipe = db.pipeline(transaction=False)
    for i in range(RECIPIENTS):
        pipe.zcard(keys.inbox(f"u{i}"))
        pipe.xlen(keys.stream(f"user:u{i}"))
    counts = pipe.execute()
    inbox, events = counts[0::2], counts[1::2]
    print(f"recipients {RECIPIENTS}; inbox entries {sum(inbox)}; events {sum(events)}")
    assert set(inbox) == {1} and set(events) == {1}


@pytest.fixture
def setting(own_redis, own_env, config):
    env = own_env(own_redis, HERALD_MAX_RECIPIENTS=str(RECIPIENTS),
                  HERALD_TASK_TIME_LIMIT="20", HERALD_VISIBILITY_TIMEOUT="25",
                  HERALD_RESTORE_INTERVAL="1")
    return env, redis.Redis.from_url(own_redis.url, decode_responses=True), Keys(config.prefix)


def test_pool_process_killed_mid_task_is_retried_once(setting):
    env, db, keys = setting
    worker = start_worker(env, concurrency=1)
    try:
        children = psutil.Process(worker.popen.pid).children()
        notification_id = _submit(env)
        before = _kill_mid_task(db, keys, notification_id, [c.pid for c in children])
        assert 0 < before < RECIPIENTS, "the kill did not land mid-task"
        _check_exactly_once(db, keys, notification_id)
        assert "WorkerLostError" in worker.log() or "worker lost" in worker.log().lower()
    finally:
        worker.stop()


def test_whole_worker_killed_mid_task_is_redelivered_once(setting):
    env, db, keys = setting
    worker = start_worker(env, concurrency=1)
    notification_id = _submit(env)
    pids = [worker.popen.pid, *(c.pid for c in psutil.Process(worker.popen.pid).children())]
    before = _kill_mid_task(db, keys, notification_id, pids)
    worker.stop()
    assert 0 < before < RECIPIENTS, "the kill did not land mid-task"
    started = time.monotonic()
    replacement = start_worker(env, concurrency=1, name="replacement")
    try:
        _check_exactly_once(db, keys, notification_id)
        print(f"redelivered after {time.monotonic() - started:.1f}s "
              "(visibility timeout 25 s)")
    finally:
        replacement.stop()
