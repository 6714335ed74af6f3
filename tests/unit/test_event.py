"""The event envelope (pure functions); its framing is in test_transport_contract."""

from __future__ import annotations

import json

import pytest

from herald.errors import InvalidEvent
from herald.event import (
    Event,
    encode_body,
    id_key,
    valid_event_id,
    valid_topic,
)


@pytest.mark.parametrize("topic", ["user:alice", "broadcast", "a", "room:42.b_c-d",
                                   "x" * 128])
def test_valid_topics(topic):
    assert valid_topic(topic)


@pytest.mark.parametrize("topic", ["", "User:Alice", "a b", "-a", "x" * 129, "a\nb",
                                   "a\0", "é", None, 5])
def test_invalid_topics(topic):
    assert not valid_topic(topic)


@pytest.mark.parametrize(("topic", "type", "data", "field"), [
    ("bad topic", "message", 1, "topic"),
    ("t", "bad\ntype", 1, "type"),
    ("t", "x\r", 1, "type"),
    ("t", "x\0", 1, "type"),
    ("t", "", 1, "type"),
    ("t", "message", {1, 2}, "data"),
    ("t", "message", float("nan"), "data"),
    ("t", "message", "x" * 70_000, "data"),
])
def test_encode_body_names_the_bad_field(topic, type, data, field):
    with pytest.raises(InvalidEvent) as caught:
        encode_body(topic, type, data)
    assert caught.value.field == field


def test_envelope_round_trip_is_one_line():
    rest = encode_body("user:alice", "note", {"text": "a\n\ndata: x\r\nevent: y"})
    envelope = '{"id":"5-7","ts":5,' + rest
    assert "\n" not in envelope and "\r" not in envelope
    event = Event.from_json(envelope)
    assert event == Event("5-7", 5, "user:alice", "note",
                          {"text": "a\n\ndata: x\r\nevent: y"})
    assert json.loads(envelope)["data"] == event.data


def test_ids_compare_numerically():
    assert id_key("999-5") < id_key("1000-1") < id_key("1000-2")


@pytest.mark.parametrize(("event_id", "valid"), [
    ("0-0", True), ("1795830715759-2", True),
    ("18446744073709551615-18446744073709551615", True),  # Redis' largest stream id
    ("18446744073709551616-0", False), ("0-18446744073709551616", False),
    ("99999999999999999999-99999999999999999999", False),
    ("1-", False), ("-1", False), ("1-1-1", False), ("1-1\n", False), (" 1-1", False),
    ("٣-1", False), ("123456789012345678901-1", False), (17, False), (None, False),
])
def test_event_ids_are_positions_redis_can_hold(event_id, valid):
    assert valid_event_id(event_id) is valid


def test_malformed_envelopes_are_rejected():
    for raw in ("[]", "{}", '{"id": "1-1"}', "nope"):
        with pytest.raises(ValueError):
            Event.from_json(raw)


def test_shared_rest_is_encode_body_after_the_topic():
    from herald.publisher import shared_rest

    data = {"title": "é ✓", "n": [1, 2.5, None], "s": 'a"b\\c\n</script>'}
    shared = shared_rest("notification", data)
    for topic in ("user:alice", "news", "a" * 128):
        assert f'"topic":"{topic}",{shared}' == encode_body(topic, "notification", data)


def test_shared_rest_refuses_what_the_longest_topic_would_make_too_big():
    from herald.event import MAX_DATA_BYTES
    from herald.publisher import shared_rest

    longest = MAX_DATA_BYTES - 1 - len(encode_body("a" * 128, "t", ""))
    encode_body("a" * 128, "t", "x" * longest)
    shared_rest("t", "x" * longest)
    with pytest.raises(InvalidEvent):
        encode_body("a" * 128, "t", "x" * (longest + 1))
    with pytest.raises(InvalidEvent):
        shared_rest("t", "x" * (longest + 1))
