"""Resuming: Last-Event-ID, last_event_id, and the reset when history cannot cover."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from herald.event import id_key
from herald.keys import Keys
from herald.publisher import Publisher
from tests.conftest import start_streamer, wait_until
from tests.faults.test_redis_restart import publish_steadily
from tests.sse import EventSource, SSEClient

pytestmark = pytest.mark.faults


@pytest.fixture
def streamer_on_own(own_redis, own_env):
    process, url = start_streamer(own_env(own_redis, HERALD_RETRY_MS="300"))
    yield url
    process.stop()


def _publisher(server, config, maxlen: int = 1000) -> Publisher:
    return Publisher(redis.Redis.from_url(server.url, decode_responses=True),
                     Keys(config.prefix), history_maxlen=maxlen, history_ttl=600)


@pytest.mark.parametrize("use_query", [False, True], ids=["header", "query"])
def test_reconnect_during_steady_publish_has_no_gap(streamer_on_own, own_redis, mint,
                                                    config, use_query):
    source = EventSource([streamer_on_own], {"token": mint("alice"), "topics": "user:alice"},
                         use_query=use_query)
    assert source.wait_opened()
    ids: list[str] = []
    publisher = _publisher(own_redis, config)
    thread = threading.Thread(target=publish_steadily,
                              args=(publisher, "user:alice", 100, 20.0, ids, []))
    thread.start()
    wait_until(lambda: len(source.events) >= 25, 20, what="25 events on the first connection")
    source.drop_connection()
    seen = len(source.events)
    wait_until(lambda: source.connections >= 2 and len(source.events) >= seen + 10, 20,
               what="10 more events on the second connection")
    source.drop_connection()
    thread.join(20)
    assert len(ids) == 100
    sentinel = publisher.publish("user:alice", "sentinel", "sentinel")
    events = source.events_before(sentinel)
    print(f"published {len(ids)}; delivered {len(events)}; connections {source.connections}")
    assert [e.id for e in events] == ids
    assert source.connections >= 3
    source.close()


def test_resume_replays_exactly_what_was_missed(streamer_on_own, own_redis, mint, config):
    publisher = _publisher(own_redis, config)
    ids = [publisher.publish("user:bob", {"n": n}, "note") for n in range(10)]
    token = mint("bob")
    with SSEClient(streamer_on_own, {"token": token},
                   headers={"Last-Event-ID": ids[3]}) as client:
        assert client.status == 200
        later = publisher.publish("user:bob", {"n": 10}, "note")
        events = client.events_before(publisher.publish("user:bob", "sentinel", "sentinel"))
        assert [e.id for e in events] == [*ids[4:], later]
        assert [e.json()["data"]["n"] for e in events] == [4, 5, 6, 7, 8, 9, 10]
        assert client.parser.resumed == [{"replayed": 6, "from": ids[3]}]
        assert client.parser.ready_id == ids[9]


@pytest.mark.parametrize("position", ["trimmed", "garbage", "ancient", "future",
                                      "beyond 2^64", "largest stream id"])
def test_position_beyond_history_gets_a_reset_then_live_events(streamer_on_own, own_redis,
                                                               mint, config, position):
    publisher = _publisher(own_redis, config, maxlen=10)
    ids = [publisher.publish("user:carol", {"n": n}, "note") for n in range(300)]
    last_id = {"trimmed": ids[0], "garbage": "not-an-id", "ancient": "1000-1",
               "future": f"{int(time.time() * 1000) + 86_400_000}-1",
               "beyond 2^64": "99999999999999999999-99999999999999999999",
               "largest stream id": "18446744073709551615-18446744073709551615"}[position]
    with SSEClient(streamer_on_own, {"token": mint("carol")},
                   headers={"Last-Event-ID": last_id}) as client:
        assert client.status == 200
        first = client.wait_for(1)[0]
        assert first.event == "reset"
        reset = first.json()
        assert reset["type"] == "reset" and reset["data"]["last_event_id"] == last_id
        live = publisher.publish("user:carol", {"n": "live"}, "note")
        events = client.wait_for(2)
        assert [e.id for e in events[1:]] == [live]
        assert id_key(events[0].id) < id_key(live)  # the reset is a position before it


def test_resume_from_the_latest_position_replays_nothing(streamer_on_own, own_redis, mint,
                                                         config):
    publisher = _publisher(own_redis, config)
    latest = [publisher.publish("user:dan", n) for n in range(3)][-1]
    with SSEClient(streamer_on_own, {"token": mint("dan")},
                   headers={"Last-Event-ID": latest}) as client:
        live = publisher.publish("user:dan", "live")
        assert [e.id for e in client.events_before(publisher.publish("user:dan", "sentinel"))
                ] == [live]
