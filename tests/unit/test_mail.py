"""E-mail messages (``herald.mail``): parts, headers, escaping, template overrides."""

from __future__ import annotations

import json
from email import message_from_bytes
from email import policy as email_policy
from pathlib import Path

import pytest

from herald import config as herald_config
from herald import mail
from herald.deliveries import delivery_id

NOTIFICATION = {
    "id": "n_01test", "title": "Build <b>green</b>", "body": "All 12 jobs passed & shipped.",
    "data": json.dumps({"build": 42}), "category": "updates", "critical": "0",
    "created_at": "1795830715759",
}
PROFILE = {"email": "alice@example.com", "name": "Alice Liddell", "locale": "en"}


@pytest.fixture
def cfg(tmp_path):
    return herald_config.load({"HERALD_HOME": str(tmp_path),
                               "HERALD_MAIL_FROM": "Herald <noreply@mail.example.org>"})


def _parsed(message):
    return message_from_bytes(message.as_bytes(), policy=email_policy.default)


def _parts(message):
    parsed = _parsed(message)
    text = parsed.get_body(("plain",)).get_content()
    html = parsed.get_body(("html",)).get_content()
    return parsed, text, html


def test_a_message_has_a_text_and_an_html_part_and_the_headers(cfg):
    did = delivery_id("n_01test", "email", "alice")
    url = "http://127.0.0.1:8000/api/unsubscribe/tok"
    parsed, text, html = _parts(mail.build(cfg, did, NOTIFICATION, PROFILE, url))
    assert parsed.get_content_type() == "multipart/alternative"
    assert parsed["Message-ID"] == f"<{did}@mail.example.org>"
    assert parsed["From"] == "Herald <noreply@mail.example.org>"
    assert parsed["To"] == "Alice Liddell <alice@example.com>"
    assert parsed["Subject"] == "Build <b>green</b>"
    assert parsed["List-Unsubscribe"] == f"<{url}>"
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "Build <b>green</b>" in text and "All 12 jobs passed & shipped." in text
    assert "Build &lt;b&gt;green&lt;/b&gt;" in html and "<b>green" not in html
    assert "passed &amp; shipped" in html and "Hello Alice Liddell" in html
    assert url in text and f'href="{url}"' in html


def test_the_message_id_is_the_same_on_every_attempt(cfg):
    did = delivery_id("n_01test", "email", "alice")
    first = mail.build(cfg, did, NOTIFICATION, PROFILE, None)
    again = mail.build(cfg, did, NOTIFICATION, PROFILE, None)
    assert first["Message-ID"] == again["Message-ID"] and first["Date"] == again["Date"]


def test_without_an_unsubscribe_url_there_is_no_list_unsubscribe(cfg):
    critical = {**NOTIFICATION, "critical": "1"}
    message = mail.build(cfg, "d_x", critical, PROFILE, None)
    assert message["List-Unsubscribe"] is None and message["List-Unsubscribe-Post"] is None


def test_a_subject_is_one_line_whatever_the_title(cfg):
    message = mail.build(cfg, "d_x", {**NOTIFICATION, "title": "two\r\nBcc: evil@x"},
                         PROFILE, None)
    assert message["Subject"] == "two Bcc: evil@x" and message["Bcc"] is None


def test_templates_in_the_templates_dir_override_the_defaults_file_by_file(tmp_path):
    (tmp_path / "t" / "email").mkdir(parents=True)
    (tmp_path / "t" / "email" / "notification.subject").write_text(
        "[{{ notification.category }}] {{ notification.title }} #{{ notification.data.build }}")
    cfg = herald_config.load({"HERALD_HOME": str(tmp_path),
                              "HERALD_TEMPLATES_DIR": str(tmp_path / "t")})
    _, text, _ = _parts(mail.build(cfg, "d_x", NOTIFICATION, PROFILE, None))
    assert mail.build(cfg, "d_x", NOTIFICATION, PROFILE, None)["Subject"] == (
        "[updates] Build <b>green</b> #42")
    assert "All 12 jobs passed" in text  # the default text template still applies


@pytest.mark.parametrize("address", ["not an address", "a@b@c", "\nx@example.com"])
def test_an_address_that_cannot_go_in_a_header_is_refused(cfg, address):
    with pytest.raises(mail.BadAddress):
        mail.build(cfg, "d_x", NOTIFICATION, {**PROFILE, "email": address}, None)


def test_the_default_templates_ship_in_the_package():
    root = Path(mail.__file__).parent / "templates" / "email"
    assert {p.name for p in root.iterdir()} >= {
        "notification.txt", "notification.html", "notification.subject"}
