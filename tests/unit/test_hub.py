"""The hub's rules, fed by the in-process broker (``MemoryBroker``), without Redis.

Clients are the streamer's own ``Client`` objects on real loopback TCP connections: the
test reads the other end as a client of the wire format would (``tests.unit.readers``).
Everything runs in this process' event loop, so each test takes milliseconds.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Callable, Iterator

import gevent
import pytest
from gevent.socket import wait_read

from herald.event import id_key
from herald.tokens import Grant
from streamer.client import TOO_SLOW, Client
from streamer.history import Replay
from streamer.hub import Hub
from streamer.memory_broker import MemoryBroker
from streamer.protocol import parse_head
from streamer.sse import EventStream
from streamer.transport import Transport
from streamer.websocket import WebSocket
from tests.unit.readers import READERS, Message

SSE, WS = EventStream(), WebSocket()
TRANSPORTS = pytest.mark.parametrize("transport", [SSE, SSE.variants()[1], WS],
                                     ids=["sse", "sse-unnamed", "ws"])


class Streamer:
    """A hub and its broker wired as ``streamer.server`` wires them."""

    def __init__(self) -> None:
        self.hub = Hub(self._want, self._unwant)
        self.broker = MemoryBroker(self.hub.dispatch, on_subscribed=self._subscribed,
                                   on_resync=self._resync)
        self.fill_gap: Callable[[], None] | None = None  # what history fills, if anything
        self.made: list[tuple[Client, socket.socket, socket.socket]] = []
        self.broker.start()

    def _resync(self) -> None:
        if self.fill_gap is not None:
            self.fill_gap()

    def _want(self, topic: str) -> None:
        self.broker.want(topic)

    def _unwant(self, topic: str) -> None:
        self.broker.unwant(topic)

    def _subscribed(self, topics: list[str]) -> None:
        gevent.spawn(self._record_starts, topics)

    def _record_starts(self, topics: list[str]) -> None:
        position = id_key(self.broker.position)
        self.broker.barrier().get(timeout=1)
        self.hub.record_starts(topics, position)

    def client(self, *topics: str, transport: Transport = SSE, limit: int = 65536,
               user: str = "alice", grant: Grant | None = None,
               rcvbuf: int | None = None) -> tuple[Client, Peer]:
        """A client of ``topics``, not registered yet, and the other end of its socket."""
        ours, theirs = socket_pair(rcvbuf)
        ours.setblocking(False)
        theirs.setblocking(False)
        reader = READERS[transport.name]()
        registered = {t.name: t for t in (SSE, WS)}[transport.name]
        session = registered.accept(parse_head(reader.request(registered.path)))
        client = Client(user, "t1", topics, limit, transport=transport)
        client.grant = grant
        client.head = session.head(client, {})
        self.made.append((client, ours, theirs))
        return client, Peer(theirs, reader, ours)

    def live(self, *topics: str, **options: object) -> tuple[Client, Peer]:
        """A client that needed no replay, streaming (``Streamer._open``'s fast path)."""
        client, peer = self.client(*topics, **options)  # type: ignore[arg-type]
        client.begin_with(client.head)
        self.hub.add(client)
        client.attach(peer.ours)
        return client, peer

    def settle(self) -> None:
        """Let the broker confirm subscriptions and deliver what was published."""
        for _ in range(5):
            gevent.sleep(0)

    def close(self) -> None:
        """Close the clients (each closes its socket, watchers first), then the peers."""
        self.hub.expiries.stop()
        self.broker.stop()
        for client, ours, theirs in self.made:
            client.close("test over")
            if client.sock is None:
                ours.close()
            theirs.close()
        self.settle()


class Peer:
    """The client's end of a connection, read as the wire format's client reads it."""

    def __init__(self, sock: socket.socket, reader: object, ours: socket.socket) -> None:
        self.sock = sock
        self.reader = reader
        self.ours = ours
        self.messages: list[Message] = []
        self.head: bytes | None = b""  # the response head, until it is complete
        self.eof = False

    def until(self, done: object, timeout: float = 2.0) -> list[Message]:
        """Read until ``done(messages)`` holds (or EOF); the messages read so far."""
        deadline = time.monotonic() + timeout
        while not done(self.messages) and not self.eof:  # type: ignore[operator]
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"timed out; read {self.messages}"
            wait_read(self.sock.fileno(), timeout=remaining)
            self.read_available()
        return self.messages

    def read_available(self) -> None:
        while True:
            try:
                data = self.sock.recv(1 << 20)
            except BlockingIOError:
                return
            except ConnectionResetError:
                data = b""
            if not data:
                self.eof = True
                return
            if self.head is not None:
                self.head += data
                if b"\r\n\r\n" not in self.head:
                    continue
                head, _, data = self.head.partition(b"\r\n\r\n")
                self.messages += self.reader.open(head + b"\r\n\r\n")  # type: ignore
                self.head = None
            self.messages += self.reader.read(data)  # type: ignore[attr-defined]

    def events(self, until: str) -> list[dict]:
        """The envelopes read, up to the event whose data is ``until``."""
        self.until(lambda ms: any(m.kind == "event" and m.body["data"] == until for m in ms))
        return [m.body for m in self.messages if m.kind == "event"]

    def to_eof(self) -> list[Message]:
        return self.until(lambda _: False)


def socket_pair(rcvbuf: int | None) -> tuple[socket.socket, socket.socket]:
    """Both ends of a connection (a Unix socket pair: unit tests reach no network);
    ``rcvbuf`` makes the client's side small, so a client that stops reading fills it."""
    ours, theirs = socket.socketpair()
    if rcvbuf is not None:
        theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, rcvbuf)
    return ours, theirs


