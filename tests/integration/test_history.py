"""Planning and paging replays against a real Redis: exact, merged, bounded, or a reset."""

from __future__ import annotations

import time

import pytest
import redis

from herald.event import id_key
from herald.keys import Keys
from herald.publisher import Publisher
from streamer.history import History, Plan
from tests.conftest import wait_until

pytestmark = pytest.mark.usefixtures("clean")

TOPICS = ("h:a", "h:b", "h:c")


@pytest.fixture
def history(config):
    def make(limit: int = 1000, max_bytes: int = 1 << 30) -> History:
        return History(redis.Redis.from_url(config.redis_url), Keys(config.prefix), 600,
                       limit, max_bytes)

    return make


@pytest.fixture
def publisher(config, rdb):
    def make(maxlen: int = 10_000) -> Publisher:
        return Publisher(rdb, Keys(config.prefix), history_maxlen=maxlen, history_ttl=600)

    return make


def _read_all(history: History, plan: Plan, budget: int) -> list[list[str]]:
    pager = history.pager(plan)
    pages = []
    while page := pager.next_page(budget):
        pages.append([f"{key[0]}-{key[1]}" for key, _, _ in page])
    return pages


def test_pages_merge_topics_in_id_order_exactly_once(history, publisher):
    pub = publisher()
    sizes = [10, 3000, 200, 40_000, 5]
    ids = [pub.publish(TOPICS[n % 3] if n % 7 else TOPICS[0], {"pad": "x" * sizes[n % 5]})
           for n in range(300)]
    plan = history().plan(TOPICS, ids[41])
    assert plan.reset is None and plan.position == ids[-1]
    for budget in (1, 5_000, 64 * 1024, 10 << 20):
        pages = _read_all(history(), plan, budget)
        assert [i for page in pages for i in page] == ids[42:]
        if budget == 1:
            assert all(len(page) == 1 for page in pages)


def test_a_page_is_about_its_budget(history, publisher):
    pub = publisher()
    for n in range(60):
        pub.publish(TOPICS[n % 3], {"pad": "x" * 10_000})
    plan = history().plan(TOPICS, "0-0")
    pager = history().pager(plan)
    page = pager.next_page(50_000)
    assert 5 <= len(page) <= 6  # 10 KB envelopes: stops once 50 KB are reached
    assert sum(len(envelope) for _, _, envelope in page) < 50_000 + 10_500


def test_events_published_after_the_plan_are_not_in_its_pages(history, publisher):
    pub = publisher()
    ids = [pub.publish(TOPICS[n % 3], n) for n in range(10)]
    plan = history().plan(TOPICS, "0-0")
    pub.publish(TOPICS[0], "later")
    assert [i for page in _read_all(history(), plan, 100) for i in page] == ids


@pytest.mark.parametrize("after", [
    "99999999999999999999-99999999999999999999",  # beyond 2^64: no position at all
    "18446744073709551616-0",
    "not-an-id",
])
def test_positions_redis_cannot_hold_are_unknown(history, publisher, after):
    last = publisher().publish(TOPICS[0], 1)
    plan = history().plan(TOPICS, after)
    assert plan.reset == "unknown position" and plan.position == last


def test_the_largest_stream_id_is_ahead_of_every_event(history, publisher):
    publisher().publish(TOPICS[0], 1)
    plan = history().plan(TOPICS, "18446744073709551615-18446744073709551615")
    assert plan.reset == "position is ahead of every published event"


@pytest.mark.parametrize("bound", ["events", "bytes"])
def test_a_replay_stops_before_the_first_event_past_its_bounds(history, publisher, bound):
    pub = publisher()
    ids = [pub.publish(TOPICS[n % 2], {"pad": "x" * 1000}) for n in range(30)]
    sizes = [len(e) for _, _, e in history().pager(history().plan(TOPICS, "0-0"))
             .next_page(1 << 30)]
    if bound == "events":
        bounded, kept = history(limit=14), 28  # the 15th event of h:a is the 29th
        reason = f"more than 14 events were missed on {TOPICS[0]}"
    else:
        bounded, kept = history(max_bytes=sum(sizes[:20]) + 10), 20
        reason = f"more than {sum(sizes[:20]) + 10} bytes of events were missed"
    pager = bounded.pager(bounded.plan(TOPICS, "0-0"))
    returned: list[str] = []
    while page := pager.next_page(3000):
        returned += [f"{k[0]}-{k[1]}" for k, _, _ in page]
    assert returned == ids[:kept]
    assert pager.stopped == reason
    unbounded = history(limit=15).pager(history(limit=15).plan(TOPICS, "0-0"))
    assert len(unbounded.next_page(1 << 30)) == 30 and unbounded.stopped is None


def test_history_trimmed_under_a_replay_stops_it_before_the_gap(history, publisher):
    ids = [publisher(maxlen=200).publish(TOPICS[n % 2], {"n": n}) for n in range(100)]
    plan = history().plan(TOPICS, "0-0")
    pager = history().pager(plan)
    first = pager.next_page(1)
    assert [f"{k[0]}-{k[1]}" for k, _, _ in first] == ids[:1]
    trimmer = publisher(maxlen=1)
    for n in range(300):  # both topics trimmed far past where the replay is
        trimmer.publish(TOPICS[n % 2], n)
    returned: list[str] = []
    while page := pager.next_page(1):
        returned += [f"{k[0]}-{k[1]}" for k, _, _ in page]
    assert pager.stopped == f"history of {TOPICS[0]} lost events during the replay"
    assert returned == ids[1:len(returned) + 1]  # a prefix, nothing skipped


def test_history_expired_under_a_replay_stops_it(history, publisher, rdb, config):
    ids = [publisher().publish(TOPICS[0], {"n": n}) for n in range(5)]
    rdb.pexpire(Keys(config.prefix).stream(TOPICS[0]), 300)  # as if it were quiet for long
    plan = history().plan((TOPICS[0],), "0-0")
    pager = history().pager(plan)
    assert [f"{k[0]}-{k[1]}" for k, _, _ in pager.next_page(1)] == ids[:1]
    wait_until(lambda: not rdb.exists(Keys(config.prefix).stream(TOPICS[0])), 5,
               what="the stream to expire")
    rest = []
    while page := pager.next_page(1):
        rest += page
    assert pager.stopped == f"history of {TOPICS[0]} expired during the replay"
    assert [f"{k[0]}-{k[1]}" for k, _, _ in rest] == ids[1:1 + len(rest)]


def test_old_positions_are_refused_by_age(history, publisher):
    publisher().publish(TOPICS[0], 1)
    old = f"{int(time.time() * 1000) - 700_000}-1"
    assert history().plan(TOPICS, old).reset == \
        "position is older than the history's retention"
    assert id_key(history().plan(TOPICS, "0-0").position) > (0, 0)
