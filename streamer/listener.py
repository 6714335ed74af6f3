"""Accepting connections and reading request heads, without a greenlet per connection.

The listening socket and every connection still reading its request are watched by the
event loop; a callback accepts, reads and, once the head is complete, calls the
handler with the connection's socket (which the handler then owns). A connection costs
a greenlet only if its handler needs to wait for something.

Accepting is batched: each wakeup of the listening socket accepts up to
``ACCEPTS_PER_WAKEUP`` connections and reads each at once. On Linux the listening socket
is deferred (``TCP_DEFER_ACCEPT``): the kernel hands a connection over once its first
bytes have arrived, so the read nearly always finds the request, and only a connection
whose request is late (or split) costs a watcher. The requests completed together are
handed over together: ``prepare`` sees the batch first (the streamer verifies their
tokens in one loop, about a third cheaper than one at a time), then ``handler`` each
request in turn.

Guarantees:
- a request head larger than ``max_head`` bytes is answered 431 and closed;
- a malformed request head is answered 400 with a JSON error (``streamer.protocol``);
- a connection that has not completed its head within ``head_timeout`` seconds
  (``HERALD_STREAMER_HEAD_TIMEOUT``) of being accepted is closed (slowloris), checked
  every second, or every ``head_timeout`` if that is shorter (one that sends nothing at
  all is held by the kernel, not by this process, for a second or two first);
- a connection that closes before completing its head is dropped quietly;
- every request it refuses itself is reported to ``on_refused`` (``"431"``, ``"400"``,
  ``"slow_head"``);
- running out of file descriptors pauses accepting for a moment instead of spinning.
"""

from __future__ import annotations

import _socket
import errno
import logging
import time
from collections.abc import Callable

import gevent

from streamer.protocol import HEAD_END, BadRequest, Request, parse_head
from streamer.reply import reply_and_close

log = logging.getLogger(__name__)

EV_READ = 1
ACCEPTS_PER_WAKEUP = 256
FD_EXHAUSTED_PAUSE = 0.1

Handler = Callable[[_socket.socket, Request], None]
Prepare = Callable[[list[Request]], None]
Refused = Callable[[str], None]
Ready = list[tuple[_socket.socket, Request]]


class Pending:
    """A connection still reading its request head."""

    __slots__ = ("buffer", "deadline", "peer", "sock", "watcher")

    def __init__(self, sock: _socket.socket, peer: str, deadline: float) -> None:
        self.sock = sock
        self.peer = peer
        self.deadline = deadline
        self.buffer = b""
        self.watcher = None


