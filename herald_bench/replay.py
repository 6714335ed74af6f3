"""``python -m herald_bench.replay``: a streamer's memory while it replays to clients that stall.

The scenario of issue 9, item 2: ``--events`` events of ``--size`` bytes are published on
each of ``--topics`` topics, then ``--connections`` clients resume from ``0-0`` on all of
them and do not read for ``--seconds`` seconds (4 KiB receive buffers, so the kernel
holds little for them). The streamer's RSS is sampled all along. Then every client reads
its stream to the end of its replay (all at once), and the run checks what each got:
every event of its topics in id order followed by ``resumed`` and ``ready``, or the
first of them followed by a ``reset``. It runs once with the default settings (the 57 MB
replays pass HERALD_REPLAY_MAX_BYTES: 8 MiB of events, then a reset each) and once with
the byte bound raised above them (complete replays), stores
``herald_bench/results/replay.json`` and rewrites BENCHMARKS.md.

Run it against a Redis of your own (it writes under a fresh prefix, and leaves the
events there for HERALD_HISTORY_TTL)::

    python -m herald_bench.replay --redis-url redis://127.0.0.1:6392/0
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from herald import tokens
from herald.event import id_key
from herald.stack import free_port
from herald_bench import report
from herald_bench.herald_target import HeraldTarget
from herald_bench.measure import resources
from herald_bench.run import rewrite_report

MB = 1024 * 1024


@dataclass
class Outcome:
    """What one client read: its events' ids, and how its replay ended."""

    ids: list[str] = field(default_factory=list)
    end: str = ""  # "ready" after a complete replay, "reset", or what went wrong
    resumed: bytes = b""


class Stalled:
    """A resuming SSE connection that reads nothing until ``read_replay``."""

    def __init__(self, port: int, token: str, topics: list[str]) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect(("127.0.0.1", port))
        target = f"/events?topics={','.join(topics)}&token={token}"
        self.sock.sendall(f"GET {target} HTTP/1.1\r\nHost: bench\r\n"
                          "Last-Event-ID: 0-0\r\n\r\n".encode())

    def read_replay(self, timeout: float = 120.0) -> Outcome:
        """Read until the replay ends (``ready`` or ``reset``), the peer closes or time out."""
        outcome, buffer = Outcome(), b""
        self.sock.settimeout(timeout)
        head_done = False
        while not outcome.end:
            try:
                chunk = self.sock.recv(1 << 20)
            except OSError as exc:
                outcome.end = f"error: {exc}"
                break
            if not chunk:
                outcome.end = "closed"
                break
            buffer += chunk
            if not head_done:
                if b"\r\n\r\n" not in buffer:
                    continue
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                if not head.startswith(b"HTTP/1.1 200"):
                    outcome.end = head.split(b"\r\n", 1)[0].decode()
                    break
                head_done = True
            *frames, buffer = buffer.split(b"\n\n")
            for frame in frames:
                _take(frame, outcome)
                if outcome.end:
                    break
        self.sock.close()
        return outcome


def _take(frame: bytes, outcome: Outcome) -> None:
    fields = dict(line.split(b": ", 1) for line in frame.split(b"\n")
                  if b": " in line and not line.startswith(b":"))
    kind = fields.get(b"event")
    if kind in (b"ready", b"reset"):
        outcome.end = kind.decode()
    elif kind == b"resumed":
        outcome.resumed = fields[b"data"]
    elif b"id" in fields:
        outcome.ids.append(fields[b"id"].decode())


class Sampler(threading.Thread):
    """Samples the streamer's RSS every 50 ms; ``peak`` is the largest seen."""

    def __init__(self, pids: list[int]) -> None:
        super().__init__(daemon=True)
        self.pids = pids
        self.peak = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, resources(self.pids)[0])
            time.sleep(0.05)


RAISED = {"HERALD_REPLAY_MAX_BYTES": "100000000"}  # above the scenario's 57 MB replays


