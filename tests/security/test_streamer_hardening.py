"""The streamer under hostile or careless clients: revocation, limits, slowloris, CORS."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from herald import tokens
from herald.revocation import Revocations
from tasks.events import publish
from tests.conftest import start_streamer, wait_until
from tests.sse import SSEClient

pytestmark = pytest.mark.usefixtures("clean")


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def test_revoked_token_is_refused_and_its_streams_closed_at_once(streamer, api, config):
    token, grant = tokens.mint(config.secret, "alice", ttl=600)
    first = SSEClient(streamer, {"token": token})
    second = SSEClient(streamer, {"token": token})
    other = SSEClient(streamer, {"token": tokens.mint(config.secret, "alice")[0]})
    assert first.status == second.status == other.status == 200
    began = time.monotonic()
    assert api.post("/api/tokens/revoke", json={"token_id": grant.token_id}).status_code == 200
    assert first.wait_closed(3) and second.wait_closed(3)
    print(f"streams closed {time.monotonic() - began:.2f}s after the revocation")
    refused = SSEClient(streamer, {"token": token})
    assert refused.status == 401
    assert "revoked" in refused.body["error"]["message"]
    publish("user:alice", "still here")
    assert [e.json()["data"] for e in other.wait_for(1)] == ["still here"]
    other.close()


def test_revocation_reaches_streams_even_without_the_notice(streamer, services, config, rdb):
    token, grant = tokens.mint(config.secret, "carol", ttl=600)
    client = SSEClient(streamer, {"token": token})
    assert client.status == 200
    # Straight into the deny list, no control-channel notice: the periodic reread acts.
    rdb.zadd(Revocations(rdb, services.keys).key, {grant.token_id: time.time() + 600})
    assert client.wait_closed(6)


def test_connections_per_user_are_limited(mint, child_env):
    process, url = start_streamer({**child_env, "HERALD_MAX_CONNECTIONS_PER_USER": "2"},
                                  name="streamer-limited")
    try:
        open_ = [SSEClient(url, {"token": mint("dave")}) for _ in range(2)]
        third = SSEClient(url, {"token": mint("dave")})
        assert [c.status for c in open_] == [200, 200]
        assert third.status == 429
        assert third.headers["retry-after"] == "5"
        assert SSEClient(url, {"token": mint("erin")}).status == 200
        open_[0].close()
        wait_until(lambda: SSEClient(url, {"token": mint("dave")}).status == 200, 3,
                   what="a freed slot")
    finally:
        process.stop()


def _state(sock: socket.socket) -> str:
    """``open`` (nothing received), ``answered`` (bytes came) or ``closed``."""
    try:
        data = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return "open"
    except ConnectionResetError:
        return "closed"
    return "answered" if data else "closed"


def test_slowloris_connections_are_closed_and_others_served(streamer, mint):
    """A head that keeps trickling in is closed all the same (a deadline for the whole
    head, not an idle timeout), without an answer, while other clients are served."""
    slow = socket.create_connection(("127.0.0.1", _port(streamer)))
    slow.sendall(b"GET /events?token=")
    served_meanwhile = 0
    try:
        while _state(slow) == "open":
            assert served_meanwhile < 60, "a head trickling in is never closed"
            with SSEClient(streamer, {"token": mint("fay")}) as fine:
                assert fine.status == 200
            served_meanwhile += 1
            time.sleep(0.5)  # the slowloris' pace: one byte every half second
            slow.sendall(b"a")
    except BrokenPipeError:
        pass  # closed while it sent
    assert _state(slow) == "closed"
    assert served_meanwhile >= 2, "closed before the head had a chance to finish"
    slow.close()


def test_malformed_query_string_is_a_400(streamer, mint):
    with socket.create_connection(("127.0.0.1", _port(streamer))) as raw:
        raw.sendall(b"GET /events?topics=%ff%fe HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = raw.recv(4096)
    assert answer.startswith(b"HTTP/1.1 400")
    assert b"malformed query string" in answer


def test_last_event_id_cannot_inject_sse_fields(streamer, mint, before_sentinel):
    hostile = "1-1\nevent: admin\ndata: pwned"
    with SSEClient(streamer, {"token": mint("gil"), "last_event_id": hostile}) as client:
        assert client.status == 200
        client.wait_for(1)
        events = before_sentinel(client, "user:gil")
        assert [e.event for e in events] == ["reset"]
        assert events[0].json()["data"]["last_event_id"] == hostile


@pytest.mark.parametrize("origin", ["https://app.example.com", "https://evil.example"])
def test_cors_on_the_streamer_follows_the_configured_origins(mint, origin, child_env):
    process, url = start_streamer({**child_env,
                                   "HERALD_CORS_ORIGINS": "https://app.example.com"},
                                  name="streamer-cors")
    try:
        allowed = origin == "https://app.example.com"
        with SSEClient(url, {"token": mint("hal")}, headers={"Origin": origin}) as stream:
            assert stream.status == 200
            assert stream.headers.get("access-control-allow-origin") == (
                origin if allowed else None)
        preflight = httpx.options(f"{url}/events", headers={
            "Origin": origin, "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization"})
        assert preflight.status_code == (204 if allowed else 403)
        if allowed:
            assert "Authorization" in preflight.headers["access-control-allow-headers"]
    finally:
        process.stop()


def test_cors_on_the_api_follows_the_configured_origins(config, services):
    from werkzeug.serving import make_server

    from api import create_app

    app = create_app(config.replace(cors_origins=("https://app.example.com",)))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    import threading

    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/api/events"
    try:
        good = httpx.options(url, headers={"Origin": "https://app.example.com",
                                           "Access-Control-Request-Method": "POST",
                                           "Access-Control-Request-Headers": "authorization"})
        bad = httpx.options(url, headers={"Origin": "https://evil.example",
                                          "Access-Control-Request-Method": "POST"})
        assert good.headers["access-control-allow-origin"] == "https://app.example.com"
        assert "access-control-allow-origin" not in bad.headers
    finally:
        server.shutdown()


def test_a_cached_token_is_refused_once_revoked(streamer, services, config, rdb):
    token, grant = tokens.mint(config.secret, "hana", ttl=600)
    first = SSEClient(streamer, {"token": token})
    second = SSEClient(streamer, {"token": token})  # the streamer now holds it verified
    assert first.status == second.status == 200
    second.close()
    # Into the deny list without a notice: the periodic reread must still refuse it.
    rdb.zadd(Revocations(rdb, services.keys).key, {grant.token_id: time.time() + 600})
    assert first.wait_closed(6)
    refused = SSEClient(streamer, {"token": token})
    assert refused.status == 401
    assert "revoked" in refused.body["error"]["message"]


def test_a_cached_token_is_refused_once_expired(streamer, config):
    token, grant = tokens.mint(config.secret, "ida", ttl=2)
    with SSEClient(streamer, {"token": token}) as first:
        assert first.status == 200  # verified, and held by the streamer
    wait_until(lambda: time.time() >= grant.expires_at, 4, what="the token's expiry")
    refused = SSEClient(streamer, {"token": token})
    assert refused.status == 401
    assert refused.body["error"] == {"code": "unauthorized", "message": "token expired",
                                     "field": "token"}
    with SSEClient(streamer, {"token": tokens.mint(config.secret, "ida")[0]}) as fresh:
        assert fresh.status == 200


@pytest.mark.parametrize(("head", "reason"), [
    (b"GET /events HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n", b""),
    (b"GET /events HTTP/1.1\r\n\r\n", b"Host"),
    (b"GET /events HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", b"Host"),
    (b"GET /events HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n", b""),
    (b"GET /ev ents HTTP/1.1\r\nHost: x\r\n\r\n", b""),
])
def test_malformed_request_heads_get_a_json_400(streamer, head, reason):
    with socket.create_connection(("127.0.0.1", _port(streamer))) as raw:
        raw.sendall(head)
        raw.settimeout(5)
        answer = _read_all(raw)
    status, _, body = answer.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 400")
    assert b"Content-Type: application/json" in status
    assert body.startswith(b'{"error":{"code":"bad_request","message":"malformed request')
    assert reason in body


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(4096):
        chunks.append(chunk)
    return b"".join(chunks)
