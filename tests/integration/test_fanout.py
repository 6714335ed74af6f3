"""Fan-out correctness at scale: order, isolation, slow clients, several processes."""

from __future__ import annotations

import httpx
import pytest

from tasks.events import publish
from tests.conftest import start_streamer, wait_until
from tests.sse import SSEClient

pytestmark = pytest.mark.usefixtures("clean")


def test_500_clients_receive_all_20_events_in_order(streamer, mint):
    clients = [SSEClient(streamer, {"token": mint(f"u{i}"), "topics": "broadcast"})
               for i in range(500)]
    try:
        assert {c.status for c in clients} == {200}
        sent = [publish("broadcast", {"seq": n}, "tick") for n in range(20)]
        sentinel = publish("broadcast", "sentinel", "sentinel")
        for client in clients:
            events = client.events_before(sentinel)
            assert [e.id for e in events] == sent, "missing, duplicated or out of order"
            assert [e.json()["data"]["seq"] for e in events] == list(range(20))
    finally:
        for client in clients:
            client.close()


def test_each_user_sees_only_its_own_topic(streamer, mint):
    users = [f"user{i}" for i in range(50)]
    clients = {u: SSEClient(streamer, {"token": mint(u)}) for u in users}
    try:
        for round_ in range(3):
            for user in users:
                publish(f"user:{user}", {"for": user, "round": round_}, "private")
        sentinels = {user: publish(f"user:{user}", "sentinel", "sentinel") for user in users}
        for user, client in clients.items():
            events = client.events_before(sentinels[user])
            assert len(events) == 3
            assert {e.json()["data"]["for"] for e in events} == {user}
            assert {e.json()["topic"] for e in events} == {f"user:{user}"}
    finally:
        for client in clients.values():
            client.close()


def test_a_stalled_client_is_dropped_and_the_rest_keep_up(mint, child_env):
    env = {**child_env, "HERALD_CLIENT_BUFFER": str(64 * 1024)}
    process, url = start_streamer(env, name="streamer-slow")
    try:
        grant = ("firehose",)
        readers = [SSEClient(url, {"token": mint(f"r{i}", grant), "topics": "firehose"})
                   for i in range(5)]
        stalled = SSEClient(url, {"token": mint("stuck", grant), "topics": "firehose"},
                            read=False, rcvbuf=4096)
        assert {r.status for r in readers} == {stalled.status} == {200}
        # More than the kernel buffers for the stalled socket (HERALD_SEND_BUFFER, 256 KiB,
        # which Linux doubles), so the streamer's own 64 KiB buffer overflows.
        blob = "x" * 4_000
        ids = [publish("firehose", {"seq": n, "blob": blob}, "bulk") for n in range(300)]
        for reader in readers:
            assert [e.id for e in reader.wait_for(300, timeout=20)] == ids
        wait_until(lambda: httpx.get(f"{url}/healthz").json()["dropped_slow"] == 1, 10,
                   what="the stalled client to be dropped")
        health = httpx.get(f"{url}/healthz").json()
        assert health["clients"] == 5
        assert "too slow" in process.log()
        assert process.popen.poll() is None and "Traceback" not in process.log()
        for reader in readers:
            reader.close()
        stalled.close()
    finally:
        process.stop()


def test_several_processes_serve_the_same_port(mint, child_env):
    process, url = start_streamer({**child_env, "HERALD_STREAMER_PROCESSES": "2"},
                                  name="streamer-multi")
    try:
        pids = {httpx.get(f"{url}/healthz").json()["pid"] for _ in range(50)}
        assert len(pids) == 2, pids
        clients = [SSEClient(url, {"token": mint(f"m{i}"), "topics": "broadcast"})
                   for i in range(40)]
        sent = [publish("broadcast", n) for n in range(5)]
        for client in clients:
            assert [e.id for e in client.wait_for(5)] == sent
        for client in clients:
            client.close()
    finally:
        assert process.stop() == 0
    assert "stopped" in process.log()
