"""The streamer's Prometheus metrics, scraped over HTTP from real streamer processes.

Every figure is read from ``/metrics`` on the process' internal port and parsed with
``prometheus_client.parser``; counters are compared before and after what a test does,
since one streamer serves several tests.
"""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Callable, Iterator
from urllib.parse import urlencode

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect

from tasks.events import publish
from tests.conftest import Process, _wait_healthy, start_streamer, wait_until
from tests.sse import SSEClient

pytestmark = pytest.mark.usefixtures("clean")

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive ports that are free right now."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            first = probe.getsockname()[1]
        if first + count > 65536:
            continue
        try:
            held = []
            for port in range(first, first + count):
                sock = socket.socket()
                held.append(sock)
                sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()
        return first
    raise AssertionError(f"no {count} consecutive free ports")


def scrape(url: str) -> Samples:
    """Every sample of ``url``, by name and labels."""
    text = httpx.get(url, timeout=5).text
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


class Metered:
    """A streamer process and the ``/metrics`` URL of each of its processes."""

    def __init__(self, env: dict[str, str], processes: int = 1, name: str = "metered") -> None:
        first = free_ports(processes)
        self.metrics = [f"http://127.0.0.1:{first + i}/metrics" for i in range(processes)]
        env = {**env, "HERALD_STREAMER_METRICS_PORT": str(first),
               "HERALD_STREAMER_PROCESSES": str(processes)}
        self.process, self.url = start_streamer(env, name=name)
        for url in self.metrics:
            _wait_healthy(self.process, url)

    def value(self, name: str, **labels: str) -> float:
        """``name`` summed over every process."""
        return sum(value(scrape(url), name, **labels) for url in self.metrics)

    def stop(self) -> int:
        return self.process.stop()


@pytest.fixture(scope="module")
def metered(child_env: dict[str, str]) -> Iterator[Metered]:
    env = {**child_env, "HERALD_MAX_CONNECTIONS_PER_USER": "2",
           "HERALD_CLIENT_BUFFER": str(64 * 1024), "HERALD_STREAMER_HEAD_TIMEOUT": "0.3"}
    streamer = Metered(env)
    yield streamer
    assert streamer.stop() == 0


def ws_url(streamer: str, **params: str) -> str:
    return streamer.replace("http://", "ws://") + "/ws?" + urlencode(params)


def ws_events(ws, count: int) -> list[str]:
    """The ids of the next ``count`` events a WebSocket receives (skipping replies)."""
    ids: list[str] = []
    while len(ids) < count:
        message = json.loads(ws.recv(timeout=10))
        if "reply" not in message:
            ids.append(message["id"])
    return ids


def sse(url: str, mint: Callable[..., str], user: str, topic: str, **kwargs) -> SSEClient:
    return SSEClient(url, {"token": mint(user, (topic,)), "topics": topic}, **kwargs)


def test_metrics_are_served_on_their_own_port_and_never_on_the_public_one(metered):
    assert httpx.get(metered.url + "/metrics").status_code == 404
    assert value(scrape(metered.metrics[0]), "herald_streamer_topics") >= 0
    port = metered.metrics[0].rsplit(":", 1)[1].split("/")[0]
    assert f"streamer metrics on http://127.0.0.1:{port}/metrics" in metered.process.log()


def test_connections_by_transport_deliveries_bytes_and_ages(metered, mint):
    connections = "herald_streamer_connections"
    before = {name: metered.value(name) for name in (
        "herald_streamer_events_received_total", "herald_streamer_deliveries_total",
        "herald_streamer_bytes_written_total", "herald_streamer_event_age_seconds_count")}
    readers = [sse(metered.url, mint, f"m{i}", "metrics") for i in range(2)]
    with connect(ws_url(metered.url, token=mint("w0", ("metrics",)), topics="metrics")) as ws:
        assert {r.status for r in readers} == {200}
        assert metered.value(connections, transport="sse") == 2
        assert metered.value(connections, transport="ws") == 1
        assert metered.value("herald_streamer_topics") == 1
        ids = [publish("metrics", {"n": n}, "tick") for n in range(5)]
        for reader in readers:
            assert [e.id for e in reader.wait_for(5)] == ids
        assert ws_events(ws, 5) == ids
        after = {name: metered.value(name) for name in before}
        assert after["herald_streamer_events_received_total"] - before[
            "herald_streamer_events_received_total"] == 5
        assert after["herald_streamer_deliveries_total"] - before[
            "herald_streamer_deliveries_total"] == 15
        assert after["herald_streamer_bytes_written_total"] - before[
            "herald_streamer_bytes_written_total"] > 15 * 50
        assert after["herald_streamer_event_age_seconds_count"] - before[
            "herald_streamer_event_age_seconds_count"] == 5
        assert metered.value("herald_streamer_event_age_seconds_bucket", le="+Inf") == \
            after["herald_streamer_event_age_seconds_count"]
        readers[0].close()
        wait_until(lambda: metered.value(connections, transport="sse") == 1,
                   what="the closed client to leave the gauge")
    readers[1].close()
    wait_until(lambda: metered.value(connections, transport="sse") == 0
               and metered.value(connections, transport="ws") == 0,
               what="every client to leave the gauge")
    assert metered.value("herald_streamer_topics") == 0


