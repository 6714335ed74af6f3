"""POST /api/notifications/batch: each item checked on its own, the valid ones stored and
delivered exactly once, per-item idempotency, limits, and the rate budget per item."""

from __future__ import annotations

import threading

import httpx
import pytest

from api.schemas import MAX_BATCH_BODY_BYTES, MAX_BATCH_ITEMS
from tests.conftest import wait_until

pytestmark = pytest.mark.usefixtures("clean", "worker")

BATCH = "/api/notifications/batch"


def _records(rdb, keys) -> set[str]:
    """Ids of the stored notification records."""
    prefix = keys.notification("")
    return {name[len(prefix):] for name in rdb.keys(keys.notification("*"))
            if name.count(":") == prefix.count(":")}


def test_invalid_items_fail_alone_and_the_others_are_delivered_once(
        api, subscribe, before_sentinel, wait_idle, rdb, keys):
    alice, bob = subscribe("alice"), subscribe("bob")
    answer = api.post(BATCH, json={"items": [
        {"recipients": ["alice"], "title": "first"},
        {"recipients": ["bob"], "title": ""},
        {"recipients": ["bob"], "topic": "news", "title": "both"},
        "not an object",
        {"recipients": ["bob"], "title": "x", "category": "no-such-category"},
        {"recipients": ["bob"], "title": "x", "idempotency_key": "with space"},
        {"recipients": ["bob"], "title": "second"},
    ]})
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert (body["accepted"], body["refused"]) == (2, 5)
    items = body["items"]
    assert [item["index"] for item in items] == list(range(7))
    fields = {item["index"]: item["error"]["field"] for item in items if "error" in item}
    assert fields == {1: "items[1].title", 2: "items[2].recipients", 3: "items[3]",
                      4: "items[4].category", 5: "items[5].idempotency_key"}
    assert all(items[i]["error"]["code"] == "invalid_field" for i in fields)
    assert items[1]["error"]["message"].startswith("items[1].title: ")
    first, second = items[0], items[6]
    assert first["created"] is second["created"] is True
    assert first["status_url"].endswith(f"/api/notifications/{first['id']}")
    assert _records(rdb, keys) == {first["id"], second["id"]}

    assert alice.wait_for(1) and bob.wait_for(1)
    wait_idle()
    assert [e.json()["data"]["id"] for e in before_sentinel(alice, "user:alice")] == [
        first["id"]]
    assert [e.json()["data"]["id"] for e in before_sentinel(bob, "user:bob")] == [
        second["id"]]
    assert api.get(first["status_url"]).json()["status"] == "delivered"
    assert [i["id"] for i in api.get("/api/users/bob/notifications").json()["items"]] == [
        second["id"]]


def test_a_repeated_batch_stores_nothing_new_and_answers_the_same_ids(api, rdb, keys,
                                                                      wait_idle):
    items = [{"recipients": [f"u{i}"], "title": f"t{i}", "idempotency_key": f"k-{i}"}
             for i in range(5)]
    items.append({"recipients": ["u9"], "title": "unkeyed"})
    first = api.post(BATCH, json={"items": items}).json()["items"]
    stored = _records(rdb, keys)
    again = api.post(BATCH, json={"items": items}).json()["items"]
    assert [i["id"] for i in again[:5]] == [i["id"] for i in first[:5]]
    assert [i["created"] for i in first] == [True] * 6
    assert [i["created"] for i in again] == [False] * 5 + [True]  # the unkeyed one is new
    assert _records(rdb, keys) == stored | {again[5]["id"]}

    # The same namespace as the Idempotency-Key header, per item.
    single = api.post("/api/notifications", json={"recipients": ["u0"], "title": "t0"},
                      headers={"Idempotency-Key": "k-0"})
    assert single.status_code == 202 and single.json()["id"] == first[0]["id"]

    changed = api.post(BATCH, json={"items": [
        {"recipients": ["u1"], "title": "another title", "idempotency_key": "k-1"},
        {"recipients": ["u7"], "title": "same key twice", "idempotency_key": "twice"},
        {"recipients": ["u7"], "title": "same key twice", "idempotency_key": "twice"},
    ]}).json()["items"]
    assert changed[0]["error"]["code"] == "idempotency_key_reused"
    assert changed[0]["error"]["field"] == "items[0].idempotency_key"
    assert first[1]["id"] in changed[0]["error"]["message"]
    assert changed[1]["created"] is True and changed[2]["created"] is False
    assert changed[1]["id"] == changed[2]["id"]
    wait_idle()
    for user in ("u0", "u1", "u7"):
        inbox = api.get(f"/api/users/{user}/notifications").json()["items"]
        assert len(inbox) == 1, (user, inbox)


