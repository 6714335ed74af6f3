"""The suite's own proofs of "nothing happened" can fail: each one, given the thing it
must catch, catches it."""

from __future__ import annotations

import pytest

from tasks.events import publish
from tests.conftest import Changes

pytestmark = pytest.mark.usefixtures("clean")


def test_before_sentinel_returns_what_arrived_before_it(subscribe, before_sentinel):
    bob = subscribe("bob", ["user:bob", "broadcast"])
    leaked = publish("broadcast", "not for bob's own topic")
    assert [e.id for e in before_sentinel(bob, "user:bob")] == [leaked]


def test_changes_catch_a_publish_a_stored_key_and_a_dispatch(api, rdb, broker_db, config,
                                                              worker, wait_idle):
    published = Changes(rdb, broker_db, config)
    publish("room:1", "published")
    assert any("published on" in change for change in published.found())

    stored = Changes(rdb, broker_db, config)
    rdb.set(f"{config.prefix}:stray", "1")
    assert stored.found() == [f"stored or removed {config.prefix}:stray"]

    dispatched = Changes(rdb, broker_db, config)
    assert api.post("/api/notifications",
                    json={"recipients": ["alice"], "title": "x"}).status_code == 202
    found = dispatched.found()  # whether or not a worker has taken the task yet
    assert any("task.sent" in change for change in found), found
    wait_idle()  # the worker's events of this task belong to this test, not the next


def test_changes_find_nothing_when_nothing_happens(rdb, broker_db, config):
    assert Changes(rdb, broker_db, config).found() == []
