"""``herald run --workers 2`` from a clean environment: everything up, each process on
its own metrics port, Flower's API, ``herald status``, a crashed service restarted
alone, no secret on a command line, then SIGTERM leaves nothing behind.

One ``herald run`` serves the whole module (starting the stack is the slow part); the
last test stops it, and the fixture stops it too when that test did not run.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import httpx
import psutil
import pytest

from herald import config as herald_config
from herald import services as herald_services
from herald.channels import EMAIL, queues
from herald.keys import Keys
from herald.notifications import NewNotification
from tasks.factory import make_celery
from tasks.outbound import dispatch_task_name
from tests.conftest import wait_until
from tests.stack import HERALD, Recorder, Stack, alive, command_line, get, started

pytestmark = pytest.mark.slow
# Direct children of `herald run --workers 2`, told apart by their command lines.
SERVICES = {"api": "gunicorn", "worker-1": "-n herald-1@", "worker-2": "-n herald-2@",
            "outbound": "-n outbound@", "streamer": "-m streamer", "flower": " flower ",
            "mailsink": "-m herald.mailsink"}
NODES = ("herald-1@", "herald-2@", "outbound@")


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with started(["run", "--workers", "2"], workers=2) as running:
        yield running


def test_serves_with_embedded_redis_and_flower_sees_its_workers_and_tasks(stack):
    assert httpx.get(stack.url("api", "/healthz")).json() == {
        "status": "ok", "redis": "ok", "broker": "ok"}
    demo = httpx.get(stack.url("api", "/demo/"))
    assert demo.status_code == 200 and "Herald" in demo.text
    text = stack.log()
    assert "embedded redis-server" in text
    assert stack.url("flower") in text and stack.flower_password in text  # the banner
    names = " ".join(command_line(p) for p in stack.descendants())
    for part in ("gunicorn", "celery", "worker", "streamer", "flower", "redis-server"):
        assert part in names

    key = (Path(stack.home) / ".herald" / "apikey").read_text().strip()
    sent = httpx.post(stack.url("api", "/api/notifications"),
                      headers={"Authorization": f"Bearer {key}"},
                      json={"recipients": ["alice"], "title": "seen by Flower?"})
    assert sent.status_code == 202, sent.text
    auth = ("ops", stack.flower_password)

    def flower_saw_it() -> bool:
        tasks = get(stack.url("flower", "/api/tasks"), auth=auth)
        return tasks is not None and sent.json()["id"] in tasks.json()

    wait_until(flower_saw_it, 30, every=0.5, what="Flower to see the task")

    def flower_sees_both_workers() -> bool:
        # The workers may still be starting when the API has already sent the task.
        workers = get(stack.url("flower", "/api/workers?refresh=1"), auth=auth)
        names = workers.json() if workers is not None else {}
        return all(any(name.startswith(node) for name in names) for node in NODES)

    wait_until(flower_sees_both_workers, 60, every=1.0, what="Flower to list both workers")


def test_the_in_app_and_the_outbound_worker_split_the_queues(stack):
    """Jobs and in-app delivery on one worker, e-mail and webhooks on the other (gevent),
    so a slow outside service never takes the in-app worker's slots."""
    commands = {name: psutil.Process(pid).cmdline()
                for name, pid in stack.services(SERVICES).items()}

    def option(name: str, flag: str) -> str:
        command = commands[name]
        return command[command.index(flag) + 1]

    keys = Keys()
    inapp, outbound = option("worker-1", "-Q").split(","), option("outbound", "-Q").split(",")
    assert option("worker-2", "-Q").split(",") == inapp
    assert inapp == [keys.task_queue, keys.channel_queue("inapp")]
    assert outbound == [keys.channel_queue("email"), keys.channel_queue("webhook")]
    assert sorted(inapp + outbound) == sorted(queues(keys))  # every queue, once
    assert option("outbound", "-P") == "gevent"
    assert option("outbound", "-c") == "50"  # HERALD_OUTBOUND_CONCURRENCY's default


