"""The e-mail channel against a real SMTP server (aiosmtpd in this process) and real
Celery workers: what arrives, retries of 4xx replies, failures on 5xx, preferences,
template overrides, and a worker killed in the middle of sending a mail.

Each deployment here (a worker and the stores it uses) has a ``HERALD_PREFIX`` of its
own, so its e-mail queue is consumed by its own worker only, never by the session's.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email import message_from_bytes
from email import policy as email_policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import psutil
import pytest
from aiosmtpd.controller import Controller

from herald import config as herald_config
from herald import services as herald_services
from herald import unsubscribe
from herald.channels import EMAIL
from herald.config import Config
from herald.deliveries import delivery_id
from herald.notifications import NewNotification
from herald.services import Services
from herald.stack import free_port
from tasks.factory import HeraldCelery, make_celery
from tasks.outbound import dispatch_task_name
from tests.conftest import Process, start_worker, wait_until


@dataclass
class Mail:
    """One DATA the server was given: its envelope recipients, the parsed message and
    its bytes as they came."""

    to: list[str]
    message: EmailMessage
    raw: bytes


class MailHost:
    """A real SMTP server: answers as the test plans, keeps every message it was given.

    ``replies``: DATA replies to give, in order, before accepting; ``refuse``: RCPT
    address -> reply; ``hold``: when set, the first DATA waits for it (``held`` says the
    first DATA came) and is then answered 421.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self.reset()

    def reset(self) -> None:
        self.offered: list[Mail] = []
        self.accepted: list[Mail] = []
        self.replies: list[str] = []
        self.refuse: dict[str, str] = {}
        self.hold: threading.Event | None = None
        self.held = threading.Event()

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,  # noqa: N802
                          rcpt_options: list[str]) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        mail = Mail(list(envelope.rcpt_tos),
                    message_from_bytes(envelope.content, policy=email_policy.default),
                    envelope.original_content or envelope.content)
        self.offered.append(mail)
        if self.hold is not None and len(self.offered) == 1:
            self.held.set()
            while not self.hold.is_set():
                await asyncio.sleep(0.05)
            return "421 4.3.0 aborted by the test"
        if self.replies:
            return self.replies.pop(0)
        self.accepted.append(mail)
        return "250 2.0.0 OK"

    def accepted_for(self, address: str) -> list[EmailMessage]:
        return [mail.message for mail in self.accepted if address in mail.to]

    def raw_for(self, address: str) -> list[bytes]:
        return [mail.raw for mail in self.accepted if address in mail.to]


@dataclass
class Deployment:
    """A worker and the stores, producer and configuration it shares."""

    config: Config
    services: Services
    producer: HeraldCelery
    worker: Process | None

    def notify(self, recipients: list[str], title: str = "Hello", body: str = "",
               category: str = "general", critical: bool = False) -> str:
        """Store an e-mail notification and send its dispatch task; answer its id."""
        new = NewNotification(title=title, body=body, recipients=recipients,
                              channels=[EMAIL], category=category, critical=critical)
        created = self.services.notifications.create(new)
        self.producer.send_task(dispatch_task_name(EMAIL),
                                kwargs={"notification_id": created.id},
                                task_id=f"{created.id}.{EMAIL}")
        return created.id

    def delivery(self, notification_id: str, user: str) -> dict[str, Any]:
        found = [d for d in self.services.deliveries.of_notification(notification_id)
                 if d["target"] == user]
        return found[0] if found else {}

    def wait_state(self, notification_id: str, user: str, *states: str,
                   timeout: float = 30) -> dict[str, Any]:
        wait_until(lambda: self.delivery(notification_id, user).get("state") in states,
                   timeout, every=0.1, what=f"{user}'s e-mail to be {' or '.join(states)}")
        return self.delivery(notification_id, user)

    def profile(self, user: str, email: str | None, name: str | None = None) -> None:
        self.services.profiles.put(user, {"email": email, "name": name})


@pytest.fixture(scope="module")
def mailhost() -> Iterator[MailHost]:
    host = MailHost()
    host.controller.start()
    yield host
    host.controller.stop()


