"""Prometheus metrics of the API and the workers, scraped over HTTP from real processes:
the API under gunicorn with two workers (one ``/metrics`` served by its master), a
prefork worker (jobs and in-app) and a gevent worker (webhooks), each serving its own.
No worker consumes the e-mail queue, so its tasks wait there.

The module runs on a Redis of its own (like ``test_webhooks``), so no worker of the
session takes its tasks. Counters are compared before and after what a test does; the
data database is emptied before each test, the broker never (its workers stay up).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import psutil
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from herald import config as herald_config
from herald import services as herald_services
from herald.keys import Keys
from herald.services import Services
from herald.stack import free_port
from tests.conftest import Process, start_api, start_worker, wait_until
from tests.integration.test_webhooks import FAST, Receiver, notify, register, settled

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
SHOW = "/api/notifications/<notification_id>"


def scrape(url: str) -> Samples:
    """Every sample of a ``/metrics`` answer, parsed as Prometheus parses it."""
    answer = httpx.get(url, timeout=10)
    assert answer.status_code == 200, answer.text
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(answer.text)
            for sample in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@dataclass
class Stack:
    env: dict[str, str]
    api: Process
    api_url: str
    api_metrics: str
    inapp_metrics: str  # prefork worker: jobs and in-app
    webhook_metrics: str  # gevent worker: webhooks
    svc: Services
    data: redis.Redis

    @property
    def keys(self) -> Keys:
        return self.svc.keys

    def client(self, key: str | None = None) -> httpx.Client:
        key = key or self.svc.apikeys.create("metrics tests")[0]
        return httpx.Client(base_url=self.api_url, timeout=10,
                            headers={"Authorization": f"Bearer {key}"})


def _metrics_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/metrics"


@pytest.fixture(scope="module")
def stack(module_redis: object, own_env: Callable[..., dict[str, str]]) -> Iterator[Stack]:
    env = own_env(module_redis, **FAST, HERALD_PUBLISH_RATE="0.01",
                  HERALD_PUBLISH_BURST="3")
    keys = Keys(env["HERALD_PREFIX"])
    ports = [free_port() for _ in range(3)]
    started: list[Process] = []
    try:
        api, api_url = start_api({**env, "HERALD_API_METRICS_PORT": str(ports[0]),
                                  "HERALD_API_WORKERS": "2"}, name="metrics-api")
        started.append(api)
        started.append(start_worker({**env, "HERALD_WORKER_METRICS_PORT": str(ports[1])},
                                    name="metrics-inapp", pool="prefork", concurrency=2,
                                    queues=[keys.task_queue, keys.channel_queue("inapp")]))
        started.append(start_worker({**env, "HERALD_WORKER_METRICS_PORT": str(ports[2])},
                                    name="metrics-webhook", pool="gevent", concurrency=10,
                                    queues=[keys.channel_queue("webhook")]))
        svc = herald_services.build(herald_config.load(env))
        yield Stack(env, api, api_url, *(_metrics_url(p) for p in ports), svc,
                    redis.Redis.from_url(env["REDIS_URL"]))
    finally:
        for process in started:
            process.stop()


@pytest.fixture
def fresh(stack: Stack) -> Stack:
    """The stack with its data database emptied (API keys, records, webhooks)."""
    stack.data.flushdb()
    return stack


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


# The API.

def _workers(master: Process) -> set[int]:
    return {child.pid for child in psutil.Process(master.popen.pid).children()}


def _reload(master: Process) -> None:
    """Replace every gunicorn worker (SIGHUP): new processes, the old ones exit."""
    old = _workers(master)
    os.kill(master.popen.pid, signal.SIGHUP)
    wait_until(lambda: len(_workers(master)) == 2 and not _workers(master) & old, 30,
               what="new gunicorn workers")


def test_requests_add_up_over_every_gunicorn_worker(fresh: Stack):
    before = scrape(fresh.api_metrics)
    with fresh.client() as api:
        key = api.headers["Authorization"]
    for batch in range(2):
        for i in range(10):  # a connection each: any worker may take it
            answer = httpx.get(f"{fresh.api_url}/api/notifications/n_{batch}{i}nope",
                               headers={"Authorization": key}, timeout=10)
            assert answer.status_code == 404
        if batch == 0:
            _reload(fresh.api)  # the second ten go to workers that did not count the first
    assert httpx.get(f"{fresh.api_url}/no/such/page", timeout=10).status_code == 404

    after = scrape(fresh.api_metrics)
    labels = {"route": SHOW, "method": "GET", "status": "404"}
    assert (value(after, "herald_api_requests_total", **labels)
            - value(before, "herald_api_requests_total", **labels)) == 20
    seconds = {"route": SHOW, "method": "GET"}
    assert (value(after, "herald_api_request_seconds_count", **seconds)
            - value(before, "herald_api_request_seconds_count", **seconds)) == 20
    unmatched = {"route": "unmatched", "method": "GET", "status": "404"}
    assert value(after, "herald_api_requests_total", **unmatched) >= 1
    routes = {dict(labels_)["route"] for (name, labels_) in after
              if name == "herald_api_requests_total"}
    assert not any("nope" in route or "no/such" in route for route in routes), routes


def test_refusals_are_counted_by_reason(fresh: Stack):
    before = scrape(fresh.api_metrics)
    with fresh.client() as api:
        answers = [api.post("/api/notifications", json={"title": ""}).status_code
                   for _ in range(4)]  # a budget of 3: the fourth is refused 429 first
    assert answers == [400, 400, 400, 429]
    anonymous = httpx.post(f"{fresh.api_url}/api/notifications", json={"title": "x"})
    assert anonymous.status_code == 401

    after = scrape(fresh.api_metrics)
    for reason, count in (("validation", 3), ("rate_limit", 1), ("auth", 1)):
        assert (value(after, "herald_notifications_refused_total", reason=reason)
                - value(before, "herald_notifications_refused_total", reason=reason)
                ) == count, reason


def test_a_broker_that_is_down_is_counted_broker_unavailable(fresh: Stack):
    port = free_port()
    dead_broker = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    process, url = start_api({**fresh.env, "CELERY_BROKER_URL": dead_broker,
                              "HERALD_API_METRICS_PORT": str(port)},
                             name="metrics-api-no-broker", healthy=False)
    try:
        key, _ = fresh.svc.apikeys.create("no broker")
        answer = httpx.post(f"{url}/api/notifications", timeout=60,
                            headers={"Authorization": f"Bearer {key}"},
                            json={"recipients": ["alice"], "title": "Hi"})
        assert answer.status_code == 503, answer.text
        samples = scrape(_metrics_url(port))
    finally:
        process.stop()
    assert value(samples, "herald_notifications_refused_total",
                 reason="broker_unavailable") == 1
    assert value(samples, "herald_api_requests_total", route="/api/notifications",
                 method="POST", status="503") == 1


def test_accepted_notifications_are_counted_per_channel(fresh: Stack):
    before = scrape(fresh.api_metrics)
    with fresh.client() as api:
        for channels in (["inapp"], ["inapp", "email"], ["webhook"]):
            answer = api.post("/api/notifications", json={
                "recipients": ["alice"], "title": "Hi", "channels": channels})
            assert answer.status_code == 202, answer.text
    after = scrape(fresh.api_metrics)
    for channel, count in (("inapp", 2), ("email", 1), ("webhook", 1)):
        assert (value(after, "herald_notifications_accepted_total", channel=channel)
                - value(before, "herald_notifications_accepted_total", channel=channel)
                ) == count, channel


def test_metrics_are_never_on_the_public_port(stack: Stack):
    assert httpx.get(f"{stack.api_url}/metrics", timeout=10).status_code == 404
    assert httpx.get(stack.api_metrics, timeout=10).status_code == 200


# The workers.

def _status(api: httpx.Client, notification_id: str) -> str:
    return api.get(f"/api/notifications/{notification_id}").json().get("status", "")


def test_inapp_tasks_and_deliveries_are_counted_from_the_pool_children(fresh: Stack):
    queue = fresh.keys.channel_queue("inapp")
    task = {"task": "herald.send_notification", "queue": queue}
    before = scrape(fresh.inapp_metrics)
    with fresh.client() as api:
        answer = api.post("/api/notifications", json={
            "recipients": ["alice", "bob", "carol"], "title": "Hi"})
        assert answer.status_code == 202, answer.text
        nid = answer.json()["id"]
        wait_until(lambda: _status(api, nid) == "delivered", 20, what="delivered")

    def counted() -> bool:  # the task's signals come after its status is written
        now = scrape(fresh.inapp_metrics)
        return value(now, "herald_tasks_total", **task, outcome="succeeded") > value(
            before, "herald_tasks_total", **task, outcome="succeeded")

    wait_until(counted, 10, what="the task counted")
    after = scrape(fresh.inapp_metrics)
    assert (value(after, "herald_tasks_total", **task, outcome="succeeded")
            - value(before, "herald_tasks_total", **task, outcome="succeeded")) == 1
    assert (value(after, "herald_task_seconds_count", **task)
            - value(before, "herald_task_seconds_count", **task)) == 1
    assert (value(after, "herald_deliveries_total", channel="inapp", outcome="sent")
            - value(before, "herald_deliveries_total", channel="inapp", outcome="sent")) == 3


def test_a_retried_webhook_counts_a_retry_then_a_success(fresh: Stack, receiver: Receiver):
    queue = fresh.keys.channel_queue("webhook")
    send = {"task": "herald.webhook.send", "queue": queue}
    before = scrape(fresh.webhook_metrics)
    with fresh.client() as api:
        endpoint = register(api, receiver, "/flaky", topics=["user:*"])
        receiver.plan("/flaky", 503, 200)
        settled(api, endpoint["id"], notify(api), "sent")
    wait_until(lambda: value(scrape(fresh.webhook_metrics), "herald_tasks_total", **send,
                             outcome="succeeded") > value(before, "herald_tasks_total",
                                                          **send, outcome="succeeded"),
               10, what="the send counted")
    after = scrape(fresh.webhook_metrics)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("herald_tasks_total", **send, outcome="retried") == 1
    assert delta("herald_tasks_total", **send, outcome="succeeded") == 1
    assert delta("herald_tasks_total", task="herald.webhook.dispatch", queue=queue,
                 outcome="succeeded") == 1
    assert delta("herald_deliveries_total", channel="webhook", outcome="retrying") == 1
    assert delta("herald_deliveries_total", channel="webhook", outcome="sent") == 1


def test_a_dead_delivery_shows_in_the_dead_letters_gauge(fresh: Stack, receiver: Receiver):
    before = scrape(fresh.webhook_metrics)
    assert value(before, "herald_dead_letters", channel="webhook") == 0
    with fresh.client() as api:
        endpoint = register(api, receiver, "/down", topics=["user:*"])
        receiver.plan("/down", 503)
        settled(api, endpoint["id"], notify(api), "dead")
    after = scrape(fresh.webhook_metrics)
    assert value(after, "herald_dead_letters", channel="webhook") == 1
    assert value(after, "herald_dead_letters", channel="email") == 0
    assert (value(after, "herald_deliveries_total", channel="webhook", outcome="dead")
            - value(before, "herald_deliveries_total", channel="webhook", outcome="dead")
            ) == 1
    # Every worker reads the same figure from Redis.
    assert value(scrape(fresh.inapp_metrics), "herald_dead_letters", channel="webhook") == 1


def test_a_task_nobody_consumes_shows_in_the_queue_length(fresh: Stack):
    queue = fresh.keys.channel_queue("email")
    before = value(scrape(fresh.inapp_metrics), "herald_queue_length", queue=queue)
    with fresh.client() as api:
        answer = api.post("/api/notifications", json={
            "recipients": ["alice"], "title": "Hi", "channels": ["email"]})
        assert answer.status_code == 202, answer.text
    after = scrape(fresh.inapp_metrics)
    assert value(after, "herald_queue_length", queue=queue) == before + 1
    assert all(("herald_queue_length", (("queue", name),)) in after
               for name in (fresh.keys.task_queue, fresh.keys.channel_queue("inapp"),
                            fresh.keys.channel_queue("webhook"), queue))