def main(argv: list[str] | None = None) -> int:
    """Run the scenario once per configuration; store the rows; rewrite BENCHMARKS.md."""
    args = _parse(argv)
    runs = ([dict(item.split("=", 1) for item in args.setting)] if args.setting
            else [{}, RAISED])
    started = time.monotonic()
    rows = [_run_target(args, settings) for settings in runs]
    if args.save:
        command = "python -m herald_bench.replay " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        report.save("replay", {
            "scenario": "replay", "command": command.strip(),
            "finished": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "seconds": round(time.monotonic() - started, 1), "machine": report.machine(),
            "results": rows})
        rewrite_report()
    return 0 if all(row["exact"] and row["ordered"] for row in rows) else 1


def _run_target(args: argparse.Namespace, settings: dict[str, str]) -> dict[str, Any]:
    target = HeraldTarget(args.redis_url, settings=settings)
    port = free_port()
    target.start(port)
    try:
        row = _run(args, target, port)
    finally:
        target.stop()
    row["settings"] = " ".join(f"{k}={v}" for k, v in settings.items()) or "defaults"
    _print(row)
    return row


def _run(args: argparse.Namespace, target: HeraldTarget, port: int) -> dict[str, Any]:
    topics = [f"replay-{n}" for n in range(args.topics)]
    published = _publish(target, topics, args.events, args.size)
    pids = target.server_pids()
    idle = resources(pids)[0]
    sampler = Sampler(pids)
    sampler.start()
    clients = [Stalled(port, tokens.mint(target.secret, f"r{n}", tuple(topics), 3600)[0],
                       topics) for n in range(args.connections)]
    time.sleep(args.seconds)
    stalled_peak = sampler.peak
    began = time.monotonic()
    with ThreadPoolExecutor(len(clients)) as pool:  # at once: a stalled client times out
        outcomes = list(pool.map(Stalled.read_replay, clients))
    read_seconds = time.monotonic() - began
    sampler.stop.set()
    sampler.join()
    ends: dict[str, int] = {}
    for outcome in outcomes:
        ends[outcome.end] = ends.get(outcome.end, 0) + 1
    return {"target": "herald", "connections": args.connections, "topics": args.topics,
            "events": len(published), "event_bytes": args.size,
            "replay_mb": round(len(published) * args.size / MB, 1),
            "idle_mb": round(idle / MB, 1), "stalled_peak_mb": round(stalled_peak / MB, 1),
            "stalled_seconds": args.seconds, "peak_mb": round(sampler.peak / MB, 1),
            "read_seconds": round(read_seconds, 1), "ends": ends,
            "exact": all(o.ids == (published if o.end == "ready" else published[:len(o.ids)])
                         for o in outcomes),
            "ordered": all(o.ids == sorted(o.ids, key=id_key) for o in outcomes)}


def _print(row: dict[str, Any]) -> None:
    print(f"{row['settings']}: {row['connections']} clients resuming {row['replay_mb']:.0f} "
          f"MB each ({row['events']} events); streamer RSS idle {row['idle_mb']:.0f} MB, "
          f"peak while stalled {row['stalled_peak_mb']:.0f} MB, peak {row['peak_mb']:.0f} "
          f"MB; read in {row['read_seconds']:.1f} s; ended {row['ends']}; exact "
          f"{row['exact']}, in order {row['ordered']}", flush=True)


def _publish(target: HeraldTarget, topics: list[str], events: int, size: int) -> list[str]:
    """Publish ``events`` per topic, interleaved; return every id in publication order."""
    publisher = target.publisher()
    ids = []
    pad = "x" * (size - 100)
    try:
        for n in range(events):
            for topic in topics:
                ids.append(publisher.publish(topic, {"n": n, "pad": pad}))
    finally:
        publisher.close()
    return ids


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m herald_bench.replay", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL",
                                                              "redis://127.0.0.1:6379/0"))
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--topics", type=int, default=4)
    parser.add_argument("--events", type=int, default=250, help="events per topic")
    parser.add_argument("--size", type=int, default=60_000, help="bytes per event")
    parser.add_argument("--seconds", type=float, default=8.0, help="how long clients stall")
    parser.add_argument("--setting", action="append", default=[],
                        help="NAME=VALUE for the streamer's environment (repeatable); "
                             "without it, one run with the defaults and one with "
                             "HERALD_REPLAY_MAX_BYTES raised above the replays")
    parser.add_argument("--no-save", dest="save", action="store_false",
                        help="print only; do not store the result or rewrite BENCHMARKS.md")
    return parser.parse_args(argv)


if __name__ == "__main__":
    raise SystemExit(main())
