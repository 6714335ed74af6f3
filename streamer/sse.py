"""Server-Sent Events: the wire format of ``GET /events`` (an ``EventSource``).

A stream is a ``text/event-stream`` response (``Cache-Control: no-cache``,
``X-Accel-Buffering: no``, so proxies pass it through), then a ``retry:`` hint and a
comment sent at once (proxies flush the head), then messages:

- an event: ``id:`` (its position), ``event:`` (its type) and one ``data:`` line (the
  envelope); with ``named=0`` in the query, no ``event:`` line: ``EventSource`` then
  delivers every event, whatever its type, to its ``message`` listeners (a named event
  reaches only listeners added for that name), and the type is read from the envelope.
  A ``reset`` is an event like the others;
- ``ready`` (``id:`` the position, ``data: {"position"}``), ``resumed`` (``data:
  {"replayed", "from"}``) and ``token-expired`` (``data: {"exp"}``) are named in both
  forms, and only ``ready`` has an id;
- a heartbeat is a comment; the goodbye of a stopping server is a ``retry:`` hint.

Every field is one line: ids and types are checked (``transport.check_event``), the
envelope is one line of JSON, comments have their line breaks replaced.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from streamer.expiry import EXPIRED_EVENT
from streamer.protocol import BadRequest
from streamer.transport import Ending, Session, Transport

if TYPE_CHECKING:
    from herald.config import Config
    from streamer.client import Client
    from streamer.protocol import Request

HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/event-stream; charset=utf-8\r\n"
    b"Cache-Control: no-cache\r\n"
    b"X-Accel-Buffering: no\r\n"
    b"Connection: close\r\n"
    b"\r\n"
)
NAMED = "named"  # the query parameter: "0" for events without an ``event:`` line


def comment(text: str) -> bytes:
    """An SSE comment line (heartbeats, the initial flush); clients ignore it."""
    return b": " + text.replace("\r", " ").replace("\n", " ").encode() + b"\n\n"


def _json(body: dict[str, object]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


class EventStream(Transport):
    """SSE with named events (``named`` True, the default) or without (``named=0``)."""

    name = "sse"
    path = "/events"
    heartbeat = comment("heartbeat")

    def __init__(self, retry_ms: int = 3000, named: bool = True, *,
                 sibling: EventStream | None = None) -> None:
        """``sibling`` is the variant with the other ``named``, made here if not given:
        each variant encodes an event once for all its clients."""
        self.retry_ms = retry_ms
        self.named = named
        self._other = sibling or EventStream(retry_ms, not named, sibling=self)

    @classmethod
    def configured(cls, config: Config) -> EventStream:
        return cls(config.retry_ms)

    def variants(self) -> tuple[Transport, ...]:
        return (self, self._other)

    def accept(self, request: Request) -> Session:
        """Any GET is an SSE request; ``named`` must be ``0`` or ``1`` when given."""
        named = request.arg(NAMED)
        if named not in (None, "0", "1"):
            raise BadRequest(400, "invalid_field", f"{NAMED}: must be 0 (events without "
                             "an event: line) or 1 (the default)", NAMED)
        wanted = self.named if named is None else named == "1"
        return EventStreamSession(self if wanted == self.named else self._other)

    def encode_event(self, event_id: str, type: str, envelope: bytes) -> bytes:
        if self.named:
            return b"id: %s\nevent: %s\ndata: %s\n\n" % (
                event_id.encode(), type.encode(), envelope)
        return b"id: %s\ndata: %s\n\n" % (event_id.encode(), envelope)

    def ready(self, position: str) -> bytes:
        return b"id: %s\nevent: ready\ndata: %s\n\n" % (
            position.encode(), _json({"position": position}))

    def resumed(self, replayed: int, last_id: str) -> bytes:
        return b"event: resumed\ndata: %s\n\n" % _json({"replayed": replayed, "from": last_id})

    def expired(self, exp: int) -> bytes:
        return b"event: %s\ndata: %s\n\n" % (EXPIRED_EVENT.encode(), _json({"exp": exp}))

    def goodbye(self, ending: Ending, reason: str) -> bytes | None:
        """A stopping server repeats the ``retry:`` hint; otherwise the stream just ends."""
        return b"retry: %d\n\n" % self.retry_ms if ending is Ending.STOPPING else None


class EventStreamSession(Session):
    """An SSE connection: a response head; the client is not expected to send more."""

    def __init__(self, transport: EventStream) -> None:
        self.transport = transport

    def head(self, client: Client, cors: dict[str, str]) -> bytes:
        head = HEAD
        if cors:
            extra = "".join(f"{name}: {value}\r\n" for name, value in cors.items())
            head = head[:-2] + extra.encode("latin-1") + b"\r\n"
        retry = b"retry: %d\n" % self.transport.retry_ms
        hello = comment(f"connected as {client.user} to {','.join(client.topics)}")
        return head + retry + hello
