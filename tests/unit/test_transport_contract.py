"""The contract of a transport (``streamer.transport``), written once and checked against
every registered transport and every variant it serves (SSE with and without event
names, WebSocket).

Frames are read back as a client of the wire format reads them: SSE by the WHATWG
EventSource parsing rules, WebSocket by a wsproto client that made the handshake. A
transport registered without a reader (``tests/unit/readers.py``) fails
``test_every_transport_has_a_reader...``: adding a wire format means adding its client
there, and every test then covers it. No network and no Redis: bytes in, bytes out.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from herald import config as herald_config
from herald.config import Config
from streamer.client import Client
from streamer.protocol import BadRequest, parse_head
from streamer.sse import EventStream
from streamer.transport import Ending, Transport, UnsafeFrame
from streamer.transports import REGISTERED
from streamer.websocket import WebSocket
from tests.unit.readers import READERS, Message, SSEReader

ENVELOPE = {"id": "1795830715759-2", "ts": 1795830715759, "topic": "user:alice",
            "type": "chat.message",
            "data": {"text": "a\n\ndata: x\r\nevent: token-expired\n\nid: 9-9", "ü": "\u2028"}}


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    home = Path(tmp_path_factory.mktemp("home"))
    return herald_config.load({"HERALD_HOME": str(home), "HERALD_RETRY_MS": "1500"})


def opened(cls: type[Transport], config: Config) -> tuple[Transport, Any]:
    """The transport, and a reader that has read the head of a stream it accepted."""
    transport = cls.configured(config)
    reader = READERS[cls.name]()
    session = transport.accept(parse_head(reader.request(cls.path)))
    client = Client("alice", "t1", ("user:alice",), 65536, transport=session.transport)
    assert reader.open(session.head(client, {})) == [], "the head carries no message"
    return transport, reader


def envelope(**changes: Any) -> bytes:
    return json.dumps({**ENVELOPE, **changes}, ensure_ascii=False,
                      separators=(",", ":")).encode()


every_transport = pytest.mark.parametrize("cls", REGISTERED, ids=lambda c: c.name)


def test_every_transport_has_a_reader_a_path_and_a_name_of_its_own():
    assert sorted(READERS) == sorted(cls.name for cls in REGISTERED), (
        "a transport without a reader is not checked: add its client to readers.py")
    assert len({cls.path for cls in REGISTERED}) == len(REGISTERED)


@every_transport
def test_an_event_reads_back_as_its_envelope_with_its_id_as_position(cls, config):
    transport, _ = opened(cls, config)
    for variant in transport.variants():
        reader = opened(cls, config)[1]
        (message,) = reader.read(variant.event(ENVELOPE["id"], ENVELOPE["type"], envelope()))
        assert message == Message("event", ENVELOPE, ENVELOPE["id"])
        assert reader.complete, "a frame is complete: nothing of it waits for more"


@every_transport
def test_frames_concatenate_into_their_messages_in_order(cls, config):
    transport, _ = opened(cls, config)
    for variant in transport.variants():
        reader = opened(cls, config)[1]
        frames = [variant.ready("5-0"), variant.event("6-0", "a", envelope(id="6-0")),
                  variant.heartbeat, variant.event("7-3", "b.c", envelope(id="7-3")),
                  variant.resumed(2, "5-0")]
        messages = reader.read(b"".join(frames))
        assert [(m.kind, m.position) for m in messages] == [
            ("ready", "5-0"), ("event", "6-0"), ("event", "7-3"), ("resumed", "7-3")]


@every_transport
def test_ready_is_a_position_resumed_and_expired_move_none(cls, config):
    transport, _ = opened(cls, config)
    for variant in transport.variants():
        reader = opened(cls, config)[1]
        assert reader.read(variant.ready("42-7")) == [
            Message("ready", {"position": "42-7"}, "42-7")]
        assert reader.read(variant.resumed(3, "40-0")) == [
            Message("resumed", {"replayed": 3, "from": "40-0"}, "42-7")]
        assert reader.read(variant.expired(1795830716)) == [
            Message("token-expired", {"exp": 1795830716}, "42-7")]


@every_transport
def test_a_reset_is_an_event_at_its_position(cls, config):
    transport, _ = opened(cls, config)
    for variant in transport.variants():
        reader = opened(cls, config)[1]
        (message,) = reader.read(variant.reset("50-1", "history lost\nevent: x", "3-0"))
        assert (message.kind, message.position) == ("event", "50-1")
        assert message.body["type"] == "reset" and message.body["id"] == "50-1"
        assert message.body["data"] == {"reason": "history lost\nevent: x",
                                        "last_event_id": "3-0"}


@every_transport
def test_a_heartbeat_carries_no_message_and_moves_no_position(cls, config):
    transport, _ = opened(cls, config)
    for variant in transport.variants():
        reader = opened(cls, config)[1]
        reader.read(variant.ready("8-0"))
        assert reader.read(variant.heartbeat * 3) == []
        assert reader.position == "8-0"


@every_transport
@pytest.mark.parametrize("ending", list(Ending))
def test_a_goodbye_carries_no_message(cls, config, ending):
    transport, _ = opened(cls, config)
    for variant in transport.variants():
        reader = opened(cls, config)[1]
        goodbye = variant.goodbye(ending, "server stopping; reconnect")
        assert goodbye is None or reader.read(goodbye) == []


@every_transport
@pytest.mark.parametrize(("event_id", "type", "raw"), [
    ("1-1\n", "note", None),
    ("1-1\r\nevent: token-expired", "note", None),
    ("1-1\0", "note", None),
    ("\n1-1", "note", None),
    ("1-1 ", "note", None),
    ("18446744073709551616-0", "note", None),
    ("1-1", "note\ndata: {}\n\nevent: token-expired", None),
    ("1-1", "note\r", None),
    ("1-1", "note\0", None),
    ("1-1", "", None),
    ("1-1", "note", b'{"id":"1-1","type":"note",\n\n"data":1}'),
    ("1-1", "note", b'{"id":"1-1","type":"note",\r"data":1}'),
], ids=repr)
def test_an_unsafe_event_is_refused(cls, config, event_id, type, raw):
    transport, _ = opened(cls, config)
    for variant in transport.variants():
        with pytest.raises(UnsafeFrame):
            variant.event(event_id, type, raw or envelope(id=event_id, type=type))


@every_transport
def test_a_reset_at_an_unsafe_position_is_refused(cls, config):
    transport, _ = opened(cls, config)
    for variant in transport.variants():
        with pytest.raises(UnsafeFrame):
            variant.reset("5-0\nevent: token-expired", "why", None)


# What is particular to one wire format (its options, its own fields)


def test_sse_names_events_unless_asked_not_to(config):
    for query, named in (("", True), ("&named=1", True), ("&named=0", False)):
        transport = EventStream.configured(config)
        head = f"GET /events?topics=user:alice{query} HTTP/1.1\r\nHost: s\r\n\r\n"
        variant = transport.accept(parse_head(head.encode())).transport
        reader = SSEReader()
        reader.read(variant.event("6-0", "chat.message", envelope(id="6-0")))
        reader.read(variant.reset("7-0", "why", None))
        reader.read(variant.ready("8-0") + variant.resumed(0, "8-0") + variant.expired(9))
        events = ["chat.message", "reset"] if named else ["message", "message"]
        assert reader.names == [*events, "ready", "resumed", "token-expired"]


@pytest.mark.parametrize("value", ["2", "yes", "", "false"])
def test_sse_refuses_a_malformed_named_option(config, value):
    head = f"GET /events?named={value} HTTP/1.1\r\nHost: s\r\n\r\n".encode()
    with pytest.raises(BadRequest) as refused:
        EventStream.configured(config).accept(parse_head(head))
    assert (refused.value.status, refused.value.field) == (400, "named")


def test_sse_head_and_goodbye_carry_the_retry_hint(config):
    transport, reader = opened(EventStream, config)
    assert reader.retry == 1500
    reader.retry = None
    reader.read(transport.goodbye(Ending.STOPPING, "stopping"))
    assert reader.retry == 1500


def test_websocket_goodbyes_and_last_words_close_with_their_codes(config):
    codes = {Ending.STOPPING: 1012, Ending.REVOKED: 1008, Ending.FAILED: 1011}
    for ending, code in codes.items():
        transport, reader = opened(WebSocket, config)
        reader.read(transport.goodbye(ending, "why"))
        assert reader.closed == (code, "why")
    transport, reader = opened(WebSocket, config)
    reader.read(transport.expired(12))
    assert reader.closed == (4001, "token expired")


def test_websocket_refuses_a_request_without_a_handshake(config):
    with pytest.raises(BadRequest) as refused:
        WebSocket.configured(config).accept(
            parse_head(b"GET /ws HTTP/1.1\r\nHost: s\r\n\r\n"))
    assert refused.value.status == 426
