"""``herald run`` from a clean environment: everything up, a crashed service restarted
alone, no secret on a command line, then SIGTERM leaves nothing behind.

One ``herald run`` serves the whole module (starting the stack is the slow part); the
last test stops it, and the fixture stops it too when that test did not run.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
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
from herald.channels import EMAIL
from herald.notifications import NewNotification
from herald.stack import free_port
from tasks.factory import make_celery
from tasks.outbound import dispatch_task_name
from tests.conftest import wait_until

pytestmark = pytest.mark.slow
HERALD = str(Path(sys.executable).with_name("herald"))
# Direct children of `herald run`, told apart by their command lines.
SERVICES = {"api": "gunicorn", "worker": "-n herald@", "outbound": "-n outbound@",
            "streamer": "-m streamer", "flower": " flower ", "mailsink": "-m herald.mailsink"}


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _line(process: psutil.Process | None) -> str:
    try:
        return " ".join(process.cmdline()) + " " if process else ""
    except psutil.NoSuchProcess:
        return ""


def _get(url: str, **kwargs: object) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=2, **kwargs)  # type: ignore[arg-type]
    except httpx.HTTPError:
        return None


class Recorder(BaseHTTPRequestHandler):
    """Stands where HERALD_STREAMER_URL points (a proxy would): records each request."""

    seen: ClassVar[list[tuple[str, str | None]]] = []

    def do_GET(self) -> None:
        self.seen.append((self.path, self.headers.get("Authorization")))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


class Stack:
    """A real ``herald run`` with an embedded Redis, its output in ``run.log``.

    HERALD_STREAMER_URL (where clients reach the streamer, and what `herald run`
    probes) points at a ``Recorder``, which shows what the probe sends.
    """

    def __init__(self) -> None:
        self.recorder = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
        threading.Thread(target=self.recorder.serve_forever, daemon=True).start()
        self.home = tempfile.mkdtemp(prefix="herald-run-")
        self.ports = {name: free_port() for name in ("redis", "api", "streamer", "flower")}
        self.flower_password = secrets.token_urlsafe(12)
        env = {
            "PATH": os.environ["PATH"], "HOME": self.home, "LANG": "C.UTF-8",
            "HERALD_HOME": f"{self.home}/.herald",
            "REDIS_URL": f"redis://127.0.0.1:{self.ports['redis']}/0",  # nothing answers
            "HERALD_API_PORT": str(self.ports["api"]),
            "HERALD_STREAMER_PORT": str(self.ports["streamer"]),
            "HERALD_STREAMER_URL": f"http://127.0.0.1:{self.recorder.server_port}",
            "HERALD_FLOWER_PORT": str(self.ports["flower"]),
            "HERALD_FLOWER_AUTH": f"ops:{self.flower_password}",
        }
        self.log_path = Path(self.home) / "run.log"
        with self.log_path.open("wb") as out:
            self.run = subprocess.Popen([HERALD, "run"], env=env, cwd=self.home, stdout=out,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        self.seen: list[psutil.Process] = []
        self.exit_code: int | None = None

    def url(self, name: str, path: str = "") -> str:
        return f"http://127.0.0.1:{self.ports[name]}{path}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def up(self, name: str, path: str = "/healthz") -> bool:
        assert self.run.poll() is None, self.log()
        answer = _get(self.url(name, path))
        return answer is not None and answer.status_code == 200

    def services(self) -> dict[str, int]:
        """Pid of each service's main process (the topmost with its command line)."""
        found = {}
        for process in self.descendants():
            for name, part in SERVICES.items():
                if part in _line(process) and part not in _line(process.parent()):
                    found[name] = process.pid
        return found

    def descendants(self) -> list[psutil.Process]:
        every = psutil.Process(self.run.pid).children(recursive=True)
        self.seen += every
        return every

    def stop(self) -> int:
        if self.exit_code is None:
            self.descendants()
            self.run.send_signal(signal.SIGTERM)
            self.exit_code = self.run.wait(30)
            self.recorder.shutdown()
        return self.exit_code


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    running = Stack()
    try:
        wait_until(lambda: running.up("api") and running.up("streamer"), 90, every=0.3,
                   what="the stack")
        wait_until(lambda: "Herald is running" in running.log(), 60, what="the banner")
        yield running
    finally:
        running.stop()