@pytest.fixture(scope="module")
def deploy(child_env: dict[str, str], mailhost: MailHost
           ) -> Iterator[Callable[..., Deployment]]:
    """``deploy(name, worker=True, **settings)``: a deployment of prefix ``<session>-name``
    sending to ``mailhost``; its worker is stopped at the end of the module."""
    started: list[Process] = []

    def make(name: str, worker: bool = True, **settings: str) -> Deployment:
        env = {**child_env, "HERALD_PREFIX": f"{child_env['HERALD_PREFIX']}-{name}",
               "HERALD_SMTP_URL": f"smtp://127.0.0.1:{mailhost.port}",
               "HERALD_SMTP_TIMEOUT": "5", **settings}
        cfg = herald_config.load(env)
        process = start_worker(env, name=f"mail-{name}", concurrency=2) if worker else None
        if process:
            started.append(process)
        return Deployment(cfg, herald_services.build(cfg), make_celery(cfg), process)

    yield make
    for process in started:
        process.stop()


@pytest.fixture(scope="module")
def deployment(deploy: Callable[..., Deployment]) -> Deployment:
    return deploy("mail")


@pytest.fixture
def smtp(mailhost: MailHost, clean: None) -> Iterator[MailHost]:
    """The SMTP server, with nothing received and nothing planned; data flushed."""
    mailhost.reset()
    yield mailhost
    if mailhost.hold is not None:
        mailhost.hold.set()


def _parts(message: EmailMessage) -> tuple[str, str]:
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None, message.as_string()
    return text.get_content(), html.get_content()


def test_the_mail_arrives_with_both_parts_its_headers_and_the_rendered_template(
        smtp, deployment):
    deployment.profile("alice", "alice@example.com", "Alice Liddell")
    nid = deployment.notify(["alice"], title="<script>alert(1)</script> Deploy done",
                            body="Version 42 is live", category="updates")
    assert deployment.wait_state(nid, "alice", "sent")["attempts"] == 1

    [message] = smtp.accepted_for("alice@example.com")
    cfg = deployment.config
    assert message.get_content_type() == "multipart/alternative"
    assert message["From"] == cfg.mail_from and message["To"] == "Alice Liddell <alice@example.com>"
    assert message["Subject"] == "<script>alert(1)</script> Deploy done"
    assert message["Message-ID"] == f"<{delivery_id(nid, EMAIL, 'alice')}@localhost>"
    link = unsubscribe.url(cfg, "alice", "updates")
    assert message["List-Unsubscribe"] == f"<{link}>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    # As mail clients read it: the URL itself on the header line, not encoded words.
    assert f"\nList-Unsubscribe: <{link}>\r\n".encode() in smtp.raw_for("alice@example.com")[0]
    text, html = _parts(message)
    assert "<script>alert(1)</script> Deploy done" in text and "Version 42 is live" in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt; Deploy done" in html
    assert "<script>" not in html and "Version 42 is live" in html
    assert "Hello Alice Liddell" in html and link in text


def test_a_451_twice_is_retried_and_exactly_one_mail_arrives(smtp, deployment):
    smtp.replies = ["451 4.3.0 Try again later"] * 2
    deployment.profile("alice", "alice@example.com")
    deployment.profile("bob", "bob@example.com")
    nid = deployment.notify(["alice"], title="Third time lucky")
    status = deployment.wait_state(nid, "alice", "sent")
    assert status["attempts"] == 3 and status["error"] is None

    sentinel = deployment.notify(["bob"], title="sentinel")
    deployment.wait_state(sentinel, "bob", "sent")
    assert len(smtp.accepted_for("alice@example.com")) == 1
    tried = [m.message for m in smtp.offered if "alice@example.com" in m.to]
    assert len(tried) == 3
    assert len({m["Message-ID"] for m in tried}) == 1  # the same on every attempt


def test_a_550_refused_recipient_fails_at_once_with_the_reply(smtp, deployment):
    smtp.refuse = {"bob@example.com": "550 5.1.1 No such user here"}
    deployment.profile("bob", "bob@example.com")
    nid = deployment.notify(["bob"], title="Nobody home")
    status = deployment.wait_state(nid, "bob", "failed", "dead", "sent")
    assert status["state"] == "failed" and status["attempts"] == 1
    assert "550" in status["error"] and "No such user here" in status["error"]
    assert smtp.offered == []


def test_a_554_to_the_message_fails_at_once(smtp, deployment):
    smtp.replies = ["554 5.6.0 Message rejected as spam"]
    deployment.profile("bob", "bob@example.com")
    nid = deployment.notify(["bob"], title="Buy now")
    status = deployment.wait_state(nid, "bob", "failed", "dead", "sent")
    assert (status["state"], status["attempts"]) == ("failed", 1)
    assert "554" in status["error"] and "rejected as spam" in status["error"]
    assert smtp.accepted == []


