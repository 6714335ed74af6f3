"""What a transport is: one wire format's framing of a stream, behind one interface.

A transport (``Transport``) turns what the streamer says to a client into bytes of one
wire format: the response head, an event, the ``ready`` / ``resumed`` / ``reset``
messages, the expiry's last words, heartbeats and goodbyes. Per connection it makes a
``Session`` (``accept``): the connection's response head and its reading of what the
client sends. The hub, the handlers, the drain, expiry and the replay call only these
methods and never ask which transport a client uses. Each wire format is one module
(``streamer.sse``, ``streamer.websocket``), registered in ``streamer.transports``.

Guarantees of every transport (``tests/unit/test_transport_contract.py`` checks each
registered one against this list):

- its frames are complete and self-contained: a client reads concatenated frames as
  those messages in that order, so a batch of events is their concatenation;
- a frame depends only on its arguments, never on the client: the hub encodes each
  event once per transport and writes the same bytes to every client;
- ``event`` frames an envelope so that the client reads back exactly that envelope,
  with the event's id as its resume position; it refuses (``UnsafeFrame``) an id that
  is not a position (``<ms>-<seq>``), a type outside ``TYPE_RULE`` and an envelope that
  is not one line of UTF-8 (a raw CR or LF), whoever asks: nothing read back from Redis
  can inject a field, split a frame or make a position up;
- ``ready`` carries a resume position, ``resumed`` and the expiry's last words none
  (the client's position stays that of its last event); a ``reset`` is an event;
- a heartbeat and a goodbye carry no event.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

from herald.event import TYPE_RE, position
from streamer.history import reset_envelope

if TYPE_CHECKING:
    from herald.config import Config
    from streamer.client import Client
    from streamer.protocol import Request


class UnsafeFrame(ValueError):
    """An event that cannot go on the wire as it is (see ``check_event``)."""


class Ending(enum.Enum):
    """Why the streamer ends a stream itself; each transport says so its own way."""

    STOPPING = "the server stops: reconnect (to a sibling)"
    REVOKED = "the token was revoked"
    FAILED = "the server failed handling the connection"


def check_event(event_id: object, type: object, envelope: bytes) -> tuple[int, int]:
    """The event's position; ``UnsafeFrame`` unless it can be framed on every transport.

    ``event_id`` must be a position (digits, one dash: no CR, LF or NUL), ``type`` must
    follow ``TYPE_RULE``, and ``envelope`` must be one line (JSON allows raw CR and LF
    between tokens; a wire format that ends lines with them must not receive any).
    """
    key = position(event_id)
    if key is None:
        raise UnsafeFrame(f"id {event_id!r:.80} is not a position (<ms>-<seq>)")
    if not isinstance(type, str) or TYPE_RE.fullmatch(type) is None:
        raise UnsafeFrame(f"type {type!r:.80} does not follow the type rule")
    if b"\n" in envelope or b"\r" in envelope:
        raise UnsafeFrame("the envelope is not one line")
    return key


class Session(ABC):
    """One connection's side of a transport, made by ``Transport.accept``."""

    transport: Transport  # frames this connection's stream (maybe a variant)

    @abstractmethod
    def head(self, client: Client, cors: dict[str, str]) -> bytes:
        """The response head and whatever the stream opens with, sent first."""

    def receive(self, client: Client, data: bytes) -> None:
        """What the client sent after its request. By default it is not expected:
        it is dropped, and a client that sends too much is closed."""
        client.discard_input(data)


class Transport(ABC):
    """How one wire format frames the streamer's messages (see the module's guarantees)."""

    name: ClassVar[str]  # for logs and the registry
    path: ClassVar[str]  # the endpoint that serves it
    # Whether browsers keep a page from reading a cross-origin answer unless CORS
    # allows it (EventSource, fetch); False (WebSocket) makes the streamer check the
    # Origin header itself.
    browser_cors: ClassVar[bool] = True
    commands: ClassVar[bool] = False  # whether clients send commands (streamer.commands)
    heartbeat: bytes  # keeps an idle stream open through proxies, finds dead peers

    @classmethod
    @abstractmethod
    def configured(cls, config: Config) -> Transport:
        """The transport with the deployment's settings."""

    @abstractmethod
    def accept(self, request: Request) -> Session:
        """A session for ``request``, or ``BadRequest`` when this transport cannot
        serve it (a missing handshake, a malformed option)."""

    def variants(self) -> tuple[Transport, ...]:
        """Every transport ``accept`` may hand a connection (this one, by default)."""
        return (self,)

    def event(self, event_id: str, type: str, envelope: bytes) -> bytes:
        """One event (``check_event`` first: ``UnsafeFrame`` when it is unsafe)."""
        check_event(event_id, type, envelope)
        return self.encode_event(event_id, type, envelope)

    def reset(self, position: str, reason: str, last_id: str | None) -> bytes:
        """The ``reset`` event at ``position``: history cannot cover the gap."""
        return self.event(position, "reset", reset_envelope(position, reason, last_id))

    @abstractmethod
    def encode_event(self, event_id: str, type: str, envelope: bytes) -> bytes:
        """``event`` without the check: for an event ``check_event`` has passed."""

    @abstractmethod
    def ready(self, position: str) -> bytes:
        """The stream's starting position: resume from here if nothing else came."""

    @abstractmethod
    def resumed(self, replayed: int, last_id: str) -> bytes:
        """How many events a resume replayed, from where (no position)."""

    @abstractmethod
    def expired(self, exp: int) -> bytes:
        """The last words of a stream whose token expired at ``exp`` (no position)."""

    @abstractmethod
    def goodbye(self, ending: Ending, reason: str) -> bytes | None:
        """What goes out last when the streamer ends the stream for ``ending``; None to
        close without a word."""