def _refused(metered: Metered) -> dict[str, float]:
    reasons = ("401", "403", "429", "431", "slow_head")
    return {reason: metered.value("herald_streamer_handshakes_refused_total", reason=reason)
            for reason in reasons}


def test_refused_handshakes_are_counted_by_reason(metered, mint):
    before = _refused(metered)
    assert SSEClient(metered.url, {"token": "not-a-token", "topics": "metrics"}).status == 401
    assert SSEClient(metered.url, {"token": mint("eve"), "topics": "secret"}).status == 403
    pair = [sse(metered.url, mint, "greedy", "metrics") for _ in range(2)]
    assert sse(metered.url, mint, "greedy", "metrics").status == 429
    huge = SSEClient(metered.url, {"token": mint("big")}, headers={"X-Pad": "x" * 9000})
    assert huge.status == 431
    port = int(metered.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as slow:
        slow.sendall(b"GET /events?token=")
        wait_until(lambda: _refused(metered)["slow_head"] > before["slow_head"],
                   what="the slow head to be counted")
    after = _refused(metered)
    assert {reason: after[reason] - before[reason] for reason in after} == {
        "401": 1, "403": 1, "429": 1, "431": 1, "slow_head": 1}
    for client in pair:
        client.close()


def test_a_stalled_client_dropped_is_counted(metered, mint):
    dropped = "herald_streamer_clients_dropped_total"
    before = metered.value(dropped, reason="too_slow")
    reader = sse(metered.url, mint, "reader", "firehose")
    stalled = sse(metered.url, mint, "stuck", "firehose", read=False, rcvbuf=4096)
    assert reader.status == stalled.status == 200
    blob = "x" * 4_000  # 300 of them: more than the kernel and the 64 KiB buffer hold
    ids = [publish("firehose", {"seq": n, "blob": blob}, "bulk") for n in range(300)]
    assert [e.id for e in reader.wait_for(300, timeout=20)] == ids
    wait_until(lambda: metered.value(dropped, reason="too_slow") == before + 1,
               what="the stalled client to be counted as dropped")
    assert metered.value("herald_streamer_connections", transport="sse") == 1
    reader.close()
    stalled.close()


def test_resumes_replayed_events_and_resets_are_counted(metered, mint):
    before = {name: metered.value(name) for name in (
        "herald_streamer_resumes_total", "herald_streamer_replayed_events_total")}
    resets_before = metered.value("herald_streamer_resets_total", reason="retention")
    ids = [publish("user:rita", {"n": n}, "tick") for n in range(3)]
    resumed = SSEClient(metered.url, {"token": mint("rita")},
                        headers={"Last-Event-ID": ids[0]})
    assert [e.id for e in resumed.wait_for(2)] == ids[1:]
    old = SSEClient(metered.url, {"token": mint("rita")}, headers={"Last-Event-ID": "1-0"})
    assert [e.event for e in old.wait_for(1)] == ["reset"]
    assert metered.value("herald_streamer_resumes_total") - before[
        "herald_streamer_resumes_total"] == 2
    assert metered.value("herald_streamer_replayed_events_total") - before[
        "herald_streamer_replayed_events_total"] == 2
    assert metered.value("herald_streamer_resets_total", reason="retention") == \
        resets_before + 1
    resumed.close()
    old.close()


def test_two_processes_each_serve_their_own_metrics_and_they_add_up(child_env, mint):
    streamer = Metered(child_env, processes=2, name="metered-x2")
    try:
        clients = [sse(streamer.url, mint, f"p{i}", "spread") for i in range(8)]
        with connect(ws_url(streamer.url, token=mint("pw", ("spread",)),
                            topics="spread")):
            assert {c.status for c in clients} == {200}
            assert streamer.value("herald_streamer_connections", transport="sse") == 8
            assert streamer.value("herald_streamer_connections", transport="ws") == 1
            per_process = [value(scrape(url), "herald_streamer_connections", transport="sse")
                           for url in streamer.metrics]
            assert sum(per_process) == 8
            ids = [publish("spread", {"n": n}, "tick") for n in range(3)]
            for client in clients:
                assert [e.id for e in client.wait_for(3)] == ids
            assert streamer.value("herald_streamer_deliveries_total") == 27
        for client in clients:
            client.close()
    finally:
        assert streamer.stop() == 0


@pytest.mark.faults
def test_a_redis_restart_is_counted_as_a_reconnect(own_redis, own_env):
    streamer = Metered(own_env(own_redis), name="metered-redis")
    try:
        reconnects = "herald_streamer_redis_reconnects_total"
        assert streamer.value(reconnects) == 0
        own_redis.stop()
        own_redis.start()
        wait_until(lambda: streamer.value(reconnects) == 1, 30,
                   what="the subscription to be made again")
        assert httpx.get(streamer.url + "/healthz").status_code == 200
    finally:
        assert streamer.stop() == 0


def test_a_metrics_port_in_use_stops_the_streamer_with_one_line(child_env):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = Process("metered-clash", [
            sys.executable, "-m", "streamer", "--port", str(free_ports(1)), "--metrics-port",
            str(port)], child_env)
        assert process.popen.wait(20) != 0
    assert f"cannot serve metrics on 127.0.0.1:{port}" in process.log()
