"""Webhooks end to end: the API registers endpoints, real workers POST to a real HTTP
receiver on a loopback port, which verifies every request with the ``standardwebhooks``
library.

Deliveries run on a stack of the module's own (its own Redis, API and workers started
per test with the settings the test needs), so no other worker of the session takes
them. The URL rules of a production-like deployment are checked against an API started
with ``HERALD_WEBHOOK_ALLOW_PRIVATE=false`` on the session's Redis.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import psutil
import pytest
import redis
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from herald import config as herald_config
from herald import services as herald_services
from herald.deliveries import delivery_id
from herald.services import Services
from tests.conftest import Process, start_api, start_worker, wait_until

# Small settings, so every retry of a test happens within seconds.
FAST = {"HERALD_WEBHOOK_TIMEOUT": "0.5", "HERALD_RETRY_BASE": "0.3", "HERALD_RETRY_MAX": "2",
        "HERALD_DELIVERY_ATTEMPTS": "4", "HERALD_TASK_TIME_LIMIT": "5",
        "HERALD_VISIBILITY_TIMEOUT": "12", "HERALD_RESTORE_INTERVAL": "1"}
SLACK = 1.5  # seconds a retry may take beyond its backoff: broker round trip, busy machine


# The receiver.

@dataclass(frozen=True)
class Answer:
    """How the receiver answers one request: ``status`` after ``hang`` seconds, or once
    ``until`` is set."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    hang: float = 0.0
    until: threading.Event | None = None


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    verified: str  # "ok", or why the signature check failed
    answered: int | None = None  # the status written back (None: not answered)

    @property
    def webhook_id(self) -> str:
        return self.headers.get("webhook-id", "")

    def payload(self) -> dict[str, Any]:
        return json.loads(self.body)


class Receiver:
    """A real HTTP server in a thread; answers per path as planned, checks signatures."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received: list[Received] = []
        self.plans: dict[str, list[Answer]] = {}
        self.secrets: dict[str, str] = {}
        self.arrived = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.receiver = self  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def plan(self, path: str, *answers: Answer | int) -> None:
        """Answer the requests to ``path`` in turn; the last answer repeats."""
        self.plans[path] = [a if isinstance(a, Answer) else Answer(a) for a in answers]

    def on(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.path == path]

    def accepted(self, path: str) -> list[Received]:
        return [r for r in self.on(path) if r.answered and 200 <= r.answered < 300]

    def take(self, path: str, headers: dict[str, str], body: bytes) -> tuple[Received, Answer]:
        received = Received(path, headers, body, time.monotonic(),
                            self._verify(path, headers, body))
        with self.lock:
            self.received.append(received)
            plan = self.plans.get(path) or [Answer(200)]
            answer = plan.pop(0) if len(plan) > 1 else plan[0]
        self.arrived.set()
        return received, answer

    def _verify(self, path: str, headers: dict[str, str], body: bytes) -> str:
        try:
            Webhook(self.secrets[path]).verify(body, headers)
        except (KeyError, WebhookVerificationError) as exc:
            return f"{type(exc).__name__}: {exc}"
        return "ok"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {name.lower(): value for name, value in self.headers.items()}
        receiver: Receiver = self.server.receiver  # type: ignore[attr-defined]
        received, answer = receiver.take(self.path, headers, body)
        if answer.until is not None:
            answer.until.wait(60)
        time.sleep(answer.hang)
        status = answer.status if received.verified == "ok" else 401
        try:
            self.send_response(status)
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()
            self.wfile.flush()
        except OSError:
            return  # the sender is gone: nothing was answered
        received.answered = status

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


# The module's own stack.

@dataclass
class Stack:
    env: dict[str, str]
    api_url: str
    svc: Services
    dbs: tuple[redis.Redis, redis.Redis]

    def client(self) -> httpx.Client:
        key, _ = self.svc.apikeys.create("webhook tests")
        return httpx.Client(base_url=self.api_url, timeout=10,
                            headers={"Authorization": f"Bearer {key}"})

    def worker(self, name: str = "worker", **settings: str) -> Process:
        return start_worker({**self.env, **FAST, **settings}, name=name)


@pytest.fixture(scope="module")
def stack(module_redis: object, own_env: Callable[..., dict[str, str]]) -> Iterator[Stack]:
    env = own_env(module_redis)
    api, api_url = start_api(env, name="webhook-api")
    svc = herald_services.build(herald_config.load(env))
    dbs = (redis.Redis.from_url(env["REDIS_URL"]),
           redis.Redis.from_url(env["CELERY_BROKER_URL"]))
    try:
        yield Stack(env, api_url, svc, dbs)
    finally:
        api.stop()


@pytest.fixture
def hooks(stack: Stack) -> Iterator[httpx.Client]:
    """An API client of the module's stack, whose Redis is emptied before the test."""
    for db in stack.dbs:
        db.flushdb()
    with stack.client() as client:
        yield client


