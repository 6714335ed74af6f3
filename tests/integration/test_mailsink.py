"""``python -m herald.mailsink``: the development SMTP server ``herald run`` starts."""

from __future__ import annotations

import os
import smtplib
import sys
from email import message_from_bytes
from email import policy as email_policy
from email.message import EmailMessage
from pathlib import Path

from herald.stack import free_port
from tests.conftest import Process, wait_until


def test_the_sink_keeps_each_mail_as_an_eml_file_prints_a_line_and_stops_on_sigterm(
        tmp_path: Path):
    port, folder = free_port(), tmp_path / "mail"
    sink = Process("mailsink", [sys.executable, "-m", "herald.mailsink", "--host",
                                "127.0.0.1", "--port", str(port), "--dir", str(folder)],
                   {**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        wait_until(lambda: f"smtp://127.0.0.1:{port}" in sink.log(), 20, what="the sink")
        message = EmailMessage()
        message["From"], message["To"] = "herald@localhost", "Alice <alice@example.com>"
        message["Subject"] = "Café opens at 8"
        message.set_content("Coffee is ready.")
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            assert smtp.send_message(message) == {}

        wait_until(lambda: "mail: " in sink.log(), 10, what="the sink's line")
        [kept] = list(folder.glob("*.eml"))
        assert f'mail: to=alice@example.com subject="Café opens at 8" -> {kept}' in sink.log()
        stored = message_from_bytes(kept.read_bytes(), policy=email_policy.default)
        assert stored["Subject"] == "Café opens at 8"
        assert stored.get_content().strip() == "Coffee is ready."
        assert [p.name for p in folder.iterdir()] == [kept.name]  # no temporary file left
    finally:
        status = sink.stop()
    assert status == 0, sink.log()
