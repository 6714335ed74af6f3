"""Tokens expire on open streams too: SSE and WebSocket end at ``exp`` with a
``token-expired`` message, commands after it are refused, and the WebSocket ``auth``
command swaps the token of an open connection.

Each test runs against a real streamer over real sockets, with tokens living 1-2 s.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlencode

import gevent
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from herald import tokens
from herald.tokens import Grant
from streamer.client import Client
from streamer.commands import Commands
from streamer.hub import Hub
from streamer.sse import EventStream
from streamer.websocket import WebSocket
from tasks.events import publish
from tests.sse import SSEClient

pytestmark = pytest.mark.usefixtures("clean")

SHORT_TTL = 2


def ws_url(streamer: str, **params: str) -> str:
    return streamer.replace("http://", "ws://") + "/ws?" + urlencode(params)


@contextmanager
def publishing(topic: str, every: float = 0.05) -> Iterator[list[str]]:
    """Publish on ``topic`` every ``every`` s while the block runs; yields the ids."""
    ids: list[str] = []
    stop = threading.Event()

    def run() -> None:
        n = 0
        while not stop.is_set():
            ids.append(publish(topic, {"n": n}, "tick"))
            n += 1
            stop.wait(every)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield ids
    finally:
        stop.set()
        thread.join(5)


def messages_until_closed(ws: ClientConnection, timeout: float) -> list[dict]:
    """Every message until the server closes the connection."""
    received = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            received.append(json.loads(ws.recv(timeout=max(0.01, deadline - time.monotonic()))))
    except ConnectionClosed:
        return received


def events_until(ws: ClientConnection, sentinel: str) -> list[dict]:
    """The events (not replies) received up to and including ``sentinel``."""
    events = []
    while True:
        message = json.loads(ws.recv(timeout=5))
        if "reply" not in message:
            events.append(message)
            if message["id"] == sentinel:
                return events


def command(ws: ClientConnection, op: str, **fields: object) -> dict:
    ref = str(time.monotonic_ns())
    ws.send(json.dumps({"op": op, "ref": ref, **fields}))
    while True:
        message = json.loads(ws.recv(timeout=5))
        if message.get("ref") == ref:
            return message


def test_sse_stream_ends_at_expiry_and_resumes_with_a_fresh_token(streamer, config, mint):
    token, grant = tokens.mint(config.secret, "alice", ttl=SHORT_TTL)
    witness = SSEClient(streamer, {"token": mint("alice")})
    old = SSEClient(streamer, {"token": token})
    assert old.status == witness.status == 200
    with publishing("user:alice") as published:
        assert old.wait_closed(grant.expires_at - time.time() + 3), "still open after exp"
        closed_at = time.time()
    assert closed_at >= grant.expires_at, "closed before the token expired"
    sentinel = publish("user:alice", "sentinel", "tick")
    assert witness.wait_for(len(published) + 1)[-1].id == sentinel
    *delivered, last = old.events
    assert last.event == "token-expired"
    assert last.json()["exp"] == grant.expires_at
    assert all(e.event == "tick" for e in delivered)
    assert sentinel not in [e.id for e in delivered]

    # The position the old stream reached resumes exactly: no gap, no duplicate.
    position = delivered[-1].id if delivered else old.parser.ready_id
    assert last.id == position, "token-expired does not move the position"
    new = SSEClient(streamer, {"token": mint("alice"), "last_event_id": position})
    resumed = new.wait_for(len(published) + 1 - len(delivered))
    assert [e.id for e in delivered + resumed] == [*published, sentinel]
    witness.close()
    new.close()


def test_websocket_ends_at_expiry_with_a_close_frame_and_resumes(streamer, config, mint):
    token, grant = tokens.mint(config.secret, "bob", ttl=SHORT_TTL)
    with connect(ws_url(streamer, token=token)) as old, publishing("user:bob") as published:
        received = messages_until_closed(old, grant.expires_at - time.time() + 3)
        closed_at = time.time()
        code, reason = old.close_code, old.close_reason
    assert closed_at >= grant.expires_at, "closed before the token expired"
    assert (code, reason) == (4001, "token expired")
    assert received[-1] == {"reply": "token-expired", "ok": True, "exp": grant.expires_at}
    events = [m for m in received if "reply" not in m]
    position = events[-1]["id"] if events else received[0]["position"]
    with connect(ws_url(streamer, token=mint("bob"), last_event_id=position)) as new:
        sentinel = publish("user:bob", "sentinel", "tick")
        resumed = events_until(new, sentinel)
    assert [e["id"] for e in events + resumed] == [*published, sentinel]


def test_websocket_commands_after_expiry_are_refused(streamer, config):
    token, grant = tokens.mint(config.secret, "carl", ("room:*",), ttl=1)
    with connect(ws_url(streamer, token=token)) as ws:
        time.sleep(max(0.0, grant.expires_at - time.time()) + 0.2)
        refs = {"sub": "subscribe", "read": "read"}
        try:
            ws.send(json.dumps({"op": "subscribe", "ref": "sub", "topics": ["room:1"]}))
            ws.send(json.dumps({"op": "read", "ref": "read", "all": True}))
        except ConnectionClosed:
            pass  # closed at expiry already: nothing can be asked any more
        received = messages_until_closed(ws, 3)
        assert ws.close_code == 4001
    replies = [m for m in received if m.get("ref") in refs]
    assert all(m["ok"] is False and m["error"]["code"] == "unauthorized" for m in replies)
    assert received[-1]["reply"] == "token-expired"


def test_auth_swaps_the_token_of_an_open_websocket(streamer, config, api):
    token, grant = tokens.mint(config.secret, "dana", ("room:*",), ttl=SHORT_TTL)
    with connect(ws_url(streamer, token=token, topics="user:dana,room:1")) as ws:
        fresh, fresh_grant = tokens.mint(config.secret, "dana", ("room:*",), ttl=600)
        answer = command(ws, "auth", token=fresh)
        assert answer["ok"] is True and answer["exp"] == fresh_grant.expires_at
        time.sleep(max(0.0, grant.expires_at - time.time()) + 0.3)
        after = publish("room:1", "after the first token's exp", "tick")
        assert events_until(ws, after)[-1]["data"] == "after the first token's exp"
        assert command(ws, "subscribe", topics=["room:2"])["ok"] is True

        # The new token is now the one revocation follows.
        assert api.post("/api/tokens/revoke",
                        json={"token_id": fresh_grant.token_id}).status_code == 200
        messages_until_closed(ws, 10)
        assert (ws.close_code, ws.close_reason) == (1008, "token revoked")


@pytest.mark.parametrize(("how", "code"), [
    ("another user", "forbidden"), ("missing grant", "forbidden"), ("expired", "unauthorized"),
    ("other secret", "unauthorized"), ("revoked", "unauthorized"), ("no token", "invalid_field"),
])
def test_a_refused_auth_leaves_the_old_token_in_charge(streamer, config, api, how, code):
    token, grant = tokens.mint(config.secret, "erin", ("room:*",), ttl=SHORT_TTL)
    candidates = {
        "another user": tokens.mint(config.secret, "frank", ("room:*",))[0],
        "missing grant": tokens.mint(config.secret, "erin")[0],
        "expired": tokens.mint(config.secret, "erin", ("room:*",), ttl=1,
                               now=time.time() - 60)[0],
        "other secret": tokens.mint("o" * 48, "erin", ("room:*",))[0],
        "revoked": None,
        "no token": None,
    }
    if how == "revoked":
        candidate, revoked = tokens.mint(config.secret, "erin", ("room:*",))
        api.post("/api/tokens/revoke", json={"token_id": revoked.token_id})
        candidates[how] = candidate
    with connect(ws_url(streamer, token=token, topics="user:erin,room:1")) as ws:
        fields = {} if candidates[how] is None else {"token": candidates[how]}
        answer = command(ws, "auth", **fields)
        assert answer["ok"] is False and answer["error"]["code"] == code
        assert answer["error"]["field"] == "token"
        received = messages_until_closed(ws, grant.expires_at - time.time() + 3)
        assert ws.close_code == 4001, "the old token's expiry still ends the connection"
    assert received[-1]["reply"] == "token-expired"
    assert received[-1]["exp"] == grant.expires_at


def _frames(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, payload) of unmasked server frames with payloads under 64 KiB."""
    frames = []
    while data:
        opcode, size = data[0] & 0x0F, data[1] & 0x7F
        start = 2
        if size == 126:
            size, start = struct.unpack("!H", data[2:4])[0], 4
        frames.append((opcode, data[start:start + size]))
        data = data[start + size:]
    return frames