@pytest.fixture
def streamer() -> Iterator[Streamer]:
    box = Streamer()
    yield box
    box.close()


def data_of(envelopes: list[dict]) -> list[object]:
    return [e["data"] for e in envelopes]


def test_a_topic_is_subscribed_with_its_first_client_and_let_go_with_its_last(streamer):
    a, _ = streamer.live("room:1")
    b, _ = streamer.live("room:1", "room:2")
    streamer.settle()
    assert streamer.broker.wanted == {"room:1", "room:2"}
    assert streamer.broker.ready(("room:1", "room:2"))
    a.close("disconnected")
    assert streamer.broker.wanted == {"room:1", "room:2"}, "b still follows room:1"
    b.close("disconnected")
    assert streamer.broker.wanted == set(), "let go the moment the last client closed"
    assert streamer.hub.clients == set() and streamer.hub.topics == {}
    assert streamer.hub.per_user == {} and streamer.hub.positions == {}


@TRANSPORTS
def test_each_client_gets_its_topics_events_once_in_publication_order(streamer, transport):
    _, only_a = streamer.live("a", transport=transport)
    _, both = streamer.live("a", "b", transport=transport)
    _, only_b = streamer.live("b", transport=transport)
    streamer.settle()
    publish = streamer.broker.publish
    for n in range(3):  # one batch: everything published in one turn
        publish("a", f"a{n}")
        publish("b", f"b{n}")
    streamer.settle()
    publish("b", "b3")
    publish("a", "a3")
    publish("a", "end a")
    publish("b", "end b")
    assert data_of(only_a.events(until="end a")) == ["a0", "a1", "a2", "a3", "end a"]
    assert data_of(only_b.events(until="end b")) == ["b0", "b1", "b2", "b3", "end b"]
    got = both.events(until="end b")
    assert data_of(got) == ["a0", "b0", "a1", "b1", "a2", "b2", "b3", "a3", "end a", "end b"]
    ids = [e["id"] for e in got]
    assert ids == sorted(ids, key=id_key) and len(set(ids)) == len(ids)
    assert streamer.hub.events_in == 10