def test_opted_out_users_and_users_without_an_address_get_nothing_and_critical_sends_anyway(
        smtp, deployment):
    for user in ("alice", "bob"):
        deployment.profile(user, f"{user}@example.com")
    deployment.profile("carol", None, "Carol")
    deployment.services.preferences.turn_off("alice", EMAIL, "marketing")

    nid = deployment.notify(["alice", "bob", "carol"], title="Spring sale",
                            category="marketing")
    assert deployment.wait_state(nid, "bob", "sent")["attempts"] == 1  # the sentinel
    alice, carol = deployment.delivery(nid, "alice"), deployment.delivery(nid, "carol")
    assert (alice["state"], alice["error"], alice["attempts"]) == ("skipped", "opted out", 0)
    assert (carol["state"], carol["error"]) == ("skipped", "no e-mail address")
    assert [m.to for m in smtp.offered] == [["bob@example.com"]]

    urgent = deployment.notify(["alice"], title="Your password was changed",
                               category="marketing", critical=True)
    deployment.wait_state(urgent, "alice", "sent")
    [message] = smtp.accepted_for("alice@example.com")
    assert message["Subject"] == "Your password was changed"
    assert message["List-Unsubscribe"] is None and message["List-Unsubscribe-Post"] is None


def test_templates_from_the_templates_dir_are_used(smtp, deploy, tmp_path: Path):
    (tmp_path / "email").mkdir()
    (tmp_path / "email" / "notification.subject").write_text(
        "[{{ notification.category }}] {{ notification.title }}")
    (tmp_path / "email" / "notification.html").write_text(
        "<p class=custom>{{ notification.title }} for {{ profile.name }}</p>")
    custom = deploy("templates", HERALD_TEMPLATES_DIR=str(tmp_path))
    custom.profile("alice", "alice@example.com", "Alice & co")
    nid = custom.notify(["alice"], title="<b>Ready</b>", body="Your export is ready",
                        category="account")
    custom.wait_state(nid, "alice", "sent")

    [message] = smtp.accepted_for("alice@example.com")
    assert message["Subject"] == "[account] <b>Ready</b>"
    text, html = _parts(message)
    assert html.strip() == "<p class=custom>&lt;b&gt;Ready&lt;/b&gt; for Alice &amp; co</p>"
    assert "Your export is ready" in text  # the default text template


@pytest.mark.faults
def test_a_worker_killed_mid_delivery_leads_to_the_mail_delivered_once(smtp, deploy):
    settings = {"HERALD_SMTP_TIMEOUT": "1", "HERALD_TASK_TIME_LIMIT": "5",
                "HERALD_VISIBILITY_TIMEOUT": "10", "HERALD_RESTORE_INTERVAL": "1"}
    first = deploy("killed", **settings)
    assert first.worker is not None
    smtp.hold = threading.Event()
    first.profile("alice", "alice@example.com")
    nid = first.notify(["alice"], title="Survives a crash")

    assert smtp.held.wait(30), "the first attempt never reached DATA"
    main = psutil.Process(first.worker.popen.pid)
    for process in [main, *main.children(recursive=True)]:
        os.kill(process.pid, signal.SIGKILL)
    first.worker.stop()
    smtp.hold.set()  # the first attempt's connection is dead: its reply goes nowhere
    assert first.delivery(nid, "alice")["state"] == "sending"

    replacement = deploy("killed", **settings)  # redelivers after the visibility timeout
    status = replacement.wait_state(nid, "alice", "sent", "failed", "dead", timeout=60)
    assert (status["state"], status["attempts"]) == ("sent", 2)
    replacement.profile("bob", "bob@example.com")
    replacement.wait_state(replacement.notify(["bob"], title="sentinel"), "bob", "sent")
    message_id = f"<{delivery_id(nid, EMAIL, 'alice')}@localhost>"
    assert [m["Message-ID"] for m in smtp.accepted_for("alice@example.com")] == [message_id]
    tried = [m.message["Message-ID"] for m in smtp.offered if "alice@example.com" in m.to]
    assert tried == [message_id] * 2  # the killed attempt, then the one accepted
