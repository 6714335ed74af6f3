"""Reference SSE servers that Herald's streamer is benchmarked against.

Every reference implements :class:`Reference`, so the load generator drives them all
the same way:

- ``locate()`` returns ``None`` when the reference can run here, else one sentence saying
  what is missing (it may install what is missing first, and says so on one line);
- ``start(port)`` serves on ``127.0.0.1:port`` and returns only once the server answers
  HTTP, or raises :class:`RuntimeError` carrying the server's log tail within 20 s;
- ``stop()`` ends every process ``start`` made (``herald.processes.Process.stop``:
  SIGTERM, then to the rest of its process group, SIGKILL after 5 s), removes its
  temporary directory, and may be called any number of times;
- ``subscribe_path(topic)`` is the request target whose GET streams ``topic`` as SSE;
- ``publisher()`` returns a :class:`Publisher`: each ``publish(topic, data)`` makes the
  server send one SSE event whose ``data:`` line holds ``data`` as compact JSON, and
  ``subscribers(topic)`` tells how many streams the server holds on ``topic`` (to wait
  until clients are attached; flask-sse sends no headers before its first event);
- ``server_pids()`` lists the pids whose RSS and CPU count as the server.

The servers run as children in their own process group, with every file they write in a
temporary directory of their own; nothing outside it is touched (except that ``locate``
may install packages).
"""

from __future__ import annotations

import abc
import http.client
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import ClassVar, Protocol

from herald.processes import Command, Process

START_TIMEOUT_S = 20.0
STOP_GRACE_S = 5.0
LOG_TAIL_CHARS = 4000


class Publisher(Protocol):
    """Sends events to one reference server over a reused connection."""

    def publish(self, topic: str, data: dict) -> None:
        """Make the server send ``data`` (as compact JSON) as one SSE event on ``topic``."""

    def subscribers(self, topic: str) -> int:
        """How many subscribers the server has on ``topic`` now (to wait for clients)."""

    def close(self) -> None:
        """Release the connection; the publisher is unusable afterwards."""


class Reference(abc.ABC):
    """A reference server run as a child process group with its own temp directory."""

    name: ClassVar[str]

    def __init__(self) -> None:
        self._proc: Process | None = None
        self._tmp: Path | None = None
        self.port: int | None = None

    @classmethod
    @abc.abstractmethod
    def locate(cls) -> str | None:
        """``None`` if usable (installing what is missing if it can), else what is missing."""

    @abc.abstractmethod
    def start(self, port: int) -> None:
        """Serve on 127.0.0.1:``port``; return once it answers, else raise RuntimeError."""

    @abc.abstractmethod
    def subscribe_path(self, topic: str) -> str:
        """Request target a client GETs to receive ``topic`` as an SSE stream."""

    @abc.abstractmethod
    def publisher(self) -> Publisher:
        """A new publisher for this running server."""

    # Process handling shared by the references.

    @property
    def tmpdir(self) -> Path:
        """This reference's temporary directory, created on first use."""
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix=f"herald-ref-{self.name}-"))
        return self._tmp

    @property
    def log_path(self) -> Path:
        """File receiving the server's stdout and stderr."""
        return self.tmpdir / "server.log"

    def _prepare(self, port: int) -> None:
        """Check that this reference is stopped and that ``port`` is free; claim the port."""
        if self._proc is not None:
            raise RuntimeError(f"{self.name} reference is already running")
        if not port_free(port):
            raise RuntimeError(f"{self.name} reference: 127.0.0.1:{port} is already in use")
        self.port = port

    def _spawn(self, argv: list[str], cwd: Path | None = None,
               env: dict[str, str] | None = None) -> None:
        """Start ``argv`` as the leader of a new process group, output to ``log_path``."""
        self._proc = Process(Command(self.name, argv, env, cwd), self.log_path)
        try:
            self._proc.start()
        except OSError as exc:
            self.stop()
            raise RuntimeError(f"{self.name} reference could not run {argv[0]}: {exc}") from exc

    def _wait_ready(self, port: int, probe_target: str, extra_logs: tuple[Path, ...] = ()) -> None:
        """Return once an HTTP GET of ``probe_target`` gets any answer; else stop and raise."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc is None or not self._proc.running():
                break
            if http_answers(port, probe_target) and self._proc.running():
                return
            time.sleep(0.1)
        code = None if self._proc is None else self._proc.exited()
        tail = self._log_tail(extra_logs)
        self.stop()
        state = "did not answer within 20 s" if code is None else f"exited with code {code}"
        raise RuntimeError(f"{self.name} reference on port {port} {state}; log tail:\n{tail}")

    def _log_tail(self, extra_logs: tuple[Path, ...] = ()) -> str:
        """The last characters of the server's logs."""
        parts = [log_tail(path) for path in (self.log_path, *extra_logs) if path.exists()]
        return "\n".join(part for part in parts if part) or "(empty log)"

    def stop(self) -> None:
        """Stop the server and its process group (``Process.stop``, SIGKILL after 5 s) and
        remove the temp dir."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.popen is not None:
            proc.stop(STOP_GRACE_S)
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        self.port = None

    def server_pids(self) -> list[int]:
        """The server's leader process and all its descendants, while running."""
        return self._proc.pids() if self._proc is not None else []

    def __enter__(self) -> Reference:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def port_free(port: int) -> bool:
    """Whether 127.0.0.1:``port`` can be bound (no one listens there)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def http_answers(port: int, target: str, timeout: float = 2.0) -> bool:
    """Whether a GET of ``target`` on 127.0.0.1:``port`` gets an HTTP response."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", target)
        conn.getresponse().read()
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()
    return True


def log_tail(path: Path, chars: int = LOG_TAIL_CHARS) -> str:
    """The last ``chars`` characters of ``path``, decoded leniently."""
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return f"--- {path.name} ---\n" + data[-chars:].decode("utf-8", "replace").rstrip()


from .flask_sse import FlaskSseReference  # noqa: E402  (needs Reference defined above)
from .nchan import NchanReference  # noqa: E402

REFERENCES: dict[str, type[Reference]] = {"nchan": NchanReference, "flask-sse": FlaskSseReference}

__all__ = ["REFERENCES", "FlaskSseReference", "NchanReference", "Publisher", "Reference"]
