"""GET /api/dead-letters: newest first, by channel, a page at a time; API keys only.

(Retrying one is in ``test_notification_channels``, where no worker takes the task
off its queue; replaying one successfully end to end is the webhook channel's test.)
"""

from __future__ import annotations

import time

import httpx
import pytest

from herald.deliveries import DEAD
from herald.services import Services

pytestmark = pytest.mark.usefixtures("clean")

D = "/api/dead-letters"


def _dead(services: Services, nid: str, channel: str, target: str, error: str) -> str:
    store = services.deliveries
    did, _ = store.create(nid, channel, target)
    store.claim(did, 30)
    store.finish(did, channel, DEAD, error)
    time.sleep(0.002)  # distinct times of death, to show the order
    return did


def test_dead_letters_newest_first_by_channel_and_limit(api, services):
    first = _dead(services, "n_1", "email", "alice", "451 mailbox busy")
    second = _dead(services, "n_1", "webhook", "wh_1", "HTTP 503")
    third = _dead(services, "n_2", "email", "bob", "timed out")

    every = api.get(D)
    assert every.status_code == 200
    assert [d["id"] for d in every.json()["items"]] == [third, second, first]
    emails = api.get(D, params={"channel": "email"}).json()["items"]
    assert [d["id"] for d in emails] == [third, first]
    hooks = api.get(D, params={"channel": "webhook"}).json()["items"]
    assert [(d["channel"], d["target"], d["notification_id"], d["error"]) for d in hooks] == [
        ("webhook", "wh_1", "n_1", "HTTP 503")]
    assert hooks[0]["state"] == "dead" and hooks[0]["attempts"] == 1
    assert [d["id"] for d in api.get(D, params={"limit": 2}).json()["items"]] == [
        third, second]


def test_dead_letters_need_an_api_key(api_url, mint, services):
    _dead(services, "n_1", "email", "alice", "550 no such user")
    user = {"Authorization": f"Bearer {mint('alice')}"}
    assert httpx.get(f"{api_url}{D}", headers=user).status_code == 403
    assert httpx.get(f"{api_url}{D}").status_code == 401
    did = services.deliveries.dead_letters("email")[0]["id"]
    assert httpx.post(f"{api_url}{D}/{did}/retry", headers=user).status_code == 403
    assert services.deliveries.load(did)["state"] == DEAD


def test_only_a_dead_delivery_is_retried(api, services):
    did, _ = services.deliveries.create("n_1", "email", "alice")
    answer = api.post(f"{D}/{did}/retry")
    assert answer.status_code == 404
    assert answer.json()["error"]["message"] == f"no dead letter {did!r}"
    assert services.deliveries.load(did)["state"] == "pending"
