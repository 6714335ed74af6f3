"""One WebSocket connection floods the streamer with commands (issue 9, item 1).

Starts a streamer as ``herald bench`` does, then opens two WebSocket connections: one
(user ``mallory``) sends ``--frames`` ``{"op": "read", "all": true}`` commands as fast as
it can while reading its replies; the other (user ``bob``) sends a ``ping`` every 50 ms.
Prints the streamer's RSS before and at its peak, the size of its log, mallory's replies
by outcome and bob's slowest pong.

    python -m herald_bench.ws_flood [--frames 60000] [--redis-url redis://127.0.0.1:6379/0]
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections import Counter
from typing import Any

import psutil
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from herald import tokens
from herald.stack import free_port
from herald_bench.herald_target import HeraldTarget

MB = 1024 * 1024


def replies(ws: ClientConnection, frames: int, outcomes: Counter[str]) -> None:
    """Count the replies to ``frames`` commands by outcome (in a thread of its own)."""
    try:
        while sum(outcomes.values()) < frames:
            reply = json.loads(ws.recv(timeout=60))
            if "ref" in reply:
                outcomes["ok" if reply["ok"] else reply["error"]["code"]] += 1
    except (ConnectionClosed, TimeoutError) as exc:
        outcomes[f"stopped: {type(exc).__name__}"] += 1


def pings(ws: ClientConnection, stop: threading.Event, slowest: list[float]) -> None:
    """Ping every 50 ms until ``stop``, keeping the slowest round trip (seconds)."""
    while not stop.is_set():
        began = time.perf_counter()
        ws.send(json.dumps({"op": "ping", "ref": "p"}))
        while json.loads(ws.recv(timeout=60)).get("reply") != "pong":
            pass
        slowest[0] = max(slowest[0], time.perf_counter() - began)
        time.sleep(0.05)


def sample_rss(pid: int, stop: threading.Event, peak: list[int]) -> None:
    process = psutil.Process(pid)
    while not stop.is_set():
        peak[0] = max(peak[0], process.memory_info().rss)
        time.sleep(0.02)


def run(target: HeraldTarget, frames: int) -> dict[str, Any]:
    base = f"ws://127.0.0.1:{target.port}/ws?token="
    pid = target.server_pids()[0]
    before = psutil.Process(pid).memory_info().rss
    stop, outcomes, slowest, peak = threading.Event(), Counter[str](), [0.0], [0]
    mallory_token = tokens.mint(target.secret, "mallory", (), 3600)[0]
    bob_token = tokens.mint(target.secret, "bob", (), 3600)[0]
    with connect(base + mallory_token, max_queue=None) as mallory, \
            connect(base + bob_token) as bob:
        threads = [threading.Thread(target=sample_rss, args=(pid, stop, peak)),
                   threading.Thread(target=pings, args=(bob, stop, slowest))]
        counter = threading.Thread(target=replies, args=(mallory, frames, outcomes))
        for thread in (*threads, counter):
            thread.start()
        began = time.perf_counter()
        try:
            for ref in range(frames):
                mallory.send(json.dumps({"op": "read", "all": True, "ref": ref}))
        except ConnectionClosed:
            pass
        counter.join()
        elapsed = time.perf_counter() - began
        stop.set()
        for thread in threads:
            thread.join()
    return {"frames": frames, "seconds": round(elapsed, 2), "replies": dict(outcomes),
            "rss_before_mb": round(before / MB, 1), "rss_peak_mb": round(peak[0] / MB, 1),
            "bob_slowest_pong_ms": round(slowest[0] * 1000, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=60_000)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    target = HeraldTarget(args.redis_url, settings={"HERALD_LOG_LEVEL": "INFO"})
    target.start(free_port())
    try:
        result = run(target, args.frames)
    finally:
        target.stop()
    log = target.log_path
    result["log_bytes"] = log.stat().st_size
    result["log_tracebacks"] = log.read_text(errors="replace").count("Traceback")
    result["log"] = str(log)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
