"""One subscriber connection once its handshake is done.

A live client costs no greenlet: its socket is a plain non-blocking socket, its end is
noticed by an event-loop watcher (a read of EOF or an error closes it at once), and the
hub writes to it directly.

Guarantees:
- ``send`` never blocks the caller (the hub): it makes one non-blocking write; whatever
  the kernel does not take is queued in this client's buffer and written, in order, by
  a writer greenlet that exists only while the client is behind;
- a client whose queued bytes pass ``limit`` is closed at once, so a slow or stalled
  reader never holds more than ``limit`` bytes nor delays other clients; so is one whose
  queue cannot be written within ``write_timeout`` seconds;
- until ``attach`` (while the handshake is written) frames are queued, so a client never
  receives an event ahead of its response headers;
- a client the server ends for a reason of its own (``end``: token revoked, server
  stopping) gets what was queued for it and then its transport's goodbye for that
  reason (a WebSocket close frame, an SSE ``retry:`` hint), when it is within ``limit``:
  a client dropped as too slow cannot take more bytes, so its connection is simply shut;
- what the peer sends goes to its transport's session (``Session.receive``: WebSocket
  commands; for SSE, nothing is expected and more than ``MAX_CLIENT_INPUT`` bytes close
  the client); nothing it sends can leave its socket unwatched: an error while handling
  its input ends the client (``Ending.FAILED``) and is logged;
- ``finish`` sends a last message after everything already queued, then closes: nothing
  is sent after it, and the connection is closed gracefully (shut down for writing,
  then lingering), so the peer reads that message rather than a reset;
- while it joins (see ``Hub.join``) the live frames it collects (``hold``) are bounded by
  ``limit`` too: past it the hub closes it as too slow;
- a replay feeds it without the ``limit`` check (``feed``) but paces itself: it waits
  until the queue has drained (``drained``) before it reads the next page.
"""

from __future__ import annotations

import _socket
import contextlib
import functools
import logging
import os
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

import gevent
import gevent.event
from gevent.socket import wait_write

from herald.tokens import Grant
from streamer.reply import reply_and_close
from streamer.transport import Ending

if TYPE_CHECKING:
    from streamer.commands import Backlog
    from streamer.transport import Session, Transport

log = logging.getLogger(__name__)

MAX_CLIENT_INPUT = 64 * 1024  # bytes a client that sends nothing (SSE) may send anyway
TOO_SLOW = "too slow"  # its queue passed ``limit``
STALLED = "write timed out"  # its socket took nothing for ``write_timeout`` seconds
EV_READ = 1


