"""In-app delivery (``tasks.notifications.deliver``) against a real Redis: one script call
per chunk of destinations, preferences asked inside it, the status moved in the same
round trips; running again after a partial run gives one entry and one event each."""

from __future__ import annotations

import json

import pytest
import redis

import tasks.notifications as inapp
from herald.event import Event, encode_body
from herald.notifications import NewNotification
from herald.services import Services

pytestmark = pytest.mark.usefixtures("clean")

USERS = [f"u{i}" for i in range(23)]


def _events(rdb: redis.Redis, services: Services, topic: str) -> list[Event]:
    rows = rdb.xrange(services.keys.stream(topic))
    return [Event.from_json(fields["e"]) for _, fields in rows]


def _one_each(rdb: redis.Redis, services: Services, nid: str, users: list[str]) -> None:
    for user in users:
        assert rdb.zrange(services.keys.inbox(user), 0, -1) == [nid], user
        events = _events(rdb, services, f"user:{user}")
        assert [event.data["id"] for event in events] == [nid], user


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Several script calls per round trip and several round trips per notification."""
    monkeypatch.setattr(inapp, "DELIVERY_CHUNK", 4)
    monkeypatch.setattr(inapp, "ROUND_TRIP", 10)


@pytest.mark.usefixtures("small_chunks")
def test_a_run_cut_after_its_first_round_trip_then_run_again_delivers_once(
        services, rdb, monkeypatch):
    nid = services.notifications.create(NewNotification(title="t", recipients=USERS)).id
    real = inapp._round_trip

    def dies_after_one(*args, **kwargs):
        real(*args, **kwargs)
        raise redis.ConnectionError("worker lost mid-task")

    monkeypatch.setattr(inapp, "_round_trip", dies_after_one)
    with pytest.raises(redis.ConnectionError):
        inapp.deliver(services, nid)
    assert rdb.hlen(services.keys.recipient_state(nid)) == 10
    assert rdb.hget(services.keys.notification(nid), "status") == "sending"

    monkeypatch.setattr(inapp, "_round_trip", real)
    first = inapp.deliver(services, nid)
    again = inapp.deliver(services, nid)

    _one_each(rdb, services, nid, USERS)
    assert first == again == rdb.hgetall(services.keys.recipient_event(nid))
    assert len(first) == len(USERS)
    assert rdb.hget(services.keys.notification(nid), "status") == "delivered"
    assert rdb.scard(services.keys.unread("u0")) == 1


@pytest.mark.usefixtures("small_chunks")
def test_preferences_are_asked_in_the_script_unless_critical(services, rdb):
    services.preferences.turn_off("u1", "inapp", "marketing")
    services.preferences.turn_off("u2", "email", "marketing")  # another channel
    services.preferences.turn_off("u3", "inapp", "billing")  # another category
    users = ["u0", "u1", "u2", "u3"]
    sale = services.notifications.create(NewNotification(
        title="Sale", recipients=users, category="marketing")).id
    outage = services.notifications.create(NewNotification(
        title="Outage", recipients=users, category="marketing", critical=True)).id

    assert set(inapp.deliver(services, sale)) == {"user:u0", "user:u2", "user:u3"}
    assert set(inapp.deliver(services, outage)) == {f"user:{u}" for u in users}

    states = rdb.hgetall(services.keys.recipient_state(sale))
    assert states["user:u1"] == "skipped"
    assert rdb.zrange(services.keys.inbox("u1"), 0, -1) == [outage]
    assert [e.data["id"] for e in _events(rdb, services, "user:u1")] == [outage]
    services.preferences.put("u1", {})  # turned back on: what was decided stands
    assert "user:u1" not in inapp.deliver(services, sale)
    assert rdb.hget(services.keys.notification(sale), "status") == "delivered"


def test_a_topic_notification_is_not_filtered_and_fills_no_inbox(services, rdb):
    services.preferences.turn_off("u0", "inapp", "general")
    nid = services.notifications.create(NewNotification(title="t", topic="news")).id
    ids = inapp.deliver(services, nid)
    assert list(ids) == ["news"]
    assert [e.id for e in _events(rdb, services, "news")] == [ids["news"]]
    assert not rdb.keys(services.keys.inbox("*"))


def test_each_event_is_the_envelope_the_publisher_would_write(services, rdb):
    data = {"k": [1, "é", None], "s": "a\"b\\c\n"}
    nid = services.notifications.create(NewNotification(
        title="Tïtle ✓", body="<b>", data=data, recipients=["u0", "u1"])).id
    ids = inapp.deliver(services, nid)
    record = services.notifications.load(nid)
    for topic, event_id in ids.items():
        raw = rdb.xrange(services.keys.stream(topic))[0][1]["e"]
        ms = event_id.partition("-")[0]
        rest = encode_body(topic, "notification", inapp.event_data(record))
        assert raw == f'{{"id":"{event_id}","ts":{ms},{rest}'
        assert json.loads(raw)["data"]["data"] == data
    first, second = sorted(ids.values(), key=lambda e: tuple(map(int, e.split("-"))))
    assert int(second.split("-")[1]) == int(first.split("-")[1]) + 1


def test_delivery_loads_its_scripts_again_after_a_script_flush(services, rdb):
    nid = services.notifications.create(NewNotification(title="t", recipients=["u0"])).id
    rdb.script_flush()
    assert list(inapp.deliver(services, nid)) == ["user:u0"]
    assert rdb.hget(services.keys.notification(nid), "status") == "delivered"


def test_start_reads_the_record_and_marks_it_sending_once(services, rdb):
    nid = services.notifications.create(NewNotification(title="t", recipients=["u0"])).id
    record = services.notifications.start(nid)
    assert record is not None and record["id"] == nid and record["title"] == "t"
    assert rdb.hget(services.keys.notification(nid), "status") == "sending"
    assert services.notifications.start("n_missing") is None
    assert not rdb.exists(services.keys.notification("n_missing"))
