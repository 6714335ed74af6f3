"""A real Prometheus (Debian's ``prometheus`` binary) scraping a real ``herald run
--streamers 2`` every second, queried through its HTTP API: deliveries have a rate, the
connection gauge summed over both streamer processes is the number of open test clients,
and a stalled client shows in the drop counter.

The fixture writes Prometheus' configuration from the stack's endpoints (the rule
``herald run`` follows, ``herald.endpoints``), starts it on a free port with its data in
a temporary directory, and stops it after the module.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from herald import access
from herald import services as herald_services
from herald.stack import free_port
from tests.conftest import Process, wait_until
from tests.sse import SSEClient
from tests.stack import Stack, started

PROMETHEUS = shutil.which("prometheus")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(PROMETHEUS is None,
                       reason="prometheus not installed (.ci/run installs Debian's package)"),
]
CLIENTS = 6


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    # A small buffer per client, so a stalled one is dropped after a few events, and a
    # short write timeout, so its connection is closed soon after.
    with started(["run", "--streamers", "2"], streamers=2,
                 extra={"HERALD_CLIENT_BUFFER": str(64 * 1024),
                        "HERALD_SEND_BUFFER": str(16 * 1024),
                        "HERALD_WRITE_TIMEOUT": "1"}) as running:
        yield running


class Prometheus:
    """``prometheus`` on a free port, scraping ``targets`` (job -> host:port) every 1 s."""

    def __init__(self, targets: dict[str, list[str]]) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="herald-prometheus-"))
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": found}]}
                               for job, found in targets.items()],
        }
        (self.dir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = Process("prometheus", [
            str(PROMETHEUS), f"--config.file={self.dir / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn",
        ], {"PATH": "/usr/bin:/bin"})
        wait_until(self.ready, 30, every=0.2, what="Prometheus to be ready")

    def ready(self) -> bool:
        assert self.process.popen.poll() is None, self.process.log()
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def query(self, promql: str) -> list[dict]:
        answer = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5)
        body = answer.json()
        assert body["status"] == "success", body
        return body["data"]["result"]

    def value(self, promql: str) -> float | None:
        """The single value of an instant query; None when it has no series."""
        result = self.query(promql)
        return float(result[0]["value"][1]) if result else None

    def targets(self) -> list[dict]:
        answer = httpx.get(f"{self.url}/api/v1/targets", timeout=5).json()
        return answer["data"]["activeTargets"]

    def stop(self) -> None:
        self.process.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def prometheus(stack: Stack) -> Iterator[Prometheus]:
    targets: dict[str, list[str]] = {}
    for endpoint in stack.metrics():
        job = f"herald-{endpoint.service.split('-')[0]}"
        targets.setdefault(job, []).append(f"127.0.0.1:{endpoint.port}")
    server = Prometheus(targets)
    try:
        yield server
    finally:
        server.stop()


def _up(prometheus: Prometheus, job: str | None = None) -> list[str]:
    """The instances Prometheus scrapes successfully (of ``job``, or of all)."""
    return [t["labels"]["instance"] for t in prometheus.targets()
            if t["health"] == "up" and job in (None, t["labels"]["job"])]


def test_prometheus_sees_deliveries_connections_and_a_dropped_client(stack, prometheus):
    streamers = [f"127.0.0.1:{e.port}" for e in stack.metrics()
                 if e.service.startswith("streamer-")]
    assert len(streamers) == 2
    wait_until(lambda: sorted(_up(prometheus, "herald-streamer")) == sorted(streamers), 60,
               every=0.5, what="both streamer processes up in Prometheus")
    cfg = stack.config
    publisher = herald_services.build(cfg).publisher
    grant = ("load",)
    clients = [SSEClient(stack.url("streamer"),
                         {"token": access.issue(cfg, f"u{i}", grant, 600)[0],
                          "topics": "load"}) for i in range(CLIENTS)]
    stalled: SSEClient | None = None
    try:
        assert {c.status for c in clients} == {200}
        ids = [publisher.publish("load", {"n": n}, "tick") for n in range(50)]
        for client in clients:
            assert [e.id for e in client.wait_for(50, timeout=20)] == ids

        wait_until(lambda: (prometheus.value(
            "sum(rate(herald_streamer_deliveries_total[5s]))") or 0) > 0, 30, every=0.5,
            what="a non-zero delivery rate")
        wait_until(lambda: prometheus.value("sum(herald_streamer_connections)") == CLIENTS,
                   30, every=0.5, what=f"{CLIENTS} connections summed over processes")
        per_process = prometheus.query("sum by (instance) (herald_streamer_connections)")
        assert len(per_process) == 2  # both processes report, whatever the split
        assert sum(float(r["value"][1]) for r in per_process) == CLIENTS

        before = prometheus.value("sum(herald_streamer_clients_dropped_total)") or 0.0
        # On a topic of its own: the bulk would overrun the readers' small buffers too.
        stalled = SSEClient(stack.url("streamer"),
                            {"token": access.issue(cfg, "stuck", ("bulk",), 600)[0],
                             "topics": "bulk"}, read=False, rcvbuf=4096)
        assert stalled.status == 200
        blob = "x" * 4000
        for n in range(300):  # far more than the socket and the 64 KiB buffer hold
            publisher.publish("bulk", {"n": n, "blob": blob}, "bulk")
        wait_until(lambda: (prometheus.value(
            "sum(herald_streamer_clients_dropped_total)") or 0) > before, 30, every=0.5,
            what="the stalled client in the drop counter")
        wait_until(lambda: prometheus.value("sum(herald_streamer_connections)") == CLIENTS,
                   30, every=0.5, what="the stalled client gone from the gauge")
    finally:
        for client in clients:
            client.close()
        if stalled is not None:
            stalled.close()



def test_every_metrics_endpoint_herald_run_announces_is_up_in_prometheus(stack, prometheus):
    announced = sorted(f"127.0.0.1:{e.port}" for e in stack.metrics())
    assert len(announced) == 5  # api, worker, outbound, streamer-1, streamer-2
    wait_until(lambda: sorted(_up(prometheus)) == announced, 60, every=0.5,
               what="every endpoint up in Prometheus")
    for job in ("herald-api", "herald-worker", "herald-outbound"):
        assert prometheus.query(f'up{{job="{job}"}} == 1'), job
