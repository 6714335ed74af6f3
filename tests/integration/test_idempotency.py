"""Idempotency: a repeated request or a repeated task adds nothing."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.usefixtures("clean", "worker")


def _inbox(api: str, user: str) -> dict:
    return api.get(f"/api/users/{user}/notifications").json()


def test_same_idempotency_key_gives_one_entry_and_one_event(api, subscribe, before_sentinel,
                                                            wait_idle):
    alice = subscribe("alice")
    request = {"recipients": ["alice"], "title": "Once"}
    headers = {"Idempotency-Key": "order-1234-shipped"}
    first = api.post("/api/notifications", json=request, headers=headers)
    second = api.post("/api/notifications", json=request, headers=headers)
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] == second.json()["id"]
    assert first.json()["created"] is True and second.json()["created"] is False

    assert alice.wait_for(1)
    wait_idle()
    assert [e.json()["data"]["id"] for e in before_sentinel(alice, "user:alice")] == [
        first.json()["id"]]
    inbox = _inbox(api, "alice")
    assert [item["id"] for item in inbox["items"]] == [first.json()["id"]]
    assert inbox["unread"] == 1


def test_same_key_with_another_body_is_refused(api, rdb):
    headers = {"Idempotency-Key": "k-1"}
    first = api.post("/api/notifications",
                       json={"recipients": ["alice"], "title": "A"}, headers=headers)
    other = api.post("/api/notifications",
                       json={"recipients": ["alice"], "title": "B"}, headers=headers)
    assert other.status_code == 422
    assert other.json()["error"]["field"] == "Idempotency-Key"
    assert first.json()["id"] in other.json()["error"]["message"]


def test_running_the_task_twice_delivers_once(api, subscribe, services, wait_idle,
                                             before_sentinel):
    alice = subscribe("alice")
    answer = api.post("/api/notifications",
                        json={"recipients": ["alice"], "title": "Twice?"})
    notification_id = answer.json()["id"]
    assert alice.wait_for(1)
    # A redelivery of the same message, as acks_late gives after a lost worker. (Imported
    # here: the entry point's app reads its settings from the session's environment.)
    from tasks.app import app as celery_app
    from tasks.notifications import SEND_NOTIFICATION

    celery_app.send_task(SEND_NOTIFICATION, kwargs={"notification_id": notification_id},
                         task_id=notification_id)
    celery_app.send_task(SEND_NOTIFICATION, kwargs={"notification_id": notification_id})
    wait_idle()
    assert len(_inbox(api, "alice")["items"]) == 1
    assert services.redis.xlen(services.keys.stream("user:alice")) == 1
    assert len(before_sentinel(alice, "user:alice")) == 1
