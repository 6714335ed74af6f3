"""A Server-Sent-Events client on a plain socket, for tests.

It opens a real HTTP connection, parses the stream as the WHATWG EventSource
algorithm does (fields ``id``, ``event``, ``data``, ``retry``; comments; CR, LF or CRLF
line ends), and reads in a background thread. Unlike an HTTP library's streaming
response it can be closed at once from the test thread, and it can stop reading on
purpose (a stalled client).
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit


@dataclass
class SSEEvent:
    id: str | None
    event: str
    data: str

    def json(self) -> Any:
        return json.loads(self.data)


@dataclass
class _Parser:
    last_id: str | None = None
    event: str = ""
    data: list[str] = field(default_factory=list)
    retry: int | None = None
    ready_id: str | None = None
    resumed: list[dict] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)

    def line(self, text: str) -> SSEEvent | None:
        if text == "":
            return self._dispatch()
        if text.startswith(":"):
            self.comments.append(text[1:].strip())
            return None
        name, _, value = text.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            self.data.append(value)
        elif name == "event":
            self.event = value
        elif name == "id" and "\0" not in value:
            self.last_id = value
        elif name == "retry" and value.isdigit():
            self.retry = int(value)
        return None

    def _dispatch(self) -> SSEEvent | None:
        data, event = self.data, self.event
        self.data, self.event = [], ""
        if not data:
            return None
        if event == "ready":  # a stream's starting position, not an event of a topic
            self.ready_id = self.last_id
            return None
        if event == "resumed":  # how many events a resume replayed, not an event either
            self.resumed.append(json.loads("\n".join(data)))
            return None
        return SSEEvent(self.last_id, event or "message", "\n".join(data))


class SSEClient:
    """One subscriber connection. ``status`` and ``headers`` are set on return."""

    def __init__(self, base_url: str, params: dict[str, str] | None = None,
                 headers: dict[str, str] | None = None, path: str = "/events",
                 read: bool = True, timeout: float = 10.0, rcvbuf: int | None = None) -> None:
        parts = urlsplit(base_url)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:  # before connect, so the TCP window stays small
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((parts.hostname, parts.port))
        query = f"?{urlencode(params)}" if params else ""
        lines = [f"GET {path}{query} HTTP/1.1", f"Host: {parts.netloc}",
                 "Accept: text/event-stream"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.parser = _Parser()
        self.events: list[SSEEvent] = []
        self.closed = threading.Event()
        self._cond = threading.Condition()
        self._buffer = b""
        self.status, self.headers = self._read_head()
        self.body: Any = None
        if self.status != 200:
            self.body = self._read_body()
            self.sock.close()
            self.closed.set()
            return
        self.sock.settimeout(None)
        self._thread = threading.Thread(target=self._read_events, daemon=True)
        if read:
            self._thread.start()

    def _read_head(self) -> tuple[int, dict[str, str]]:
        while b"\r\n\r\n" not in self._buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed before the response head: {self._buffer!r}")
            self._buffer += chunk
        head, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return int(status_line.split()[1]), headers

    def _read_body(self) -> Any:
        data = self._buffer
        while True:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            data += chunk
        try:
            return json.loads(data)
        except ValueError:
            return data

    def start_reading(self) -> None:
        self._thread.start()

    def _read_events(self) -> None:
        pending = self._buffer.decode()
        try:
            while True:
                pending = self._consume(pending)
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                pending += chunk.decode()
        except OSError:
            pass
        finally:
            self.closed.set()
            with self._cond:
                self._cond.notify_all()

    def _consume(self, pending: str) -> str:
        text = pending.replace("\r\n", "\n").replace("\r", "\n")
        *lines, rest = text.split("\n")
        for line in lines:
            event = self.parser.line(line)
            if event is not None:
                with self._cond:
                    self.events.append(event)
                    self._cond.notify_all()
        return rest

    def wait_for(self, count: int, timeout: float = 5.0) -> list[SSEEvent]:
        """Wait until ``count`` events arrived (or the timeout); return all events."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.events) < count and not self.closed.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            return list(self.events)

    def events_before(self, event_id: str, timeout: float = 10.0) -> list[SSEEvent]:
        """The events received before the one with ``event_id``, once it has arrived.

        ``event_id`` is a sentinel published after whatever must not arrive: anything
        published before it would have been received first. Raises ``AssertionError``
        when the sentinel does not come within ``timeout`` or the stream ends first.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                ids = [event.id for event in self.events]
                if event_id in ids:
                    return self.events[:ids.index(event_id)]
                remaining = deadline - time.monotonic()
                if self.closed.is_set() or remaining <= 0:
                    raise AssertionError(f"sentinel {event_id} not received; got {ids}")
                self._cond.wait(remaining)

    def wait_closed(self, timeout: float = 5.0) -> bool:
        return self.closed.wait(timeout)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()

    def __enter__(self) -> SSEClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventSource:
    """A reconnecting subscriber with browser EventSource semantics, for fault tests.

    When a connection ends it waits the last ``retry:`` the server sent, then connects
    again (to the next of ``urls``, round robin) with a ``Last-Event-ID`` header holding
    the id of the last event received. Events of all connections accumulate in
    ``events``; ``connections`` counts how many were opened.
    """

    def __init__(self, urls: list[str], params: dict[str, str],
                 last_event_id: str | None = None, use_query: bool = False) -> None:
        self.urls = urls
        self.params = params
        self.last_event_id = last_event_id
        self.use_query = use_query
        self.events: list[SSEEvent] = []
        self.statuses: list[int] = []
        self.connections = 0
        self.retry_ms = 3000
        self._stop = threading.Event()
        self._current: SSEClient | None = None
        self._opened = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            url = self.urls[self.connections % len(self.urls)]
            self.connections += 1
            client = self._connect(url)
            if client is not None and client.status == 200:
                self._current = client
                self._opened.set()
                self._follow(client)
            self._stop.wait(self.retry_ms / 1000)

    def _connect(self, url: str) -> SSEClient | None:
        params, headers = dict(self.params), {}
        if self.last_event_id:
            if self.use_query:
                params["last_event_id"] = self.last_event_id
            else:
                headers["Last-Event-ID"] = self.last_event_id
        try:
            client = SSEClient(url, params, headers=headers, read=False)
        except OSError:
            return None
        self.statuses.append(client.status)
        if client.status == 200:
            client.start_reading()
        return client

    def _follow(self, client: SSEClient) -> None:
        seen = 0
        while not self._stop.is_set():
            events = client.wait_for(seen + 1, timeout=0.2)
            if client.parser.ready_id and not self.last_event_id:
                self.last_event_id = client.parser.ready_id
            for event in events[seen:]:
                self.events.append(event)
                if event.id:
                    self.last_event_id = event.id
            seen = len(events)
            if client.parser.retry is not None:
                self.retry_ms = client.parser.retry
            if client.closed.is_set() and len(client.events) == seen:
                return

    def wait_opened(self, timeout: float = 10.0) -> bool:
        return self._opened.wait(timeout)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[SSEEvent]:
        deadline = time.monotonic() + timeout
        while len(self.events) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return list(self.events)

    def events_before(self, event_id: str, timeout: float = 10.0) -> list[SSEEvent]:
        """``SSEClient.events_before`` over all the connections so far."""
        deadline = time.monotonic() + timeout
        while True:
            ids = [event.id for event in self.events]
            if event_id in ids:
                return self.events[:ids.index(event_id)]
            if time.monotonic() > deadline:
                raise AssertionError(f"sentinel {event_id} not received; got {ids}")
            time.sleep(0.02)

    def drop_connection(self) -> None:
        """Cut the current connection, as a flaky network would."""
        if self._current is not None:
            self._current.close()

    def close(self) -> None:
        self._stop.set()
        if self._current is not None:
            self._current.close()
        self._thread.join(5)
