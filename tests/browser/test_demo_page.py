"""The demo page in real headless Chromium (Debian's chromium and chromedriver).

Each test drives the page as a user would, over SSE and over WebSocket; screenshots go
to ``tests/artifacts/``.
"""

from __future__ import annotations

import secrets
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest

from herald.apikeys import ApiKeyStore
from herald.connection import client
from herald.keys import Keys
from tasks.events import publish
from tests.conftest import (
    ROOT,
    Process,
    free_port,
    start_api,
    start_streamer,
    start_worker,
    wait_until,
)

selenium = pytest.importorskip("selenium")
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
BUNDLE = ROOT / "web" / "dist" / "demo.js"
ARTIFACTS = ROOT / "tests" / "artifacts"
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="chromium and chromedriver needed "
                       "(Debian packages chromium, chromium-driver; .ci/run installs them)"),
]


@pytest.fixture(scope="module")
def stack(config, services, rdb, worker, child_env):
    """An API serving the demo page, a streamer that lets that page in, a worker."""
    from werkzeug.serving import make_server

    from api import create_app

    if not BUNDLE.exists():
        pytest.fail("web/dist/demo.js is missing: cd web && npm ci && npm run build")
    rdb.flushdb()
    api_port = free_port()
    api_url = f"http://127.0.0.1:{api_port}"
    streamer_port = free_port()
    env = {**child_env, "HERALD_CORS_ORIGINS": api_url}
    process, streamer_url = start_streamer(env, port=streamer_port, name="streamer-demo")
    key, _ = services.apikeys.create("demo")
    home = Path(tempfile.mkdtemp(prefix="herald-demo-home-"))  # its mail folder: the page's
    app = create_app(config.replace(streamer_url=streamer_url, api_key=key, home=home))
    server = make_server("127.0.0.1", api_port, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    box = {"streamer": process, "env": env, "port": streamer_port}
    yield {"api": api_url, "key": key, "streamer": box, "mail": home / "mail"}
    server.shutdown()
    box["streamer"].stop()


@pytest.fixture
def browser():
    """A factory of headless Chromium windows, all closed after the test."""
    drivers = []

    def open_window() -> webdriver.Chrome:
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--no-first-run",
                     "--disable-quic", f"--user-data-dir={tempfile.mkdtemp()}",
                     "--window-size=1200,900"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(DRIVER), options=options)
        driver.set_script_timeout(10)
        drivers.append(driver)
        return driver

    yield open_window
    for driver in drivers:
        driver.quit()