class FlakyReceiver(BaseHTTPRequestHandler):
    """A webhook endpoint that answers its first POST 503, the others 204."""

    ids: ClassVar[list[str | None]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.ids.append(self.headers.get("webhook-id"))
        self.send_response(503 if len(self.ids) == 1 else 204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_flower_shows_each_channels_tasks_on_its_worker_with_a_retry(stack):
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), FlakyReceiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    key = (Path(stack.home) / ".herald" / "apikey").read_text().strip()
    api = httpx.Client(base_url=stack.url("api"), headers={"Authorization": f"Bearer {key}"})
    try:
        hook = api.post("/api/webhooks", json={
            "url": f"http://127.0.0.1:{receiver.server_port}/hook", "topics": ["user:flo"]})
        assert hook.status_code == 201, hook.text
        sent = api.post("/api/notifications", json={
            "recipients": ["flo"], "title": "retried once", "channels": ["inapp", "webhook"]})
        assert sent.status_code == 202, sent.text
        nid = sent.json()["id"]

        def webhook_delivery() -> dict | None:
            items = api.get(f"/api/notifications/{nid}").json()["deliveries"]
            return next((d for d in items if d["channel"] == "webhook"
                         and d["state"] == "sent"), None)

        wait_until(lambda: webhook_delivery() is not None, 60, every=0.3,
                   what="the webhook delivery to be sent")
        delivery = webhook_delivery()
        assert delivery["attempts"] == 2 and FlakyReceiver.ids == [delivery["id"]] * 2
    finally:
        api.close()
        receiver.shutdown()
    auth = ("ops", stack.flower_password)
    expected = {  # task id -> name, worker; the send task's id is the delivery's
        nid: ("herald.send_notification", "herald-"),
        f"{nid}.webhook": ("herald.webhook.dispatch", "outbound@"),
        delivery["id"]: ("herald.webhook.send", "outbound@"),
    }

    def flower_shows_them_done() -> bool:
        answer = get(stack.url("flower", "/api/tasks"), auth=auth)
        tasks = answer.json() if answer is not None and answer.status_code == 200 else {}
        return all(tasks.get(tid, {}).get("state") == "SUCCESS" for tid in expected)

    wait_until(flower_shows_them_done, 30, every=0.5, what="Flower to show the tasks done")
    tasks = get(stack.url("flower", "/api/tasks"), auth=auth).json()
    for task_id, (name, worker) in expected.items():
        assert tasks[task_id]["name"] == name, tasks[task_id]
        assert tasks[task_id]["worker"].startswith(worker), tasks[task_id]
    retried = tasks[delivery["id"]]
    assert retried["retries"] == 1 and retried["retried"], retried  # the 503, then a retry
    info = get(stack.url("flower", f"/api/task/info/{delivery['id']}"), auth=auth)
    assert info is not None and info.json()["state"] == "SUCCESS"


# What each kind of /metrics serves, one metric of it (README, "Metrics and monitoring")
# that is there before the process has done anything (a worker that has run no task yet
# has no herald_tasks_total), once the API has answered a request.
SERVES = {"api": "herald_api_requests_total", "worker": "herald_queue_length",
          "outbound": "herald_queue_length", "streamer": "herald_streamer_connections"}


def test_each_process_gets_its_own_metrics_port_and_the_banner_lists_it(stack):
    found = {e.service: e for e in stack.metrics()}
    assert list(found) == ["api", "worker-1", "worker-2", "outbound", "streamer"]
    text = stack.log()
    for endpoint in found.values():
        assert re.search(rf"{endpoint.service} +{re.escape(endpoint.url)}", text), text
    base = int(stack.env["HERALD_WORKER_METRICS_PORT"])
    assert [found[n].port for n in ("worker-1", "worker-2", "outbound")] == [
        base, base + 1, base + 2]
    pids = stack.services(SERVICES)
    for name in ("worker-1", "worker-2", "outbound"):  # what herald run gave each
        environ = psutil.Process(pids[name]).environ()
        assert environ["HERALD_WORKER_METRICS_PORT"] == str(found[name].port), name
    assert found["api"].port == int(stack.env["HERALD_API_METRICS_PORT"])
    assert found["streamer"].port == int(stack.env["HERALD_STREAMER_METRICS_PORT"])


def test_every_metrics_endpoint_answers_on_its_internal_port(stack):
    key = (Path(stack.home) / ".herald" / "apikey").read_text().strip()
    answer = httpx.get(stack.url("api", "/api/notifications/n-unknown"),
                       headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 404
    for endpoint in stack.metrics():
        assert endpoint.url.startswith("http://127.0.0.1:")  # HERALD_METRICS_HOST
        kind = endpoint.service.split("-")[0]

        def serves(url: str = endpoint.url, name: str = SERVES[kind]) -> bool:
            answer = get(url)
            return answer is not None and answer.status_code == 200 and name in answer.text

        wait_until(serves, 30, every=0.5, what=f"{endpoint.service}'s /metrics")
    public = get(stack.url("api", "/metrics"))
    assert public is None or public.status_code == 404  # never on the public port


def test_flower_api_lists_the_workers_online_and_herald_queues(stack):
    auth = ("ops", stack.flower_password)
    assert get(stack.url("flower", "/api/workers")).status_code == 401  # basic auth

    def all_online() -> bool:
        get(stack.url("flower", "/api/workers?refresh=1"), auth=auth)
        answer = get(stack.url("flower", "/api/workers?status=true"), auth=auth)
        alive_nodes = [n for n, up in (answer.json() if answer else {}).items() if up]
        return all(any(n.startswith(node) for n in alive_nodes) for node in NODES)

    wait_until(all_online, 60, every=1.0, what="Flower to see every worker online")
    # Flower 2.2 reads a Redis broker's queue lengths itself (LLEN under the key prefix
    # of broker_transport_options): no broker API is needed, unlike RabbitMQ.
    answer = get(stack.url("flower", "/api/queues/length"), auth=auth)
    assert answer is not None and answer.status_code == 200, answer
    lengths = {q["name"]: q["messages"] for q in answer.json()["active_queues"]}
    assert set(lengths) == set(queues(Keys())), lengths
    assert all(isinstance(n, int) for n in lengths.values())


def test_herald_status_through_flower_sees_the_stack_healthy(stack):
    command = [HERALD, "status", "--json", "--flower", stack.url("flower"), "--timeout", "5"]
    done = subprocess.run(command, env=stack.env, cwd=stack.home, capture_output=True,
                          text=True, timeout=120)
    report = json.loads(done.stdout)
    assert report["workers_source"] == "flower"
    assert all(any(n.startswith(node) for n in report["workers"]) for node in NODES)
    assert {q["name"]: len(q["consumers"]) for q in report["queues"]} == {
        name: 2 if name in (Keys().task_queue, Keys().channel_queue("inapp")) else 1
        for name in queues(Keys())}
    assert [s["service"] for s in report["streamers"]] == ["streamer"]
    assert report["problems"] == [] and done.returncode == 0, done.stdout + done.stderr


def test_no_password_on_any_command_line(stack):
    for process in stack.descendants():
        assert stack.flower_password not in command_line(process), process.cmdline()


def test_the_health_probe_sends_no_credentials(stack):
    probes = [auth for path, auth in Recorder.seen if path == "/healthz"]
    assert probes, "herald run never probed HERALD_STREAMER_URL"
    assert probes == [None] * len(probes), "the health probe sent credentials"


def test_email_goes_to_the_dev_mail_sink_without_an_smtp_url(stack):
    home = Path(stack.home) / ".herald"
    assert re.search(rf"Mail +dev sink at smtp://127\.0\.0\.1:\d+, each mail in {home / 'mail'}",
                     stack.log()), stack.log()
    cfg = herald_config.load({"REDIS_URL": f"redis://127.0.0.1:{stack.ports['redis']}/0",
                              "HERALD_HOME": str(home)})
    svc = herald_services.build(cfg)
    svc.profiles.put("alice", {"email": "alice@example.com"})
    created = svc.notifications.create(NewNotification(
        title="Mail from the dev stack", recipients=["alice"], channels=[EMAIL]))
    make_celery(cfg).send_task(dispatch_task_name(EMAIL),
                               kwargs={"notification_id": created.id})

    line = re.compile(r'mail: to=alice@example\.com subject="Mail from the dev stack" '
                      r"-> (\S+\.eml)")
    wait_until(lambda: line.search(stack.log()) is not None, 30, what="the sink's line")
    kept = Path(line.search(stack.log())[1])
    assert kept.parent == home / "mail"
    assert b"Subject: Mail from the dev stack" in kept.read_bytes()


def test_a_killed_streamer_is_restarted_and_the_other_services_keep_running(stack):
    before = stack.services(SERVICES)
    assert set(before) == set(SERVICES), before
    first = httpx.get(stack.url("streamer", "/healthz")).json()["pid"]
    assert first == before["streamer"]

    os.kill(before["streamer"], signal.SIGKILL)

    def streamer_back() -> bool:
        assert stack.run.poll() is None, f"herald run ended:\n{stack.log()}"
        answer = get(stack.url("streamer", "/healthz"))
        return (answer is not None and answer.status_code == 200
                and answer.json()["pid"] != first)

    wait_until(streamer_back, 60, every=0.3, what="a new streamer")
    after = stack.services(SERVICES)
    assert after["streamer"] == httpx.get(stack.url("streamer", "/healthz")).json()["pid"]
    assert {n: p for n, p in after.items() if n != "streamer"} == {
        n: p for n, p in before.items() if n != "streamer"}
    assert re.search(r"streamer exited \(killed by SIGKILL\).*restarting in [0-9.]+ s",
                     stack.log()), stack.log()
    assert stack.up("api")


def test_sigterm_stops_everything_and_leaves_nothing_running(stack):
    stack.descendants()
    code = stack.stop()  # fails if herald run has not ended within 30 s
    assert code == 0, stack.log()
    left = [p for p in stack.seen if alive(p)]
    assert left == [], f"left running: {[p.cmdline() for p in left]}"