def test_a_gap_fill_overlapping_live_events_delivers_each_once_in_order(streamer):
    _, peer = streamer.live("t")
    streamer.settle()
    history: list[tuple[str, str]] = []  # what the topic's Redis Stream would hold

    def publish(data: str) -> None:
        history.append((streamer.broker.publish("t", data), data))

    publish("live 1")
    publish("live 2")
    streamer.settle()
    streamer.broker.disconnect()
    publish("missed 3")  # while disconnected: pub/sub loses it, history keeps it
    publish("missed 4")
    # The gap fill reads history after an older position than the last dispatched
    # (its read overlapped live events): "live 2" comes again and must be dropped.
    events = [(id_key(i), "t", _envelope(i, "t", d)) for i, d in history[1:]]
    streamer.fill_gap = lambda: streamer.hub.fill(Replay(events, {}, history[-1][0]))
    streamer.broker.reconnect()
    streamer.settle()
    publish("live 5")
    assert data_of(peer.events(until="live 5")) == [
        "live 1", "live 2", "missed 3", "missed 4", "live 5"]


def test_a_gap_history_cannot_fill_gets_a_reset_at_the_fill_position(streamer):
    _, peer = streamer.live("t")
    streamer.settle()
    streamer.broker.publish("t", "before")
    streamer.settle()
    position = streamer.broker.position  # the latest id when history was read
    streamer.hub.fill(Replay([], {"t": "history of t lost events"}, position))
    streamer.broker.publish("t", "after")
    events = peer.events(until="after")
    assert [(e["type"], e["data"]) for e in events] == [
        ("message", "before"),
        ("reset", {"reason": "history of t lost events", "last_event_id": None}),
        ("message", "after")]
    assert peer.messages[1].position == position


@TRANSPORTS
def test_a_joining_client_gets_its_replay_then_ready_then_the_events_held_meanwhile(
        streamer, transport):
    client, peer = streamer.client("t", transport=transport)
    streamer.hub.join(client)  # its handshake is under way: it holds live events
    streamer.settle()
    first = streamer.broker.publish("t", "replayed and live")
    streamer.broker.publish("t", "live only")
    streamer.settle()
    assert len(client.prelive) == 2
    # The replay covered history up to ``first``; the head and replay go out first.
    client.begin_with(client.head)
    client.feed(transport.event(first, "message", _envelope(first, "t", "replayed and live")))
    streamer.hub.activate(client, id_key(first), (id_key(first), transport.ready(first)))
    client.attach(peer.ours)
    streamer.broker.publish("t", "after")
    peer.events(until="after")
    assert [(m.kind, m.body.get("data"), m.position) for m in peer.messages] == [
        ("event", "replayed and live", first),
        ("ready", None, first),
        ("event", "live only", peer.messages[2].body["id"]),
        ("event", "after", peer.messages[3].body["id"])]


def test_the_ready_marker_goes_between_the_events_before_and_after_its_position(streamer):
    client, peer = streamer.client("t")
    streamer.hub.join(client)
    streamer.settle()
    ids = [streamer.broker.publish("t", n) for n in range(3)]
    streamer.settle()
    client.begin_with(client.head)
    streamer.hub.activate(client, None, (id_key(ids[1]), SSE.ready(ids[1])))
    client.attach(peer.ours)
    peer.until(lambda ms: len(ms) == 4)
    assert [(m.kind, m.position) for m in peer.messages] == [
        ("event", ids[0]), ("event", ids[1]), ("ready", ids[1]), ("event", ids[2])]


def test_a_joining_client_holding_more_than_its_limit_is_closed_as_too_slow(streamer):
    client, _ = streamer.client("t", limit=2000)
    streamer.hub.join(client)
    streamer.settle()
    for _ in range(3):
        streamer.broker.publish("t", "x" * 900)
    streamer.settle()
    assert client.closed and client.close_reason == TOO_SLOW
    assert streamer.hub.clients == set() and streamer.hub.dropped == 1
    assert streamer.broker.wanted == set()


