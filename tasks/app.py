"""The Celery application of Herald, configured by ``celeryconfig``.

Run a worker with ``celery -A tasks.app worker`` (add ``-P gevent`` on the command line
for a gevent pool; set in configuration only, it would leave the process unpatched).
"""

from __future__ import annotations

import redis
from celery import Celery

app = Celery("herald")
app.config_from_object("celeryconfig")

# The retry policy of tasks whose work is Redis writes: retried with capped, jittered
# backoff while Redis is unreachable, and at once after a lost worker process (the
# tasks are idempotent, so running again is safe).
RETRY_ON_REDIS = {
    "autoretry_for": (redis.ConnectionError, redis.TimeoutError),
    "retry_backoff": True,
    "retry_backoff_max": 60,
    "retry_jitter": True,
    "max_retries": 10,
    "default_retry_delay": 1,
}
