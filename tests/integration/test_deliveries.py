"""Outbound delivery records in a real Redis: creation once, leases, dead letters."""

from __future__ import annotations

import time

from herald.deliveries import (
    BUSY,
    DEAD,
    PENDING,
    RETRYING,
    SENT,
    SKIPPED,
    delivery_id,
    valid_delivery_id,
)
from herald.services import Services


def test_a_delivery_id_is_stable_and_distinct_per_target() -> None:
    one = delivery_id("n_1", "email", "alice")
    assert one == delivery_id("n_1", "email", "alice") and valid_delivery_id(one)
    assert len({one, delivery_id("n_1", "email", "bob"), delivery_id("n_1", "webhook", "alice"),
                delivery_id("n_2", "email", "alice")}) == 4


def test_create_is_once(clean: None, services: Services) -> None:
    store = services.deliveries
    did, existing = store.create("n_1", "email", "alice")
    assert existing is None and store.load(did)["state"] == PENDING
    again, existing = store.create("n_1", "email", "alice", SKIPPED, "opted out")
    assert (again, existing) == (did, PENDING)
    assert [d["target"] for d in store.of_notification("n_1")] == ["alice"]


def test_one_attempt_at_a_time_and_none_once_sent(clean: None, services: Services) -> None:
    store = services.deliveries
    did, _ = store.create("n_1", "webhook", "wh_1")
    assert store.claim(did, 30).attempt == 1
    assert store.claim(did, 30).state == BUSY
    store.finish(did, "webhook", RETRYING, "HTTP 503", 123)
    assert store.claim(did, 30).attempt == 2
    store.finish(did, "webhook", SENT)
    assert store.claim(did, 30).state == SENT
    shown = store.of_notification("n_1")[0]
    assert shown["state"] == SENT and shown["attempts"] == 2 and shown["sent_at"]


def test_an_expired_lease_lets_the_next_attempt_go(clean: None, services: Services) -> None:
    store = services.deliveries
    did, _ = store.create("n_1", "email", "alice")
    assert store.claim(did, 0.05).attempt == 1  # its worker dies: the lease runs out
    time.sleep(0.1)
    assert store.claim(did, 30).attempt == 2


def test_dead_letters_are_listed_and_revived(clean: None, services: Services) -> None:
    store = services.deliveries
    did, _ = store.create("n_1", "email", "alice")
    store.claim(did, 30)
    store.finish(did, "email", DEAD, "451 try later")
    assert [d["id"] for d in store.dead_letters("email")] == [did]
    assert store.dead_letters("webhook") == []
    assert store.revive(did, "email")
    assert store.dead_letters("email") == []
    record = store.load(did)
    assert record["state"] == PENDING and record["attempts"] == "0"
    assert not store.revive(did, "email")  # not dead any more: nothing changes
