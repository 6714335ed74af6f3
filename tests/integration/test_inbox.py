"""A user's inbox: newest first, pages, unread count, marking read."""

from __future__ import annotations

import pytest

from herald.notifications import NewNotification
from herald.services import build
from tasks.notifications import deliver
from tests.conftest import wait_until

pytestmark = pytest.mark.usefixtures("clean", "worker")


def _send(api: str, title: str, to: list[str]) -> str:
    return api.post("/api/notifications",
                      json={"recipients": to, "title": title}).json()["id"]


def _inbox(api: str, user: str, **params: object) -> dict:
    answer = api.get(f"/api/users/{user}/notifications", params=params)
    assert answer.status_code == 200
    return answer.json()


def _delivered(api, ids: list[str]) -> bool:
    return all(api.get(f"/api/notifications/{i}").json()["status"] == "delivered"
               for i in ids)


def test_pages_newest_first_with_unread_count(api):
    ids = [_send(api, f"n{i}", ["alice"]) for i in range(3)]
    wait_until(lambda: _delivered(api, ids), what="the deliveries")
    first = _inbox(api, "alice", limit=2)
    assert [item["id"] for item in first["items"]] == [ids[2], ids[1]]
    assert first["unread"] == 3
    assert all(item["read"] is False for item in first["items"])
    second = _inbox(api, "alice", limit=2, cursor=first["next_cursor"])
    assert [item["id"] for item in second["items"]] == [ids[0]]
    assert second["next_cursor"] is None
    assert second["items"][0]["title"] == "n0"
    assert _inbox(api, "bob")["items"] == []


def test_marking_read_updates_count_and_tells_other_tabs(api, subscribe, before_sentinel):
    ids = [_send(api, f"n{i}", ["alice", "bob"]) for i in range(3)]
    wait_until(lambda: _inbox(api, "alice")["unread"] == 3, what="3 unread")
    tab = subscribe("alice")
    bob = subscribe("bob")

    answer = api.post("/api/users/alice/notifications/read", json={"ids": [ids[0]]})
    assert answer.json() == {"marked": 1, "unread": 2}
    event = tab.wait_for(1)[0]
    assert event.event == "notification.read"
    assert event.json()["data"] == {"ids": [ids[0]], "all": False, "unread": 2}

    flags = {item["id"]: item["read"] for item in _inbox(api, "alice")["items"]}
    assert flags == {ids[0]: True, ids[1]: False, ids[2]: False}

    answer = api.post("/api/users/alice/notifications/read", json={"all": True})
    assert answer.json() == {"marked": 2, "unread": 0}
    assert all(item["read"] for item in _inbox(api, "alice")["items"])
    assert _inbox(api, "bob")["unread"] == 3
    assert before_sentinel(bob, "user:bob") == []


def test_inbox_keeps_the_newest_entries_only(services):
    small = build(services.config.replace(inbox_max=2))
    ids = []
    for i in range(4):
        created = small.notifications.create(NewNotification(title=f"t{i}",
                                                              recipients=["dana"]))
        deliver(small, created.id)
        ids.append(created.id)
    page = small.inbox.page("dana", None, 10)
    assert [item["id"] for item in page.items] == [ids[3], ids[2]]
    assert page.unread == 2


def test_the_inbox_write_function_and_its_reader_agree(services, rdb, keys):
    """Entries written by ``INBOX_ADD_FUNCTION`` are what ``Inbox`` lists and counts."""
    from herald.inbox import INBOX_ADD_FUNCTION

    add = rdb.register_script(INBOX_ADD_FUNCTION + "herald_inbox_add(KEYS[1], KEYS[2], "
                              "ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]))")
    ids = [services.notifications.create(NewNotification(title=f"t{i}", recipients=["erin"]))
           .id for i in range(3)]
    for notification_id in ids:
        add(keys=[keys.inbox("erin"), keys.unread("erin")], args=[notification_id, 2, 60])
    services.inbox.mark_read("erin", [ids[1]])
    page = services.inbox.page("erin", None, 10)
    assert [(item["id"], item["read"]) for item in page.items] == [(ids[2], False),
                                                                    (ids[1], True)]
    assert page.unread == 1
    assert 0 < rdb.ttl(keys.inbox("erin")) <= 60 and 0 < rdb.ttl(keys.unread("erin")) <= 60
