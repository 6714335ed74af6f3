"""A notification's channels: validation, one task per channel on its own queue, in-app
preferences, and the per-(channel, target) status."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterator

import httpx
import pytest
import redis

from herald import config as herald_config
from herald import services as herald_services
from herald.deliveries import SKIPPED
from herald.keys import Keys
from herald.services import Services
from tests.conftest import start_api, start_worker, wait_until

N = "/api/notifications"


def queued(broker_db: redis.Redis, keys: Keys, channel: str) -> list[dict]:
    """The tasks waiting on ``channel``'s queue: name, id and kwargs of each, oldest
    first (kombu keeps a Redis queue as a list, pushed on the left)."""
    tasks = []
    for raw in reversed(broker_db.lrange(keys.queue_key(keys.channel_queue(channel)), 0, -1)):
        message = json.loads(raw)
        _, kwargs, _ = json.loads(base64.b64decode(message["body"]))
        tasks.append({"task": message["headers"]["task"], "id": message["headers"]["id"],
                      "kwargs": kwargs})
    return tasks


# -- validation --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def production_api(child_env: dict[str, str]) -> Iterator[str]:
    """The API in production mode without HERALD_SMTP_URL (same Redis and prefix)."""
    env = {**child_env, "HERALD_ENV": "production", "HERALD_SECRET": "p" * 40}
    env.pop("HERALD_SMTP_URL", None)
    process, url = start_api(env, name="api-production")
    yield url
    process.stop()


@pytest.mark.usefixtures("clean", "unchanged")
def test_email_in_production_without_smtp_is_refused(production_api, api_key):
    with httpx.Client(base_url=production_api, timeout=10,
                      headers={"Authorization": f"Bearer {api_key}"}) as client:
        answer = client.post(N, json={"recipients": ["alice"], "title": "Hi",
                                      "channels": ["inapp", "email"]})
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["field"] == "channels"
    assert "email is not configured" in error["message"]


# -- routing: a deployment of its own, whose only worker consumes the in-app queue -------

class Deployment:
    """An API and an in-app-only worker under a prefix of their own (the session's
    worker consumes every queue of the session's prefix, not these)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.config = herald_config.load(env)
        self.keys = Keys(self.config.prefix)
        self.services: Services = herald_services.build(self.config)
        self.api, self.url = start_api(env, name="api-inapp-only")
        # One process: in-app tasks run one at a time, in the order they were sent.
        self.worker = start_worker(env, name="inapp-only", concurrency=1,
                                   queues=[self.keys.channel_queue("inapp")])

    def client(self) -> httpx.Client:
        key, _ = self.services.apikeys.create("tests")
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {key}"},
                            timeout=10)

    def stop(self) -> None:
        self.worker.stop()
        self.api.stop()


@pytest.fixture(scope="module")
def inapp_only(child_env: dict[str, str]) -> Iterator[Deployment]:
    env = {**child_env, "HERALD_PREFIX": f"{child_env['HERALD_PREFIX']}-{secrets.token_hex(2)}"}
    deployment = Deployment(env)
    yield deployment
    deployment.stop()


@pytest.fixture
def own_api(clean: None, inapp_only: Deployment) -> Iterator[httpx.Client]:
    with inapp_only.client() as client:
        yield client


def _status(client: httpx.Client, notification_id: str) -> dict:
    return client.get(f"{N}/{notification_id}").json()


def test_each_channel_gets_its_task_on_its_queue(own_api, inapp_only, broker_db):
    answer = own_api.post(N, json={"recipients": ["alice"], "title": "Hi",
                                   "channels": ["email", "inapp"], "category": "account"})
    assert answer.status_code == 202, answer.text
    nid = answer.json()["id"]

    wait_until(lambda: _status(own_api, nid)["deliveries"][0]["state"] == "sent",
               what="the in-app delivery")
    # Nobody consumes the e-mail queue: its dispatch task waits there, by name and id.
    assert queued(broker_db, inapp_only.keys, "email") == [
        {"task": "herald.email.dispatch", "id": f"{nid}.email",
         "kwargs": {"notification_id": nid}}]
    assert queued(broker_db, inapp_only.keys, "webhook") == []
    record = _status(own_api, nid)
    assert record["status"] == "sending"  # delivered once the e-mail dispatch has run too
    assert (record["category"], record["critical"]) == ("account", False)
    assert [(d["channel"], d["target"]) for d in record["deliveries"]] == [("inapp", "alice")]


def test_a_notification_without_inapp_runs_no_inapp_task(own_api, inapp_only, broker_db):
    first = own_api.post(N, json={"recipients": ["alice"], "title": "Hook only",
                                  "channels": ["webhook"]}).json()["id"]
    assert queued(broker_db, inapp_only.keys, "webhook") == [
        {"task": "herald.webhook.dispatch", "id": f"{first}.webhook",
         "kwargs": {"notification_id": first}}]
    # Sentinel: a later in-app notification, on the same queue and the worker's one
    # process, is delivered; an in-app task of the first would have run before it.
    later = own_api.post(N, json={"recipients": ["alice"], "title": "Later"}).json()["id"]
    wait_until(lambda: _status(own_api, later)["status"] == "delivered", what="the sentinel")
    inbox = own_api.get("/api/users/alice/notifications").json()
    assert [item["id"] for item in inbox["items"]] == [later]
    record = _status(own_api, first)
    assert record["status"] == "queued" and record["deliveries"] == []
    assert not inapp_only.services.redis.exists(inapp_only.keys.recipient_state(first))