def test_a_batch_of_the_largest_size_reaches_each_inbox_once(api, rdb, keys, wait_idle):
    users = [f"user{i}" for i in range(MAX_BATCH_ITEMS)]
    answer = api.post(BATCH, json={"items": [
        {"recipients": [user], "title": f"for {user}"} for user in users]}, timeout=60)
    assert answer.status_code == 202, answer.text
    assert answer.json()["accepted"] == MAX_BATCH_ITEMS
    ids = [item["id"] for item in answer.json()["items"]]
    assert len(set(ids)) == MAX_BATCH_ITEMS

    def all_delivered() -> bool:
        pipe = rdb.pipeline(transaction=False)
        for user in users:
            pipe.zcard(keys.inbox(user))
        return all(count == 1 for count in pipe.execute())

    wait_until(all_delivered, 120, every=0.5, what="every inbox to get its notification")
    wait_idle(60)
    pipe = rdb.pipeline(transaction=False)
    for user, notification_id in zip(users, ids, strict=True):
        pipe.zrange(keys.inbox(user), 0, -1)
        pipe.hget(keys.notification(notification_id), "status")
    found = pipe.execute()
    assert found[0::2] == [[notification_id] for notification_id in ids]
    assert set(found[1::2]) == {"delivered"}


@pytest.mark.usefixtures("unchanged")
def test_a_batch_over_the_limits_is_refused_whole(api):
    item = {"recipients": ["alice"], "title": "x"}
    over = api.post(BATCH, json={"items": [item] * (MAX_BATCH_ITEMS + 1)})
    assert over.status_code == 400 and over.json()["error"]["field"] == "items"
    empty = api.post(BATCH, json={"items": []})
    assert empty.status_code == 400 and empty.json()["error"]["field"] == "items"
    unknown = api.post(BATCH, json={"items": [item], "extra": 1})
    assert unknown.status_code == 400 and unknown.json()["error"]["field"] == "extra"
    huge = api.post(BATCH, content=b'{"items": [' + b" " * MAX_BATCH_BODY_BYTES + b"]}",
                    headers={"Content-Type": "application/json"})
    assert huge.status_code == 413
    assert str(MAX_BATCH_BODY_BYTES) in huge.json()["error"]["message"]
    invalid = api.post(BATCH, json={"items": [{"recipients": ["alice"], "title": ""}] * 2})
    assert invalid.status_code == 400
    assert invalid.json()["error"]["field"] == "items[0].title"


def test_a_batch_may_be_larger_than_a_single_body(api, wait_idle):
    items = [{"recipients": ["alice"], "title": f"long {i}", "body": "b" * 4000}
             for i in range(100)]  # about 400 KB: over the single route's 64 KiB
    answer = api.post(BATCH, json={"items": items})
    assert answer.status_code == 202 and answer.json()["accepted"] == 100
    wait_idle()


@pytest.fixture
def slow_api(config, services):
    """An API with a tight budget: 1 notification a second, bursts of 5."""
    from werkzeug.serving import make_server

    from api import create_app

    app = create_app(config.replace(publish_rate=1.0, publish_burst=5))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    key, _ = services.apikeys.create("limited")
    with httpx.Client(base_url=f"http://127.0.0.1:{server.server_port}",
                      headers={"Authorization": f"Bearer {key}"}) as client:
        yield client
    server.shutdown()


def test_each_item_spends_the_budget(slow_api, rdb, keys):
    item = {"recipients": ["alice"], "title": "x"}
    assert slow_api.post(BATCH, json={"items": [item] * 3}).status_code == 202
    stored = _records(rdb, keys)
    refused = slow_api.post(BATCH, json={"items": [item] * 3})  # 2 left of the burst
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert _records(rdb, keys) == stored
    assert slow_api.post(BATCH, json={"items": [item] * 2}).status_code == 202
    assert slow_api.post("/api/notifications", json=item).status_code == 429


def test_a_batch_larger_than_the_burst_passes_on_a_full_budget_and_is_repaid(slow_api):
    item = {"recipients": ["alice"], "title": "x"}
    big = slow_api.post(BATCH, json={"items": [item] * 8})  # the burst is 5
    assert big.status_code == 202 and big.json()["accepted"] == 8
    refused = slow_api.post("/api/notifications", json=item)
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 4  # 3 in debt, then 1 to spend


def test_a_shared_in_app_task_run_again_delivers_nothing_twice(api, subscribe, wait_idle,
                                                                before_sentinel):
    alice = subscribe("alice")
    answer = api.post(BATCH, json={"items": [
        {"recipients": ["alice"], "title": f"n{i}"} for i in range(3)]})
    ids = [item["id"] for item in answer.json()["items"]]
    assert alice.wait_for(3)
    # A redelivery of the shared task, as acks_late gives after a lost worker.
    from tasks.app import app as celery_app
    from tasks.notifications import SEND_NOTIFICATIONS

    celery_app.send_task(SEND_NOTIFICATIONS, kwargs={"notification_ids": ids})
    wait_idle()
    assert [e.json()["data"]["id"] for e in before_sentinel(alice, "user:alice")] == ids
    inbox = api.get("/api/users/alice/notifications").json()
    assert sorted(item["id"] for item in inbox["items"]) == sorted(ids)
    assert all(api.get(f"/api/notifications/{i}").json()["status"] == "delivered"
               for i in ids)
