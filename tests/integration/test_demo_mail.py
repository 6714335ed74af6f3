"""``/demo/mail``: a user's newest e-mails as the dev mail sink keeps them (``.eml`` files
under ``$HERALD_HOME/mail``), for the demo page only, read by a real API under gunicorn.

The files are written here the way the sink writes them: one RFC 5322 message each.
"""

from __future__ import annotations

import os
import tempfile
import time
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import start_api

UNSUBSCRIBE = "http://127.0.0.1:8000/api/unsubscribe/"


@pytest.fixture(scope="module")
def demo(child_env):
    """An API in development mode with a HERALD_HOME of its own (its mail folder)."""
    home = Path(tempfile.mkdtemp(prefix="herald-demo-mail-"))
    process, url = start_api({**child_env, "HERALD_HOME": str(home)}, name="api-demo-mail")
    (home / "mail").mkdir()
    yield {"url": url, "mail": home / "mail"}
    process.stop()


def write_mail(folder: Path, to: str, subject: str, text: str, age: float,
               unsubscribe: str | None = None) -> str:
    """One ``.eml`` file, multipart text + HTML, modified ``age`` seconds ago."""
    message = EmailMessage()
    message["From"] = "Herald <herald@localhost>"
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = format_datetime(datetime.now(UTC) - timedelta(seconds=age))
    message["Message-ID"] = make_msgid(domain="herald.test")
    if unsubscribe:
        message["List-Unsubscribe"] = f"<{unsubscribe}>, <mailto:unsubscribe@herald.test>"
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message.set_content(text)
    message.add_alternative(f"<p>{text}</p>", subtype="html")
    path = folder / f"{int((time.time() - age) * 1000)}-{subject.replace(' ', '-')}.eml"
    path.write_bytes(bytes(message))
    stamp = time.time() - age
    os.utime(path, (stamp, stamp))
    return path.name


def get_mail(demo, user: str, fetch_site: str | None = "same-origin",
             host: str = "127.0.0.1:{port}") -> httpx.Response:
    port = urlsplit(demo["url"]).port
    headers = {"Host": host.format(port=port)}
    if fetch_site:
        headers["Sec-Fetch-Site"] = fetch_site
    return httpx.get(f"{demo['url']}/demo/mail", params={"user": user}, headers=headers)


def test_a_users_newest_mail_with_its_text_and_unsubscribe_link(demo, services):
    services.profiles.put("mira", {"email": "Mira@Example.com", "name": "Mira"})
    folder = demo["mail"]
    older = write_mail(folder, "Mira <mira@example.com>", "First news", "older text", 60,
                       UNSUBSCRIBE + "older")
    write_mail(folder, "olaf@example.com", "Not for mira", "someone else's", 30)
    newer = write_mail(folder, "mira@example.com", "Second news", "newer text\nline 2", 10,
                       UNSUBSCRIBE + "newer")
    (folder / "9999999999999-broken.eml").write_bytes(b"\x00\xff not a message")

    answer = get_mail(demo, "mira")

    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["address"] == "Mira@Example.com" and body["folder"] == str(folder)
    assert [item["file"] for item in body["items"]] == [newer, older]  # newest first
    first = body["items"][0]
    assert first["subject"] == "Second news" and first["to"] == "mira@example.com"
    assert first["text"].strip() == "newer text\nline 2" and first["has_html"]
    assert first["unsubscribe"] == UNSUBSCRIBE + "newer" and first["one_click"]
    assert first["date"] and first["message_id"].endswith("@herald.test>")
    assert "Not for mira" not in answer.text


def test_no_profile_address_means_no_mail(demo):
    write_mail(demo["mail"], "nobody@example.com", "Stray", "text", 5)
    answer = get_mail(demo, "no-address-user")
    assert answer.status_code == 200, answer.text
    assert answer.json()["address"] is None and answer.json()["items"] == []


def test_a_bad_user_name_is_refused_naming_the_field(demo):
    answer = get_mail(demo, "Not A User!")
    assert answer.status_code == 400
    assert answer.json()["error"]["field"] == "user"


@pytest.mark.parametrize(("host", "fetch_site", "field"), [
    ("rebind.attacker.example:{port}", "same-origin", "Host"),
    ("127.0.0.1:{port}", None, "Sec-Fetch-Site"),
    ("127.0.0.1:{port}", "cross-site", "Sec-Fetch-Site"),
])
def test_only_the_demo_page_on_this_machine_may_read_it(demo, services, host, fetch_site,
                                                       field):
    services.profiles.put("mira", {"email": "mira@example.com"})
    write_mail(demo["mail"], "mira@example.com", "Secret link", "text", 1, UNSUBSCRIBE + "x")
    answer = get_mail(demo, "mira", fetch_site, host)
    assert answer.status_code == 403, answer.text
    assert answer.json()["error"]["field"] == field
    assert "Secret link" not in answer.text
