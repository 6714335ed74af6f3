"""Running the streamer: listen, serve, and stop cleanly on SIGTERM or SIGINT.

On a stop signal the listening socket closes first (no new clients), every client is
sent a ``retry:`` hint and disconnected, the Redis subscription is closed, and the
process exits with status 0.
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys

import gevent
import gevent.event
from gevent.server import StreamServer

from herald import config as herald_config
from herald import logs
from herald.config import Config
from herald.errors import ConfigError
from herald.keys import Keys
from streamer.app import Streamer
from streamer.broker import Broker
from streamer.hub import Hub

log = logging.getLogger(__name__)

BACKLOG = 4096


def listener(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """A listening socket; with ``reuse_port`` several processes can share the port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(BACKLOG)
    sock.setblocking(False)
    return sock


class StreamerService:
    """Hub, broker and HTTP server of one streamer process."""

    def __init__(self, config: Config, sock: socket.socket) -> None:
        self.config = config
        keys = Keys(config.prefix)
        self.broker = Broker(config.redis_url, keys, self._deliver)
        self.hub = Hub(self.broker.want, self.broker.unwant)
        self.app = Streamer(config, self.hub, self.broker)
        self.server = StreamServer(sock, self.app.handle)
        self.stopped = gevent.event.Event()

    def _deliver(self, topic: str, envelope: bytes) -> None:
        self.hub.dispatch(topic, envelope)

    def start(self) -> None:
        self.broker.start()
        self.server.start()
        self.hub.run_heartbeats(self.config.heartbeat)
        host, port = self.server.address[:2]
        log.info("Herald streamer listening on http://%s:%d (pid %d)", host, port,
                 _pid())

    def stop(self, *_: object) -> None:
        if self.stopped.is_set():
            return
        log.info("stopping: closing %d client connections", len(self.hub.clients))
        self.server.close()
        retry = b"retry: %d\n\n" % self.config.retry_ms
        for client in tuple(self.hub.clients):
            client.send(retry)
        self.hub.close_all("server stopping")
        self.broker.stop()
        self.stopped.set()


def _pid() -> int:
    import os

    return os.getpid()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="herald streamer",
                                     description="Serve Server-Sent Events.")
    parser.add_argument("--host", help="address to bind (HERALD_STREAMER_HOST)")
    parser.add_argument("--port", type=int, help="port to bind (HERALD_STREAMER_PORT)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Serve until SIGTERM or SIGINT, then exit 0."""
    args = parse_args(argv)
    try:
        config = herald_config.get()
    except ConfigError as exc:
        sys.exit(f"herald streamer: configuration error: {exc}")
    logs.setup(config.log_level)
    host = args.host or config.streamer_host
    port = args.port if args.port is not None else config.streamer_port
    service = StreamerService(config, listener(host, port))
    gevent.signal_handler(signal.SIGTERM, service.stop)
    gevent.signal_handler(signal.SIGINT, service.stop)
    service.start()
    service.stopped.wait()
    log.info("stopped")
