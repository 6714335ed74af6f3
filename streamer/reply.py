"""Writing a whole answer to a non-blocking socket, then closing it.

Answers are small, so one non-blocking write nearly always takes all of it; only when
it does not is a greenlet spawned to finish (with a deadline). Before closing, the
socket is shut down for writing and whatever the peer still sends is read and dropped
for a moment ("lingering close"), so that unread request bytes do not make the kernel
reset the connection and destroy the answer before the peer has read it.
"""

from __future__ import annotations

import _socket
import contextlib

import gevent
from gevent.socket import wait_read, wait_write

WRITE_TIMEOUT = 5.0
LINGER = 2.0


def reply_and_close(sock: _socket.socket, data: bytes) -> None:
    """Send ``data`` and close ``sock``; never blocks the caller, never raises."""
    try:
        sent = sock.send(data)
    except BlockingIOError:
        sent = 0
    except OSError:
        sock.close()
        return
    if sent == len(data) and _nothing_unread(sock):
        sock.close()
        return
    gevent.spawn(_finish, sock, data[sent:])


def _nothing_unread(sock: _socket.socket) -> bool:
    try:
        return not sock.recv(1, _socket.MSG_PEEK)
    except BlockingIOError:
        return True
    except OSError:
        return True


def _finish(sock: _socket.socket, rest: bytes) -> None:
    fd = sock.fileno()
    try:
        with gevent.Timeout(WRITE_TIMEOUT):
            while rest:
                wait_write(fd)
                with contextlib.suppress(BlockingIOError):
                    rest = rest[sock.send(rest):]
        sock.shutdown(_socket.SHUT_WR)
        with gevent.Timeout(LINGER, False):
            while True:
                wait_read(fd)
                with contextlib.suppress(BlockingIOError):
                    if not sock.recv(65536):
                        break
    except (OSError, gevent.Timeout):
        pass
    finally:
        sock.close()
