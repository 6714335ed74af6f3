"""WebSocket: the wire format of ``GET /ws`` (framing by wsproto).

A request without ``Upgrade: websocket`` is answered 426, a broken handshake 400;
otherwise the response head is the handshake's ``101 Switching Protocols``. Then:

- an event is a text message holding its envelope (the id and the type are in it);
- ``ready``, ``resumed`` and ``token-expired`` are replies ``{"reply": ..., "ok":
  true, ...}``, as the answers to the client's commands (``streamer.commands``);
- the expiry's last words are followed by a close frame 4001 ("token expired"); a
  stopping server closes with 1012, a revoked token with 1008, a failure with 1011;
- a heartbeat is a ping.

The client's messages: a ping is answered with a pong, a close with a close; a
complete text message (at most ``MAX_MESSAGE`` bytes, else close 1009) goes to the
client's ``on_text``; a binary message closes with 1003, a protocol error with 1002.

Server-to-client frames are not masked, so one encoded frame serves every client: the
hub encodes each event once per process, as it does for SSE. No extension (such as
permessage-deflate) is negotiated, which is what keeps frames shareable. Browsers do
not apply CORS to WebSocket: the streamer checks ``Origin`` itself (``browser_cors``).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    TextMessage,
)
from wsproto.events import Request as Handshake
from wsproto.frame_protocol import FrameProtocol
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from streamer.expiry import EXPIRED_EVENT, TOKEN_EXPIRED
from streamer.protocol import BadRequest
from streamer.transport import Ending, Session, Transport

if TYPE_CHECKING:
    from herald.config import Config
    from streamer.client import Client
    from streamer.protocol import Request

from herald.errors import error_body

_frames = FrameProtocol(client=False, extensions=[])

PING = bytes(_frames.ping(b"heartbeat"))
MAX_MESSAGE = 64 * 1024  # bytes a client command may have
EXPIRED_CLOSE = 4001  # close code (private range): the token expired
CLOSE_CODES = {Ending.STOPPING: 1012, Ending.REVOKED: 1008, Ending.FAILED: 1011}
PROTOCOL_ERROR, UNSUPPORTED, TOO_BIG = 1002, 1003, 1009


def text_frame(payload: bytes | str) -> bytes:
    """One complete text message."""
    return bytes(_frames.send_data(
        payload.decode() if isinstance(payload, bytes) else payload, fin=True))


def reply(op: str, ref: Any = None, ok: bool = True, **fields: Any) -> bytes:
    """A reply message: ``{"reply": op, "ref": ref, "ok": ok, ...}``."""
    body: dict[str, Any] = {"reply": op}
    if ref is not None:
        body["ref"] = ref
    body["ok"] = ok
    body.update(fields)
    return text_frame(json.dumps(body, separators=(",", ":")))


def error_reply(op: str, ref: Any, code: str, message: str, field: str | None = None,
                **extra: Any) -> bytes:
    """A refusal: ``"ok": false`` and the API's ``error`` object (plus ``extra`` fields)."""
    return reply(op, ref, False, error=error_body(code, message, field), **extra)


def close_frame(code: int, reason: str = "") -> bytes:
    """A close frame with ``code`` (a registered one or of the private 4000-4999 range)
    and ``reason`` (cut to fit the frame, 123 bytes)."""
    return bytes(FrameProtocol(client=False, extensions=[]).close(code, reason))


class WebSocket(Transport):
    """The stream as WebSocket messages (see the module's description)."""

    name = "ws"
    path = "/ws"
    browser_cors = False
    commands = True
    heartbeat = PING

    @classmethod
    def configured(cls, config: Config) -> WebSocket:
        return cls()

    def accept(self, request: Request) -> Session:
        """The WebSocket connection ``request`` opens, or ``BadRequest`` (426 or 400)."""
        upgrade = request.headers.get("upgrade", "")
        if "websocket" not in (token.strip().lower() for token in upgrade.split(",")):
            raise BadRequest(426, "upgrade_required", "GET /ws is a WebSocket endpoint: "
                             "send a handshake (Upgrade: websocket)", "Upgrade",
                             headers={"Upgrade": "websocket"})
        ws = WSConnection(ConnectionType.SERVER)
        try:
            ws.receive_data(request.raw)
            handshake = next(ws.events(), None)
        except RemoteProtocolError as exc:
            raise BadRequest(400, "bad_request",
                             f"not a valid WebSocket handshake: {exc}") from None
        if not isinstance(handshake, Handshake):
            raise BadRequest(400, "bad_request", "not a valid WebSocket handshake")
        return WebSocketSession(self, ws)

    def encode_event(self, event_id: str, type: str, envelope: bytes) -> bytes:
        return text_frame(envelope)

    def ready(self, position: str) -> bytes:
        return reply("ready", position=position)

    def resumed(self, replayed: int, last_id: str) -> bytes:
        return reply("resumed", replayed=replayed, **{"from": last_id})

    def expired(self, exp: int) -> bytes:
        return reply(EXPIRED_EVENT, exp=exp) + close_frame(EXPIRED_CLOSE, TOKEN_EXPIRED)

    def goodbye(self, ending: Ending, reason: str) -> bytes | None:
        return close_frame(CLOSE_CODES[ending], reason)


class WebSocketSession(Session):
    """One WebSocket connection: its protocol state and a message arriving in parts."""

    def __init__(self, transport: WebSocket, ws: WSConnection) -> None:
        self.transport = transport
        self.ws = ws
        self._message: list[str] = []

    def head(self, client: Client, cors: dict[str, str]) -> bytes:
        return self.ws.send(AcceptConnection())

    def receive(self, client: Client, data: bytes) -> None:
        """Answer pings and closes; hand complete text messages to ``on_text``."""
        try:
            self.ws.receive_data(data)
            for event in self.ws.events():
                if client.closed:
                    return
                self._handle(client, event)
        except (LocalProtocolError, RemoteProtocolError):
            self._close(client, "WebSocket protocol error", PROTOCOL_ERROR)

    def _handle(self, client: Client, event: object) -> None:
        if isinstance(event, Ping):
            client.send(self.ws.send(event.response()))
        elif isinstance(event, CloseConnection):
            client.close("closed by the client", self.ws.send(event.response()))
        elif isinstance(event, TextMessage):
            self._message.append(event.data)
            if sum(len(part) for part in self._message) > MAX_MESSAGE:
                self._close(client, "message too big", TOO_BIG)
            elif event.message_finished:
                text, self._message = "".join(self._message), []
                if client.on_text is not None:
                    client.on_text(client, text)
        elif isinstance(event, BytesMessage):
            self._close(client, "text messages only", UNSUPPORTED)

    @staticmethod
    def _close(client: Client, reason: str, code: int) -> None:
        client.close(reason, close_frame(code, reason))
