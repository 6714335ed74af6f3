"""WebSocket clients that flood, send hostile JSON, skip the handshake or lose their token.

Each test runs against a real streamer process over real WebSocket connections and
checks what a user (or an operator reading the log) would see.
"""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from urllib.parse import urlencode, urlsplit

import httpx
import psutil
import pytest
import redis
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close
from websockets.sync.client import ClientConnection, connect

from herald import tokens
from streamer.commands import BURST, MAX_QUEUED, POOL_WAIT, RATE
from streamer.server import REDIS_CONNECTIONS
from tests.conftest import Process, start_streamer

pytestmark = pytest.mark.usefixtures("clean")

FLOOD = 2000


@pytest.fixture(scope="module")
def ws_streamer(child_env) -> Iterator[Process]:
    """A streamer of this module's own: its log and its Redis connections are read."""
    process, url = start_streamer(child_env, name="streamer-ws-abuse")
    process.url = url  # type: ignore[attr-defined]
    yield process
    process.stop()


def ws_url(streamer: str, **params: str) -> str:
    return streamer.replace("http://", "ws://") + "/ws?" + urlencode(params)


def recv_json(ws: ClientConnection, timeout: float = 5.0) -> dict:
    """The next message, skipping the stream's ``ready`` position."""
    while True:
        message = json.loads(ws.recv(timeout=timeout))
        if message.get("reply") != "ready":
            return message


def command(ws: ClientConnection, op: str, **fields: object) -> dict:
    ref = str(time.monotonic_ns())
    ws.send(json.dumps({"op": op, "ref": ref, **fields}))
    while (message := recv_json(ws)).get("ref") != ref:
        pass
    return message


def redis_connections(pid: int, redis_url: str) -> int:
    """TCP connections the process ``pid`` holds to the Redis at ``redis_url``."""
    port = urlsplit(redis_url).port
    return sum(1 for c in psutil.Process(pid).net_connections("tcp")
               if c.raddr and c.raddr.port == port)


def closing_frame(ws: ClientConnection) -> Close | None:
    """Read until the connection closes; the close frame the server sent, if any."""
    try:
        while True:
            ws.recv(timeout=5)
    except ConnectionClosed as closed:
        return closed.rcvd


def assert_clean_log(process: Process) -> None:
    log = process.log()
    assert "Traceback" not in log and " ERROR " not in log, log[-3000:]


def test_a_command_flood_gets_one_reply_each_and_cannot_monopolise_redis(ws_streamer, mint,
                                                                         config):
    pid = ws_streamer.popen.pid
    before = redis_connections(pid, config.redis_url)
    with connect(ws_url(ws_streamer.url, token=mint("mallory")), max_queue=None) as flood, \
            connect(ws_url(ws_streamer.url, token=mint("bob"))) as bob:
        began = time.monotonic()
        for ref in range(FLOOD):
            flood.send(json.dumps({"op": "read", "all": True, "ref": ref}))
            if ref == FLOOD // 2:
                # Another user, mid-flood: served, and not refused for mallory's sake.
                assert command(bob, "read", all=True)["ok"] is True
        replies = [recv_json(flood, timeout=20) for _ in range(FLOOD)]
        elapsed = time.monotonic() - began
        assert Counter(r["ref"] for r in replies) == Counter(range(FLOOD))
        done = [r["ref"] for r in replies if r["ok"]]
        codes = Counter(r["error"]["code"] for r in replies if not r["ok"])
        assert set(codes) <= {"busy", "rate_limited"}, codes
        # One at a time, in arrival order, at the per-connection rate.
        assert done == sorted(done)
        assert len(done) <= BURST + MAX_QUEUED + RATE * elapsed, (len(done), elapsed)
        hints = [r["retry_after"] for r in replies if not r["ok"]
                 and r["error"]["code"] == "rate_limited"]
        time.sleep(max(hints, default=0))  # as the hint says
        assert command(flood, "ping")["reply"] == "pong"
        # One pool connection per connection running commands, not the whole pool.
        assert redis_connections(pid, config.redis_url) - before <= 2
    assert_clean_log(ws_streamer)


def test_commands_past_the_rate_are_refused_with_a_retry_hint(ws_streamer, mint):
    """Sent a queue's worth at a time, so that the rate, not the queue, refuses them."""
    with connect(ws_url(ws_streamer.url, token=mint("mallory"))) as ws:
        replies: list[dict] = []
        while not any(r["ok"] is False for r in replies):
            assert len(replies) < 400, "never refused for going past the rate"
            for ref in range(len(replies), len(replies) + MAX_QUEUED):
                ws.send(json.dumps({"op": "ping", "ref": ref}))
            replies += [recv_json(ws) for _ in range(MAX_QUEUED)]
        refused = [r for r in replies if r["ok"] is False]
        assert {r["error"]["code"] for r in refused} == {"rate_limited"}
        assert min(r["ref"] for r in refused) >= BURST, "refused within the burst"
        hint = refused[0]["retry_after"]
        assert 0 < hint <= 1 / RATE + 0.01
        time.sleep(hint)
        assert command(ws, "ping")["ok"] is True
    assert_clean_log(ws_streamer)