@TRANSPORTS
def test_a_client_that_does_not_read_is_dropped_at_its_limit_and_the_others_go_on(
        streamer, transport):
    stalled, stalled_peer = streamer.live("t", transport=transport, limit=64 * 1024,
                                          rcvbuf=4096)
    # The reader may fall behind for a moment (a Unix socket pair buffers ~200 KiB): its
    # allowance covers the whole run, so only the stalled one can pass its limit.
    _, reader = streamer.live("t", transport=transport, limit=4 << 20)
    streamer.settle()
    reading = gevent.spawn(reader.events, until="end")
    for n in range(100):  # 800 KiB: more than the stalled one's buffers and limit
        streamer.broker.publish("t", f"{n}:" + "x" * 8192)
        streamer.settle()
    streamer.broker.publish("t", "end")
    got = reading.get(timeout=5)
    assert len(got) == 101, "the reader got everything, in spite of the stalled one"
    assert stalled.closed and stalled.close_reason == TOO_SLOW
    assert streamer.hub.dropped == 1 and stalled not in streamer.hub.clients
    stalled_peer.to_eof()
    assert stalled_peer.eof, "its connection is shut"


@TRANSPORTS
def test_an_expired_token_ends_the_stream_after_its_events_with_last_words(
        streamer, transport):
    grant = Grant("alice", (), int(time.time()) + 600, "t1")
    client, peer = streamer.live("t", transport=transport, grant=grant)
    _, witness = streamer.live("t", transport=transport, user="bob")
    streamer.settle()
    streamer.broker.publish("t", "before")
    streamer.settle()
    streamer.hub.expire([client])
    streamer.broker.publish("t", "after")
    witness.events(until="after")
    messages = peer.to_eof()
    assert [(m.kind, m.body.get("data", m.body)) for m in messages] == [
        ("event", "before"), ("token-expired", {"exp": grant.expires_at})]
    assert messages[-1].position == messages[0].position, "its position stays put"
    assert client.closed and client not in streamer.hub.clients


@TRANSPORTS
@pytest.mark.parametrize("hostile", [
    b'{"id":"%(id)s","ts":1,"topic":"t","type":"x\\ndata: {}\\n\\nevent: token-expired",'
    b'"data":1}',
    b'{"id":"%(id)s\\r\\nevent: x","ts":1,"topic":"t","type":"message","data":1}',
    b'{"id":"%(id)s\\u0000","ts":1,"topic":"t","type":"message","data":1}',
    b'{"id":"%(id)s","ts":1,"topic":"t","type":"message",\n\n"data":1}',
    b'{"id":"%(id)s","ts":1,"topic":"other","type":"message","data":1}',
    b'{"id":"%(id)s","ts":1,"topic":"t","type":"message","data":"\xff"}',
    b'{"id":7,"ts":1,"topic":"t","type":"message","data":1}',
    b"[" * 100_000,
    b"not json",
], ids=["type-crlf", "id-crlf", "id-nul", "raw-newline", "topic", "utf8", "id-int",
        "deep", "garbage"])
def test_an_unsafe_envelope_from_the_broker_is_dropped_and_logged(
        streamer, transport, hostile, caplog):
    _, peer = streamer.live("t", transport=transport)
    streamer.settle()
    streamer.broker.publish("t", "before")
    position = "9999999999999-1"
    streamer.broker.publish_raw("t", hostile.replace(b"%(id)s", position.encode()))
    streamer.broker.publish("t", "sentinel")
    with caplog.at_level(logging.WARNING, logger="streamer.hub"):
        assert data_of(peer.events(until="sentinel")) == ["before", "sentinel"]
    assert [m.kind for m in peer.messages] == ["event", "event"]
    assert "dropped an event on topic t" in caplog.text
    assert all(m.position != position for m in peer.messages)


def _envelope(event_id: str, topic: str, data: object) -> bytes:
    return json.dumps({"id": event_id, "ts": id_key(event_id)[0], "topic": topic,
                       "type": "message", "data": data}, separators=(",", ":")).encode()
