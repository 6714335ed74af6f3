"""The naive reference: the notification path a user would write with Flask and Celery.

``POST /api/notifications`` with ``{"recipients": [...], "title", "body", "data"}`` calls
``deliver.delay(...)`` and answers 202 with the task id; the Celery task publishes one
Herald event (type ``notification``, data ``{"id", "title", "body", "data"}``) per
recipient on ``user:<recipient>`` with ``herald.publisher.Publisher``, so Herald's own
streamer serves it. Nothing else: no authentication, no validation beyond what a missing
field breaks, no record, no inbox, no idempotency, no rate limit. Celery runs with its
default settings; only the broker (``REDIS_URL``) and a queue of its own
(``NAIVE_QUEUE``, so runs never share one) are set. ``NAIVE_PREFIX`` is the
``HERALD_PREFIX`` of the streamer that reads the events.

Served by ``refs.naive.NaiveStack``: ``gunicorn -w 2`` (sync workers) for ``app`` and
``celery -A herald_bench.refs.naive_app:celery worker -c 2`` for ``celery``.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from flask import Flask, Response, jsonify, request

from herald.connection import client
from herald.keys import Keys
from herald.publisher import Publisher

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
HISTORY_MAXLEN, HISTORY_TTL = 1000, 86400  # Herald's defaults

celery = Celery("naive", broker=REDIS_URL)
celery.conf.task_default_queue = os.environ.get("NAIVE_QUEUE", "celery")
_publisher: list[Publisher] = []  # made in the process that publishes (after the fork)


def publisher() -> Publisher:
    if not _publisher:
        keys = Keys(os.environ.get("NAIVE_PREFIX", "herald"))
        _publisher.append(Publisher(client(REDIS_URL), keys, HISTORY_MAXLEN, HISTORY_TTL))
    return _publisher[0]


@celery.task(bind=True, name="naive.deliver")
def deliver(self: Any, recipients: list[str], title: str, body: str, data: Any) -> None:
    """One event per recipient."""
    event = {"id": self.request.id, "title": title, "body": body, "data": data}
    for user in recipients:
        publisher().publish(f"user:{user}", event, "notification")


app = Flask(__name__)


@app.post("/api/notifications")
def create() -> tuple[Response, int]:
    body = request.get_json()
    result = deliver.delay(body["recipients"], body.get("title", ""), body.get("body", ""),
                           body.get("data"))
    return jsonify(id=result.id), 202


@app.get("/healthz")
def healthz() -> Response:
    return jsonify(ok=True)