@pytest.mark.parametrize("text", [
    "[" * 5000,
    '{"op": "ping", "ref": ' + "1" * 5000 + "}",
    '{"op": "ping", "ref": 1e999}',
    '{"op": "ping", "ref": NaN}',
], ids=["deep nesting", "huge integer", "infinite float", "NaN"])
def test_hostile_json_is_refused_and_the_connection_still_answers(ws_streamer, mint, text):
    with connect(ws_url(ws_streamer.url, token=mint("mallory"))) as ws:
        ws.send(text)
        refusal = recv_json(ws)
        assert refusal["ok"] is False and refusal["error"]["code"] == "invalid_json"
        assert command(ws, "ping")["reply"] == "pong"
    assert_clean_log(ws_streamer)


def test_ws_without_a_websocket_handshake_gets_a_json_error(ws_streamer, mint):
    url = f"{ws_streamer.url}/ws"
    plain = httpx.get(url, params={"token": mint("mallory")})
    assert plain.status_code == 426
    assert plain.headers["upgrade"] == "websocket"
    assert plain.json()["error"]["code"] == "upgrade_required"
    keyless = httpx.get(url, params={"token": mint("mallory")},
                        headers={"Connection": "Upgrade", "Upgrade": "websocket"})
    assert keyless.status_code == 400
    assert keyless.json()["error"]["code"] == "bad_request"
    assert_clean_log(ws_streamer)


def test_revocation_closes_websockets_with_a_close_frame(ws_streamer, api, config):
    token, grant = tokens.mint(config.secret, "alice", ttl=600)
    with connect(ws_url(ws_streamer.url, token=token)) as ws:
        assert command(ws, "ping")["ok"] is True
        assert api.post("/api/tokens/revoke",
                        json={"token_id": grant.token_id}).status_code == 200
        frame = closing_frame(ws)
    assert frame is not None, "closed without a close frame"
    assert (frame.code, frame.reason) == (1008, "token revoked")


def test_a_stopping_streamer_closes_websockets_with_a_close_frame(mint, child_env):
    process, url = start_streamer({**child_env, "HERALD_DRAIN_SECONDS": "0.5"},
                                  name="streamer-ws-stop")
    try:
        with connect(ws_url(url, token=mint("alice"))) as ws:
            assert command(ws, "ping")["ok"] is True
            process.popen.send_signal(signal.SIGTERM)
            frame = closing_frame(ws)
        assert frame is not None and frame.code == 1012
    finally:
        assert process.stop() == 0


def test_an_exhausted_redis_pool_answers_unavailable_and_logs_one_line(own_redis, own_env,
                                                                       mint):
    process, url = start_streamer(own_env(own_redis), name="streamer-ws-pool")
    try:
        with ExitStack() as stack:
            # Two more connections than the streamer's pool for commands has.
            sockets = [stack.enter_context(connect(ws_url(url, token=mint("mallory"))))
                       for _ in range(REDIS_CONNECTIONS + 2)]
            # Writes stall: every read holds its pool connection until the pause ends.
            redis.Redis.from_url(own_redis.url).execute_command(
                "CLIENT", "PAUSE", int((POOL_WAIT + 2) * 1000), "WRITE")
            for ws in sockets:
                ws.send(json.dumps({"op": "read", "all": True, "ref": "r"}))
            outcomes = Counter(
                "ok" if reply["ok"] else reply["error"]["code"]
                for reply in (recv_json(ws, timeout=POOL_WAIT + 10) for ws in sockets))
        assert outcomes == {"ok": REDIS_CONNECTIONS, "unavailable": 2}
        warnings = [line for line in process.log().splitlines()
                    if "No connection available" in line]
        assert len(warnings) == 1 and " WARNING " in warnings[0], warnings
        assert_clean_log(process)
    finally:
        process.stop()


@pytest.mark.parametrize("token", ["\ud800.e30.e30", "é.é.é", "a.b.c.d", "\x00"],
                         ids=["lone surrogate", "non-ascii", "four segments", "nul"])
def test_an_auth_command_with_a_token_that_is_no_jwt_is_refused(ws_streamer, mint, token):
    """JSON may carry any text, a lone surrogate too: it is refused like any bad token."""
    with connect(ws_url(ws_streamer.url, token=mint("mallory"))) as ws:
        refusal = command(ws, "auth", token=token)
        assert refusal["ok"] is False and refusal["error"]["code"] == "unauthorized"
        assert refusal["error"]["message"].startswith("token invalid: ")
        assert command(ws, "ping")["reply"] == "pong"
    assert_clean_log(ws_streamer)
