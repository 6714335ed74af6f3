"""The WebSocket transport: same stream, same grants, plus client commands."""

from __future__ import annotations

import json
import time
from urllib.parse import urlencode

import jwt
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from herald import tokens
from tasks.events import publish
from tests.conftest import start_streamer, wait_until
from tests.sse import SSEClient

pytestmark = pytest.mark.usefixtures("clean")


def ws_url(streamer: str, **params: str) -> str:
    return streamer.replace("http://", "ws://") + "/ws?" + urlencode(params)


def recv_json(ws, timeout: float = 5.0) -> dict:
    """The next message, skipping the stream's ``ready`` position."""
    while True:
        message = json.loads(ws.recv(timeout=timeout))
        if message.get("reply") != "ready":
            return message


def command(ws, op: str, **fields) -> dict:
    ref = str(time.monotonic_ns())
    ws.send(json.dumps({"op": op, "ref": ref, **fields}))
    while True:
        message = recv_json(ws)
        if message.get("ref") == ref:
            return message


def test_events_arrive_as_envelopes_and_ping_answers(streamer, mint):
    with connect(ws_url(streamer, token=mint("alice"))) as ws:
        event_id = publish("user:alice", {"n": 1}, "note")
        event = recv_json(ws)
        assert event == {"id": event_id, "ts": event["ts"], "topic": "user:alice",
                         "type": "note", "data": {"n": 1}}
        pong = command(ws, "ping")
        assert pong["reply"] == "pong" and pong["ok"] is True


def test_subscribe_and_unsubscribe_follow_the_grants(streamer, mint):
    with connect(ws_url(streamer, token=mint("alice", ("room:*",)))) as ws:
        granted = command(ws, "subscribe", topics=["room:1"])
        assert granted["ok"] is True and granted["topics"] == ["user:alice", "room:1"]
        publish("room:1", "hello", "chat")
        assert recv_json(ws)["data"] == "hello"
        refused = command(ws, "subscribe", topics=["user:bob"])
        assert refused["ok"] is False and refused["error"]["code"] == "forbidden"
        assert command(ws, "subscribe", topics=["Bad Topic"])["error"]["field"] == "topics"
        left = command(ws, "unsubscribe", topics=["room:1"])
        assert left["topics"] == ["user:alice"]
        publish("room:1", "gone", "chat")
        mine = publish("user:alice", "mine", "note")
        assert recv_json(ws)["id"] == mine


@pytest.mark.parametrize("topic", ["secret", "Bad Topic"])
def test_a_topic_is_refused_in_the_same_words_by_a_handshake_and_subscribe(
        streamer, mint, topic):
    token = mint("alice")
    handshake = SSEClient(streamer, {"token": token, "topics": topic})
    with connect(ws_url(streamer, token=token)) as ws:
        refused = command(ws, "subscribe", topics=[topic])
    assert refused["ok"] is False
    assert refused["error"] == handshake.body["error"]
    assert refused["error"]["field"] == "topics"


def test_malformed_commands_are_refused_without_closing(streamer, mint):
    with connect(ws_url(streamer, token=mint("alice"))) as ws:
        ws.send("not json")
        assert recv_json(ws)["error"]["code"] == "invalid_json"
        ws.send(json.dumps({"op": "explode", "ref": "x"}))
        assert recv_json(ws)["error"]["field"] == "op"
        ws.send(json.dumps({"op": "read", "ref": "y", "ids": ["nope"]}))
        assert recv_json(ws)["error"]["field"] == "ids"
        assert command(ws, "ping")["ok"] is True