class Client:
    """A connected subscriber: its topics, its socket and its backlog."""

    __slots__ = ("_drained", "_on_close", "_watcher", "_writer", "backlog", "close_reason",
                 "closed", "ending", "fd", "grant", "head", "input", "limit", "on_text",
                 "peer", "pending", "pending_bytes", "prelive", "prelive_bytes", "session",
                 "sock", "token_id", "topics", "transport", "user", "write_timeout")

    def __init__(self, user: str, token_id: str, topics: tuple[str, ...], limit: int,
                 write_timeout: float = 30.0, peer: str = "", *,
                 transport: Transport) -> None:
        self.user = user
        self.token_id = token_id
        self.topics = topics
        self.limit = limit
        self.write_timeout = write_timeout
        self.peer = peer
        self.sock: _socket.socket | None = None
        self.fd = -1
        self.closed = False
        self.close_reason = ""
        self.ending = ""  # set by ``finish``: the reason it will close for
        self.input = 0
        self.head = b""  # the response head and first comment, written first
        self.transport = transport  # frames everything sent to it
        self.session: Session | None = None  # reads what it sends (None: nothing expected)
        self.grant: Grant | None = None  # what the client's token allows
        self.on_text: Callable[[Client, str], None] | None = None  # a client's command
        self.backlog: Backlog | None = None  # its commands waiting to run
        # Not None while frames wait: before ``attach`` and while the client is behind.
        self.pending: deque[bytes] | None = deque()
        self.pending_bytes = 0
        # While joining (see ``Hub.join``): frames of its topics, with their positions.
        self.prelive: list[tuple[tuple[int, int], bytes]] | None = None
        self.prelive_bytes = 0
        self._drained: tuple[int, gevent.event.Event] | None = None  # (mark, its waiter)
        self._writer: gevent.Greenlet | None = None
        self._watcher = None
        self._on_close: Callable[[Client], None] | None = None

    def on_close(self, callback: Callable[[Client], None]) -> None:
        self._on_close = callback

    def begin_with(self, preamble: bytes) -> None:
        """Queue the stream's head (and a reset) first; it gets its own allowance.

        ``limit`` grows by its size (a few hundred bytes): the client may still fall
        ``limit`` bytes behind on live events.
        """
        self.limit += len(preamble)
        self.enqueue(preamble)

    def hold(self, key: tuple[int, int], frame: bytes) -> bool:
        """Keep a live frame while joining; False once they pass ``limit`` (too slow)."""
        self.prelive_bytes += len(frame)
        if self.prelive_bytes > self.limit or self.prelive is None:
            return False
        self.prelive.append((key, frame))
        return True

    def drop_held(self, upto: tuple[int, int]) -> None:
        """Forget the live frames held at or before position ``upto`` (replayed ones)."""
        if self.prelive:
            self.prelive = [(key, frame) for key, frame in self.prelive if key > upto]
            self.prelive_bytes = sum(len(frame) for _, frame in self.prelive)

    def feed(self, data: bytes) -> None:
        """Queue part of a replay, whatever ``limit``: the replay paces itself by
        waiting for ``drained`` before it reads more."""
        if self.closed:
            return
        if self.pending is None:
            self.pending = deque()
        self.pending.append(data)
        self.pending_bytes += len(data)
        if self.sock is not None:
            self._start_writer()

    def drained(self, mark: int) -> bool:
        """Wait until at most ``mark`` bytes are queued; False if the client closed.

        A client that stops reading is closed by its writer after ``write_timeout``.
        """
        while not self.closed and self.pending_bytes > mark:
            waiter = gevent.event.Event()
            self._drained = (mark, waiter)
            waiter.wait()
        self._drained = None
        return not self.closed

    def attach(self, sock: _socket.socket, send_buffer: int = 0) -> None:
        """Take over the connection's (non-blocking) socket and start streaming to it.

        ``send_buffer`` (bytes, 0 for the kernel's autotuning) caps what the kernel
        holds for this client on top of ``limit``.
        """
        self.sock = sock
        fd = sock.fileno()
        if sock.family != _socket.AF_UNIX:
            # Events are small and latency matters: never let Nagle hold one back.
            self.sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
        if send_buffer:
            self.sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_SNDBUF, send_buffer)
        self.fd = fd
        self._watcher = gevent.get_hub().loop.io(fd, EV_READ)
        self._watcher.start(self._readable)
        if self.pending:
            try:
                self._write_some(self.pending)  # a fresh socket usually takes it all
            except OSError:
                self.close("write failed")
                return
        if self.pending:
            self._start_writer()
        else:
            self.pending = None

    def send(self, data: bytes) -> bool:
        """Write ``data`` without blocking; False when the client had to be closed (or is
        finishing: nothing goes out after its last message)."""
        if self.closed or self.ending:
            return False
        if self.pending is None:
            try:
                written = os.write(self.fd, data)
            except BlockingIOError:
                written = 0
            except OSError:
                self.close("write failed")
                return False
            if written == len(data):
                return True
            data = data[written:]
        if not self.enqueue(data):
            self.close(TOO_SLOW)
            return False
        return True

    def enqueue(self, data: bytes) -> bool:
        """Queue bytes behind what is pending; False when that passes ``limit``.

        The caller closes the client then (the hub does so after its loop).
        """
        if self.pending is None:
            self.pending = deque()
        self.pending.append(data)
        self.pending_bytes += len(data)
        if self.pending_bytes > self.limit:
            return False
        if self.sock is not None:
            self._start_writer()
        return True

    def finish(self, last: bytes, reason: str) -> None:
        """Send ``last`` after whatever is queued, then close for ``reason``.

        Nothing is sent after ``last``; the caller has already taken the client out of
        the fan-out. A client behind is closed by its writer once the queue is written
        (within ``write_timeout``, and at once if the queue passes ``limit``).
        """
        if self.closed or self.ending:
            return
        self.ending = reason
        if self.pending is None or self.sock is None:
            self.close(reason, last)
        elif not self.enqueue(last):
            self.close(TOO_SLOW)

    def end(self, reason: str, ending: Ending) -> None:
        """Close the connection for ``ending``: first what is queued and the transport's
        goodbye (see the module's guarantees)."""
        self.close(reason, self.transport.goodbye(ending, reason))

    def close(self, reason: str, goodbye: bytes | None = None) -> None:
        """Close once; the hub forgets the client via ``on_close``. With ``goodbye``
        (possibly empty) the close is graceful: what is queued (within ``limit``) and
        ``goodbye`` are written, then the socket lingers (``reply_and_close``).
        """
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        level = logging.INFO if reason in (TOO_SLOW, STALLED) else logging.DEBUG
        log.log(level, "client %s of %s closed: %s (%d bytes behind)", self.peer, self.user,
                reason, self.pending_bytes)
        if goodbye and self.pending:  # the goodbye goes after whole frames only
            within = self.pending_bytes <= self.limit
            goodbye = b"".join(self.pending) + goodbye if within else None
        self.pending = None
        self.pending_bytes = 0
        self.prelive = None
        self._wake()
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher.close()
            self._watcher = None
        if self.sock is not None:
            self._release(self.sock, goodbye)
        if self._on_close is not None:
            self._on_close(self)

    def _release(self, sock: _socket.socket, goodbye: bytes | None) -> None:
        """End the connection now, after ``goodbye`` if any; never blocks.

        A writer waiting on the socket has a watcher on its descriptor: closing the
        descriptor under it would make the event loop abort, so the writer is killed
        first and the descriptor closed (or the goodbye written) when it has gone.
        """
        finish: Callable[[], None]
        if goodbye is not None:
            finish = functools.partial(reply_and_close, sock, goodbye)
        else:
            with contextlib.suppress(OSError):
                sock.shutdown(_socket.SHUT_RDWR)
            finish = sock.close
        writer, self._writer = self._writer, None
        if writer is None or writer.dead or writer is gevent.getcurrent():
            finish()
            return
        writer.link(lambda _: finish())
        writer.kill(block=False)

    def _readable(self) -> None:
        """The peer sent bytes or closed: EOF or an error ends the client.

        An event-loop callback: whatever goes wrong while handling the input closes
        the client rather than escaping into the loop and leaving the socket unread.
        """
        try:
            self._read_input()
        except Exception:
            log.exception("client %s of %s: failed to handle its input", self.peer, self.user)
            self.end("internal error", Ending.FAILED)

    def _read_input(self) -> None:
        try:
            data = self.sock.recv(4096)  # type: ignore[union-attr]
        except BlockingIOError:
            return
        except OSError:
            self.close("read failed")
            return
        if not data:
            self.close("disconnected")
            return
        if self.session is not None:
            self.session.receive(self, data)
        else:
            self.discard_input(data)

    def discard_input(self, data: bytes) -> None:
        """Input the stream does not expect: counted, and past ``MAX_CLIENT_INPUT``
        bytes the client is closed."""
        self.input += len(data)
        if self.input > MAX_CLIENT_INPUT:
            self.close("sent too much after its request")

    def _start_writer(self) -> None:
        if self._writer is None and not self.closed:
            self._writer = gevent.spawn(self._drain)

    def _drain(self) -> None:
        """Write the queue as the socket accepts it; the client is behind meanwhile."""
        try:
            while self.pending and not self.closed:
                wait_write(self.fd, timeout=self.write_timeout,
                           timeout_exc=TimeoutError(STALLED))
                if self.closed or not self.pending:
                    break
                self._write_some(self.pending)
            if self.ending and not self.closed:
                self.close(self.ending, b"")  # all written: close gracefully
            elif not self.closed:
                self.pending = None
        except TimeoutError:
            self.close(STALLED)
        except OSError as exc:
            self.close(f"write failed: {exc}")
        finally:
            if self._writer is gevent.getcurrent():
                self._writer = None

    def _write_some(self, pending: deque[bytes]) -> None:
        if len(pending) > 1:  # one write for everything queued
            joined = b"".join(pending)
            pending.clear()
            pending.append(joined)
        chunk = pending[0]
        try:
            written = os.write(self.fd, chunk)
        except BlockingIOError:
            return
        self.pending_bytes -= written
        if written < len(chunk):
            pending[0] = chunk[written:]
        else:
            pending.popleft()
        self._wake()

    def _wake(self) -> None:
        """Release a replay waiting in ``drained`` once the queue is down to its mark."""
        drained = self._drained
        if drained is not None and (self.closed or self.pending_bytes <= drained[0]):
            drained[1].set()
