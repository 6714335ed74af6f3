"""A development SMTP server that keeps every mail as an ``.eml`` file.

``python -m herald.mailsink --host 127.0.0.1 --port 1025 --dir .herald/mail`` is what
``herald run`` starts when no ``HERALD_SMTP_URL`` is set, so e-mail works out of the box:
each message is written to ``<dir>/<UTC timestamp>-<short id>.eml`` (a temporary file
renamed into place, so a reader never sees half a mail; names sort by arrival) and one
line per mail is printed: ``mail: to=... subject="..." -> <file>``. It accepts every
message and relays none. SIGTERM or SIGINT stops it (exit status 0).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import signal
import sys
import tempfile
import threading
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from pathlib import Path
from typing import Any, TextIO

from aiosmtpd.controller import Controller

from herald import logs

log = logging.getLogger(__name__)


class Mailbox:
    """The aiosmtpd handler: keeps each mail in ``directory`` and reports it on ``out``."""

    def __init__(self, directory: Path, out: TextIO = sys.stdout) -> None:
        self.directory = directory
        self.out = out

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        path = store(self.directory, envelope.content)
        print(report(envelope.rcpt_tos, envelope.content, path), file=self.out, flush=True)
        return "250 Message accepted for delivery"


def store(directory: Path, content: bytes) -> Path:
    """Write ``content`` to a new ``.eml`` file in ``directory``, atomically."""
    path = directory / file_name(datetime.now(UTC))
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
    return path


def file_name(moment: datetime) -> str:
    """``20261128T015155.737123Z-1a2b3c4d.eml``: sorts by arrival, never collides."""
    return f"{moment.strftime('%Y%m%dT%H%M%S.%fZ')}-{secrets.token_hex(4)}.eml"


def report(recipients: list[str], content: bytes, path: Path) -> str:
    """The line printed for one mail."""
    headers = BytesHeaderParser(policy=default_policy).parsebytes(content)
    subject = json.dumps(str(headers.get("subject", "")), ensure_ascii=False)
    return f"mail: to={','.join(recipients)} subject={subject} -> {path}"


def serve(host: str, port: int, directory: Path) -> None:
    """Serve until SIGTERM or SIGINT."""
    directory.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    controller = Controller(Mailbox(directory), hostname=host, port=port,
                            enable_SMTPUTF8=True)
    controller.start()
    log.info("mail sink at smtp://%s:%d, keeping each mail in %s", host, port, directory)
    try:
        stop.wait()
    finally:
        controller.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m herald.mailsink", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1025)
    parser.add_argument("--dir", type=Path, default=Path(".herald/mail"))
    args = parser.parse_args(argv)
    logs.setup()
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd: a line per command
    serve(args.host, args.port, args.dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
