"""Where each internal ``/metrics`` endpoint of a topology is: one rule for ``herald run``
(which gives each process its port), ``herald status`` (which reads the streamers') and
the tests.

The rule, from the settings (``herald.config``): every endpoint binds
``HERALD_METRICS_HOST``, never a public port. The API serves on
``HERALD_API_METRICS_PORT`` (its gunicorn workers add up into one endpoint); in-app
worker i (0-based) on ``HERALD_WORKER_METRICS_PORT + i`` and the outbound worker on the
next port; streamer process i of ``--processes N`` on ``HERALD_STREAMER_METRICS_PORT + i``.
A base port of 0 turns that kind of endpoint off: it is left out of the list.
"""

from __future__ import annotations

from dataclasses import dataclass

from herald.config import Config

ANY_ADDRESS = ("0.0.0.0", "::", "")


@dataclass(frozen=True)
class Endpoint:
    """One ``/metrics``: the service it belongs to (as ``herald run`` names its
    processes: ``api``, ``worker``/``worker-2``, ``outbound``, ``streamer``/``streamer-2``),
    its port and the URL it is read at."""

    service: str
    port: int
    url: str


def port(base: int, index: int) -> int:
    """Port of process ``index`` (0-based) of a kind whose base port is ``base``; 0 (off)
    stays 0."""
    return 0 if base == 0 else base + index


def numbered(kind: str, index: int, count: int) -> str:
    """``kind`` for a single process, ``kind-<index + 1>`` for one of several."""
    return kind if count == 1 else f"{kind}-{index + 1}"


def reachable_host(cfg: Config) -> str:
    """Where a local client reaches ``HERALD_METRICS_HOST`` (a wildcard bind: loopback)."""
    return "127.0.0.1" if cfg.metrics_host in ANY_ADDRESS else cfg.metrics_host


def url(cfg: Config, at: int) -> str:
    host = reachable_host(cfg)
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{at}/metrics"


def streamers(cfg: Config, processes: int | None = None) -> list[Endpoint]:
    """The streamer processes' endpoints (``processes``: default
    ``HERALD_STREAMER_PROCESSES``)."""
    count = processes or cfg.streamer_processes
    return _kind(cfg, "streamer", cfg.streamer_metrics_port, count)


def workers(cfg: Config, inapp: int = 1) -> list[Endpoint]:
    """The in-app workers' endpoints, then the outbound worker's (the next port)."""
    found = _kind(cfg, "worker", cfg.worker_metrics_port, inapp)
    at = port(cfg.worker_metrics_port, inapp)
    return found + ([Endpoint("outbound", at, url(cfg, at))] if at else [])


def api(cfg: Config) -> list[Endpoint]:
    at = cfg.api_metrics_port
    return [Endpoint("api", at, url(cfg, at))] if at else []


def topology(cfg: Config, inapp: int = 1, processes: int | None = None) -> list[Endpoint]:
    """Every endpoint of ``herald run --workers inapp --streamers processes``."""
    return [*api(cfg), *workers(cfg, inapp), *streamers(cfg, processes)]


def _kind(cfg: Config, kind: str, base: int, count: int) -> list[Endpoint]:
    if base == 0:
        return []
    return [Endpoint(numbered(kind, i, count), port(base, i), url(cfg, port(base, i)))
            for i in range(count)]
