"""Whatever Redis holds, the streamer writes no frame it cannot vouch for.

Anything that can write to Redis (a compromised worker, a bug, an operator's typo) can
put an envelope with CR or LF in its type or id, or spread over several lines, into a
topic's history and on its channel. The streamer reads both back: live through
pub/sub, and from history when a client resumes. Such an envelope is dropped and
logged, on every transport, and the stream goes on: a sentinel published after it
arrives alone, and nothing the hostile entry spelled out (a fake ``token-expired``)
reaches the client.
"""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest
import redis
from websockets.sync.client import ClientConnection, connect

from herald.keys import Keys
from tasks.events import publish
from tests.conftest import start_streamer, wait_until
from tests.sse import SSEClient, SSEEvent

pytestmark = pytest.mark.usefixtures("clean")

TOPIC = "user:alice"
INJECTED_TYPE = 'note\ndata: {}\n\nevent: token-expired\ndata: {"exp": 1}'


def write_hostile(rdb: redis.Redis, keys: Keys) -> list[str]:
    """Put hostile envelopes in ``TOPIC``'s history and on its channel, as a writer
    that bypasses the publisher could; returns their ids."""
    ids = []
    for shape in ("type", "lines"):
        seq = rdb.hincrby(keys.clock, "seq", 1)
        event_id = f"{int(rdb.hget(keys.clock, 'ms') or 1)}-{seq}"
        if shape == "type":
            envelope = json.dumps({"id": event_id, "ts": 1, "topic": TOPIC,
                                   "type": INJECTED_TYPE, "data": {}})
        else:  # valid JSON, but several lines: the second would start an SSE field
            envelope = (f'{{"id": "{event_id}", "ts": 1, "topic": "{TOPIC}", "type": '
                        f'"note",\n\n"data": {{}}}}')
        rdb.xadd(keys.stream(TOPIC), {"e": envelope}, id=event_id)
        rdb.publish(keys.channel(TOPIC), envelope)
        ids.append(event_id)
    return ids


def ws_url(streamer: str, **params: str) -> str:
    return streamer.replace("http://", "ws://") + "/ws?" + urlencode(params)


def ws_messages_until(ws: ClientConnection, sentinel: str) -> list[dict]:
    """Every message up to the event ``sentinel`` (``ready`` left out)."""
    received = []
    while True:
        message = json.loads(ws.recv(timeout=5))
        if message.get("reply") == "ready":
            continue
        received.append(message)
        if message.get("id") == sentinel:
            return received


def sse_until(client: SSEClient, sentinel: str) -> list[SSEEvent]:
    wait_until(lambda: any(e.id == sentinel for e in client.events) or client.closed.is_set(),
               5, what="the sentinel")
    return list(client.events)


@pytest.fixture(scope="module")
def own_streamer(child_env):
    """A streamer of its own, so that its log can be read."""
    process, url = start_streamer(child_env, name="streamer-hostile")
    yield process, url
    process.stop()


def test_hostile_live_events_are_dropped_on_every_transport(own_streamer, mint, rdb, keys):
    process, streamer = own_streamer
    named = SSEClient(streamer, {"token": mint("alice")})
    unnamed = SSEClient(streamer, {"token": mint("alice"), "named": "0"})
    with connect(ws_url(streamer, token=mint("alice"))) as ws:
        first = publish(TOPIC, "before", "note")  # all three are live once they have it
        for client in (named, unnamed):
            sse_until(client, first)
        assert ws_messages_until(ws, first)[-1]["id"] == first
        hostile = write_hostile(rdb, keys)
        sentinel = publish(TOPIC, "sentinel", "note")
        for client in (named, unnamed):
            events = sse_until(client, sentinel)
            assert [e.id for e in events] == [first, sentinel], events
            assert not client.closed.is_set()
        assert named.events[1].event == "note"
        messages = ws_messages_until(ws, sentinel)
        assert [m.get("id") for m in messages] == [sentinel]
    named.close()
    unnamed.close()
    log = process.log()
    assert all(f"dropped an event on topic {TOPIC}" in log and i in log for i in hostile)


def test_hostile_history_is_dropped_from_a_replay_on_every_transport(
        own_streamer, mint, rdb, keys):
    _, streamer = own_streamer
    start = publish(TOPIC, "start", "note")
    write_hostile(rdb, keys)
    sentinel = publish(TOPIC, "sentinel", "note")
    for params in ({}, {"named": "0"}):
        with SSEClient(streamer, {"token": mint("alice"), "last_event_id": start,
                                  **params}) as client:
            assert [e.id for e in sse_until(client, sentinel)] == [sentinel]
            wait_until(lambda c=client: c.parser.resumed, 5, what="resumed")
            assert client.parser.resumed == [{"replayed": 1, "from": start}]
    with connect(ws_url(streamer, token=mint("alice"), last_event_id=start)) as ws:
        assert [m.get("id") for m in ws_messages_until(ws, sentinel)] == [sentinel]
        assert json.loads(ws.recv(timeout=5)) == {
            "reply": "resumed", "ok": True, "replayed": 1, "from": start}
