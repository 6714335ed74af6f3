"""WebSocket framing for the streamer (wsproto), shared by every WebSocket client.

Server-to-client frames are not masked, so one encoded frame serves every client: the
hub encodes each event once per process, as it does for SSE. No extension (such as
permessage-deflate) is negotiated, which is what keeps frames shareable.
"""

from __future__ import annotations

import json
from typing import Any

from wsproto.frame_protocol import FrameProtocol

from herald.errors import error_body

_frames = FrameProtocol(client=False, extensions=[])

PING = bytes(_frames.ping(b"heartbeat"))
MAX_MESSAGE = 64 * 1024  # bytes a client command may have


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
