"""HTTP/1.1 for the streamer: parsing a request head (httptools) and encoding answers.

The streamer reads a request head into a buffer without a greenlet (see
``streamer.listener``) and hands the complete head here. Every answer closes its
connection (an SSE stream is the last thing on its connection anyway).

A head is parsed by httptools (llhttp, strict): a malformed one, an HTTP/1.1 request
without exactly one ``Host`` header, or a malformed query string raises ``BadRequest``
(400, a JSON answer). llhttp takes a few microseconds where h11 took tens, which
matters when every client of a restarted streamer reconnects at once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

import httptools

from herald.errors import Refusal

MAX_QUERY_FIELDS = 32
HEAD_END = b"\r\n\r\n"


class BadRequest(Refusal):
    """A ``Refusal`` raised by the streamer's own HTTP handling, with its answer."""

    def answer(self) -> bytes:
        return answer(self)


def answer(refusal: Refusal) -> bytes:
    """The complete HTTP answer to a refused request (the API's error shape)."""
    return response(refusal.status, refusal.body(), refusal.headers)


@dataclass
class Request:
    """One parsed request head; ``headers`` has lower-case names."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    peer: str = ""
    raw: bytes = b""  # the head as received (the WebSocket handshake reads it again)

    def arg(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else None


class _Head:
    """What httptools reports of one request head (its parser's callbacks)."""

    __slots__ = ("complete", "headers", "hosts", "target")

    def __init__(self) -> None:
        self.target = b""
        self.headers: dict[str, str] = {}
        self.hosts = 0
        self.complete = False

    def on_url(self, url: bytes) -> None:
        self.target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1").strip()
        self.hosts += key == "host"
        self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text

    def on_headers_complete(self) -> None:
        self.complete = True


def parse_head(head: bytes, peer: str = "") -> Request:
    """Parse a complete request head (ending in a blank line); raise ``BadRequest``."""
    parsed = _Head()
    parser = httptools.HttpRequestParser(parsed)
    try:
        parser.feed_data(head)
    except httptools.HttpParserUpgrade:
        pass  # a WebSocket handshake: its head is complete all the same
    except httptools.HttpParserError as exc:
        raise BadRequest(400, "bad_request", f"malformed request: {exc}") from None
    if not parsed.complete:
        raise BadRequest(400, "bad_request", "malformed request")
    if parser.get_http_version() == "1.1" and parsed.hosts != 1:
        raise BadRequest(400, "bad_request",
                         "malformed request: an HTTP/1.1 request needs exactly one Host header")
    request = _request(parser.get_method().decode("ascii"), parsed, peer)
    request.raw = head
    return request


def _request(method: str, parsed: _Head, peer: str) -> Request:
    try:  # httptools' own URL parser: urlsplit's cache misses on every distinct token
        target = httptools.parse_url(parsed.target)
    except httptools.HttpParserInvalidURLError:
        raise BadRequest(400, "bad_request", "malformed request target") from None
    try:
        query = parse_qs((target.query or b"").decode("latin-1"), keep_blank_values=True,
                         max_num_fields=MAX_QUERY_FIELDS, errors="strict")
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(400, "bad_query", f"malformed query string: {exc}", "query") from None
    return Request(method, (target.path or b"/").decode("latin-1"), query, parsed.headers,
                   peer)


def response(status: int, body: Any, headers: dict[str, str] | None = None) -> bytes:
    """A complete JSON answer (no body when ``body`` is None) that closes the connection."""
    payload = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
             *(["Content-Type: application/json"] if body is not None else []),
             f"Content-Length: {len(payload)}",
             "Cache-Control: no-store",
             "Connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload
