"""Running the streamer: listen, serve, and stop cleanly on SIGTERM or SIGINT.

On a stop signal the listening socket closes first (no new clients); then the clients
are ended a few at a time over ``HERALD_DRAIN_SECONDS``, each with its transport's
goodbye for a stopping server (an SSE ``retry:`` hint, a WebSocket close frame 1012),
so their reconnections (with ``Last-Event-ID``, to a sibling streamer) are spread out;
events keep flowing to those not yet disconnected. Then the Redis subscription is
closed and the process exits with status 0. A revoked token's streams are closed at
once (``Ending.REVOKED``: a WebSocket with a close frame 1008), or within
``HERALD_REVOCATION_POLL`` seconds when the notice was lost.

Each process serves its own Prometheus metrics (``streamer.metrics``) on
``HERALD_METRICS_HOST``:``HERALD_STREAMER_METRICS_PORT`` (with ``--processes N`` the
i-th child, from 0, on that port + i; 0 turns them off), never on the streamer's port.
The metrics endpoint keeps answering while the clients drain and closes with the Redis
subscription; a port that cannot be bound stops the process at start-up with one line.

``main`` is the streamer's entry point and the one place it reads its configuration
(``herald.config.load``; a bad setting exits with one line naming it); every component
gets its settings from the ``Config`` passed to ``StreamerService``.
"""

from __future__ import annotations

import _socket
import argparse
import gc
import logging
import os
import random
import signal
import sys

import gevent
import gevent.event
import redis
from gevent.pywsgi import WSGIServer

from herald import logs, services
from herald.access import DenySet
from herald.config import Config, load
from herald.errors import ConfigError
from herald.event import id_key
from herald.keys import Keys
from herald.revocation import NOTICE, Revocations
from streamer.app import Streamer, request_token
from streamer.client import Client
from streamer.commands import POOL_WAIT, Commands
from streamer.history import History
from streamer.hub import Hub
from streamer.listener import Listener, listening_socket
from streamer.metrics import StreamerMetrics
from streamer.protocol import Request
from streamer.pubsub import PubSubError
from streamer.redis_broker import RedisBroker
from streamer.transport import Ending
from streamer.workers import Supervisor

log = logging.getLogger(__name__)

BACKLOG = 4096
DRAIN_SLICES = 20  # clients are closed in this many steps over the drain period
REDIS_CONNECTIONS = 16  # per pool, for history reads and client commands
STOPPING = "server stopping; reconnect"


