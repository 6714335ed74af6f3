"""How an attempt reaches the SMTP server (``tasks.email.transmit``), against real
aiosmtpd servers: STARTTLS and login with URL-decoded credentials, implicit TLS, no
password in clear in production, failures classified."""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from herald.config import Config
from herald.stack import free_port
from tasks.email import transmit
from tasks.outbound import Permanent, Retryable


@dataclass
class Recorder:
    """An SMTP handler and authenticator that keeps what it saw."""

    logins: list[tuple[str, str]] = field(default_factory=list)
    tls: list[bool] = field(default_factory=list)
    subjects: list[str] = field(default_factory=list)

    def __call__(self, server: Any, session: Any, envelope: Any, mechanism: str,
                 auth_data: Any) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        self.logins.append((auth_data.login.decode(), auth_data.password.decode()))
        return AuthResult(success=True)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.tls.append(server.transport.get_extra_info("ssl_object") is not None)
        self.subjects.append(next(line for line in envelope.content.decode().splitlines()
                                  if line.startswith("Subject: ")))
        return "250 OK"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (its own authority) and its key."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


@pytest.fixture
def trusted(certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> ssl.SSLContext:
    """The server's TLS context; the test process trusts its certificate."""
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return context


@pytest.fixture
def serve() -> Iterator[Any]:
    """``serve(**controller_kwargs)``: start an aiosmtpd server; answer its port and
    recorder. Stopped after the test."""
    started: list[Controller] = []

    def start(**kwargs: Any) -> tuple[int, Recorder]:
        recorder, port = Recorder(), free_port()
        controller = Controller(recorder, hostname="127.0.0.1", port=port,
                                authenticator=recorder, **kwargs)
        controller.start()
        started.append(controller)
        return port, recorder

    yield start
    for controller in started:
        controller.stop()


def _message(subject: str = "Hello") -> EmailMessage:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = (
        "herald@localhost", "alice@example.com", subject)
    message.set_content("Hi Alice")
    return message


def test_smtp_upgrades_with_starttls_then_logs_in_with_url_decoded_credentials(
        config: Config, serve, trusted):
    port, seen = serve(tls_context=trusted)  # AUTH offered only after STARTTLS
    url = f"smtp://mail%40example.com:p%40ss%3Aw%2Frd@127.0.0.1:{port}"
    transmit(config.replace(smtp_url=url, env="production"), _message("Over TLS"))
    assert seen.logins == [("mail@example.com", "p@ss:w/rd")]
    assert seen.tls == [True] and seen.subjects == ["Subject: Over TLS"]


def test_smtps_is_tls_from_the_start(config: Config, serve, trusted):
    # aiosmtpd counts only STARTTLS as TLS for its auth_require_tls: off here.
    port, seen = serve(ssl_context=trusted, auth_require_tls=False)
    transmit(config.replace(smtp_url=f"smtps://u:p@127.0.0.1:{port}"), _message())
    assert seen.logins == [("u", "p")] and seen.tls == [True]


def test_production_sends_no_password_in_clear(config: Config, serve):
    port, seen = serve(auth_require_tls=False)  # offers AUTH, no STARTTLS
    url = f"smtp://user:secret@127.0.0.1:{port}"
    with pytest.raises(Permanent, match="in clear"):
        transmit(config.replace(smtp_url=url, env="production"), _message())
    assert seen.logins == [] and seen.subjects == []
    transmit(config.replace(smtp_url=url), _message("In development"))  # allowed there
    assert seen.logins == [("user", "secret")] and seen.tls == [False]


def test_a_server_that_does_not_answer_is_retryable_and_an_unset_url_too(config: Config):
    with pytest.raises(Retryable, match="ConnectionRefused"):
        transmit(config.replace(smtp_url=f"smtp://127.0.0.1:{free_port()}"), _message())
    with pytest.raises(Retryable, match="HERALD_SMTP_URL is not set"):
        transmit(config.replace(smtp_url=None), _message())


def test_a_certificate_that_is_not_trusted_is_retryable(config: Config, serve,
                                                         certificate):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    port, seen = serve(tls_context=context)  # SSL_CERT_FILE not set: not trusted
    with pytest.raises(Retryable, match="CERTIFICATE_VERIFY_FAILED"):
        transmit(config.replace(smtp_url=f"smtp://127.0.0.1:{port}"), _message())
    assert seen.subjects == []


def test_an_address_the_server_cannot_take_fails_for_good(config: Config, serve):
    port, _ = serve(enable_SMTPUTF8=False)
    message = _message()
    message.replace_header("To", "jöhn@exämple.com")
    with pytest.raises(Permanent):
        transmit(config.replace(smtp_url=f"smtp://127.0.0.1:{port}"), message)