def test_a_dead_letter_retried_goes_to_its_channel_queue(own_api, inapp_only, broker_db):
    store = inapp_only.services.deliveries
    did, _ = store.create("n_01M8FXDK8WXPWT8MAE5X1406RT", "email", "alice")
    store.claim(did, 30)
    store.finish(did, "email", "dead", "451 try again later")
    assert [d["id"] for d in own_api.get("/api/dead-letters").json()["items"]] == [did]

    answer = own_api.post(f"/api/dead-letters/{did}/retry")
    assert answer.status_code == 202, answer.text
    revived = answer.json()
    assert (revived["id"], revived["state"], revived["attempts"], revived["error"]) == (
        did, "pending", 0, None)
    sent = queued(broker_db, inapp_only.keys, "email")
    assert [(t["task"], t["kwargs"]) for t in sent] == [
        ("herald.email.send", {"delivery_id": did})]
    assert own_api.get("/api/dead-letters").json()["items"] == []
    again = own_api.post(f"/api/dead-letters/{did}/retry")
    assert again.status_code == 404 and again.json()["error"]["field"] == "id"
    assert len(queued(broker_db, inapp_only.keys, "email")) == 1


# -- in-app preferences ------------------------------------------------------------------

@pytest.mark.usefixtures("clean", "worker")
def test_an_opted_out_user_gets_nothing_in_app_and_the_skip_is_shown(
        api, subscribe, services, before_sentinel):
    services.preferences.put("bob", {"inapp": {"marketing": False}})
    alice, bob = subscribe("alice"), subscribe("bob")
    nid = api.post(N, json={"recipients": ["bob", "alice"], "title": "Sale",
                            "category": "marketing"}).json()["id"]
    assert [e.json()["data"]["id"] for e in alice.wait_for(1)] == [nid]
    wait_until(lambda: _status(api, nid)["status"] == "delivered", what="the delivery")

    assert before_sentinel(bob, "user:bob") == []
    assert api.get("/api/users/bob/notifications").json()["items"] == []
    items = {d["target"]: d for d in _status(api, nid)["deliveries"]}
    assert (items["bob"]["state"], items["bob"]["error"], items["bob"]["event_id"]) == (
        SKIPPED, "opted out", None)
    assert items["alice"]["state"] == "sent"
    assert items["alice"]["event_id"] == alice.events[0].id

    # Another category still reaches him.
    other = api.post(N, json={"recipients": ["bob"], "title": "Your account"}).json()["id"]
    events = bob.wait_for(2)  # the sentinel, then this one
    assert events[-1].json()["data"]["id"] == other


@pytest.mark.usefixtures("clean", "worker")
def test_a_skip_stays_a_skip_when_delivery_runs_again(api, subscribe, services,
                                                      before_sentinel):
    from tasks.notifications import deliver

    services.preferences.turn_off("bob", "inapp", "marketing")
    bob = subscribe("bob")
    nid = api.post(N, json={"recipients": ["bob"], "title": "Sale",
                            "category": "marketing"}).json()["id"]
    wait_until(lambda: _status(api, nid)["status"] == "delivered", what="the delivery")
    services.preferences.put("bob", {})  # he turns it back on: what was decided stands
    assert deliver(services, nid) == {}
    assert before_sentinel(bob, "user:bob") == []
    assert _status(api, nid)["deliveries"][0]["state"] == SKIPPED


@pytest.mark.usefixtures("clean", "worker")
def test_a_critical_notification_reaches_an_opted_out_user(api, subscribe, services):
    services.preferences.turn_off("bob", "inapp", "security")
    bob = subscribe("bob")
    nid = api.post(N, json={"recipients": ["bob"], "title": "New sign-in",
                            "category": "security", "critical": True}).json()["id"]
    assert [e.json()["data"]["id"] for e in bob.wait_for(1)] == [nid]
    wait_until(lambda: _status(api, nid)["status"] == "delivered", what="the delivery")
    record = _status(api, nid)
    assert record["critical"] is True
    assert record["deliveries"][0]["state"] == "sent"
    inbox = api.get("/api/users/bob/notifications").json()
    assert [item["id"] for item in inbox["items"]] == [nid]


# -- the status of outbound deliveries ---------------------------------------------------

@pytest.mark.usefixtures("clean", "worker")
def test_the_status_lists_outbound_deliveries_after_inapp(api, services):
    nid = api.post(N, json={"topic": "news", "title": "Extra"}).json()["id"]
    wait_until(lambda: _status(api, nid)["status"] == "delivered", what="the delivery")
    # As the e-mail and webhook dispatch tasks record them.
    webhook, _ = services.deliveries.create(nid, "webhook", "wh_1")
    email, _ = services.deliveries.create(nid, "email", "carol", SKIPPED, "no e-mail address")
    items = _status(api, nid)["deliveries"]
    assert [(d["channel"], d["target"], d["state"]) for d in items] == [
        ("inapp", "news", "sent"), ("email", "carol", SKIPPED), ("webhook", "wh_1", "pending")]
    assert "id" not in items[0] and "event_id" not in items[1]
    assert (items[1]["id"], items[1]["error"], items[1]["attempts"]) == (
        email, "no e-mail address", 0)
    assert items[2]["id"] == webhook
