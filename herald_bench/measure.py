"""One measured run: clients connect, events are published at a pace, figures come back.

A run starts the load generator with one request target per client, waits until every
client has its response headers and the server is subscribed, samples the server's RSS
and CPU, publishes ``events`` events at ``rate`` per second (each stamped with its
publish time in ``t``, nanoseconds), waits for the clients to receive them, and returns
the load generator's figures together with the server's and the load generator's
resource use. A progress bar shows deliveries as they happen.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psutil
from tqdm import tqdm

from herald_bench.loadgen import LoadGen


@dataclass
class Run:
    """What one run does."""

    label: str
    conns: int
    topic_of_conn: Callable[[int], str]
    events: int
    rate: float
    topic_of_event: Callable[[int], str]
    data_of_event: Callable[[int], dict[str, Any]]
    expect_per_conn: int
    stall: int = 0
    rcvbuf: int | None = None
    fanout: bool = False
    settle: float = 0.5
    drain_timeout: float = 30.0
    tokens: str = "distinct"  # or "shared": every client sends the same token
    restart: bool = False  # start the server anew first, as after a restart
    extra: dict[str, Any] = field(default_factory=dict)


def resources(pids: list[int]) -> tuple[int, float]:
    """Total RSS (bytes) and CPU seconds (user + system) of live ``pids``."""
    rss, cpu = 0, 0.0
    for pid in pids:
        try:
            process = psutil.Process(pid)
            rss += process.memory_info().rss
            times = process.cpu_times()
            cpu += times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return rss, cpu


def measure(target: Any, port: int, run: Run) -> dict[str, Any] | None:
    """Run ``run`` against a started ``target``; return its figures.

    None when the run is about tokens and the target has none (the references).
    """
    shared = run.tokens == "shared"
    if shared and not getattr(target, "uses_tokens", False):
        return None
    if run.restart:
        target.stop()
        target.start(port)
    pids = target.server_pids()
    rss_idle, _ = resources(pids)
    paths = [target.subscribe_path(run.topic_of_conn(i), **({"shared": True} if shared else {}))
             for i in range(run.conns)]
    loadgen = LoadGen(port, paths, run.conns, run.expect_per_conn, stall=run.stall,
                      rcvbuf=run.rcvbuf, fanout=run.fanout, timeout=run.drain_timeout + 60,
                      connect_timeout=60)
    publisher = target.publisher()
    try:
        loadgen.start()
        ready = loadgen.wait_ready(90)
        _wait_subscribed(target, publisher, run)
        rss_connected, cpu_before = resources(target.server_pids())
        published, publish_seconds = _publish(publisher, run, loadgen)
        result = _drain(loadgen, run)
        _, cpu_after = resources(target.server_pids())
    finally:
        publisher.close()
        loadgen.close()
    return {
        **result,
        "ready": ready,
        "published": published,
        "publish_seconds": publish_seconds,
        "deliveries_per_s": result["events_received"] / max(publish_seconds, 1e-9),
        "server_rss_idle_mb": rss_idle / 1e6,
        "server_rss_connected_mb": rss_connected / 1e6,
        "rss_per_conn_kb": (rss_connected - rss_idle) / max(run.conns, 1) / 1024,
        "server_cpu_s": cpu_after - cpu_before,
        "server_cpu_per_event_us": (cpu_after - cpu_before) / max(published, 1) * 1e6,
        "loadgen_cpu_percent": 100 * (result["cpu_user_s"] + result["cpu_sys_s"])
        / max(result["duration_s"] + ready["seconds"], 1e-9),
        "tokens": run.tokens if getattr(target, "uses_tokens", False) else None,
        **run.extra,
    }


def _wait_subscribed(target: Any, publisher: Any, run: Run, timeout: float = 30.0) -> None:
    """Let the server finish subscribing (flask-sse subscribes after the headers).

    Where the server counts a subscription per client (``counts_clients``), wait for
    as many as there are clients on the topic; Herald subscribes once per process.
    """
    wanted: dict[str, int] = {}
    for i in range(run.conns):
        topic = run.topic_of_conn(i)
        wanted[topic] = wanted.get(topic, 0) + 1
    sample = dict(list(wanted.items())[:50])
    if not getattr(target, "counts_clients", False):
        sample = dict.fromkeys(sample, 1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(publisher.subscribers(t) >= n for t, n in sample.items()):
            break
        time.sleep(0.1)
    time.sleep(run.settle)


def _publish(publisher: Any, run: Run, loadgen: LoadGen) -> tuple[int, float]:
    """Publish ``run.events`` at ``run.rate``; return (count, seconds)."""
    total = run.conns * run.expect_per_conn
    start = time.monotonic()
    with tqdm(total=total, desc=run.label, unit="dlv", unit_scale=True, leave=False,
              dynamic_ncols=True) as bar:
        for n in range(run.events):
            due = start + n / run.rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            data = run.data_of_event(n)
            data["t"] = time.time_ns()
            publisher.publish(run.topic_of_event(n), data)
            if n % 50 == 0:
                bar.n = loadgen.progress()
                bar.refresh()
        seconds = time.monotonic() - start
        bar.n = loadgen.progress()
        bar.refresh()
    return run.events, seconds


def _drain(loadgen: LoadGen, run: Run) -> dict[str, Any]:
    """Wait for the clients to receive what they expect (or the drain timeout)."""
    deadline = time.monotonic() + run.drain_timeout
    expected = (run.conns - run.stall) * run.expect_per_conn
    last, last_change = -1, time.monotonic()
    while time.monotonic() < deadline:
        received = loadgen.progress()
        if received >= expected:
            break
        if received != last:
            last, last_change = received, time.monotonic()
        elif time.monotonic() - last_change > 5:
            break  # nothing more is coming
        time.sleep(0.1)
    return loadgen.stop()