def test_a_command_after_expiry_is_refused_and_ends_the_connection():
    """Even before the expiry timer has run (the command's worker runs first).

    The streamer's own objects on a real TCP connection, the command handed over as
    the event loop would.
    """
    hub = Hub(lambda topic: None, lambda topic: None)
    with socket.create_server(("127.0.0.1", 0)) as server:
        theirs = socket.create_connection(server.getsockname())
        ours, _ = server.accept()
    ours.setblocking(False)
    client = Client("gus", "t1", ("user:gus",), 65536, transport=WebSocket())
    client.grant = Grant("gus", (), int(time.time()) - 1, "t1")
    hub.add(client)
    client.attach(ours)
    commands = Commands(None, hub, None, None, gate=None)  # type: ignore[arg-type]
    commands.handle(client, json.dumps({"op": "read", "ref": "r1", "all": True}))
    gevent.wait([client.backlog.worker], timeout=2)  # the connection's command worker

    theirs.settimeout(2)
    received = b""
    while chunk := theirs.recv(65536):
        received += chunk
    (_, refusal), (_, last), (close_op, close) = _frames(received)
    assert json.loads(refusal)["ref"] == "r1"
    assert json.loads(refusal)["error"]["code"] == "unauthorized"
    assert json.loads(last) == {"reply": "token-expired", "ok": True,
                                "exp": client.grant.expires_at}
    assert (close_op, struct.unpack("!H", close[:2])[0], close[2:]) == (
        0x8, 4001, b"token expired")
    assert client.closed and client not in hub.clients
    hub.expiries.stop()


