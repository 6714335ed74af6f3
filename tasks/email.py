"""The e-mail channel: one message per recipient with an address, over SMTP.

Targets are the notification's recipients (a topic notification has none): a user who
turned e-mail off for the category is ``skipped: opted out`` (unless the notification is
critical), one whose profile has no address ``skipped: no e-mail address``. Each
attempt reads the address from the profile, builds the message (``herald.mail``) and
hands it to ``HERALD_SMTP_URL``: ``smtp://`` upgrades with STARTTLS when the server
offers it (and, in production, refuses to send a password over a connection that
stays in clear), ``smtps://`` is TLS from the start; it logs in when the URL has
credentials. All attempts spend from one token bucket (``HERALD_EMAIL_RATE``).

Failures: connection errors, timeouts, a dropped connection and any 4xx reply are
retried (``Retryable``); a 5xx reply (a refused recipient included) and an address that
cannot be sent fail at once (``Permanent``), with the server's code and text.
"""

from __future__ import annotations

import json
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from urllib.parse import unquote, urlsplit

from herald import mail, unsubscribe
from herald.channels import EMAIL
from herald.config import Config
from herald.services import Services
from tasks.outbound import OPTED_OUT, Permanent, Retryable, Target, channel_tasks, opted_out

NO_ADDRESS = "no e-mail address"
SMTP_PORT, SMTPS_PORT = 25, 465
# One attempt sends several commands (EHLO, STARTTLS, AUTH, MAIL, RCPT, DATA, QUIT),
# each within HERALD_SMTP_TIMEOUT.
COMMANDS_PER_ATTEMPT = 4
LEASE_MARGIN = 5.0  # building the message, Redis round trips


class EmailChannel:
    """The ``email`` channel as ``tasks.outbound`` sees it."""

    name = EMAIL

    def targets(self, svc: Services, notification: dict[str, str]) -> list[Target]:
        users = json.loads(notification["recipients"]) if notification["recipients"] else []
        addresses = svc.profiles.emails(users)
        out = opted_out(svc, notification, users, EMAIL)
        return [Target(user, OPTED_OUT if user in out else
                       None if addresses[user] else NO_ADDRESS) for user in users]

    def send(self, svc: Services, delivery: dict[str, str],
             notification: dict[str, str]) -> None:
        transmit(svc.config, message_for(svc, delivery, notification))

    def bucket(self, delivery: dict[str, str]) -> str:
        return EMAIL

    def rate(self, config: Config) -> float:
        return config.email_rate

    def lease(self, config: Config) -> float:
        return COMMANDS_PER_ATTEMPT * config.smtp_timeout + LEASE_MARGIN


def message_for(svc: Services, delivery: dict[str, str],
                notification: dict[str, str]) -> EmailMessage:
    """The message of one delivery, to the address the profile has now."""
    user, cfg = delivery["target"], svc.config
    profile = svc.profiles.get(user)
    if not profile["email"]:
        raise Permanent(NO_ADDRESS)
    critical = notification.get("critical") == "1"
    link = None if critical else unsubscribe.url(cfg, user, notification["category"])
    try:
        return mail.build(cfg, delivery["id"], notification, profile, link)
    except mail.BadAddress as exc:
        raise Permanent(str(exc)) from None


@dataclass(frozen=True)
class SmtpServer:
    """Where ``HERALD_SMTP_URL`` points, its credentials URL-decoded."""

    implicit_tls: bool
    host: str
    port: int
    user: str | None
    password: str | None

    @classmethod
    def parse(cls, url: str) -> SmtpServer:
        parts = urlsplit(url)
        tls = parts.scheme == "smtps"
        return cls(tls, parts.hostname or "localhost",
                   parts.port or (SMTPS_PORT if tls else SMTP_PORT),
                   unquote(parts.username) if parts.username else None,
                   unquote(parts.password) if parts.password is not None else None)


def transmit(config: Config, message: EmailMessage) -> None:
    """Hand ``message`` to the SMTP server; raise ``Retryable`` or ``Permanent``."""
    if config.smtp_url is None:
        raise Retryable("HERALD_SMTP_URL is not set")
    try:
        _send(config, SmtpServer.parse(config.smtp_url), message)
    except smtplib.SMTPRecipientsRefused as exc:
        raise _failure(*next(iter(exc.recipients.values()))) from None
    except smtplib.SMTPResponseException as exc:
        raise _failure(exc.smtp_code, exc.smtp_error) from None
    except smtplib.SMTPNotSupportedError as exc:  # e.g. an address needing SMTPUTF8
        raise Permanent(f"the SMTP server cannot take it: {exc}") from None
    except UnicodeError as exc:
        raise Permanent(f"an address cannot be encoded: {exc}") from None
    except OSError as exc:  # refused, reset, timed out, TLS, SMTPServerDisconnected
        raise Retryable(f"SMTP {type(exc).__name__}: {exc}") from None


def _send(config: Config, server: SmtpServer, message: EmailMessage) -> None:
    smtp = _connect(config, server)
    try:
        _secure(config, server, smtp)
        if server.user is not None:
            smtp.login(server.user, server.password or "")
        smtp.send_message(message)
    finally:
        _close(smtp)


def _connect(config: Config, server: SmtpServer) -> smtplib.SMTP:
    timeout = config.smtp_timeout
    if server.implicit_tls:
        return smtplib.SMTP_SSL(server.host, server.port, timeout=timeout,
                                context=ssl.create_default_context())
    return smtplib.SMTP(server.host, server.port, timeout=timeout)


def _secure(config: Config, server: SmtpServer, smtp: smtplib.SMTP) -> None:
    """STARTTLS on ``smtp://`` when offered; never a password in clear in production."""
    smtp.ehlo()
    if server.implicit_tls:
        return
    if smtp.has_extn("starttls"):
        smtp.starttls(context=ssl.create_default_context())
        smtp.ehlo()
    elif server.user is not None and config.production:
        raise Permanent(f"{server.host}:{server.port} offers no STARTTLS; refusing to "
                        "send the SMTP password in clear (use smtps:// or a TLS server)")


def _close(smtp: smtplib.SMTP) -> None:
    """QUIT, ignoring failures: the message was taken or the attempt failed already."""
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        smtp.close()


def _failure(code: int, text: bytes | str) -> Exception:
    """A server's reply as the attempt loop's failure: 5xx permanent, else retryable."""
    reply = text.decode(errors="replace") if isinstance(text, bytes) else text
    reason = f"SMTP {code} {reply}"
    return Permanent(reason) if 500 <= code <= 599 else Retryable(reason)


CHANNEL = EmailChannel()
dispatch, send = channel_tasks(CHANNEL)
