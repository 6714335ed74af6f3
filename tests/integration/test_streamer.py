"""The streamer over real HTTP: headers, heartbeats, auth, grants, one subscription."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from herald import tokens
from tasks.events import publish
from tests.conftest import wait_until
from tests.sse import SSEClient

pytestmark = pytest.mark.usefixtures("clean")


def _health(streamer: str) -> dict:
    return httpx.get(f"{streamer}/healthz").json()


def test_stream_headers_retry_hint_and_heartbeat(subscribe):
    alice = subscribe("alice")
    assert alice.status == 200
    assert alice.headers["content-type"].startswith("text/event-stream")
    assert alice.headers["cache-control"] == "no-cache"
    assert alice.headers["x-accel-buffering"] == "no"
    wait_until(lambda: alice.parser.retry == 500, 2, what="retry hint")
    assert alice.parser.comments[0] == "connected as alice to user:alice"
    wait_until(lambda: "heartbeat" in alice.parser.comments, 3, what="a heartbeat")


def test_events_carry_id_type_and_envelope(subscribe):
    alice = subscribe("alice", ["user:alice", "broadcast"])
    first = publish("user:alice", {"n": 1}, "ping")
    second = publish("broadcast", "everyone")
    events = alice.wait_for(2)
    assert [(e.id, e.event) for e in events] == [(first, "ping"), (second, "message")]
    assert events[1].json()["data"] == "everyone"


def test_data_with_newlines_arrives_as_one_event(subscribe, before_sentinel):
    alice = subscribe("alice")
    hostile = "line1\n\nevent: evil\ndata: injected\r\nid: 0-0\n\n"
    publish("user:alice", {"text": hostile}, "note")
    events = before_sentinel(alice, "user:alice")
    assert len(events) == 1
    assert events[0].event == "note"
    assert events[0].json()["data"]["text"] == hostile


@pytest.mark.parametrize(("how", "status", "words"), [
    ("none", 401, "token is required"),
    ("garbage", 401, "invalid"),
    ("expired", 401, "expired"),
    ("other secret", 401, "invalid"),
    ("tampered", 401, "invalid"),
    ("alg none", 401, "invalid"),
])
def test_bad_tokens_are_refused(streamer, config, how, status, words):
    good, _ = tokens.mint(config.secret, "alice")
    token = {
        "none": None,
        "garbage": "not-a-token",
        "expired": tokens.mint(config.secret, "alice", ttl=1, now=time.time() - 60)[0],
        "other secret": tokens.mint("x" * 40, "alice")[0],
        "tampered": _tamper(good),
        "alg none": _unsigned("alice"),
    }[how]
    params = {"token": token} if token else {}
    client = SSEClient(streamer, params)
    assert client.status == status
    assert client.headers["www-authenticate"].startswith("Bearer")
    assert client.body["error"]["field"] == "token"
    assert words in client.body["error"]["message"]


def _tamper(token: str) -> str:
    import base64
    import json

    head, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["sub"] = "bob"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return f"{head}.{forged}.{signature}"


def _unsigned(user: str) -> str:
    import jwt

    return jwt.encode({"sub": user, "exp": int(time.time()) + 60, "jti": "x"}, None,
                      algorithm="none")


@pytest.mark.parametrize(("topics", "grants", "status", "words"), [
    ("user:bob", (), 403, "user:bob"),
    ("user:alice,secret", (), 403, "secret"),
    ("room:1", ("room:2",), 403, "room:1"),
    ("Bad Topic", (), 400, "must match"),
    (",".join(f"t{i}" for i in range(33)), ("t*",), 400, "at most 32"),
])
def test_topics_must_be_valid_and_granted(streamer, mint, topics, grants, status, words):
    client = SSEClient(streamer, {"token": mint("alice", grants), "topics": topics})
    assert client.status == status
    assert client.body["error"]["field"] == "topics"
    assert words in client.body["error"]["message"]


def test_grants_by_prefix_and_token_in_header_or_cookie(streamer, mint):
    token = mint("alice", ("room:*",))
    by_header = SSEClient(streamer, {"topics": "room:7"},
                          headers={"Authorization": f"Bearer {token}"})
    by_cookie = SSEClient(streamer, {"topics": "room:8,broadcast"},
                          headers={"Cookie": f"theme=dark; herald_token={token}"})
    with by_header, by_cookie:
        assert by_header.status == by_cookie.status == 200
        publish("room:7", 7)
        publish("room:8", 8)
        assert [e.json()["data"] for e in by_header.wait_for(1)] == [7]
        assert [e.json()["data"] for e in by_cookie.wait_for(1)] == [8]


def test_one_redis_subscription_per_process(streamer, subscribe, rdb, keys):
    clients = [subscribe("alice") for _ in range(5)]
    clients += [subscribe(f"user{i}", ["broadcast"]) for i in range(3)]
    channel = keys.channel("user:alice")
    assert rdb.pubsub_numsub(channel, keys.channel("broadcast")) == [
        (channel, 1), (keys.channel("broadcast"), 1)]
    publish("broadcast", "hi")
    for client in clients[5:]:
        assert client.wait_for(1)


def test_a_closed_connection_is_removed_at_once(streamer, subscribe, rdb, keys):
    before = _health(streamer)["clients"]
    alice = subscribe("alice", ["lonely"], grants=("lonely",))
    assert _health(streamer)["clients"] == before + 1
    assert rdb.pubsub_numsub(keys.channel("lonely")) == [(keys.channel("lonely"), 1)]
    alice.close()
    wait_until(lambda: _health(streamer)["clients"] == before, 1.0, what="removal")
    wait_until(lambda: rdb.pubsub_numsub(keys.channel("lonely"))[0][1] == 0, 1.0,
               what="unsubscribe of the last client's topic")


def test_plain_http_errors(streamer):
    assert httpx.get(f"{streamer}/nope").status_code == 404
    assert httpx.post(f"{streamer}/events").status_code == 405
    health = _health(streamer)
    assert health["status"] == "ok" and health["redis"] == "ok"
    with socket.create_connection(("127.0.0.1", int(streamer.rsplit(":", 1)[1]))) as raw:
        raw.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 10_000 + b"\r\n\r\n")
        assert raw.recv(100).startswith(b"HTTP/1.1 431")
    with socket.create_connection(("127.0.0.1", int(streamer.rsplit(":", 1)[1]))) as raw:
        raw.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        assert raw.recv(100).startswith(b"HTTP/1.1 400")


def test_unwanted_topics_are_not_received_by_the_process(streamer, subscribe, rdb, keys):
    subscribe("alice")
    subscribe("bob", ["room:1"], grants=("room:*",))
    wanted = {keys.channel("user:alice"), keys.channel("room:1")}
    wait_until(lambda: set(rdb.pubsub_channels(keys.channel("*"))) == wanted, 5,
               what="the streamer's subscriptions to be its clients' topics")
    # No pattern subscription either: a publish on a topic nobody wants reaches no one.
    assert rdb.publish(keys.channel("user:nobody"), "{}") == 0
    assert rdb.publish(keys.channel("room:2"), "{}") == 0