def register(api: httpx.Client, receiver: Receiver, path: str, **fields: Any) -> dict:
    answer = api.post("/api/webhooks", json={"url": receiver.url(path), **fields})
    assert answer.status_code == 201, answer.text
    endpoint = answer.json()
    receiver.secrets[path] = endpoint["secret"]
    return endpoint


def notify(api: httpx.Client, **fields: Any) -> str:
    body = {"recipients": ["alice"], "title": "Order shipped", "channels": ["webhook"],
            **fields}
    answer = api.post("/api/notifications", json=body)
    assert answer.status_code == 202, answer.text
    return answer.json()["id"]


def delivery(api: httpx.Client, endpoint_id: str, notification_id: str) -> dict:
    did = delivery_id(notification_id, "webhook", endpoint_id)
    answer = api.get(f"/api/webhooks/{endpoint_id}/deliveries/{did}")
    return answer.json() if answer.status_code == 200 else {"state": None}


def settled(api: httpx.Client, endpoint_id: str, notification_id: str, state: str,
            timeout: float = 30) -> dict:
    """Wait for the delivery to reach ``state``; answer it."""
    wait_until(lambda: delivery(api, endpoint_id, notification_id)["state"] == state,
               timeout, every=0.1, what=f"delivery {state}")
    return delivery(api, endpoint_id, notification_id)


def gaps(received: list[Received]) -> list[float]:
    return [b.at - a.at for a, b in itertools.pairwise(received)]


# Registration.

def test_registration_answers_the_secret_once(hooks: httpx.Client, receiver: Receiver):
    created = hooks.post("/api/webhooks", json={
        "url": receiver.url("/a"), "topics": ["orders", "user:*"], "categories": ["security"],
        "description": "billing"})
    assert created.status_code == 201, created.text
    endpoint = created.json()
    assert endpoint["id"].startswith("wh_") and endpoint["secret"].startswith("whsec_")
    assert endpoint["topics"] == ["orders", "user:*"] and endpoint["categories"] == ["security"]
    assert created.headers["Location"].endswith(f"/api/webhooks/{endpoint['id']}")
    listed = hooks.get("/api/webhooks").json()["items"]
    assert [e["id"] for e in listed] == [endpoint["id"]]
    assert "secret" not in listed[0] and "secret" not in hooks.get(
        f"/api/webhooks/{endpoint['id']}").json()
    assert endpoint["secret"] not in hooks.get("/api/webhooks").text
    assert hooks.delete(f"/api/webhooks/{endpoint['id']}").status_code == 204
    assert hooks.delete(f"/api/webhooks/{endpoint['id']}").status_code == 404
    assert hooks.get(f"/api/webhooks/{endpoint['id']}").status_code == 404
    assert hooks.get("/api/webhooks").json() == {"items": []}


def test_a_user_token_cannot_manage_webhooks(api_url: str, api: httpx.Client, mint):
    answer = httpx.get(f"{api_url}/api/webhooks",
                       headers={"Authorization": f"Bearer {mint('alice')}"})
    assert answer.status_code == 403