def test_serves_with_embedded_redis_and_flower_sees_its_workers_and_tasks(stack):
    assert httpx.get(stack.url("api", "/healthz")).json() == {
        "status": "ok", "redis": "ok", "broker": "ok"}
    demo = httpx.get(stack.url("api", "/demo/"))
    assert demo.status_code == 200 and "Herald" in demo.text
    text = stack.log()
    assert "embedded redis-server" in text
    assert stack.url("flower") in text and stack.flower_password in text  # the banner
    names = " ".join(_line(p) for p in stack.descendants())
    for part in ("gunicorn", "celery", "worker", "streamer", "flower", "redis-server"):
        assert part in names

    key = (Path(stack.home) / ".herald" / "apikey").read_text().strip()
    sent = httpx.post(stack.url("api", "/api/notifications"),
                      headers={"Authorization": f"Bearer {key}"},
                      json={"recipients": ["alice"], "title": "seen by Flower?"})
    assert sent.status_code == 202, sent.text
    auth = ("ops", stack.flower_password)

    def flower_saw_it() -> bool:
        tasks = _get(stack.url("flower", "/api/tasks"), auth=auth)
        return tasks is not None and sent.json()["id"] in tasks.json()

    wait_until(flower_saw_it, 30, every=0.5, what="Flower to see the task")

    def flower_sees_both_workers() -> bool:
        # The workers may still be starting when the API has already sent the task.
        workers = _get(stack.url("flower", "/api/workers?refresh=1"), auth=auth)
        names = workers.json() if workers is not None else {}
        return all(any(name.startswith(node) for name in names)
                   for node in ("herald@", "outbound@"))

    wait_until(flower_sees_both_workers, 60, every=1.0, what="Flower to list both workers")


def test_the_in_app_and_the_outbound_worker_split_the_queues(stack):
    """Jobs and in-app delivery on one worker, e-mail and webhooks on the other (gevent),
    so a slow outside service never takes the in-app worker's slots."""
    from herald.keys import Keys
    from tasks.settings import queues

    commands = {name: psutil.Process(pid).cmdline() for name, pid in stack.services().items()}

    def option(name: str, flag: str) -> str:
        command = commands[name]
        return command[command.index(flag) + 1]

    keys = Keys()
    inapp, outbound = option("worker", "-Q").split(","), option("outbound", "-Q").split(",")
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
        nid: ("herald.send_notification", "herald@"),
        f"{nid}.webhook": ("herald.webhook.dispatch", "outbound@"),
        delivery["id"]: ("herald.webhook.send", "outbound@"),
    }

    def flower_shows_them_done() -> bool:
        answer = _get(stack.url("flower", "/api/tasks"), auth=auth)
        tasks = answer.json() if answer is not None and answer.status_code == 200 else {}
        return all(tasks.get(tid, {}).get("state") == "SUCCESS" for tid in expected)

    wait_until(flower_shows_them_done, 30, every=0.5, what="Flower to show the tasks done")
    tasks = _get(stack.url("flower", "/api/tasks"), auth=auth).json()
    for task_id, (name, worker) in expected.items():
        assert tasks[task_id]["name"] == name, tasks[task_id]
        assert tasks[task_id]["worker"].startswith(worker), tasks[task_id]
    retried = tasks[delivery["id"]]
    assert retried["retries"] == 1 and retried["retried"], retried  # the 503, then a retry
    info = _get(stack.url("flower", f"/api/task/info/{delivery['id']}"), auth=auth)
    assert info is not None and info.json()["state"] == "SUCCESS"


def test_no_password_on_any_command_line(stack):
    for process in stack.descendants():
        assert stack.flower_password not in _line(process), process.cmdline()


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
    before = stack.services()
    assert set(before) == set(SERVICES), before
    first = httpx.get(stack.url("streamer", "/healthz")).json()["pid"]
    assert first == before["streamer"]

    os.kill(before["streamer"], signal.SIGKILL)

    def streamer_back() -> bool:
        assert stack.run.poll() is None, f"herald run ended:\n{stack.log()}"
        answer = _get(stack.url("streamer", "/healthz"))
        return (answer is not None and answer.status_code == 200
                and answer.json()["pid"] != first)

    wait_until(streamer_back, 60, every=0.3, what="a new streamer")
    after = stack.services()
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
    left = [p for p in stack.seen if _alive(p)]
    assert left == [], f"left running: {[p.cmdline() for p in left]}"