def test_read_marks_the_users_own_inbox_and_tells_other_tabs(streamer, mint, api, worker,
                                                            before_sentinel):
    other_tab = SSEClient(streamer, {"token": mint("alice")})
    bob = SSEClient(streamer, {"token": mint("bob")})
    with connect(ws_url(streamer, token=mint("alice"))) as ws:
        sent = api.post("/api/notifications", json={"recipients": ["alice", "bob"],
                                                    "title": "x"}).json()
        assert recv_json(ws)["type"] == "notification"
        answer = command(ws, "read", ids=[sent["id"]])
        assert answer["ok"] is True and answer["marked"] == 1 and answer["unread"] == 0
    events = other_tab.wait_for(2)
    assert [e.event for e in events] == ["notification", "notification.read"]
    assert api.get("/api/users/bob/notifications").json()["unread"] == 1
    wait_until(lambda: api.get(sent["status_url"]).json()["status"] == "delivered",
               what="delivery to bob")
    assert [e.event for e in before_sentinel(bob, "user:bob")] == ["notification"]
    other_tab.close()
    bob.close()


def test_resume_and_reset_over_websocket(streamer, mint):
    first = publish("user:carl", 1, "n")
    second = publish("user:carl", 2, "n")
    with connect(ws_url(streamer, token=mint("carl"), last_event_id=first)) as ws:
        assert recv_json(ws)["id"] == second
        assert recv_json(ws) == {"reply": "resumed", "ok": True, "replayed": 1, "from": first}
        live = publish("user:carl", 3, "n")
        assert recv_json(ws)["id"] == live
    with connect(ws_url(streamer, token=mint("carl"), last_event_id="garbage")) as ws:
        reset = recv_json(ws)
        assert reset["type"] == "reset" and reset["data"]["reason"] == "unknown position"


def _status(url: str, **headers: str) -> int:
    try:
        with connect(url, additional_headers=headers):
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


@pytest.mark.parametrize(("how", "status"), [
    ("bob's topic", 403), ("ungranted topic", 403), ("expired", 401), ("other secret", 401),
    ("tampered", 401), ("alg none", 401), ("revoked", 401), ("no token", 401)])
def test_isolation_matrix_over_websocket(streamer, config, api, how, status):
    token, grant = tokens.mint(config.secret, "alice", ttl=600)
    params = {"token": token}
    if how == "bob's topic":
        params["topics"] = "user:bob"
    elif how == "ungranted topic":
        params["topics"] = "secret"
    elif how == "expired":
        params["token"] = tokens.mint(config.secret, "alice", ttl=1, now=time.time() - 60)[0]
    elif how == "other secret":
        params["token"] = tokens.mint("o" * 48, "alice")[0]
    elif how == "tampered":
        head, _, signature = token.split(".")
        forged = jwt.utils.base64url_encode(json.dumps(
            {"sub": "alice", "topics": ["*"], "exp": 9999999999, "jti": "x"}).encode())
        params["token"] = f"{head}.{forged.decode()}.{signature}"
    elif how == "alg none":
        params["token"] = jwt.encode({"sub": "alice", "exp": 9999999999, "jti": "x"}, None,
                                     algorithm="none")
    elif how == "revoked":
        api.post("/api/tokens/revoke", json={"token_id": grant.token_id})
    elif how == "no token":
        params = {}
    if how == "revoked":  # the streamer refuses it once the revocation notice reached it
        wait_until(lambda: _status(ws_url(streamer, **params)) == status, 5,
                   what="the revoked token to be refused")
    else:
        assert _status(ws_url(streamer, **params)) == status


def test_one_hub_and_one_subscription_for_both_transports(streamer, mint, rdb, keys):
    sse = SSEClient(streamer, {"token": mint("dora")})
    with connect(ws_url(streamer, token=mint("dora"))) as ws:
        assert rdb.pubsub_numsub(keys.channel("user:dora"))[0][1] == 1
        event_id = publish("user:dora", "both", "note")
        assert recv_json(ws)["id"] == event_id
        assert [e.id for e in sse.wait_for(1)] == [event_id]
    sse.close()


def test_websocket_origin_must_be_allowed(mint, child_env):
    process, url = start_streamer({**child_env,
                                   "HERALD_CORS_ORIGINS": "https://app.example.com"},
                                  name="streamer-ws-origin")
    try:
        good = _status(ws_url(url, token=mint("eve")), Origin="https://app.example.com")
        bad = _status(ws_url(url, token=mint("eve")), Origin="https://evil.example")
        assert (good, bad) == (101, 403)
    finally:
        process.stop()