class Listener:
    """Accepts on ``sock`` and hands each complete request to ``handler``."""

    def __init__(self, sock: _socket.socket, handler: Handler, max_head: int = 8192,
                 head_timeout: float = 5.0, prepare: Prepare | None = None,
                 on_refused: Refused | None = None) -> None:
        self.sock = sock
        self.on_refused = on_refused
        self.handler = handler
        self.prepare = prepare
        self.max_head = max_head
        self.head_timeout = head_timeout
        self.pending: dict[int, Pending] = {}
        self._loop = gevent.get_hub().loop
        self._watcher = self._loop.io(sock.fileno(), EV_READ)
        self._sweeper: gevent.Greenlet | None = None
        self._pause = None

    @property
    def address(self) -> tuple[str, int]:
        return self.sock.getsockname()[:2]

    def start(self) -> None:
        self._watcher.start(self._accept)
        self._sweeper = gevent.spawn(self._sweep)

    def close(self) -> None:
        """Stop accepting; connections still reading their head are closed."""
        self._watcher.stop()
        if self._sweeper is not None:
            self._sweeper.kill(block=False)
        self.sock.close()
        for pending in list(self.pending.values()):
            self._drop(pending)

    def _accept(self) -> None:
        """Accept what is waiting (up to a batch); serve the requests that came with it."""
        ready: Ready = []
        try:
            self._accept_batch(ready)
        finally:
            self._serve(ready)

    def _accept_batch(self, ready: Ready) -> None:
        accept, family, now = self.sock._accept, self.sock.family, time.monotonic()
        for _ in range(ACCEPTS_PER_WAKEUP):
            try:
                fd, address = accept()
            except BlockingIOError:
                return
            except OSError as exc:
                self._accept_failed(exc)
                return
            # Family and type given: the socket need not ask the kernel for them.
            sock = _socket.socket(family, _socket.SOCK_STREAM, 0, fd)
            sock.setblocking(False)
            self._read(Pending(sock, _peer(address), now + self.head_timeout), ready)

    def _accept_failed(self, exc: OSError) -> None:
        if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
            log.warning("cannot accept (%s); pausing %.1fs", exc, FD_EXHAUSTED_PAUSE)
            self._watcher.stop()
            self._pause = self._loop.timer(FD_EXHAUSTED_PAUSE)
            self._pause.start(self._watcher.start, self._accept)
        elif exc.errno not in (errno.ECONNABORTED, errno.EPROTO, errno.EINTR):
            log.warning("accept failed: %s", exc)

    def _read(self, pending: Pending, ready: Ready | None = None) -> None:
        """Read what arrived; pass a complete head on, or keep watching."""
        try:
            data = pending.sock.recv(self.max_head + 1 - len(pending.buffer))
        except BlockingIOError:
            self._watch(pending)
            return
        except OSError:
            self._drop(pending)
            return
        if not data:
            self._drop(pending)
            return
        pending.buffer += data
        end = pending.buffer.find(HEAD_END)
        if end < 0:
            if len(pending.buffer) > self.max_head:
                self._forget(pending)
                self._refuse(pending.sock, _too_large(self.max_head))
            else:
                self._watch(pending)
            return
        self._forget(pending)
        self._complete(pending.sock, pending.buffer[:end + len(HEAD_END)], pending.peer, ready)

    def _complete(self, sock: _socket.socket, head: bytes, peer: str,
                  ready: Ready | None) -> None:
        """A malformed head is answered; a request joins ``ready``, or alone is served."""
        try:
            request = parse_head(head, peer)
        except BadRequest as exc:
            self._refuse(sock, exc)
            return
        if ready is None:  # a late request (its own wakeup)
            self._serve([(sock, request)])
        else:
            ready.append((sock, request))

    def _serve(self, ready: Ready) -> None:
        """``prepare`` the batch, then hand each request to ``handler``."""
        if ready and self.prepare is not None:
            try:
                self.prepare([request for _, request in ready])
            except Exception:
                log.exception("preparing %d requests failed", len(ready))
        for sock, request in ready:
            try:
                self.handler(sock, request)
            except Exception:
                log.exception("handler failed for %s %s", request.method, request.path)
                sock.close()

    def _watch(self, pending: Pending) -> None:
        if pending.watcher is None:
            pending.watcher = self._loop.io(pending.sock.fileno(), EV_READ)
            pending.watcher.start(self._read, pending)
            self.pending[pending.sock.fileno()] = pending

    def _forget(self, pending: Pending) -> None:
        if pending.watcher is not None:
            pending.watcher.stop()
            pending.watcher.close()
            pending.watcher = None
            self.pending.pop(pending.sock.fileno(), None)

    def _drop(self, pending: Pending) -> None:
        self._forget(pending)
        pending.sock.close()

    def _sweep(self) -> None:
        """Close connections that did not finish their request head in time."""
        while True:
            gevent.sleep(min(1.0, self.head_timeout))
            now = time.monotonic()
            late = [p for p in self.pending.values() if p.deadline <= now]
            for pending in late:
                log.debug("closing %s: request head not complete in time", pending.peer)
                self._drop(pending)
                self._refused("slow_head")

    def _refuse(self, sock: _socket.socket, refusal: BadRequest) -> None:
        reply_and_close(sock, refusal.answer())
        self._refused(str(refusal.status))

    def _refused(self, reason: str) -> None:
        if self.on_refused is not None:
            self.on_refused(reason)


def _peer(address: object) -> str:
    return f"{address[0]}:{address[1]}" if isinstance(address, tuple) else "local"


def _too_large(max_head: int) -> BadRequest:
    return BadRequest(431, "request_too_large",
                      f"request line and headers must be at most {max_head} bytes")


def listening_socket(host: str, port: int, reuse_port: bool = False,
                     backlog: int = 4096) -> _socket.socket:
    """A non-blocking listening socket; ``reuse_port`` lets processes share the port."""
    family = _socket.AF_INET6 if ":" in host else _socket.AF_INET
    sock = _socket.socket(family, _socket.SOCK_STREAM)
    sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEPORT, 1)
    # Linux: wake accept only once a connection's first bytes (its request) have arrived,
    # so accepting and reading a head take one wakeup, not two (nginx's ``deferred``);
    # about a fifth of a reconnect storm's CPU (herald_bench.storm). A connection that
    # sends nothing is handed over after a second or two, then timed as any other.
    if hasattr(_socket, "TCP_DEFER_ACCEPT"):
        sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_DEFER_ACCEPT, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.setblocking(False)
    return sock