class StreamerService:
    """Hub, broker and HTTP server of one streamer process."""

    def __init__(self, config: Config, sock: _socket.socket, metrics_port: int = 0) -> None:
        self.config = config
        self.metrics_port = metrics_port
        self.metrics = StreamerMetrics(enabled=metrics_port != 0)
        self.metrics_server: WSGIServer | None = None
        keys = Keys(config.prefix)
        # Bounded: a crowd of clients resuming at once waits for a connection rather
        # than opening one each (Redis' maxclients, this process' descriptors).
        bounded = redis.Redis(connection_pool=redis.BlockingConnectionPool.from_url(
            config.redis_url, max_connections=REDIS_CONNECTIONS, timeout=10))
        self.history = History(bounded, keys, config.history_ttl, config.replay_max,
                               config.replay_max_bytes)
        self.broker = RedisBroker(config.redis_url, keys, self._dispatch,
                                  keepalive=config.pubsub_keepalive,
                                  silence=config.pubsub_silence,
                                  on_resync=self._fill_gaps, on_subscribed=self._subscribed,
                                  on_control=self._control,
                                  on_reconnected=self.metrics.reconnected)
        self.hub = Hub(self.broker.want, self.broker.unwant, self.metrics)
        self.metrics.follow(self.hub)
        self.revocations = Revocations(bounded, keys)
        self.revoked = DenySet()  # asked by every token check (``herald.access.Gate``)
        self.app = Streamer(config, self.hub, self.broker, self.history, self.revoked)
        decoded = redis.Redis(connection_pool=redis.BlockingConnectionPool.from_url(
            config.redis_url, max_connections=REDIS_CONNECTIONS, timeout=POOL_WAIT,
            decode_responses=True))
        self.app.commands = Commands(config, self.hub, self.broker,
                                     services.build(config, decoded), self.app.gate)
        self.listener = Listener(sock, self.app.handle, prepare=self._verify_tokens,
                                 head_timeout=config.streamer_head_timeout,
                                 on_refused=self.metrics.refused)
        self.stopping = False
        self.stopped = gevent.event.Event()

    def _verify_tokens(self, requests: list[Request]) -> None:
        """Verify the tokens of requests that arrived together, before handling any."""
        self.app.verified.prefetch(
            found.token for found in map(request_token, requests) if found)

    def _dispatch(self, batch: list[tuple[str, bytes]]) -> None:
        self.hub.dispatch(batch)

    def _fill_gaps(self) -> None:
        """After a lost subscription: deliver what each topic missed, from history."""
        positions = self.hub.gap_positions()
        if positions:
            replay = self.history.since(positions)
            for reason in replay.resets.values():
                self.metrics.reset(reason)
            self.hub.fill(replay)

    def _control(self, message: bytes) -> None:
        if message.startswith(NOTICE):
            self._revoke({message[len(NOTICE):].decode(errors="replace")})

    def _revoke(self, token_ids: set[str]) -> None:
        fresh = token_ids - self.revoked
        self.revoked |= token_ids
        if fresh:
            closed = self.hub.close_tokens(fresh, "token revoked")
            log.info("revoked %d token(s); closed %d connection(s)", len(fresh), closed)

    def _watch_revocations(self) -> None:
        """Reread the deny list now and then: a missed notice only delays a revocation."""
        while True:
            try:
                current = self.revocations.current()
            except redis.RedisError:
                log.warning("cannot read revoked tokens; retrying in %gs",
                            self.config.revocation_poll)
            else:
                self._revoke(current)
                self.revoked &= current  # forget entries that expired
            gevent.sleep(self.config.revocation_poll)

    def _subscribed(self, topics: list[str]) -> None:
        gevent.spawn(self._record_starts, topics)

    def _record_starts(self, topics: list[str]) -> None:
        """Note where subscriptions began, once the events before it are dispatched.

        One Redis read per batch of confirmed subscriptions, not per client.
        """
        try:
            position = id_key(self.history.position())
            self.broker.barrier().get(timeout=5)
        except (redis.RedisError, PubSubError, gevent.Timeout):
            log.warning("could not record where %d subscriptions began", len(topics))
            return  # the gap fill then starts at the first event this process sees
        self.hub.record_starts(topics, position)

    def start(self) -> None:
        """Serve metrics (``OSError`` if their port cannot be bound), then streams."""
        if self.metrics_port:
            self.metrics_server = self.metrics.serve(self.config.metrics_host,
                                                     self.metrics_port)
        self.broker.start()
        gevent.spawn(self._watch_revocations)
        self.listener.start()
        self.hub.run_heartbeats(self.config.heartbeat)
        host, port = self.listener.address
        log.info("Herald streamer listening on http://%s:%d (pid %d)", host, port,
                 _pid())

    def stop(self, *_: object) -> None:
        if self.stopping:
            return
        self.stopping = True
        self.listener.close()
        clients = list(self.hub.clients)
        random.shuffle(clients)
        log.info("stopping: draining %d clients over %.1fs", len(clients),
                 self.config.drain_seconds)
        gevent.spawn(self._drain, clients)

    def _drain(self, clients: list[Client]) -> None:
        try:
            slices = max(1, min(len(clients), DRAIN_SLICES))
            size = max(1, -(-len(clients) // slices))
            for start in range(0, len(clients), size):
                for client in clients[start:start + size]:
                    client.end(STOPPING, Ending.STOPPING)
                if start + size < len(clients):
                    gevent.sleep(self.config.drain_seconds / slices)
            self.hub.end_all(STOPPING, Ending.STOPPING)
        finally:
            self.broker.stop()
            if self.metrics_server is not None:
                self.metrics_server.close()
            self.stopped.set()


def _stop_when_orphaned(service: StreamerService, parent: int) -> None:
    """A child of ``--processes`` stops (draining) if its supervisor died without it."""
    while os.getppid() == parent:
        gevent.sleep(1.0)
    log.warning("supervisor %d is gone; stopping", parent)
    service.stop()


def _supervise(processes: int, host: str, port: int, metrics_port: int) -> int:
    supervisor = Supervisor(processes, ["--host", host, "--port", str(port)], metrics_port)
    gevent.signal_handler(signal.SIGTERM, supervisor.stop)
    gevent.signal_handler(signal.SIGINT, supervisor.stop)
    log.info("Herald streamer on http://%s:%d with %d processes", host, port, processes)
    return supervisor.run()


def _freeze_startup_objects() -> None:
    """Keep what start-up made (modules, classes, settings) out of later collections.

    They live as long as the process; walking them was most of the garbage
    collector's cost while a crowd of clients reconnects (gc.freeze, Python 3.7+).
    """
    gc.collect()
    gc.freeze()


def _pid() -> int:
    return os.getpid()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="herald streamer",
                                     description="Serve Server-Sent Events.")
    parser.add_argument("--host", help="address to bind (HERALD_STREAMER_HOST)")
    parser.add_argument("--port", type=int, help="port to bind (HERALD_STREAMER_PORT)")
    parser.add_argument("--processes", type=int,
                        help="processes sharing the port (HERALD_STREAMER_PROCESSES)")
    parser.add_argument("--metrics-port", type=int,
                        help="port of /metrics, 0 for none (HERALD_STREAMER_METRICS_PORT)")
    parser.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Serve until SIGTERM or SIGINT, then exit 0."""
    args = parse_args(argv)
    try:
        config = load()
    except ConfigError as exc:
        sys.exit(f"herald streamer: configuration error: {exc}")
    logs.setup(config.log_level)
    host = args.host or config.streamer_host
    port = args.port if args.port is not None else config.streamer_port
    processes = args.processes or config.streamer_processes
    metrics_port = (args.metrics_port if args.metrics_port is not None
                    else config.streamer_metrics_port)
    if metrics_port and (metrics_port <= port < metrics_port + processes
                         or metrics_port + processes - 1 > 65535):
        sys.exit(f"herald streamer: the metrics ports {metrics_port} + 0..{processes - 1} "
                 f"(one per process) must not include the streamer's port {port} and must "
                 "stay below 65536")
    if processes > 1 and not args.reuse_port:
        sys.exit(_supervise(processes, host, port, metrics_port))
    service = StreamerService(config, listening_socket(host, port, reuse_port=args.reuse_port,
                                                       backlog=BACKLOG), metrics_port)
    gevent.signal_handler(signal.SIGTERM, service.stop)
    gevent.signal_handler(signal.SIGINT, service.stop)
    if args.reuse_port:
        gevent.spawn(_stop_when_orphaned, service, os.getppid())
    try:
        service.start()
    except OSError as exc:
        sys.exit(f"herald streamer: cannot serve metrics on {config.metrics_host}:"
                 f"{metrics_port} ({exc.strerror or exc}); set HERALD_STREAMER_METRICS_PORT "
                 "(0 turns them off)")
    _freeze_startup_objects()
    service.stopped.wait()
    log.info("stopped")