def test_a_crowd_sharing_one_token_all_get_token_expired_and_eof():
    """More clients than one slice (the hub ends them a few hundred at a time)."""
    hub = Hub(lambda topic: None, lambda topic: None)
    grant = Grant("hal", (), int(time.time()) + 600, "shared")
    sse = EventStream()
    peers, clients = [], []
    with socket.create_server(("127.0.0.1", 0), backlog=1024) as server:
        for _ in range(1200):
            peers.append(socket.create_connection(server.getsockname()))
            ours, _ = server.accept()
            ours.setblocking(False)
            client = Client("hal", "shared", ("user:hal",), 65536, transport=sse)
            client.grant = grant
            hub.add(client)
            client.attach(ours)
            clients.append(client)
    hub.expire(list(hub.clients))
    assert hub.clients == set() and hub.per_user == {}, "all out of the fan-out at once"
    for _ in range(500):  # the slices after the first run in a greenlet
        if all(c.closed for c in clients):
            break
        gevent.sleep(0.01)
    last = f'event: token-expired\ndata: {{"exp":{grant.expires_at}}}\n\n'.encode()
    for peer in peers:
        peer.settimeout(2)
        received = b""
        while chunk := peer.recv(4096):
            received += chunk
        assert received == last
        peer.close()
    hub.expiries.stop()
