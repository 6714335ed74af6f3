"""``herald status``: one screen for an operator, from the same metrics and Redis the
services use, and a verdict a script can act on.

What it reads:
- streamers: each process' internal ``/metrics`` (``herald.endpoints.streamers``, or
  the URLs given): open connections, topics, event age p99 since the process started;
- workers online and the queues each consumes: ``celery -A tasks.app inspect
  active_queues`` (the deployment's own Celery app, run as a command: this package
  imports nothing of ``tasks``), or Flower's API (``/api/workers``) when a Flower URL is
  given;
- queue lengths: ``LLEN`` of each of ``herald.channels.queues`` on a Redis broker (on
  RabbitMQ, from Flower's ``/api/queues/length`` when Flower is given, else unknown);
- Redis: memory (``INFO memory``) and the replayable history (streams and events);
- dead letters per outbound channel.

The rules (``judge``). Unhealthy, exit status 1: Redis does not answer; no worker is
online; a queue that no online worker consumes (its tasks wait forever); a streamer
``/metrics`` that does not answer (the process is down or wedged). Warnings, exit
status 0 (1 with ``strict``): dead letters (they wait for a person, ``POST
/api/dead-letters/<id>/retry``; failing every check until then would make the check
useless), Redis above 90% of its ``maxmemory``, streamers not checked (their metrics
port is 0 and no URL was given).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import redis

from herald import endpoints
from herald.channels import OUTBOUND, queues
from herald.config import Config, redact_url
from herald.connection import client
from herald.keys import Keys
from herald.scrape import ScrapeError, scrape

CONNECTIONS = "herald_streamer_connections"
TOPICS = "herald_streamer_topics"
EVENT_AGE = "herald_streamer_event_age_seconds"
INSPECT_TIMEOUT = 2.0  # seconds the workers have to answer
NO_NODES = 69  # `celery inspect`'s exit status when no worker answered (EX_UNAVAILABLE)
MEMORY_WARNING = 0.9
SCAN_PAGE = 1000

Progress = Callable[[str], None]


@dataclass
class Streamer:
    service: str
    url: str
    error: str | None = None
    clients: int | None = None
    topics: int | None = None
    event_age_p99_seconds: float | None = None


@dataclass
class Queue:
    name: str
    length: int | None  # None: unknown (a RabbitMQ broker without Flower)
    consumers: list[str] = field(default_factory=list)


@dataclass
class Report:
    """Everything ``herald status`` found; ``problems`` make it unhealthy."""

    prefix: str
    redis_url: str
    streamers: list[Streamer] = field(default_factory=list)
    workers_source: str = ""
    workers: dict[str, list[str]] = field(default_factory=dict)  # node -> its queues
    workers_error: str | None = None
    queues: list[Queue] = field(default_factory=list)
    redis: dict[str, Any] = field(default_factory=dict)
    dead_letters: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems

    def as_json(self) -> dict[str, Any]:
        return {"healthy": self.healthy, **asdict(self)}


@dataclass(frozen=True)
class Sources:
    """Where to look, beyond the configuration: streamer ``/metrics`` URLs (empty: by
    the rule of ``herald.endpoints``) and a Flower URL (None: ask Celery)."""

    streamer_urls: tuple[str, ...] = ()
    flower_url: str | None = None
    timeout: float = INSPECT_TIMEOUT


def collect(cfg: Config, sources: Sources, progress: Progress = lambda _: None) -> Report:
    """Read every part (each failure is recorded, never raised) and judge the whole."""
    keys = Keys(cfg.prefix)
    report = Report(cfg.prefix, redact_url(cfg.redis_url))
    progress("reading the streamers' /metrics")
    report.streamers = [read_streamer(service, url, sources.timeout)
                        for service, url in _streamer_urls(cfg, sources)]
    progress(f"asking the workers ({'Flower' if sources.flower_url else 'celery inspect'}, "
             f"up to {sources.timeout:g} s)")
    _read_workers(report, cfg, sources)
    _read_queues(report, cfg, sources, keys)
    try:
        report.redis = redis_state(client(cfg.redis_url), keys, progress)
        report.dead_letters = dead_letters(client(cfg.redis_url), keys)
    except (redis.RedisError, OSError) as exc:
        report.redis = {"error": _one_line(exc)}
    judge(report)
    return report


def _streamer_urls(cfg: Config, sources: Sources) -> list[tuple[str, str]]:
    if sources.streamer_urls:
        count = len(sources.streamer_urls)
        return [(endpoints.numbered("streamer", i, count), url)
                for i, url in enumerate(sources.streamer_urls)]
    return [(e.service, e.url) for e in endpoints.streamers(cfg)]


def read_streamer(service: str, url: str, timeout: float) -> Streamer:
    """One streamer process' figures from its ``/metrics`` (or why they are missing)."""
    try:
        samples = scrape(url, timeout)
    except ScrapeError as exc:
        return Streamer(service, url, error=str(exc))
    clients, topics = samples.total(CONNECTIONS), samples.total(TOPICS)
    return Streamer(service, url, clients=None if clients is None else int(clients),
                    topics=None if topics is None else int(topics),
                    event_age_p99_seconds=samples.quantile(EVENT_AGE, 0.99))


