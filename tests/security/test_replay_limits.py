"""Clients that resume from far back: bounded memory, bounded replays, exact results.

Each test runs a real streamer process with the settings it needs, real sockets (some
that stop reading, with small receive buffers) and events published to the real Redis.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import psutil
import pytest
from websockets.sync.client import connect

from herald.keys import Keys
from herald.publisher import Publisher
from tests.conftest import Process, start_streamer, wait_until
from tests.sse import SSEClient, SSEEvent

pytestmark = pytest.mark.usefixtures("clean")

MB = 1024 * 1024


@pytest.fixture
def publisher(rdb, config):
    def make(maxlen: int = 1000) -> Publisher:
        return Publisher(rdb, Keys(config.prefix), history_maxlen=maxlen, history_ttl=600)

    return make


@pytest.fixture
def streamer_with(child_env) -> Iterator:
    started: list[Process] = []

    def start(**settings: str) -> tuple[Process, str]:
        process, url = start_streamer({**child_env, **settings}, name="streamer-replay")
        started.append(process)
        return process, url

    yield start
    for process in started:
        process.stop()


def _resume(url: str, token: str, topics: list[str], last_id: str, read: bool = True,
            rcvbuf: int | None = None) -> SSEClient:
    return SSEClient(url, {"token": token, "topics": ",".join(topics)},
                     headers={"Last-Event-ID": last_id}, read=read, rcvbuf=rcvbuf)


def _until(client: SSEClient, event_id: str, timeout: float = 30.0) -> list[SSEEvent]:
    """Every event ``client`` received up to and including ``event_id`` (the sentinel)."""
    wait_until(lambda: any(e.id == event_id for e in client.events) or client.closed.is_set(),
               timeout, what=f"event {event_id}")
    return list(client.events)


def _peak_rss(pid: int, seconds: float = 1.0) -> int:
    process, peak = psutil.Process(pid), 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        peak = max(peak, process.memory_info().rss)
        time.sleep(0.05)
    return peak


def test_stalled_resumes_hold_about_a_page_each_then_complete_exactly(
        streamer_with, publisher, mint):
    process, url = streamer_with(HERALD_REPLAY_MAX_BYTES=str(64 * MB))
    topics = [f"big:{n}" for n in range(4)]
    pub = publisher()
    ids = [pub.publish(topics[n % 4], {"n": n, "pad": "x" * 60_000}) for n in range(240)]
    clients, idle = [], psutil.Process(process.popen.pid).memory_info().rss
    try:
        for n in range(10):  # from 0-0 on every topic, reading nothing
            clients.append(_resume(url, mint(f"slow{n}", tuple(topics)), topics, "0-0",
                                   read=False, rcvbuf=4096))
        assert [c.status for c in clients] == [200] * 10
        grown = _peak_rss(process.popen.pid) - idle
        replays = 10 * 240 * 60_000
        print(f"replays of {replays / MB:.0f} MB in all to stalled clients: streamer RSS "
              f"grew by {grown / MB:.1f} MB")
        assert grown < replays / 4
        for client in clients:
            client.start_reading()
        sentinel = pub.publish(topics[0], "sentinel")
        for client in clients:
            events = _until(client, sentinel, timeout=60)
            assert [e.id for e in events] == [*ids, sentinel]
            assert client.parser.resumed == [{"replayed": 240, "from": "0-0"}]
            assert client.parser.ready_id == ids[-1]
    finally:
        for client in clients:
            client.close()


@pytest.mark.parametrize(("what", "count", "size", "kept", "reason"), [
    ("bytes", 4, 30_000, 2, "more than 65536 bytes of events were missed"),
    ("events", 60, 10, 50, "more than 50 events were missed on user:ivy"),
])
def test_a_replay_past_its_bounds_ends_with_a_reset_then_live_events(
        streamer_with, publisher, mint, what, count, size, kept, reason):
    _, url = streamer_with(HERALD_REPLAY_MAX="50", HERALD_REPLAY_MAX_BYTES="65536")
    pub = publisher()
    first = pub.publish("user:ivy", "before")
    ids = [pub.publish("user:ivy", {"n": n, "pad": "x" * size}) for n in range(count)]
    with _resume(url, mint("ivy"), ["user:ivy"], first) as client:
        assert client.status == 200
        sentinel = pub.publish("user:ivy", "sentinel")
        events = _until(client, sentinel)
    assert [e.event for e in events] == ["message"] * kept + ["reset", "message"]
    assert [e.id for e in events[:kept]] == ids[:kept]  # up to the bound, exactly
    assert events[kept].id == ids[-1]  # where the replay would have ended
    assert events[kept].json()["data"] == {"reason": reason, "last_event_id": first}
    assert events[-1].id == sentinel
    assert client.parser.resumed == []


def test_history_trimmed_under_a_slow_replay_gives_a_reset_not_a_gap(
        streamer_with, publisher, mint):
    _, url = streamer_with()
    big = [publisher(maxlen=200).publish("user:jay", {"n": n, "pad": "x" * 20_000})
           for n in range(150)]
    with _resume(url, mint("jay"), ["user:jay"], "0-0", read=False, rcvbuf=4096) as client:
        assert client.status == 200
        trimmer = publisher(maxlen=200)  # 400 more: the big ones leave the history
        small = [trimmer.publish("user:jay", {"n": n}) for n in range(400)]
        client.start_reading()
        sentinel = trimmer.publish("user:jay", "sentinel")
        events = _until(client, sentinel)
    kinds = [e.event for e in events]
    assert kinds.count("reset") == 1
    cut = kinds.index("reset")
    assert 0 < cut < 150
    assert [e.id for e in events[:cut]] == big[:cut]  # the events before it, exactly
    assert events[cut].json()["data"]["reason"] == \
        "history of user:jay lost events during the replay"
    assert [e.id for e in events[cut + 1:]] == [*small, sentinel]
    assert client.parser.resumed == []


def test_a_replay_too_slow_for_its_live_events_is_closed_and_resumes_exactly(
        streamer_with, publisher, mint):
    _, url = streamer_with(HERALD_CLIENT_BUFFER="65536")
    pub = publisher()
    replayed = [pub.publish("user:kim", {"n": n, "pad": "x" * 20_000}) for n in range(100)]
    token = mint("kim")
    stalled = _resume(url, token, ["user:kim"], "0-0", read=False, rcvbuf=4096)
    assert stalled.status == 200
    live = [pub.publish("user:kim", {"n": n, "pad": "y" * 5_000}) for n in range(30)]
    stalled.start_reading()
    assert stalled.wait_closed(10)  # its live events passed its buffer while it replayed
    got = [e.id for e in stalled.events]
    assert got == replayed[:len(got)] and len(got) < 100
    with _resume(url, token, ["user:kim"], got[-1] if got else "0-0") as again:
        sentinel = pub.publish("user:kim", "sentinel")
        rest = [e.id for e in _until(again, sentinel)]
    assert got + rest == [*replayed, *live, sentinel]


def test_a_stalled_replay_holds_no_slot_others_replay_meanwhile(
        streamer_with, publisher, mint):
    _, url = streamer_with(HERALD_REPLAY_CONCURRENCY="1")
    pub = publisher()
    ids = [pub.publish("user:lee", {"n": n, "pad": "x" * 20_000}) for n in range(200)]
    stalled = _resume(url, mint("lee"), ["user:lee"], "0-0", read=False, rcvbuf=4096)
    try:
        assert stalled.status == 200
        for n in range(5):
            with _resume(url, mint("lee"), ["user:lee"], ids[100 + n]) as other:
                wait_until(lambda c=other: c.parser.ready_id is not None, 10,
                           what="the other replay")  # ready comes after the replay
                assert [e.id for e in other.events] == ids[101 + n:]
                assert other.parser.ready_id == ids[-1]
        stalled.start_reading()
        live = pub.publish("user:lee", "live")
        assert [e.id for e in _until(stalled, live)] == [*ids, live]
    finally:
        stalled.close()


def test_websocket_replay_in_pages_then_commands_in_order(streamer_with, publisher, mint):
    _, url = streamer_with(HERALD_CLIENT_BUFFER="65536")
    pub = publisher()
    first = pub.publish("user:nia", "before")
    ids = [pub.publish("user:nia", {"n": n, "pad": "x" * 5_000}) for n in range(100)]
    ws_url = url.replace("http://", "ws://") + f"/ws?token={mint('nia')}&last_event_id={first}"
    with connect(ws_url, max_size=None) as ws:
        ws.send(json.dumps({"op": "ping", "ref": "early"}))
        messages = [json.loads(ws.recv(timeout=10)) for _ in range(103)]
    assert [m.get("id") for m in messages[:100]] == ids
    assert messages[100] == {"reply": "resumed", "ok": True, "replayed": 100, "from": first}
    assert messages[101] == {"reply": "ready", "ok": True, "position": ids[-1]}
    assert messages[102]["reply"] == "pong" and messages[102]["ref"] == "early"
