"""The streamer's timings are settings, and a streamer honours the values it is given.

Each test starts a streamer with one timing far shorter than its default and checks an
effect that the default would not produce within the test's deadline.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import pytest
import redis

from herald import tokens
from herald.revocation import Revocations
from tasks.events import publish
from tests.conftest import Process, start_streamer, wait_until
from tests.sse import SSEClient

pytestmark = pytest.mark.usefixtures("clean")


@pytest.fixture(scope="module")
def quick(child_env: dict[str, str]) -> Iterator[tuple[Process, str]]:
    """A streamer with short head, write and revocation timings (defaults 5, 30, 3 s)."""
    process, url = start_streamer({
        **child_env, "HERALD_STREAMER_HEAD_TIMEOUT": "0.5", "HERALD_WRITE_TIMEOUT": "0.5",
        "HERALD_REVOCATION_POLL": "0.2",
        # A stalled client must be closed by the write deadline, not for its size.
        "HERALD_CLIENT_BUFFER": str(16 << 20), "HERALD_SEND_BUFFER": "4096",
    }, name="streamer-quick")
    yield process, url
    process.stop()


def _clients(url: str) -> int:
    return httpx.get(f"{url}/healthz").json()["clients"]


def test_the_request_head_timeout_is_the_configured_one(quick):
    _, url = quick
    with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1]))) as slow:
        slow.sendall(b"GET /events?token=")
        slow.settimeout(3)  # well under the default 5 s
        assert slow.recv(100) == b""  # closed, without an answer


def test_the_revocation_poll_is_the_configured_one(quick, config, services, rdb):
    _, url = quick
    token, grant = tokens.mint(config.secret, "carol", ttl=600)
    with SSEClient(url, {"token": token}) as client:
        assert client.status == 200
        # Into the deny list without a notice: only the periodic reread notices it.
        rdb.zadd(Revocations(rdb, services.keys).key, {grant.token_id: time.time() + 600})
        assert client.wait_closed(2)  # the default poll is 3 s


def test_the_write_deadline_is_the_configured_one(quick, mint):
    _, url = quick
    stalled = SSEClient(url, {"token": mint("stuck"), "topics": "user:stuck"}, read=False,
                        rcvbuf=4096)
    try:
        assert stalled.status == 200
        assert _clients(url) == 1
        blob = "x" * 4_000
        for n in range(100):  # far more than the kernel buffers, far less than 16 MiB
            publish("user:stuck", {"seq": n, "blob": blob})
        wait_until(lambda: _clients(url) == 0, 10, what="the stalled client to be closed")
        health = httpx.get(f"{url}/healthz").json()
        assert health["dropped_slow"] == 0, "closed for its size, not by the write deadline"
    finally:
        stalled.close()


def test_the_subscribe_timeout_is_the_configured_one(own_redis, own_env, mint):
    process, url = start_streamer(own_env(own_redis, HERALD_SUBSCRIBE_TIMEOUT="0.5"),
                                  name="streamer-subscribe")
    try:
        # Redis answers nothing for a while: the subscription is never confirmed.
        redis.Redis.from_url(own_redis.url).execute_command("CLIENT", "PAUSE", 4000, "ALL")
        with SSEClient(url, {"token": mint("dora")}, timeout=3) as client:  # default 5 s
            assert client.status == 503
            assert client.body["error"]["code"] == "unavailable"
    finally:
        process.stop()


def test_the_pubsub_keepalive_and_silence_are_the_configured_ones(own_redis, own_env):
    process, url = start_streamer(own_env(own_redis, HERALD_PUBSUB_KEEPALIVE="0.2",
                                          HERALD_PUBSUB_SILENCE="0.6"),
                                  name="streamer-silence")
    try:
        redis.Redis.from_url(own_redis.url).execute_command("CLIENT", "PAUSE", 3000, "ALL")
        wait_until(lambda: "no reply from Redis for 0.6s" in process.log(), 2.8,
                   what="the silent subscription to be dropped")  # defaults: 15 s, 45 s
        wait_until(lambda: httpx.get(f"{url}/healthz").status_code == 200, 10,
                   what="the subscription to come back")
    finally:
        process.stop()