@pytest.mark.parametrize(("body", "field"), [
    ({"url": "not a url", "topics": ["orders"]}, "url"),
    ({"url": "ftp://example.com/hook", "topics": ["orders"]}, "url"),
    ({"url": "https://", "topics": ["orders"]}, "url"),
    ({"url": "https://example.com/hook"}, "topics"),
    ({"url": "https://example.com/hook", "topics": [], "categories": []}, "topics"),
    ({"url": "https://example.com/hook", "topics": ["Orders!"]}, "topics.0"),
    ({"url": "https://example.com/hook", "categories": ["nope"]}, "categories"),
    ({"url": "https://example.com/hook", "categories": ["Bad Name"]}, "categories.0"),
    ({"url": "https://example.com/hook", "topics": ["a"], "secret": "x"}, "secret"),
])
def test_bad_registrations_are_refused_naming_the_field(api: httpx.Client, unchanged: None,
                                                         body: dict, field: str):
    answer = api.post("/api/webhooks", json=body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["field"] == field


@pytest.fixture(scope="module")
def strict_api_url(child_env: dict[str, str]) -> Iterator[str]:
    """An API whose webhook URLs must be https:// and public (as in production)."""
    process, url = start_api({**child_env, "HERALD_WEBHOOK_ALLOW_PRIVATE": "false"},
                             name="strict-api")
    yield url
    process.stop()


@pytest.mark.parametrize("url", ["http://127.0.0.1/", "https://127.0.0.1/",
                                 "https://10.0.0.1/", "https://169.254.169.254/latest/",
                                 "https://[::1]/", "https://localhost/",
                                 "http://93.184.215.14/", "https://0.0.0.0/"])
def test_private_addresses_and_plain_http_are_refused_in_production(
        strict_api_url: str, api_key: str, unchanged: None, url: str):
    answer = httpx.post(f"{strict_api_url}/api/webhooks",
                        json={"url": url, "topics": ["orders"]},
                        headers={"Authorization": f"Bearer {api_key}"})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["field"] == "url"


def test_a_public_https_url_is_accepted_in_production(strict_api_url: str, api_key: str,
                                                      clean: None):
    answer = httpx.post(f"{strict_api_url}/api/webhooks",
                        json={"url": "https://93.184.215.14/hooks", "categories": ["general"]},
                        headers={"Authorization": f"Bearer {api_key}"})
    assert answer.status_code == 201, answer.text


def test_which_endpoints_a_notification_goes_to(clean: None, services: Services):
    store = services.webhooks
    users = store.create("https://example.com/u", ["user:*"], [])
    orders = store.create("https://example.com/o", ["orders"], [])
    security = store.create("https://example.com/s", [], ["security"])
    both = store.create("https://example.com/b", ["user:bob"], ["security"])

    def record(**fields: str) -> dict[str, str]:
        return {"recipients": "", "topic": "", "category": "general", **fields}

    def ids(notification: dict[str, str]) -> set[str]:
        return {endpoint.id for endpoint in store.matching(notification)}

    assert ids(record(recipients='["alice"]')) == {users.id}
    assert ids(record(topic="orders")) == {orders.id}
    assert ids(record(recipients='["bob"]', category="security")) == {
        users.id, security.id, both.id}
    assert ids(record(topic="orders", category="security")) == {orders.id, security.id}


# Deliveries.

def test_a_failing_receiver_gets_one_accepted_delivery_after_retries(
        stack: Stack, hooks: httpx.Client, receiver: Receiver):
    endpoint = register(hooks, receiver, "/flaky", topics=["user:*"])
    receiver.plan("/flaky", 503, 503, 200)  # N = 2 failures, then accepted
    worker = stack.worker()
    try:
        notification_id = notify(hooks, data={"order": 42})
        done = settled(hooks, endpoint["id"], notification_id, "sent")
    finally:
        worker.stop()
    received = receiver.on("/flaky")
    assert len(received) == 3 and done["attempts"] == 3 and done["error"] is None
    shown = hooks.get(f"/api/notifications/{notification_id}").json()
    assert [(d["channel"], d["target"], d["state"], d["attempts"]) for d in shown[
        "deliveries"]] == [("webhook", endpoint["id"], "sent", 3)]
    assert len(receiver.accepted("/flaky")) == 1
    assert {r.verified for r in received} == {"ok"}
    assert {r.webhook_id for r in received} == {done["id"]}
    assert len({r.body for r in received}) == 1  # the same payload every time
    body = received[0].payload()
    assert body["type"] == "notification.created"
    assert body["data"]["id"] == notification_id and body["data"]["data"] == {"order": 42}
    assert received[0].headers["user-agent"].startswith("Herald-Webhooks/")
    base = float(FAST["HERALD_RETRY_BASE"])
    for attempt, gap in enumerate(gaps(received), start=1):  # full jitter: 0..base*2^(n-1)
        assert gap <= base * 2 ** (attempt - 1) + SLACK, (attempt, gap)


def test_retry_after_is_honoured(stack: Stack, hooks: httpx.Client, receiver: Receiver):
    endpoint = register(hooks, receiver, "/busy", topics=["user:*"])
    receiver.plan("/busy", Answer(429, {"Retry-After": "1"}), 200)
    worker = stack.worker()
    try:
        done = settled(hooks, endpoint["id"], notify(hooks), "sent")
    finally:
        worker.stop()
    received = receiver.on("/busy")
    assert len(received) == 2 and done["attempts"] == 2
    assert gaps(received)[0] >= 1.0


@pytest.mark.parametrize("status", [410, 400])
def test_a_permanent_refusal_fails_at_once(stack: Stack, hooks: httpx.Client,
                                           receiver: Receiver, status: int):
    endpoint = register(hooks, receiver, "/gone", topics=["user:*"])
    receiver.plan("/gone", status)
    worker = stack.worker()
    try:
        done = settled(hooks, endpoint["id"], notify(hooks), "failed")
    finally:
        worker.stop()
    assert done["attempts"] == 1 and done["error"] == f"HTTP {status}"
    assert len(receiver.on("/gone")) == 1


def test_a_hanging_receiver_is_retried_while_in_app_delivery_goes_on(
        stack: Stack, hooks: httpx.Client, receiver: Receiver):
    endpoint = register(hooks, receiver, "/slow", topics=["user:*"])
    receiver.plan("/slow", Answer(503, hang=3), 200)  # past HERALD_WEBHOOK_TIMEOUT (0.5 s)
    worker = stack.worker()
    try:
        notification_id = notify(hooks, channels=["webhook", "inapp"])
        assert receiver.arrived.wait(20), "no delivery attempt"
        wait_until(lambda: hooks.get("/api/users/alice/notifications").json()["items"],
                   10, what="the in-app entry")
        still_hanging = receiver.on("/slow")[0].answered is None
        done = settled(hooks, endpoint["id"], notification_id, "sent")
    finally:
        worker.stop()
    assert still_hanging, "in-app delivery waited for the hanging webhook"
    assert done["attempts"] == 2
    assert [r.answered for r in receiver.on("/slow")][1] == 200


def test_a_dead_letter_is_replayed_once_fixed(stack: Stack, hooks: httpx.Client,
                                              receiver: Receiver):
    endpoint = register(hooks, receiver, "/down", topics=["user:*"])
    receiver.plan("/down", 500)
    worker = stack.worker()
    try:
        notification_id = notify(hooks)
        dead = settled(hooks, endpoint["id"], notification_id, "dead")
        assert dead["attempts"] == int(FAST["HERALD_DELIVERY_ATTEMPTS"])
        assert dead["error"] == "HTTP 500"
        letters = hooks.get("/api/dead-letters", params={"channel": "webhook"})
        assert letters.status_code == 200, letters.text
        assert dead["id"] in json.dumps(letters.json())
        receiver.plan("/down", 200)  # the receiver is fixed
        retried = hooks.post(f"/api/dead-letters/{dead['id']}/retry")
        assert retried.status_code == 202, retried.text
        done = settled(hooks, endpoint["id"], notification_id, "sent")
    finally:
        worker.stop()
    assert done["attempts"] == 1
    assert len(receiver.accepted("/down")) == 1
    assert len(receiver.on("/down")) == int(FAST["HERALD_DELIVERY_ATTEMPTS"]) + 1
    assert {r.webhook_id for r in receiver.on("/down")} == {dead["id"]}
    assert dead["id"] not in hooks.get("/api/dead-letters",
                                       params={"channel": "webhook"}).text


def test_a_test_delivery_goes_through_the_channel(stack: Stack, hooks: httpx.Client,
                                                  receiver: Receiver):
    endpoint = register(hooks, receiver, "/t", categories=["security"])
    worker = stack.worker()
    try:
        sent = hooks.post(f"/api/webhooks/{endpoint['id']}/test")
        assert sent.status_code == 202, sent.text
        status_url = sent.json()["status_url"]
        wait_until(lambda: hooks.get(status_url).json()["state"] == "sent", 20,
                   what="the test delivery")
    finally:
        worker.stop()
    (received,) = receiver.accepted("/t")
    assert received.verified == "ok" and received.webhook_id == sent.json()["delivery_id"]
    assert received.payload()["type"] == "webhook.test"
    assert received.payload()["data"]["id"] == sent.json()["notification_id"]
    shown = hooks.get(f"/api/notifications/{sent.json()['notification_id']}").json()
    assert shown["status"] == "delivered" and shown["topic"] == "webhook.test"
    assert [d["id"] for d in shown["deliveries"]] == [sent.json()["delivery_id"]]
    assert hooks.post("/api/webhooks/wh_00000000000000000000000000/test").status_code == 404


def test_a_deleted_endpoint_fails_its_pending_delivery(stack: Stack, hooks: httpx.Client,
                                                       receiver: Receiver):
    endpoint = register(hooks, receiver, "/bye", topics=["user:*"])
    receiver.plan("/bye", Answer(503, {"Retry-After": "3"}))  # time to delete it
    worker = stack.worker(HERALD_RETRY_MAX="5")
    try:
        notification_id = notify(hooks)
        settled(hooks, endpoint["id"], notification_id, "retrying")
        assert hooks.delete(f"/api/webhooks/{endpoint['id']}").status_code == 204
        done = settled(hooks, endpoint["id"], notification_id, "failed")
    finally:
        worker.stop()
    assert done["error"] == "endpoint deleted"


def test_an_address_that_is_not_allowed_any_more_fails_at_send(
        stack: Stack, hooks: httpx.Client, receiver: Receiver):
    """Registered where private addresses were allowed; the worker allows none."""
    https = receiver.url("/private").replace("http://", "https://")
    created = hooks.post("/api/webhooks", json={"url": https, "topics": ["user:*"]}).json()
    worker = stack.worker(HERALD_WEBHOOK_ALLOW_PRIVATE="false")
    try:
        done = settled(hooks, created["id"], notify(hooks), "failed")
    finally:
        worker.stop()
    assert done["error"].startswith("address not allowed") and done["attempts"] == 1
    assert receiver.on("/private") == []


def test_a_worker_killed_mid_delivery_delivers_once(stack: Stack, hooks: httpx.Client,
                                                    receiver: Receiver):
    release = threading.Event()
    endpoint = register(hooks, receiver, "/kill", topics=["user:*"])
    receiver.plan("/kill", Answer(500, until=release), 200)
    # The attempt must still be waiting for its answer when the worker dies: a timeout
    # of 3 s (lease 11 s, below the visibility timeout of 12 s).
    settings = {"HERALD_WEBHOOK_TIMEOUT": "3"}
    worker = stack.worker(**settings)
    try:
        notification_id = notify(hooks)
        assert receiver.arrived.wait(30), "no delivery attempt"
        _kill(worker)
    finally:
        worker.stop()
        release.set()  # the first request is answered 500 to nobody: not accepted
    replacement = stack.worker("replacement", **settings)
    try:
        done = settled(hooks, endpoint["id"], notification_id, "sent", timeout=60)
    finally:
        replacement.stop()
    received = receiver.on("/kill")
    assert len(received) == 2 and done["attempts"] == 2
    assert [r.webhook_id for r in receiver.accepted("/kill")] == [done["id"]]
    assert {r.webhook_id for r in received} == {done["id"]}


def _kill(worker: Process) -> None:
    """SIGKILL the worker and its pool processes at once."""
    main = psutil.Process(worker.popen.pid)
    for process in [main, *main.children(recursive=True)]:
        os.kill(process.pid, signal.SIGKILL)


def test_the_rate_per_endpoint_holds_across_workers(stack: Stack, hooks: httpx.Client,
                                                   receiver: Receiver):
    """``HERALD_WEBHOOK_RATE`` is one token bucket per endpoint in Redis: two workers
    (four processes) together never go faster, and another endpoint has its own."""
    rate, burst, sent = 2.0, 2, 8  # the bucket holds max(1, int(rate)) tokens
    busy = register(hooks, receiver, "/busy-endpoint", topics=["user:alice"])
    other = register(hooks, receiver, "/other-endpoint", topics=["user:bob"])
    settings = {"HERALD_WEBHOOK_RATE": str(rate)}
    workers = [stack.worker("rate-a", **settings), stack.worker("rate-b", **settings)]
    try:
        ids = [notify(hooks, recipients=["alice"]) for _ in range(sent)]
        bobs = [notify(hooks, recipients=["bob"]) for _ in range(burst)]
        for notification_id in ids:
            settled(hooks, busy["id"], notification_id, "sent", timeout=60)
        for notification_id in bobs:
            settled(hooks, other["id"], notification_id, "sent", timeout=60)
    finally:
        for worker in workers:
            worker.stop()
    arrivals = [r.at for r in receiver.accepted("/busy-endpoint")]
    assert len(arrivals) == sent
    for count, at in enumerate(arrivals, start=1):  # never ahead of the bucket
        assert at - arrivals[0] >= (count - burst) / rate - 0.2, (count, at - arrivals[0])
    # The other endpoint's deliveries did not queue behind the busy one's.
    assert max(r.at for r in receiver.accepted("/other-endpoint")) < arrivals[-1]
