"""The label values of the API's and workers' metrics: a bounded set, whatever comes in."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from api.metrics import reason
from herald.errors import Refusal
from tasks import metrics as worker_metrics


@pytest.mark.parametrize(("status", "code", "expected"), [
    (400, "invalid_field", "validation"), (400, "invalid_json", "validation"),
    (413, "payload_too_large", "validation"), (415, "unsupported_media_type", "validation"),
    (422, "idempotency_key_reused", "validation"), (401, "unauthorized", "auth"),
    (403, "forbidden", "auth"), (429, "too_many_requests", "rate_limit"),
    (503, "broker_unavailable", "broker_unavailable"),
    (503, "redis_unavailable", "redis_unavailable"), (500, "internal_error", None),
])
def test_a_refusal_has_one_of_the_agreed_reasons(status, code, expected):
    assert reason(Refusal(status, code, "message")) == expected


def test_a_task_is_labelled_by_its_name_and_the_queue_it_came_from():
    task = SimpleNamespace(name="herald.send_notification",
                           request=SimpleNamespace(delivery_info={"routing_key": "h.inapp"}))
    assert worker_metrics._labels(task) == ("herald.send_notification", "h.inapp")
    retried = SimpleNamespace(delivery_info={"routing_key": "h.email"})
    assert worker_metrics._labels(task, retried) == ("herald.send_notification", "h.email")
    assert worker_metrics._labels(SimpleNamespace(name=None, request=None)) == (
        "unknown", "unknown")


def test_outside_a_worker_with_metrics_counting_does_nothing():
    worker_metrics.delivered("email", "sent")
    worker_metrics.inapp_delivered("inapp", ["1-0", ""])
    assert "endpoint" not in worker_metrics._state
