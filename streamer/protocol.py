"""HTTP/1.1 on a raw socket: reading one request (h11) and writing plain answers.

Guarantees: a request line plus headers larger than ``max_size`` bytes is answered 431;
a request that is not complete within ``timeout`` seconds gets its connection closed
(slowloris); a malformed request or query string is answered 400. Every answer closes
the connection (an SSE stream is the last thing on its connection anyway).
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass, field
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qs, urlsplit

import gevent
import h11

MAX_QUERY_FIELDS = 32


class BadRequest(Exception):
    """A request Herald will not serve; ``status`` is the 4xx to answer with."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers or {}


@dataclass
class Request:
    """One parsed request; ``headers`` has lower-case names."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    http_version: str
    _conn: h11.Connection = field(repr=False)

    def arg(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else None

    def cookie(self, name: str) -> str | None:
        raw = self.headers.get("cookie")
        if not raw:
            return None
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(raw)
        except CookieError:
            return None
        morsel = jar.get(name)
        return morsel.value if morsel else None


def read_request(sock: socket.socket, max_size: int, timeout: float) -> Request | None:
    """Read one request head; None when the peer closed or stalled before finishing.

    Raises ``BadRequest`` for malformed or oversized requests.
    """
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=max_size)
    received = 0
    with gevent.Timeout(timeout, False):
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise _protocol_error(exc) from None
            if event is h11.NEED_DATA:
                data = sock.recv(8192)
                received += len(data)
                if received > max_size:
                    raise _too_large(max_size)
                conn.receive_data(data)
                continue
            if isinstance(event, h11.Request):
                return _request(conn, event)
            return None  # ConnectionClosed or an unexpected event: nothing to serve
    return None


def _too_large(max_size: int) -> BadRequest:
    return BadRequest(431, "request_too_large",
                      f"request line and headers must be at most {max_size} bytes")


def _protocol_error(exc: h11.RemoteProtocolError) -> BadRequest:
    status = exc.error_status_hint
    if status == 400 and "too long" in str(exc).lower():
        status = 431
    return BadRequest(status, "bad_request", f"malformed request: {exc}")


def _request(conn: h11.Connection, event: h11.Request) -> Request:
    target = event.target.decode("latin-1")
    parts = urlsplit(target)
    headers: dict[str, str] = {}
    for name, value in event.headers:
        key = name.decode("latin-1")
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    request = Request(event.method.decode("ascii"), parts.path, {}, headers,
                      event.http_version.decode("ascii"), conn)
    try:
        request.query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=False,
                                 max_num_fields=MAX_QUERY_FIELDS, errors="strict")
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(400, "bad_query", f"malformed query string: {exc}", "query") from None
    return request


def respond(sock: socket.socket, request: Request | None, status: int, body: Any,
            headers: dict[str, str] | None = None) -> None:
    """Write a complete JSON answer and end the exchange; never raises on a dead peer."""
    payload = json.dumps(body, separators=(",", ":")).encode()
    all_headers = {"Content-Type": "application/json", "Content-Length": str(len(payload)),
                   "Cache-Control": "no-store", "Connection": "close", **(headers or {})}
    conn = request._conn if request else None
    try:
        data = _serialise(conn, status, all_headers, payload)
        sock.sendall(data)
    except (OSError, h11.LocalProtocolError):
        pass


def _serialise(conn: h11.Connection | None, status: int, headers: dict[str, str],
               payload: bytes) -> bytes:
    if conn is not None and conn.our_state is h11.SEND_RESPONSE:
        reason = HTTPStatus(status).phrase.encode()
        head = conn.send(h11.Response(status_code=status, headers=list(headers.items()),
                                      reason=reason))
        return (head or b"") + (conn.send(h11.Data(data=payload)) or b"") + (
            conn.send(h11.EndOfMessage()) or b"")
    # No request was parsed, so h11 has nothing to answer: write the answer ourselves.
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    """The same error shape as the API's."""
    return {"error": {"code": code, "message": message, "field": field}}


def respond_error(sock: socket.socket, request: Request | None, exc: BadRequest) -> None:
    respond(sock, request, exc.status, error_body(exc.code, exc.message, exc.field),
            exc.headers)
