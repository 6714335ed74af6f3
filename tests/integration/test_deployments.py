"""Two deployments side by side on one Redis, told apart only by ``HERALD_PREFIX``.

Both use the same data database and the same broker database; each has its own API and
its own worker. Each deployment's notifications are all delivered, by its own worker
only, and each deployment's control commands reach only its own workers.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from herald.apikeys import ApiKeyStore
from herald.connection import client
from herald.keys import Keys
from tests.conftest import ROOT, Process, start_api, start_worker, wait_until

pytestmark = pytest.mark.usefixtures("clean")
PER_DEPLOYMENT = 10
RECEIVED = re.compile(r"Task herald\.send_notification\[([^\]]+)\] received")


@dataclass
class Deployment:
    name: str
    env: dict[str, str]
    worker: Process
    api: Process
    http: httpx.Client

    def send(self, count: int) -> list[str]:
        ids = []
        for n in range(count):
            answer = self.http.post("/api/notifications", json={
                "recipients": ["alice"], "title": f"{self.name} #{n}"})
            assert answer.status_code == 202, answer.text
            ids.append(answer.json()["id"])
        return ids

    def status(self, notification_id: str) -> str:
        return self.http.get(f"/api/notifications/{notification_id}").json()["status"]

    def ran(self) -> set[str]:
        """Ids of the notification tasks this deployment's worker received (its log)."""
        return set(RECEIVED.findall(self.worker.log()))

    def ping(self) -> str:
        """What ``celery inspect ping`` prints, run as this deployment."""
        command = [sys.executable, "-m", "celery", "-A", "tasks.app", "inspect", "ping",
                   "--timeout", "2"]
        done = subprocess.run(command, env=self.env, cwd=ROOT, capture_output=True,
                              text=True, timeout=60)
        return done.stdout + done.stderr

    def stop(self) -> None:
        self.http.close()
        self.api.stop()
        self.worker.stop()


@pytest.fixture
def deployments(config, child_env) -> Iterator[tuple[Deployment, Deployment]]:
    started: list[Deployment] = []
    try:
        for name in ("a", "b"):
            prefix = f"{config.prefix}-{name}"
            env = {**child_env, "HERALD_PREFIX": prefix}
            worker = start_worker(env, name=f"worker-{name}")
            api, url = start_api(env, name=f"api-{name}")
            key, _ = ApiKeyStore(client(config.redis_url), Keys(prefix)).create("tests")
            http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"},
                                timeout=10)
            started.append(Deployment(name, env, worker, api, http))
        yield started[0], started[1]
    finally:
        for deployment in started:
            deployment.stop()


def test_each_deployment_delivers_its_own_notifications_with_its_own_worker(deployments):
    a, b = deployments
    sent = {a.name: a.send(PER_DEPLOYMENT), b.name: b.send(PER_DEPLOYMENT)}

    def all_delivered() -> bool:
        return all(d.status(i) == "delivered" for d in (a, b) for i in sent[d.name])

    def states() -> dict[str, list[str]]:
        return {d.name: [d.status(i) for i in sent[d.name]] for d in (a, b)}

    try:
        wait_until(all_delivered, 30, every=0.2, what="every notification delivered")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {states()}") from None
    assert a.ran() == set(sent["a"]), a.worker.log()
    assert b.ran() == set(sent["b"]), b.worker.log()


def test_control_commands_reach_only_the_deployments_own_workers(deployments):
    a, b = deployments
    node = re.compile(r"(worker-[ab]-[0-9a-f]+@test): OK")
    assert [n.split("-")[1] for n in node.findall(a.ping())] == ["a"]
    assert [n.split("-")[1] for n in node.findall(b.ping())] == ["b"]
