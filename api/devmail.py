"""The dev mail sink's folder read back for the demo page: a user's newest e-mails.

In development ``herald run`` keeps every e-mail as an ``.eml`` file under
``$HERALD_HOME/mail`` (``herald.mailsink``). ``newest`` reads the newest of them with
the standard library's ``email`` package and answers those addressed to one address,
newest first, as plain JSON-ready dicts: who it went to, subject, date, the text part
and the one-click unsubscribe link.

Bounded whatever the folder holds: at most ``SCAN`` files are opened (the newest, by
modification time), each read up to ``MAX_BYTES``; a file that is not a readable
message is left out, never an error.
"""

from __future__ import annotations

import email
import email.policy
import re
from email.message import EmailMessage
from email.utils import getaddresses, parsedate_to_datetime
from pathlib import Path
from typing import Any

SCAN = 200  # newest files opened per call
LIMIT = 20  # messages answered per call
MAX_BYTES = 1 << 20  # a bigger file is read up to here (its text part may be cut)
MAX_TEXT = 8000  # characters of the text part answered
_HTTP_LINK = re.compile(r"<(https?://[^>\s]+)>")


def newest(folder: Path, address: str, limit: int = LIMIT) -> list[dict[str, Any]]:
    """The newest messages in ``folder`` whose ``To`` holds ``address`` (any case)."""
    wanted = address.strip().lower()
    found = []
    for path in _newest_files(folder)[:SCAN]:
        message = _read(path)
        if message is not None and wanted in _recipients(message):
            found.append(summary(path.name, message))
            if len(found) == limit:
                break
    return found


def _newest_files(folder: Path) -> list[Path]:
    stamped = []
    for path in folder.glob("*.eml"):
        try:
            stamped.append((path.stat().st_mtime_ns, path.name, path))
        except OSError:  # removed meanwhile
            continue
    return [path for _, _, path in sorted(stamped, reverse=True)]


def _read(path: Path) -> EmailMessage | None:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_BYTES)
    except OSError:
        return None
    message = email.message_from_bytes(data, policy=email.policy.default)
    return message if isinstance(message, EmailMessage) and message["To"] else None


def _recipients(message: EmailMessage) -> set[str]:
    headers = [str(value) for value in message.get_all("To", [])]
    return {address.lower() for _, address in getaddresses(headers) if address}


def summary(name: str, message: EmailMessage) -> dict[str, Any]:
    """What the demo page shows of one message."""
    return {
        "file": name,
        "to": str(message["To"]),
        "from": str(message["From"] or ""),
        "subject": str(message["Subject"] or ""),
        "date": _date(message),
        "message_id": str(message["Message-ID"] or ""),
        "text": _text(message),
        "has_html": message.get_body(preferencelist=("html",)) is not None,
        "unsubscribe": _unsubscribe(message),
        "one_click": "List-Unsubscribe=One-Click" in str(message["List-Unsubscribe-Post"]),
    }


def _date(message: EmailMessage) -> str | None:
    try:
        return parsedate_to_datetime(str(message["Date"])).isoformat()
    except (TypeError, ValueError):
        return None


def _text(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    if part is None:
        return ""
    try:
        return str(part.get_content())[:MAX_TEXT]
    except (LookupError, ValueError):  # unknown charset, broken encoding
        return ""


def _unsubscribe(message: EmailMessage) -> str | None:
    """The http(s) link of ``List-Unsubscribe`` (RFC 2369: ``<url>, <mailto:...>``)."""
    link = _HTTP_LINK.search(str(message["List-Unsubscribe"] or ""))
    return link.group(1) if link else None
