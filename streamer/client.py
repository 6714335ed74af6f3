"""One subscriber connection: its grant, its topics, and how bytes reach its socket.

Guarantees:
- ``send`` never blocks the caller (the hub): it makes one non-blocking ``send`` on the
  socket; whatever the kernel does not take is queued in this client's buffer and
  written by this client's own writer greenlet, in order.
- A client whose queued bytes pass ``limit`` is closed at once (a slow or stalled
  reader never holds memory or delays other clients); so is one whose queued bytes
  cannot be written within ``write_timeout`` seconds.
- Before ``go_live`` (while the handshake is written) frames are queued, so a client
  never receives an event ahead of its response headers.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections import deque
from collections.abc import Callable

import gevent

from herald.tokens import Grant

log = logging.getLogger(__name__)


class Client:
    """A connected SSE subscriber."""

    __slots__ = (
        "_live",
        "_on_close",
        "_pending",
        "_pending_bytes",
        "_writer",
        "close_reason",
        "closed",
        "grant",
        "limit",
        "peer",
        "sock",
        "topics",
        "write_timeout",
    )

    def __init__(self, sock: socket.socket, grant: Grant, topics: tuple[str, ...],
                 limit: int, write_timeout: float = 30.0, peer: str = "") -> None:
        self.sock = sock
        self.grant = grant
        self.topics = topics
        self.limit = limit
        self.write_timeout = write_timeout
        self.peer = peer
        self.closed = False
        self.close_reason = ""
        self._live = False
        self._pending: deque[bytes] = deque()
        self._pending_bytes = 0
        self._writer: gevent.Greenlet | None = None
        self._on_close: Callable[[Client], None] | None = None

    @property
    def backlog(self) -> int:
        """Bytes queued but not yet taken by the socket."""
        return self._pending_bytes

    def on_close(self, callback: Callable[[Client], None]) -> None:
        self._on_close = callback

    def send(self, data: bytes) -> None:
        """Write ``data`` without blocking; queue what the socket does not take."""
        if self.closed:
            return
        if self._pending or not self._live:
            self._queue(data)
            return
        try:
            sent = self.sock.send(data, 0, 0.0)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.close("write failed")
            return
        if sent < len(data):
            self._queue(data[sent:])

    def go_live(self) -> None:
        """The handshake is written: flush what was queued meanwhile, then send directly."""
        self._live = True
        if self._pending:
            self._start_writer()

    def close(self, reason: str) -> None:
        """Close the connection once; the hub forgets the client via ``on_close``."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self._pending.clear()
        self._pending_bytes = 0
        log.debug("client %s closed: %s", self.peer, reason)
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        if self._on_close is not None:
            self._on_close(self)

    def _queue(self, data: bytes) -> None:
        self._pending.append(data)
        self._pending_bytes += len(data)
        if self._pending_bytes > self.limit:
            log.info("client %s dropped: %d bytes behind (limit %d)", self.peer,
                     self._pending_bytes, self.limit)
            self.close("too slow")
            return
        if self._live:
            self._start_writer()

    def _start_writer(self) -> None:
        if self._writer is None:
            self._writer = gevent.spawn(self._drain)

    def _drain(self) -> None:
        try:
            while self._pending and not self.closed:
                chunk = self._pending.popleft()
                with gevent.Timeout(self.write_timeout):
                    self.sock.sendall(chunk)
                if not self.closed:
                    self._pending_bytes -= len(chunk)
        except (OSError, gevent.Timeout):
            self.close("write failed or timed out")
        finally:
            self._writer = None
