"""Group commit of single POSTs (``tasks.grouping`` in the API's gunicorn workers):
concurrent requests share their in-app task, each notification is still delivered once
with its own status, and a group the broker refuses leaves nothing stored."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import redis

from tests.conftest import free_port, start_api, wait_until

pytestmark = pytest.mark.usefixtures("clean", "worker")

CONCURRENCY = 32
COUNT = 96


class SentTasks:
    """The ``task-sent`` events the API's publishes carry (what Flower shows first),
    read from the broker's pub/sub like Flower's event receiver."""

    def __init__(self, broker_db: redis.Redis) -> None:
        self._pubsub = broker_db.pubsub(ignore_subscribe_messages=True)
        self._pubsub.psubscribe("*")
        self.events: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            message = self._pubsub.get_message(timeout=0.1)
            for event in _events(message["data"]) if message else []:
                if isinstance(event, dict) and event.get("type") == "task-sent":
                    self.events.append(event)

    def names(self, count: int) -> list[tuple[str, str, list[str]]]:
        """(name, task id, notification ids) of each task sent, once ``count`` in-app
        notifications are accounted for."""
        def seen() -> list[tuple[str, str, list[str]]]:
            return [(e["name"], e["uuid"], _ids(e)) for e in list(self.events)]
        wait_until(lambda: sum(len(ids) for _, _, ids in seen()) >= count,
                   what="the task-sent events")
        return seen()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._pubsub.close()


def _events(data: bytes | str) -> list:
    """The events of a kombu message on an event channel (none for anything else)."""
    try:
        message = json.loads(data)
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        events = json.loads(body)
    except (ValueError, KeyError, TypeError, AttributeError):
        return []
    return events if isinstance(events, list) else [events]


def _ids(event: dict) -> list[str]:
    kwargs = event.get("kwargs", "")  # a repr of the keyword arguments
    return [part for part in kwargs.replace("'", " ").split() if part.startswith("n_")]


@pytest.fixture
def sent_tasks(broker_db: redis.Redis) -> Iterator[SentTasks]:
    tasks = SentTasks(broker_db)
    yield tasks
    tasks.close()


def _post_all(post: Callable[[int], httpx.Response], count: int = COUNT) -> list[httpx.Response]:
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        return list(pool.map(post, range(count)))


def test_concurrent_posts_share_in_app_tasks_and_each_is_delivered_once(
        api, subscribe, before_sentinel, sent_tasks, wait_idle):
    users = ["alice", "bob", "carol"]
    streams = {user: subscribe(user) for user in users}
    answers = _post_all(lambda n: api.post("/api/notifications", json={
        "recipients": [users[n % 3]], "title": f"n{n}"}))
    assert [a.status_code for a in answers] == [202] * COUNT
    ids = [a.json()["id"] for a in answers]

    tasks = sent_tasks.names(COUNT)
    carried = sorted(i for _, _, task_ids in tasks for i in task_ids)
    assert carried == sorted(ids)  # each notification in exactly one task
    shared = [(name, task_id, task_ids) for name, task_id, task_ids in tasks
              if len(task_ids) > 1]
    assert len(tasks) < COUNT and shared, tasks
    for name, task_id, task_ids in shared:
        assert name == "herald.send_notifications"
        assert task_id == f"{task_ids[0]}..{task_ids[-1]}"

    wait_idle()
    for n, user in enumerate(users):
        got = [e.json()["data"]["id"] for e in before_sentinel(streams[user], f"user:{user}")]
        assert sorted(got) == sorted(ids[n::3])  # once each, to its own recipient
    for notification_id, n in zip(ids, range(COUNT), strict=True):
        record = api.get(f"/api/notifications/{notification_id}").json()
        assert (record["status"], record["title"]) == ("delivered", f"n{n}")
        assert [(d["target"], d["state"]) for d in record["deliveries"]] == [
            (users[n % 3], "sent")]


def test_concurrent_posts_with_one_idempotency_key_store_one(api, subscribe, before_sentinel,
                                                             wait_idle, rdb, keys):
    alice = subscribe("alice")
    answers = _post_all(lambda n: api.post(
        "/api/notifications", json={"recipients": ["alice"], "title": "Once"},
        headers={"Idempotency-Key": "shared-key"}), count=CONCURRENCY)
    assert {a.status_code for a in answers} == {202}
    assert len({a.json()["id"] for a in answers}) == 1
    assert sum(a.json()["created"] for a in answers) == 1
    wait_idle()
    assert len(before_sentinel(alice, "user:alice")) == 1
    assert rdb.keys(keys.notification("n_" + "?" * 26)) == [
        keys.notification(answers[0].json()["id"])]


def test_a_group_the_broker_refuses_answers_503_to_each_member_and_stores_nothing(
        services, rdb, broker_db, keys, child_env):
    dead_broker = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    process, url = start_api({**child_env, "CELERY_BROKER_URL": dead_broker},
                             name="api-group-no-broker", healthy=False)
    key, _ = services.apikeys.create("tests")
    try:
        with httpx.Client(base_url=url, timeout=60,
                          headers={"Authorization": f"Bearer {key}"}) as client:
            answers = _post_all(lambda n: client.post(
                "/api/notifications", json={"recipients": ["alice"], "title": f"n{n}"},
                headers={"Idempotency-Key": f"k{n}"}), count=CONCURRENCY)
            assert {a.status_code for a in answers} == {503}
            assert {a.json()["error"]["code"] for a in answers} == {"broker_unavailable"}
    finally:
        process.stop()
    assert rdb.keys(keys.notification("*")) == []
    assert rdb.keys(keys.idempotency("*")) == []  # each key is free for the retry
    assert broker_db.keys("*") == []
    log = process.log()
    assert log.count("503, broker unavailable") == CONCURRENCY, log
    assert "Traceback" not in log, log
