"""A reconnect storm, measured alone: the connect phase of ``herald bench fanout``, repeated.

``python -m herald_bench.storm --redis-url URL [--runs 5] [--tokens distinct|shared|both]``
starts a fresh streamer per run (as after a restart), lets the C load generator open
10,000 SSE connections on one topic (at most 1,000 handshakes in flight, as the fan-out
benchmark does) and reports when the last one had its response head (the fan-out
table's "all connected" column, without the publishing part) and the CPU seconds the
streamer spent meanwhile (less swayed than wall time by other work on the machine).
It prints each run, then the median and the min-max per token mode, with the machine's
load average at the start of each run, so a figure taken on a busy machine says so. It
stores nothing: the figures of record come from ``herald bench fanout``.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

import psutil

from herald.stack import free_port
from herald_bench import loadgen
from herald_bench.herald_target import HeraldTarget
from herald_bench.measure import resources

CONNS = 10_000


def storm(redis_url: str, tokens: str, conns: int = CONNS) -> dict[str, Any]:
    """One run on a fresh streamer: seconds until every client had its response head."""
    target, port = HeraldTarget(redis_url), free_port()
    load = psutil.getloadavg()[0]
    target.start(port)
    try:
        paths = [target.subscribe_path("bench", shared=tokens == "shared") for _ in range(conns)]
        gen = loadgen.LoadGen(port, paths, conns, 0, fanout=True, timeout=120,
                              connect_timeout=60)
        _, cpu_before = resources(target.server_pids())
        try:
            gen.start()
            ready = gen.wait_ready(90)
            _, cpu_after = resources(target.server_pids())
        finally:
            gen.close()
    finally:
        target.stop()
    return {"tokens": tokens, "seconds": ready["seconds"], "ok": ready["ok"],
            "failed": ready["failed"], "server_cpu_s": round(cpu_after - cpu_before, 3),
            "load_1m": round(load, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tokens", choices=("distinct", "shared", "both"), default="both")
    parser.add_argument("--conns", type=int, default=CONNS)
    args = parser.parse_args()
    modes = ("distinct", "shared") if args.tokens == "both" else (args.tokens,)
    loadgen.build()
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
    for n in range(args.runs):
        for mode in modes:
            run = storm(args.redis_url, mode, args.conns)
            runs[mode].append(run)
            print(f"run {n + 1} {mode}: {run['seconds']:.3f} s ({run['ok']} ok, "
                  f"{run['failed']} failed), streamer CPU {run['server_cpu_s']:.2f} s, "
                  f"load {run['load_1m']}", flush=True)
    for mode, done in runs.items():
        seconds = [r["seconds"] for r in done]
        cpu = [r["server_cpu_s"] for r in done]
        loads = [r["load_1m"] for r in done]
        print(f"{mode}: all connected median {statistics.median(seconds):.2f} s, min-max "
              f"{min(seconds):.2f}-{max(seconds):.2f} s over {len(done)} runs; streamer CPU "
              f"median {statistics.median(cpu):.2f} s; load {min(loads)}-{max(loads)}",
              flush=True)


if __name__ == "__main__":
    main()
