"""Slow and oversized requests against the API under gunicorn, started as ``herald run``
starts it: slow clients hold no worker and are closed after the head timeout, heads
over the limits get JSON 414/431, malformed ones JSON 400.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Iterator

import httpx
import psutil
import pytest

from tests.conftest import Process, start_api, wait_until

HEAD_TIMEOUT = 3  # seconds (HERALD_API_HEAD_TIMEOUT); the default is 5
WORKERS = 2


@pytest.fixture(scope="module")
def server(child_env) -> Iterator[Process]:
    process, _ = start_api({**child_env, "HERALD_API_HEAD_TIMEOUT": str(HEAD_TIMEOUT),
                            "HERALD_API_WORKERS": str(WORKERS)}, name="api-slow")
    yield process
    process.stop()


def _port(process: Process) -> int:
    return int(process.url.rsplit(":", 1)[1])


class Dripper:
    """A client that sends a request line, then one header line every 0.2 s, forever."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        self.stop = threading.Event()
        threading.Thread(target=self._drip, daemon=True).start()

    def _drip(self) -> None:
        line = 0
        while not self.stop.wait(0.2):
            try:
                self.sock.sendall(b"X-Drip-%d: still typing\r\n" % line)
            except OSError:
                return
            line += 1

    @property
    def local_port(self) -> int:
        return self.sock.getsockname()[1]

    def state(self) -> str:
        """``open`` (nothing received), ``answered`` (bytes came) or ``closed``."""
        try:
            data = self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return "open"
        except ConnectionResetError:
            return "closed"
        return "answered" if data else "closed"

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


def _held_by_workers(process: Process, port: int) -> set[int]:
    """Client ports of the connections the server's worker processes have accepted."""
    held = set()
    for worker in psutil.Process(process.popen.pid).children():
        with contextlib.suppress(psutil.NoSuchProcess):
            for conn in worker.net_connections(kind="tcp"):
                if conn.laddr and conn.laddr.port == port and conn.raddr:
                    held.add(conn.raddr.port)
    return held


def test_slow_clients_hold_no_worker_and_are_closed_after_the_head_timeout(server):
    port = _port(server)
    slow = [Dripper(port) for _ in range(2 * WORKERS)]
    try:
        # At least as many slow connections are inside the workers as there are
        # workers: each sync worker would now be stuck reading one.
        wait_until(lambda: len({d.local_port for d in slow} & _held_by_workers(server, port))
                   >= WORKERS, what="the workers to accept the slow connections")

        answer = httpx.get(f"{server.url}/healthz", timeout=10)
        assert answer.status_code == 200
        assert [d.state() for d in slow] == ["open"] * len(slow), "closed too early"

        wait_until(lambda: all(d.state() != "open" for d in slow), HEAD_TIMEOUT + 10,
                   what="the server to close the slow connections")
        assert [d.state() for d in slow] == ["closed"] * len(slow), "answered, not closed"
    finally:
        for dripper in slow:
            dripper.close()
    assert "Traceback" not in server.log()


def _exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` raw; read the answer until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip()
               for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


HEADERS = b"Host: 127.0.0.1\r\nAccept: application/json\r\n"


@pytest.mark.parametrize(("request_bytes", "status", "code", "words"), [
    (b"GET /api/" + b"a" * 5000 + b" HTTP/1.1\r\n" + HEADERS + b"\r\n", 414, "uri_too_long",
     "request line must be at most 4094 bytes"),
    (b"GET /healthz HTTP/1.1\r\n" + HEADERS + b"X-Big: " + b"a" * 9000 + b"\r\n\r\n", 431,
     "request_too_large", "at most 32 header fields of at most 8190 bytes each"),
    (b"GET /healthz HTTP/1.1\r\n" + HEADERS
     + b"".join(b"X-Many-%d: y\r\n" % i for i in range(40)) + b"\r\n", 431,
     "request_too_large", "at most 32 header fields"),
    (b"GET /healthz HTTP/9.9\r\n" + HEADERS + b"\r\n", 400, "bad_request",
     "malformed request"),
    (b"GET /healthz HTTP/1.1\r\n" + HEADERS + b"Bad Header Name: x\r\n\r\n", 400,
     "bad_request", "malformed request"),
], ids=["long request line", "long header", "many headers", "bad version", "bad header"])
def test_requests_over_the_head_limits_or_malformed_get_json_errors(
        server, request_bytes, status, code, words):
    answer_status, headers, body = _exchange(_port(server), request_bytes)
    assert answer_status == status
    assert headers["content-type"] == "application/json"
    assert int(headers["content-length"]) == len(body)
    error = json.loads(body)["error"]
    assert error["code"] == code and error["field"] is None
    assert words in error["message"]
    wait_until(lambda: f"refused a request from 127.0.0.1: {status}" in server.log(),
               what="the WARNING line")
    assert "Traceback" not in server.log()