def shot(driver, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def open_page(driver, stack, user: str, transport: str, query: str = "") -> None:
    driver.get(f"{stack['api']}/demo/{query}")
    driver.find_element(By.ID, f"transport-{transport}").click()
    field = driver.find_element(By.ID, "user")
    field.clear()
    field.send_keys(user)
    driver.find_element(By.ID, "connect").click()
    wait(driver, 10).until(lambda d: d.find_element(By.ID, "status")
                           .get_attribute("data-status") == "open")


def wait(driver, seconds: float) -> WebDriverWait:
    return WebDriverWait(driver, seconds, poll_frequency=0.05)


def titles(driver) -> list[str]:
    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#inbox .notification .title")]


def send(stack, to: str, title: str) -> str:
    """Send a notification through the API; its status URL."""
    answer = httpx.post(f"{stack['api']}/api/notifications",
                        json={"recipients": [to], "title": title, "body": "from the test"},
                        headers={"Authorization": f"Bearer {stack['key']}"})
    assert answer.status_code == 202, answer.text
    return answer.json()["status_url"]


def wait_delivered(stack, status_url: str) -> None:
    """Wait until the worker has delivered the notification (stored and published)."""
    headers = {"Authorization": f"Bearer {stack['key']}"}
    wait_until(lambda: httpx.get(status_url, headers=headers).json()["status"] == "delivered",
               what=f"delivery of {status_url}")


@pytest.mark.parametrize("transport", ["sse", "ws"])
def test_a_notification_sent_through_the_api_shows(stack, browser, transport):
    alice = browser()
    open_page(alice, stack, "alice", transport)
    unread = int(alice.find_element(By.ID, "unread").text or 0)
    send(stack, "alice", f"Build green ({transport})")
    wait(alice, 10).until(lambda d: f"Build green ({transport})" in titles(d))
    assert int(alice.find_element(By.ID, "unread").text) == unread + 1
    shot(alice, f"notification-{transport}")


@pytest.mark.parametrize("transport", ["sse", "ws"])
def test_an_event_of_any_type_published_through_the_api_reaches_the_page(stack, browser,
                                                                        transport):
    """``chat.message`` is no type the client knows of: EventSource delivers it all the
    same (the client asks for unnamed events), as the WebSocket does."""
    user = f"chat-{transport}"
    page = browser()
    open_page(page, stack, user, transport)
    answer = httpx.post(f"{stack['api']}/api/events",
                        json={"topic": f"user:{user}", "type": "chat.message",
                              "data": {"text": "hi"}},
                        headers={"Authorization": f"Bearer {stack['key']}"})
    assert answer.status_code == 202, answer.text
    wait(page, 5).until(lambda d: logged(d, "chat.message") == 1)
    detail = page.find_element(By.CSS_SELECTOR, "#log li[data-type='chat.message'] .detail")
    assert detail.text == f"user:{user} {answer.json()['id']}"
    shot(page, f"chat-message-{transport}")


@pytest.mark.parametrize("transport", ["sse", "ws"])
def test_bob_sees_none_of_alices_events(stack, browser, transport):
    alice, bob = browser(), browser()
    open_page(alice, stack, "alice", transport)
    open_page(bob, stack, "bob", transport)
    status_url = send(stack, "alice", f"Only for alice ({transport})")
    wait(alice, 10).until(lambda d: f"Only for alice ({transport})" in titles(d))
    wait_delivered(stack, status_url)
    sentinel = publish("user:bob", "sentinel", "message")  # after all alice's were sent
    wait(bob, 10).until(lambda d: sentinel in logged_ids(d))
    assert f"Only for alice ({transport})" not in titles(bob)
    log = bob.find_element(By.ID, "log").text
    assert "Only for alice" not in log
    shot(bob, f"bob-{transport}")


@pytest.mark.parametrize("transport", ["sse", "ws"])
def test_a_job_progress_bar_reaches_100(stack, browser, transport):
    alice = browser()
    open_page(alice, stack, "alice", transport)
    alice.find_element(By.ID, "start-job").click()
    wait(alice, 15).until(lambda d: d.find_element(By.ID, "job-progress")
                          .get_attribute("value") == "100")
    assert "succeeded" in alice.find_element(By.ID, "job-state").text
    shot(alice, f"job-{transport}")


@pytest.mark.parametrize("transport", ["sse", "ws"])
def test_restarting_the_streamer_resumes_with_the_missed_events(stack, browser, transport):
    alice = browser()
    open_page(alice, stack, "alice", transport)
    box = stack["streamer"]
    box["streamer"].popen.send_signal(signal.SIGTERM)
    box["streamer"].popen.wait(20)
    missed = [f"While down {n} ({transport})" for n in range(3)]
    for status_url in [send(stack, "alice", title) for title in missed]:
        wait_delivered(stack, status_url)  # into history, while no streamer runs
    box["streamer"], _ = start_streamer(box["env"], port=box["port"], name="streamer-demo")
    wait(alice, 30).until(lambda d: all(t in titles(d) for t in missed))
    status = alice.find_element(By.ID, "status")
    wait(alice, 5).until(lambda d: "resumed" in status.text)
    assert "3" in status.text
    shown = titles(alice)
    assert [t for t in shown if t in missed] == list(reversed(missed))  # newest first
    shot(alice, f"resumed-{transport}")


def test_two_windows_one_sends_the_other_receives(stack, browser):
    sender, receiver = browser(), browser()
    open_page(receiver, stack, "carol", "sse")
    open_page(sender, stack, "dave", "ws")
    sender.find_element(By.ID, "send-to").send_keys("carol")
    sender.find_element(By.ID, "send-title").send_keys("Hello from dave's window")
    sender.find_element(By.ID, "send-body").send_keys("typed in the page")
    sender.find_element(By.ID, "send").click()
    wait(receiver, 10).until(lambda d: "Hello from dave's window" in titles(d))
    item = receiver.find_element(By.CSS_SELECTOR, "#inbox .notification.unread")
    item.find_element(By.CSS_SELECTOR, ".mark-read").click()
    wait(receiver, 10).until(lambda d: d.find_element(By.ID, "unread").text == "0")
    shot(receiver, "two-windows")


def logged_ids(driver) -> list[str]:
    """Ids of the events of type ``message`` in the page's log, oldest first."""
    return driver.execute_script(
        "return [...document.querySelectorAll(\"#log li[data-type='message'] .detail\")]"
        ".map((detail) => detail.textContent.split(' ').pop()).reverse()")


def logged(driver, type_: str) -> int:
    """How many entries of ``type_`` the page's log holds."""
    return len(driver.find_elements(By.CSS_SELECTOR, f"#log li[data-type='{type_}']"))


@pytest.mark.parametrize("transport", ["sse", "ws"])
def test_the_stream_outlives_its_5s_tokens_with_every_event_once_in_order(stack, browser,
                                                                          transport):
    user = f"tess-{transport}"
    page = browser()
    open_page(page, stack, user, transport, query="?ttl=5")
    published = []

    def renewals() -> int:
        return logged(page, "token") - 2  # connect, then the first connection

    while renewals() < 3:  # events published across three expiries at least
        assert len(published) < 200, f"only {renewals()} token renewals in 50 s"
        published.append(publish(f"user:{user}", {"n": len(published)}, "message"))
        time.sleep(0.25)
    published.append(publish(f"user:{user}", {"n": len(published)}, "message"))
    wait(page, 10).until(lambda d: published[-1] in logged_ids(d),
                         f"the page stopped receiving at {logged_ids(page)[-1:]}")
    assert logged_ids(page) == published  # each once, in order, none missing
    print(f"{len(published)} events, {renewals()} token renewals, "
          f"{logged(page, 'resumed')} resumes")
    if transport == "ws":
        assert logged(page, "resumed") == 0, "renewed in band, never reconnected"
    shot(page, f"token-renewal-{transport}")


def fill_send_form(page, to: str, title: str, channels: list[str], category: str = "general",
                   critical: bool = False) -> None:
    page.find_element(By.ID, "send-to").send_keys(to)
    page.find_element(By.ID, "send-title").send_keys(title)
    for channel in ("inapp", "email", "webhook"):
        box = page.find_element(By.ID, f"channel-{channel}")
        if box.is_selected() != (channel in channels):
            box.click()
    page.find_element(By.CSS_SELECTOR, f"#send-category option[value='{category}']").click()
    if page.find_element(By.ID, "send-critical").is_selected() != critical:
        page.find_element(By.ID, "send-critical").click()
    page.find_element(By.ID, "send").click()


def delivery_rows(page) -> list[tuple[str, str, str]]:
    """(channel, target, state) of each row of the delivery status panel."""
    return [tuple(row.find_element(By.CSS_SELECTOR, f"td.{name}").text
                  for name in ("channel", "target", "state"))
            for row in page.find_elements(By.CSS_SELECTOR, "#deliveries tbody tr")]


def test_the_status_panel_follows_what_the_page_sent_until_it_is_final(stack, browser):
    page = browser()
    open_page(page, stack, "stella", "sse")
    fill_send_form(page, "stella", "Status please", ["inapp"], category="account")
    wait(page, 15).until(lambda d: d.find_element(By.ID, "delivery-state").text == "final")
    rows = delivery_rows(page)
    assert rows and {channel for channel, _, _ in rows} == {"inapp"}, rows
    assert all(state in ("delivered", "sent") for _, _, state in rows), rows
    wait(page, 10).until(lambda d: "Status please" in titles(d))
    shot(page, "delivery-status-inapp")


def write_mail(folder: Path, to: str, subject: str, text: str, unsubscribe: str) -> None:
    """One message as the dev mail sink keeps it: an ``.eml`` file in the mail folder."""
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "Herald <herald@localhost>", to, subject
    message["List-Unsubscribe"] = f"<{unsubscribe}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message.set_content(text)
    message.add_alternative(f"<p>{text}</p>", subtype="html")
    folder.mkdir(exist_ok=True)
    (folder / f"{time.time_ns()}-{subject.replace(' ', '-')}.eml").write_bytes(bytes(message))


def set_address(page, address: str) -> None:
    """Save ``address`` in the connected user's profile with the page's own form."""
    field = page.find_element(By.ID, "profile-email")
    field.clear()
    field.send_keys(address)
    page.find_element(By.ID, "profile-save").click()
    wait(page, 10).until(lambda d: address in d.find_element(By.ID, "mail-status").text)


def test_the_mail_panel_shows_the_users_mail_from_the_sink_folder(stack, browser, services):
    page = browser()
    open_page(page, stack, "maya", "sse")
    set_address(page, "maya@example.com")
    assert services.profiles.get("maya")["email"] == "maya@example.com"
    link = f"{stack['api']}/api/unsubscribe/some-token"
    write_mail(stack["mail"], "someone@example.com", "Not maya's", "no", link)
    write_mail(stack["mail"], "Maya <maya@example.com>", "Your weekly digest",
               "Three things happened.", link)
    wait(page, 10).until(lambda d: "Your weekly digest" in d.find_element(By.ID, "mail").text)
    item = page.find_element(By.CSS_SELECTOR, "#mail .mail")
    assert "Three things happened." in item.find_element(By.CSS_SELECTOR, ".text").text
    unsubscribe = item.find_element(By.CSS_SELECTOR, "a.unsubscribe")
    assert unsubscribe.get_attribute("href") == link
    assert "Not maya's" not in page.find_element(By.ID, "mail").text
    shot(page, "mail-panel")


@pytest.fixture(scope="module")
def mail_stack(child_env):
    """A deployment of its own (``HERALD_PREFIX``, ``HERALD_HOME``) whose e-mail goes to
    the dev mail sink, as under ``herald run``: ``python -m herald.mailsink`` writing
    ``.eml`` files to ``$HERALD_HOME/mail``, a worker sending to it, the API (gunicorn)
    serving the page and reading that folder, a streamer. Its own prefix keeps the
    session's worker (which has no SMTP server) off its e-mail queue."""
    home = Path(tempfile.mkdtemp(prefix="herald-demo-mail-"))
    smtp_port, streamer_port = free_port(), free_port()
    sink = Process("mailsink", [sys.executable, "-m", "herald.mailsink", "--host", "127.0.0.1",
                                "--port", str(smtp_port), "--dir", str(home / "mail")],
                   child_env)
    wait_until(lambda: _accepts(smtp_port), 20, every=0.1, what="the mail sink")
    env = {**child_env, "HERALD_HOME": str(home),
           "HERALD_PREFIX": f"herald-demo-{secrets.token_hex(3)}",
           "HERALD_SMTP_URL": f"smtp://127.0.0.1:{smtp_port}",
           "HERALD_STREAMER_URL": f"http://127.0.0.1:{streamer_port}"}
    key, _ = ApiKeyStore(client(env["REDIS_URL"]), Keys(env["HERALD_PREFIX"])).create("demo")
    started = [sink, start_worker(env, name="worker-demo-mail")]
    try:
        api, api_url = start_api({**env, "HERALD_API_KEY": key}, name="api-demo-mail")
        started.append(api)
        streamer, _ = start_streamer({**env, "HERALD_CORS_ORIGINS": api_url},
                                     port=streamer_port, name="streamer-demo-mail")
        started.append(streamer)
        yield {"api": api_url, "key": key, "mail": home / "mail", "sink": sink}
    finally:
        for process in reversed(started):
            process.stop()


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def test_mail_sent_from_the_page_shows_in_the_mail_and_status_panels(mail_stack, browser):
    page = browser()
    open_page(page, mail_stack, "mina", "sse")
    set_address(page, "mina@example.com")
    fill_send_form(page, "mina", "Your order shipped", ["inapp", "email"], category="updates")
    wait(page, 30).until(lambda d: d.find_element(By.ID, "delivery-state").text == "final")
    rows = delivery_rows(page)
    assert ("email", "mina", "sent") in rows and ("inapp", "mina", "sent") in rows, rows
    wait(page, 10).until(lambda d: "Your order shipped" in d.find_element(By.ID, "mail").text)
    item = page.find_element(By.CSS_SELECTOR, "#mail .mail")
    assert "mina@example.com" in item.find_element(By.CSS_SELECTOR, ".meta").text
    unsubscribe = item.find_element(By.CSS_SELECTOR, "a.unsubscribe").get_attribute("href")
    assert "/api/unsubscribe/" in unsubscribe  # under HERALD_API_URL, signed
    assert list(mail_stack["mail"].glob("*.eml")), "the sink kept no .eml file"
    assert "Your order shipped" in mail_stack["sink"].log()  # its one line per mail
    wait(page, 10).until(lambda d: "Your order shipped" in titles(d))  # in-app too
    shot(page, "mail-and-status")
