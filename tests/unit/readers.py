"""Clients of the streamer's wire formats, for unit tests: bytes in, messages out.

``READERS`` has one per registered transport (``streamer.transports``), by name: each
reads frames as a real client of that format does and says what that client makes of
them, an event (its envelope) or a control message, and its resume position after it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Ping, TextMessage
from wsproto.events import Request as Handshake

CONTROL = ("ready", "resumed", "token-expired")  # messages that are not events


@dataclass
class Message:
    """What a client makes of a frame: an event (its envelope) or a control message."""

    kind: str  # "event", or one of CONTROL
    body: dict[str, Any]
    position: str | None  # the client's resume position once it has read the message


@dataclass
class SSEReader:
    """Reads an SSE stream as EventSource does (CR, LF or CRLF line ends, fields)."""

    position: str | None = None
    id_buffer: str | None = None
    event: str = ""
    data: list[str] = field(default_factory=list)
    retry: int | None = None
    names: list[str] = field(default_factory=list)  # the event name of each message
    rest: bytes = b""  # the start of a line not complete yet

    def request(self, path: str) -> bytes:
        return f"GET {path}?topics=user:alice HTTP/1.1\r\nHost: streamer\r\n\r\n".encode()

    def open(self, head: bytes) -> list[Message]:
        status, _, rest = head.partition(b"\r\n\r\n")
        assert status.startswith(b"HTTP/1.1 200 "), status
        assert b"\r\nContent-Type: text/event-stream" in status
        return self.read(rest)

    def read(self, data: bytes) -> list[Message]:
        """The messages ``data`` completes (it may end inside one: the rest waits)."""
        data = self.rest + data
        cut = len(data) - data.endswith(b"\r")  # a last CR may be half of a CRLF
        lines = re.split(rb"\r\n|\r|\n", data[:cut])
        self.rest = lines.pop() + data[cut:]
        messages = []
        for line in lines:
            message = self._line(line.decode())
            if message is not None:
                messages.append(message)
        return messages

    @property
    def complete(self) -> bool:
        """True when everything read ended with a line end (no frame was cut)."""
        return self.rest == b""

    def _line(self, line: str) -> Message | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self.data.append(value)
        elif name == "event":
            self.event = value
        elif name == "id" and "\0" not in value:
            self.id_buffer = value
        elif name == "retry" and value.isdigit():
            self.retry = int(value)
        return None

    def _dispatch(self) -> Message | None:
        self.position = self.id_buffer
        data, event = "\n".join(self.data), self.event or "message"
        self.data, self.event = [], ""
        if not data:
            return None
        self.names.append(event)
        kind = event if event in CONTROL else "event"
        return Message(kind, json.loads(data), self.position)


@dataclass
class WebSocketReader:
    """Reads a WebSocket stream as the browser client does (wsproto, client side)."""

    position: str | None = None
    ws: WSConnection = field(default_factory=lambda: WSConnection(ConnectionType.CLIENT))
    closed: tuple[int, str] | None = None
    pings: int = 0
    rest: bytes = b""  # the start of a frame not complete yet
    parts: list[str] = field(default_factory=list)  # of a message not complete yet

    @property
    def complete(self) -> bool:
        """True when everything read ended with a whole frame."""
        return self.rest == b""

    def request(self, path: str) -> bytes:
        return self.ws.send(Handshake(host="streamer", target=f"{path}?topics=user:alice"))

    def open(self, head: bytes) -> list[Message]:
        self.ws.receive_data(head)
        assert isinstance(next(self.ws.events()), AcceptConnection)
        return []

    def read(self, data: bytes) -> list[Message]:
        self.rest = _whole_frames(self.rest + data)
        self.ws.receive_data(data)
        messages = []
        for event in self.ws.events():
            assert self.closed is None, "nothing after a close frame"
            if isinstance(event, CloseConnection):
                self.closed = (event.code, event.reason)
            elif isinstance(event, Ping):
                self.pings += 1
            else:
                assert isinstance(event, TextMessage), event
                self.parts.append(event.data)  # a frame may arrive in several reads
                if event.message_finished:
                    text, self.parts = "".join(self.parts), []
                    messages.append(self._message(json.loads(text)))
        return messages

    def _message(self, body: dict[str, Any]) -> Message:
        if "reply" in body:
            assert body.pop("ok") is True
            kind = body.pop("reply")
            if kind == "ready":
                self.position = body["position"]
            return Message(kind, body, self.position)
        self.position = body["id"]
        return Message("event", body, self.position)


def _whole_frames(data: bytes) -> bytes:
    """What is left of ``data`` after its whole (unmasked) frames: RFC 6455 headers."""
    while len(data) >= 2:
        size, start = data[1] & 0x7F, 2
        if size >= 126:
            start = 4 if size == 126 else 10
            if len(data) < start:
                break
            size = int.from_bytes(data[2:start], "big")
        if len(data) < start + size:
            break
        data = data[start + size:]
    return data


READERS = {"sse": SSEReader, "ws": WebSocketReader}
