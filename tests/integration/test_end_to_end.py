"""The vertical path: API -> Celery worker -> Redis -> streamer -> SSE client."""

from __future__ import annotations

import time

import pytest

from herald.event import valid_event_id
from tests.conftest import wait_until

pytestmark = pytest.mark.usefixtures("clean", "worker")


def test_alice_receives_the_notification_and_bob_does_not(api, subscribe, before_sentinel):
    alice = subscribe("alice")
    bob = subscribe("bob")
    assert alice.status == 200 and bob.status == 200

    sent_at = time.time()
    answer = api.post("/api/notifications", json={
        "recipients": ["alice"], "title": "Build finished", "body": "All green",
        "data": {"build": 42},
    })
    assert answer.status_code == 202
    notification_id = answer.json()["id"]

    events = alice.wait_for(1)
    received_at = time.time()
    assert events, "alice received nothing"
    event = events[0]
    envelope = event.json()
    assert event.event == "notification"
    assert event.id == envelope["id"] and valid_event_id(envelope["id"])
    assert set(envelope) == {"id", "ts", "topic", "type", "data"}
    assert envelope["topic"] == "user:alice"
    assert envelope["type"] == "notification"
    assert envelope["data"]["id"] == notification_id
    assert envelope["data"]["title"] == "Build finished"
    assert envelope["data"]["body"] == "All green"
    assert envelope["data"]["data"] == {"build": 42}
    # ts is the publish time in ms: after the request was sent, before the event came.
    assert int(sent_at * 1000) <= envelope["ts"] <= received_at * 1000

    wait_until(lambda: api.get(answer.json()["status_url"]).json()["status"] == "delivered",
               what="the delivery to finish")
    assert before_sentinel(bob, "user:bob") == []


def test_the_record_shows_delivery(api, subscribe):
    alice = subscribe("alice")
    answer = api.post("/api/notifications",
                        json={"recipients": ["alice", "carol"], "title": "Hi"})
    status_url = answer.json()["status_url"]
    assert alice.wait_for(1)

    def delivered() -> dict:
        return api.get(status_url).json()

    wait_until(lambda: delivered()["status"] == "delivered", what="the delivery to finish")
    record = delivered()
    assert record["status"] == "delivered"
    assert record["recipients"] == ["alice", "carol"]
    assert record["created_at"].endswith("Z") and record["updated_at"] >= record["created_at"]
    assert (record["category"], record["critical"]) == ("general", False)
    deliveries = {item["target"]: item for item in record["deliveries"]}
    assert set(deliveries) == {"alice", "carol"}
    for delivery in deliveries.values():
        assert (delivery["channel"], delivery["state"], delivery["attempts"]) == (
            "inapp", "sent", 1)
        assert valid_event_id(delivery["event_id"]) and delivery["error"] is None
        assert record["created_at"] <= delivery["sent_at"] <= record["updated_at"]
    assert deliveries["alice"]["event_id"] == alice.events[0].id


def test_a_topic_notification_reaches_every_subscriber(api, subscribe):
    readers = [subscribe(user, ["news"], grants=("news",)) for user in ("ann", "ben")]
    api.post("/api/notifications", json={"topic": "news", "title": "Extra"})
    for reader in readers:
        events = reader.wait_for(1)
        assert [e.json()["data"]["title"] for e in events] == ["Extra"]
        assert events[0].json()["topic"] == "news"


def test_raw_events_fan_out_to_a_topic(api, subscribe):
    reader = subscribe("ann", ["room:1"], grants=("room:*",))
    answer = api.post("/api/events",
                        json={"topic": "room:1", "type": "chat.message", "data": {"t": "hey"}})
    assert answer.status_code == 202
    events = reader.wait_for(1)
    assert events[0].id == answer.json()["id"]
    assert events[0].event == "chat.message"
    assert events[0].json()["data"] == {"t": "hey"}
