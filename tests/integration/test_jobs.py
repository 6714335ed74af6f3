"""Jobs started through the API publish their lifecycle to the owner, in order."""

from __future__ import annotations

import pytest

from tests.conftest import wait_until

pytestmark = pytest.mark.usefixtures("clean", "worker")


def _start(api: str, params: dict) -> str:
    answer = api.post("/api/jobs", json={"kind": "demo.countdown", "params": params,
                                                 "owner": "alice"})
    assert answer.status_code == 202, answer.text
    return answer.json()["id"]


def _until_type(stream, event_type: str, timeout: float = 10.0) -> list:
    wait_until(lambda: any(e.event == event_type for e in stream.events), timeout,
               what=event_type)
    return [e for e in stream.events if e.event.startswith("job.")]


def test_job_events_arrive_in_order_and_end_in_succeeded(api, subscribe, before_sentinel):
    alice = subscribe("alice")
    bob = subscribe("bob")
    job_id = _start(api, {"steps": 3, "interval": 0.05})
    events = _until_type(alice, "job.succeeded")
    assert [e.event for e in events] == [
        "job.queued", "job.started", "job.progress", "job.progress", "job.progress",
        "job.succeeded"]
    data = [e.json()["data"] for e in events]
    assert {d["job_id"] for d in data} == {job_id}
    assert [(d["done"], d["total"]) for d in data[2:5]] == [(1, 3), (2, 3), (3, 3)]
    assert data[-1]["result"] == {"counted": 3}
    ids = [e.id for e in events]
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))

    record = api.get(f"/api/jobs/{job_id}").json()
    assert record["state"] == "succeeded"
    assert record["progress"] == {"done": 3, "total": 3}
    assert record["result"] == {"counted": 3}
    assert record["owner"] == "alice" and record["kind"] == "demo.countdown"
    assert record["started_at"] and record["finished_at"]
    # job.succeeded is the job's last event: whatever it sent went before it.
    assert before_sentinel(bob, "user:bob") == []


def test_a_failing_job_ends_in_failed(api, subscribe):
    alice = subscribe("alice")
    job_id = _start(api, {"steps": 5, "interval": 0.02, "fail_at": 2})
    events = _until_type(alice, "job.failed")
    assert [e.event for e in events] == ["job.queued", "job.started", "job.progress",
                                         "job.failed"]
    failure = events[-1].json()["data"]
    assert failure["state"] == "failed"
    assert "fail_at" in failure["error"]
    record = api.get(f"/api/jobs/{job_id}").json()
    assert record["state"] == "failed"
    assert record["progress"] == {"done": 1, "total": 5}
    assert "DemoFailure" in record["error"]
