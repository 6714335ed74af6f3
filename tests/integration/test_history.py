"""Planning and paging replays against a real Redis: exact, merged, bounded, or a reset."""

from __future__ import annotations

import time

import pytest
import redis

from herald.event import id_key
from herald.keys import Keys
from herald.publisher import Publisher
from streamer.history import History, HistoryGap, Plan

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
    start = ids[41]
    plan = history().plan(TOPICS, start)
    assert plan.reset is None and plan.position == ids[-1]
    assert sum(plan.counts.values()) == 258
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


def test_too_many_events_or_bytes_is_a_reset_decided_up_front(history, publisher):
    pub = publisher()
    for n in range(30):
        pub.publish(TOPICS[n % 2], {"pad": "x" * 1000})
    assert history(limit=15).plan(TOPICS, "0-0").reset is None
    assert history(limit=14).plan(TOPICS, "0-0").reset == \
        f"more than 14 events were missed on {TOPICS[0]}"
    fits = history().plan(TOPICS, "0-0")
    total = sum(fits.sizes.values())
    assert 30_000 < total < 34_000  # envelopes of about 1.1 KB
    assert history(max_bytes=total).plan(TOPICS, "0-0").reset is None
    assert history(max_bytes=total - 1).plan(TOPICS, "0-0").reset == \
        f"more than {total - 1} bytes of events were missed"


def test_history_trimmed_under_a_replay_raises_before_the_gap(history, publisher):
    ids = [publisher(maxlen=200).publish(TOPICS[n % 2], {"n": n}) for n in range(100)]
    plan = history().plan(TOPICS, "0-0")
    pager = history().pager(plan)
    first = pager.next_page(1)
    assert [f"{k[0]}-{k[1]}" for k, _, _ in first] == ids[:1]
    trimmer = publisher(maxlen=1)
    for n in range(300):  # both topics trimmed far past where the replay is
        trimmer.publish(TOPICS[n % 2], n)
    returned: list[str] = []
    with pytest.raises(HistoryGap, match="lost events during the replay"):
        _read_into(pager, returned)
    assert returned == ids[1:len(returned) + 1]  # a prefix, nothing skipped


def _read_into(pager, returned: list[str]) -> None:
    while page := pager.next_page(1):
        returned += [f"{k[0]}-{k[1]}" for k, _, _ in page]


def test_old_positions_are_refused_by_age(history, publisher):
    publisher().publish(TOPICS[0], 1)
    old = f"{int(time.time() * 1000) - 700_000}-1"
    assert history().plan(TOPICS, old).reset == \
        "position is older than the history's retention"
    assert id_key(history().plan(TOPICS, "0-0").position) > (0, 0)
