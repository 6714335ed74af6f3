"""A Redis connection for pub/sub that reads in batches.

Commands go out as RESP2; replies are parsed by hiredis (the C parser redis-py uses).
``read`` makes one ``recv`` and returns every reply it completed, so a burst of
published events costs one system call and no Python-level framing per message. Host,
port, credentials and TLS come from the same URL forms as redis-py (``redis://``,
``rediss://``, ``unix://``), parsed by redis-py's own ``parse_url``.

This exists because redis-py's ``PubSub`` spends tens of microseconds per message
(retry wrappers, health checks, a dict per message, a poll per check); the streamer
reads every event of every topic its clients want through this one connection.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from typing import Any

import gevent.lock
import hiredis
from redis.connection import parse_url

READ_SIZE = 256 * 1024


class PubSubError(ConnectionError):
    """The connection failed, closed, or Redis refused a command."""


def pack(*args: str | bytes | int) -> bytes:
    """One command in RESP2 (an array of bulk strings)."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class PubSubConnection:
    """One connection to the Redis at ``url``; ``connect`` before use."""

    def __init__(self, url: str, connect_timeout: float = 5.0) -> None:
        self.params = parse_url(url)
        self.tls = url.startswith("rediss://")
        self.connect_timeout = connect_timeout
        self._sock: socket.socket | None = None
        self._reader = hiredis.Reader()
        self._sending = gevent.lock.Semaphore()  # several greenlets send commands

    def connect(self) -> None:
        """Open the socket and authenticate; raise ``PubSubError`` on failure."""
        try:
            self._sock = self._open()
            password = self.params.get("password")
            if password:
                username = self.params.get("username")
                auth = ("AUTH", username, password) if username else ("AUTH", password)
                self.send(pack(*auth))
                self._expect_ok()
        except (OSError, ssl.SSLError) as exc:
            self.close()
            raise PubSubError(f"cannot connect to Redis: {exc}") from exc

    def _open(self) -> socket.socket:
        path = self.params.get("path")
        if path:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.connect_timeout)
            sock.connect(path)
        else:
            address = (self.params.get("host", "localhost"), self.params.get("port", 6379))
            sock = socket.create_connection(address, timeout=self.connect_timeout)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls:
            sock = self._wrap_tls(sock)
        sock.settimeout(None)
        return sock

    def _wrap_tls(self, sock: socket.socket) -> socket.socket:
        context = ssl.create_default_context()
        if self.params.get("ssl_cert_reqs") in ("none", "CERT_NONE"):
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context.wrap_socket(sock, server_hostname=self.params.get("host"))

    def _expect_ok(self) -> None:
        replies: list[Any] = []
        while not replies:
            replies = self.read()
        if isinstance(replies[0], hiredis.ReplyError):
            raise PubSubError(f"Redis refused: {replies[0]}")

    def send(self, data: bytes) -> None:
        """Write one or more packed commands; raise ``PubSubError`` on failure."""
        if self._sock is None:
            raise PubSubError("not connected")
        try:
            with self._sending:
                self._sock.sendall(data)
        except OSError as exc:
            raise PubSubError(f"write to Redis failed: {exc}") from exc

    def read(self) -> list[Any]:
        """Block until data arrives; return the replies it completed (maybe none)."""
        if self._sock is None:
            raise PubSubError("not connected")
        try:
            data = self._sock.recv(READ_SIZE)
        except OSError as exc:
            raise PubSubError(f"read from Redis failed: {exc}") from exc
        if not data:
            raise PubSubError("Redis closed the connection")
        self._reader.feed(data)
        replies = []
        while (reply := self._reader.gets()) is not False:
            replies.append(reply)
        return replies

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