def _read_workers(report: Report, cfg: Config, sources: Sources) -> None:
    try:
        if sources.flower_url:
            report.workers_source = "flower"
            report.workers = flower_workers(sources.flower_url, cfg.flower_auth,
                                            sources.timeout)
        else:
            report.workers_source = "celery inspect"
            report.workers = celery_workers(sources.timeout)
    except (OSError, ValueError, httpx.HTTPError, subprocess.SubprocessError) as exc:
        report.workers_error = _one_line(exc)


def celery_workers(timeout: float) -> dict[str, list[str]]:
    """Each online worker node and the queues it consumes, from the deployment's Celery
    app (``celery -A tasks.app inspect active_queues``, same environment as ours)."""
    command = [sys.executable, "-m", "celery", "-A", "tasks.app", "inspect", "active_queues",
               "--json", "--timeout", f"{timeout:g}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout + 60)
    if done.returncode == NO_NODES:
        return {}
    if done.returncode != 0:
        raise ValueError(f"celery inspect failed ({done.returncode}): "
                         f"{(done.stderr or done.stdout).strip()[-300:]}")
    replies = json.loads(done.stdout.strip().splitlines()[-1])
    return {node: sorted(q["name"] for q in found) for node, found in replies.items()}


def flower_workers(url: str, auth: str, timeout: float) -> dict[str, list[str]]:
    """Each worker Flower sees alive and the queues it consumes (``/api/workers``)."""
    user, _, password = auth.partition(":")
    with httpx.Client(base_url=url.rstrip("/"), auth=(user, password) if auth else None,
                      timeout=timeout + 5) as flower:
        alive = flower.get("/api/workers", params={"status": "true"})
        info = flower.get("/api/workers", params={"refresh": "1"})
        alive.raise_for_status()
        info.raise_for_status()
    online = {node for node, up in alive.json().items() if up}
    return {node: sorted(q["name"] for q in details.get("active_queues") or [])
            for node, details in info.json().items() if node in online}


def _read_queues(report: Report, cfg: Config, sources: Sources, keys: Keys) -> None:
    lengths = _queue_lengths(cfg, sources, keys)
    for name in queues(keys):
        consumers = sorted(n for n, consumed in report.workers.items() if name in consumed)
        report.queues.append(Queue(name, lengths.get(name), consumers))


def _queue_lengths(cfg: Config, sources: Sources, keys: Keys) -> dict[str, int]:
    """Tasks waiting in each queue: LLEN on a Redis broker, else Flower's figures."""
    try:
        if urlsplit(cfg.broker_url).scheme.startswith("redis"):
            broker = client(cfg.broker_url)
            return {name: int(broker.llen(keys.queue_key(name))) for name in queues(keys)}
        if sources.flower_url:
            return flower_queue_lengths(sources.flower_url, cfg.flower_auth, sources.timeout)
    except (redis.RedisError, OSError, httpx.HTTPError):
        pass
    return {}


def flower_queue_lengths(url: str, auth: str, timeout: float) -> dict[str, int]:
    user, _, password = auth.partition(":")
    answer = httpx.get(f"{url.rstrip('/')}/api/queues/length", timeout=timeout + 5,
                       auth=(user, password) if auth else None)
    answer.raise_for_status()
    return {q["name"]: int(q["messages"]) for q in answer.json()["active_queues"]}


def redis_state(rdb: redis.Redis, keys: Keys, progress: Progress) -> dict[str, Any]:
    """Memory in use and its limit, and the size of the replayable history (a SCAN of
    every topic's stream: progress is reported per page)."""
    memory = rdb.info("memory")
    streams = events = 0
    progress("reading the history (SCAN)")
    for stream in _scan(rdb, keys.stream("*"), progress):
        streams += 1
        events += int(rdb.xlen(stream))
    return {"used_memory": int(memory["used_memory"]),
            "used_memory_human": str(memory["used_memory_human"]),
            "maxmemory": int(memory.get("maxmemory", 0)),
            "history_streams": streams, "history_events": events}


def _scan(rdb: redis.Redis, pattern: str, progress: Progress) -> list[str]:
    found: list[str] = []
    cursor = None
    while cursor != 0:
        cursor, page = rdb.scan(cursor or 0, match=pattern, count=SCAN_PAGE)
        found += page
        if len(found) >= SCAN_PAGE:
            progress(f"reading the history: {len(found)} streams so far")
    return found


def dead_letters(rdb: redis.Redis, keys: Keys) -> dict[str, int]:
    return {channel: int(rdb.zcard(keys.dead_letters(channel))) for channel in OUTBOUND}


def judge(report: Report) -> None:
    """Fill ``problems`` and ``warnings`` by the rules of the module docstring."""
    if "error" in report.redis:
        report.problems.append(f"Redis at {report.redis_url} unavailable: "
                               f"{report.redis['error']}")
    _judge_workers(report)
    for streamer in report.streamers:
        if streamer.error:
            report.problems.append(f"{streamer.service} /metrics at {streamer.url}: "
                                   f"{streamer.error}")
    if not report.streamers:
        report.warnings.append("streamers not checked: HERALD_STREAMER_METRICS_PORT is 0 "
                               "and no --streamer-metrics URL was given")
    for channel, count in report.dead_letters.items():
        if count:
            report.warnings.append(f"{count} dead letter(s) on {channel}: "
                                   f"GET /api/dead-letters?channel={channel}")
    limit, used = report.redis.get("maxmemory", 0), report.redis.get("used_memory", 0)
    if limit and used > MEMORY_WARNING * limit:
        report.warnings.append(f"Redis uses {used / limit:.0%} of its maxmemory")


def _judge_workers(report: Report) -> None:
    if report.workers_error:
        report.problems.append(f"workers: could not ask them ({report.workers_source}): "
                               f"{report.workers_error}")
    elif not report.workers:
        report.problems.append(f"no worker online ({report.workers_source})")
    else:
        for queue in report.queues:
            if not queue.consumers:
                waiting = "" if queue.length is None else f"; {queue.length} task(s) waiting"
                report.problems.append(f"queue {queue.name}: no online worker consumes "
                                       f"it{waiting}")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def render(report: Report) -> str:
    """The operator's screen."""
    lines = [f"Herald status (prefix {report.prefix}, Redis {report.redis_url})", "",
             *_render_streamers(report), "", *_render_workers(report), "",
             *_render_redis(report), ""]
    for title, items in (("UNHEALTHY", report.problems), ("Warnings", report.warnings)):
        if items:
            lines += [f"{title}:", *(f"  - {item}" for item in items)]
    if report.healthy:
        lines.append("Healthy.")
    return "\n".join(lines)


def _render_streamers(report: Report) -> list[str]:
    if not report.streamers:
        return ["Streamers: not checked"]
    lines = [f"Streamers ({len(report.streamers)} process(es))      clients  topics  "
             "event age p99"]
    for s in report.streamers:
        if s.error:
            lines.append(f"  {s.service:<12} {s.url}: {s.error}")
            continue
        lines.append(f"  {s.service:<12} {_num(s.clients):>18}  {_num(s.topics):>6}  "
                     f"{_seconds(s.event_age_p99_seconds):>13}")
    up = [s for s in report.streamers if not s.error]
    if len(up) > 1:
        clients = sum(s.clients or 0 for s in up)
        lines.append(f"  {'all':<12} {clients:>18}")
    return lines


def _render_workers(report: Report) -> list[str]:
    if report.workers_error:
        lines = [f"Workers ({report.workers_source}): unknown, {report.workers_error}"]
    else:
        lines = [f"Workers ({report.workers_source}): {len(report.workers)} online"]
        lines += [f"  {node:<30} {', '.join(consumed)}"
                  for node, consumed in sorted(report.workers.items())]
    lines.append(f"{'Queues':<22} {'waiting':>8}  consumers")
    lines += [f"  {q.name:<20} {_num(q.length):>8}  {len(q.consumers) or 'none'}"
              for q in report.queues]
    return lines


def _render_redis(report: Report) -> list[str]:
    info = report.redis
    if "error" in info:
        return [f"Redis: unavailable ({info['error']})"]
    limit = f"of maxmemory {info['maxmemory']} bytes" if info["maxmemory"] else "(no maxmemory)"
    dead = ", ".join(f"{channel} {count}" for channel, count in report.dead_letters.items())
    return [f"Redis: {info['used_memory_human']} used {limit}",
            f"History: {info['history_events']} events in {info['history_streams']} topic "
            "stream(s)",
            f"Dead letters: {dead}"]


def _num(value: int | None) -> str:
    return "?" if value is None else str(value)


def _seconds(value: float | None) -> str:
    return "no events yet" if value is None else f"{value:.3f} s"
