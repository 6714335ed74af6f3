"""E-mail messages of notifications: rendered from templates, with stable headers.

Pure: ``build`` makes an ``EmailMessage`` from a notification record, the recipient's
profile and their unsubscribe URL; it sends nothing (``tasks.email`` does).

Guarantees:
- a message is multipart/alternative, a text part and an HTML part rendered from the
  Jinja2 templates ``email/notification.txt`` and ``email/notification.html``, its
  subject from ``email/notification.subject`` (folded to one line); the HTML is
  autoescaped, so a notification's text can never become markup;
- templates in ``HERALD_TEMPLATES_DIR`` override those shipped in the package, file by
  file (a directory holding only ``email/notification.subject`` changes the subject);
- ``Message-ID`` is ``<delivery id@domain of HERALD_MAIL_FROM>``: the same on every
  attempt, so a receiver can drop the rare duplicate of an at-least-once delivery;
- with an unsubscribe URL, ``List-Unsubscribe: <url>`` (the URL as it is, on one
  line) and ``List-Unsubscribe-Post: List-Unsubscribe=One-Click`` (RFC 8058); a
  critical notification is given none;
- an address that cannot go in a header raises ``BadAddress``.
"""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime
from email import policy as email_policy
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from pathlib import Path
from typing import Any

import jinja2

from herald.config import Config
from herald.times import iso

TEMPLATE = "email/notification.{}"  # .subject, .txt, .html
# Header lines up to RFC 5322's hard limit of 998 characters: folding at the default 78
# turns a long header without spaces (List-Unsubscribe's signed URL) into RFC 2047
# encoded words, which mail clients do not read as a URL.
POLICY = email_policy.default.clone(max_line_length=998)


class BadAddress(ValueError):
    """An e-mail address that cannot be put in a message."""


def build(config: Config, delivery_id: str, notification: dict[str, str],
          profile: dict[str, str | None], unsubscribe_url: str | None) -> EmailMessage:
    """The message of ``notification`` (a stored record) for the owner of ``profile``."""
    context = template_context(notification, profile, unsubscribe_url)
    env = environment(config.templates_dir)
    message = EmailMessage(policy=POLICY)
    message["Subject"] = render(env, "subject", context)
    message["From"] = config.mail_from
    message["To"] = recipient(profile)
    message["Date"] = format_datetime(_created(notification))
    message["Message-ID"] = message_id(delivery_id, config.mail_from)
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies, please
    if unsubscribe_url:
        message["List-Unsubscribe"] = f"<{unsubscribe_url}>"
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message.set_content(render(env, "txt", context))
    message.add_alternative(render(env, "html", context), subtype="html")
    return message


def template_context(notification: dict[str, str], profile: dict[str, str | None],
                     unsubscribe_url: str | None) -> dict[str, Any]:
    """The variables every template sees: ``notification``, ``profile``,
    ``unsubscribe_url`` (None for a critical notification)."""
    return {
        "notification": {
            "id": notification["id"],
            "title": notification["title"],
            "body": notification["body"],
            "data": json.loads(notification.get("data") or "{}"),
            "category": notification["category"],
            "critical": notification.get("critical") == "1",
            "created_at": iso(notification["created_at"]),
        },
        "profile": {"name": profile.get("name"), "locale": profile.get("locale")},
        "unsubscribe_url": unsubscribe_url,
    }


def render(env: jinja2.Environment, kind: str, context: dict[str, Any]) -> str:
    """Template ``kind`` (``subject``, ``txt``, ``html``) rendered; a subject on one line."""
    text = env.get_template(TEMPLATE.format(kind)).render(context)
    return " ".join(text.split()) if kind == "subject" else text


@functools.lru_cache(maxsize=8)
def environment(templates_dir: Path | None) -> jinja2.Environment:
    """Templates from ``templates_dir`` first, then the package's; HTML autoescaped."""
    loaders: list[jinja2.BaseLoader] = [jinja2.PackageLoader("herald", "templates")]
    if templates_dir is not None:
        loaders.insert(0, jinja2.FileSystemLoader(templates_dir))
    return jinja2.Environment(loader=jinja2.ChoiceLoader(loaders),
                              autoescape=jinja2.select_autoescape(["html"]),
                              keep_trailing_newline=True)


def recipient(profile: dict[str, str | None]) -> Address:
    """The ``To`` of a profile: its address, with its name when it has one."""
    try:
        return Address(display_name=profile.get("name") or "", addr_spec=profile["email"])
    except (ValueError, IndexError, HeaderParseError) as exc:
        raise BadAddress(f"invalid e-mail address {profile['email']!r}: {exc}") from None


def message_id(delivery_id: str, mail_from: str) -> str:
    """``<delivery id@domain of mail_from>``: stable across a delivery's attempts."""
    domain = parseaddr(mail_from)[1].rpartition("@")[2] or "localhost"
    return f"<{delivery_id}@{domain}>"


def _created(notification: dict[str, str]) -> datetime:
    """When the notification was made: the ``Date``, the same on every attempt."""
    return datetime.fromtimestamp(int(notification["created_at"]) / 1000, UTC)
