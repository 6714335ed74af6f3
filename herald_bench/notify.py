"""``herald bench notify``: notifications POSTed to a stack, read as SSE events (issue 12).

Both stacks run in the same run, one after the other, on the same Redis and with the
same process counts (``stack_target``): Herald (its API, in-app worker and streamer) and
the naive Flask + Celery reference (``refs.naive``) in front of the same streamer. The
C poster (``poster.c``) POSTs at a fixed rate, open loop, at most 32 requests in flight;
each notification carries ``{"seq": n, "t": <due time, ns>, "c": <client>}`` in its
``data``, and the C SSE load generator (``loadgen.c --per-seq``), one stream per user on
``user:<id>``, reads the stamp back: end-to-end latency is from the moment the POST was
due to the moment the client read the event, so a server that falls behind cannot hide
it by slowing the sender down.

Rows (``kind`` of each result):
- ``single``: one recipient per notification, one POST each, rising rates until the
  end-to-end p99 passes 250 ms; then one step at 80% of the best rate (``single80``);
- ``steady``: 50 notifications/s, single recipients: the end-to-end p50 at low load;
- ``batch``: ``POST /api/notifications/batch`` with ``batch_size`` notifications per
  request, rising notifications/s until p99 passes 500 ms (``missing`` when the
  endpoint answers every POST 404 or 405; the naive stack has none);
- ``wide``: one notification to ``wide_users`` recipients, each holding a stream, one
  after another: time from the POST's answer to the last recipient's event.

Every step checks that each accepted notification reached each of its recipients
exactly once (no loss, no duplicate, no misrouting).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import redis

from herald_bench import poster
from herald_bench.loadgen import LoadGen
from herald_bench.measure import resources
from herald_bench.scenarios import Sizes

SINGLE_P99_MS = 250.0
BATCH_P99_MS = 500.0
WIDE_P50_MS = 100.0  # last event after the POST's answer
INFLIGHT = 32
DRAIN_TIMEOUT = 60.0
QUIET_S = 5.0  # no new event for this long: nothing more is coming


class Missing(Exception):
    """The endpoint a row needs answered 404."""


@dataclass
class Load:
    """One step: ``count`` notifications at ``rate``/s to users ``u0..u<users-1>``."""

    kind: str
    users: int
    count: int
    rate: float
    budget_ms: float = SINGLE_P99_MS
    batch: int = 0  # > 0: that many per request to the batch endpoint
    wide: bool = False  # every notification to every user (else one, round robin)

    @property
    def recipients(self) -> int:
        return self.users if self.wide else 1


def bodies(load: Load) -> list[str]:
    """The request bodies of ``load``, in order; notification ``n`` has seq ``n``."""
    items = [_notification(load, n) for n in range(load.count)]
    if not load.batch:
        return [poster.stamped(item) for item in items]
    return [poster.stamped({"items": items[i:i + load.batch]})
            for i in range(0, len(items), load.batch)]


def _notification(load: Load, n: int) -> dict[str, Any]:
    data: dict[str, Any] = {"seq": n, "t": poster.STAMP}
    if load.wide:
        recipients = [f"u{i}" for i in range(load.users)]
    else:
        recipients = [f"u{n % load.users}"]
        data["c"] = n % load.users  # the client that must get it (misrouting check)
    return {"recipients": recipients, "title": "bench", "body": "", "data": data}


def measure(target: Any, load: Load) -> dict[str, Any]:
    """Run ``load`` against a started stack; return the step's figures."""
    users = [f"u{i}" for i in range(load.users)]
    gen = LoadGen(target.streamer_port, [target.subscribe_path(u) for u in users],
                  len(users), 0, per_seq=True, timeout=load.count / load.rate + 600,
                  connect_timeout=60)
    path = target.batch_path if load.batch else target.post_path
    rate = load.rate / load.batch if load.batch else load.rate
    redis_client = redis.Redis.from_url(target.config.redis_url)
    try:
        gen.start()
        ready = gen.wait_ready(90)
        if ready["ok"] != len(users):
            raise RuntimeError(f"only {ready['ok']}/{len(users)} streams opened")
        _wait_subscribed(redis_client, target, users)
        before = _cpu(target, redis_client)
        posted = poster.post(target.api_port, path, bodies(load), rate, inflight=INFLIGHT,
                             headers=tuple(target.headers), keep_answers=bool(load.batch))
        accepted = _accepted(load, posted)
        received = _drain(gen, len(accepted) * load.recipients)
        after = _cpu(target, redis_client)
    finally:
        redis_client.close()
        gen.close()
    return {**_figures(load, posted, accepted, received),
            "cpu_s": {role: after[role] - before[role] for role in after},
            "loadgen_cpu_percent": 100 * (received["cpu_user_s"] + received["cpu_sys_s"])
            / max(received["duration_s"] + ready["seconds"], 1e-9)}


def _wait_subscribed(client: redis.Redis, target: Any, users: list[str],
                     timeout: float = 30.0) -> None:
    sample = [target.channel(u) for u in (users[:20] + users[-20:])]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(count >= 1 for _, count in client.pubsub_numsub(*sample)):
            return
        time.sleep(0.05)
    raise RuntimeError("the streamer did not subscribe its clients' topics")


def _cpu(target: Any, client: redis.Redis) -> dict[str, float]:
    """CPU seconds so far by role, Redis included (shared with whatever else uses it)."""
    out = {role: resources(pids)[1] for role, pids in target.pids().items()}
    info = client.info("cpu")
    out["redis"] = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    return out


def _accepted(load: Load, posted: poster.Posted) -> set[int]:
    """Seqs of the notifications the stack accepted (a 2xx answer, or its batch item)."""
    statuses = [r[3] for r in posted.requests]
    if statuses and all(s in (404, 405) for s in statuses):  # no such route for a POST
        raise Missing(f"the endpoint answered {statuses[0]}")
    if not load.batch:
        return {n for n, status in enumerate(statuses) if 200 <= status < 300}
    accepted: set[int] = set()
    for index, (status, body) in posted.answers.items():
        if 200 <= status < 300:
            for k, item in enumerate(_items(json.loads(body))):
                if isinstance(item, dict) and "id" in item and "error" not in item:
                    accepted.add(index * load.batch + k)
    return accepted


def _items(answer: Any) -> list[Any]:
    """The per-notification list of a batch answer: the answer itself or its one list."""
    if isinstance(answer, list):
        return answer
    lists = [v for v in answer.values() if isinstance(v, list)] if isinstance(answer, dict) else []
    return lists[0] if lists else []


def _drain(gen: LoadGen, expected: int) -> dict[str, Any]:
    """Wait until ``expected`` events arrived (or none came for ``QUIET_S``); stop."""
    deadline = time.monotonic() + DRAIN_TIMEOUT
    last, changed = -1, time.monotonic()
    while time.monotonic() < deadline and gen.progress() < expected:
        if gen.progress() != last:
            last, changed = gen.progress(), time.monotonic()
        elif time.monotonic() - changed > QUIET_S:
            break
        time.sleep(0.05)
    time.sleep(0.6)  # one more PROGRESS line, and late duplicates have a chance to show
    return gen.stop()


def _figures(load: Load, posted: poster.Posted, accepted: set[int],
             received: dict[str, Any]) -> dict[str, Any]:
    counts = received.get("per_seq", {}).get("count", [])
    late = received.get("per_seq", {}).get("max_latency_us", [])
    r = load.recipients
    got = {n: counts[n] for n in range(len(counts)) if counts[n]}
    requests = posted.requests
    per_request = load.batch or 1
    due = {n: requests[n // per_request][0] for n in range(load.count)}
    first_due = min((req[0] for req in requests), default=0)
    answered = [req for req in requests if req[3]]
    delivered = sum(1 for n in accepted if got.get(n, 0) >= r)
    # Rates over the time from the first due POST to the last answer / event, and never
    # over less than the schedule itself (count / rate).
    scheduled = load.count / load.rate
    ends = [due[n] + late[n] * 1000 for n in got if late[n] >= 0]
    window = max(scheduled, (max(ends) - first_due) / 1e9 if ends else 0.0)
    last_answer = max((req[2] for req in answered), default=first_due)
    answer_window = max(scheduled, (last_answer - first_due) / 1e9)
    lat = received["latency_us"]
    figures = {
        "kind": load.kind, "users": load.users, "rate": load.rate, "count": load.count,
        "batch": load.batch, "recipients": r, "budget_ms": load.budget_ms,
        "requests": len(requests), "answered": len(answered),
        "statuses": _tally(req[3] for req in requests),
        "accepted": len(accepted), "delivered": delivered,
        "accepted_per_s": len(accepted) / answer_window,
        "delivered_per_s": delivered / window,
        "api_ms": _percentiles([(q[2] - q[1]) / 1e6 for q in answered]),
        "send_lag_ms": _percentiles([(q[1] - q[0]) / 1e6 for q in requests]),
        "e2e_ms": {k: (None if lat[k] is None else lat[k] / 1000)
                   for k in ("p50", "p90", "p99", "max")},
        "lost": sum(max(0, r - got.get(n, 0)) for n in accepted),
        "duplicates": sum(max(0, c - r) for c in got.values()),
        "delivered_unaccepted": sum(1 for n in got if n not in accepted),
        "misrouted": received["misrouted"], "events_received": received["events_received"],
        "poster_cpu_percent": posted.cpu_percent,
    }
    figures["exactly_once"] = (figures["lost"] == 0 and figures["duplicates"] == 0
                               and figures["misrouted"] == 0)
    if load.wide:
        after = [(due[n] / 1000 + late[n] - requests[n][2] / 1000) / 1000
                 for n in sorted(accepted) if late[n] >= 0 and requests[n][2]]
        figures["after_answer_ms"] = _percentiles(after)
    return figures


def _tally(values: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for value in values:
        out[str(value)] = out.get(str(value), 0) + 1
    return out


def _percentiles(values: list[float]) -> dict[str, float | None]:
    """Nearest-rank p50, p99 and max of ``values`` (None each when empty)."""
    ordered = sorted(values)
    if not ordered:
        return {"p50": None, "p99": None, "max": None}

    def rank(p: float) -> float:
        return ordered[min(len(ordered), max(1, math.ceil(p * len(ordered)))) - 1]

    return {"p50": rank(0.5), "p99": rank(0.99), "max": ordered[-1]}


def within_budget(row: dict[str, Any]) -> bool:
    """Every notification accepted and delivered exactly once, at 90% of the asked rate
    or better, with the end-to-end p99 within the row's budget (``wide``: the p50 of
    the last event after the POST's answer)."""
    p99 = (row["after_answer_ms"]["p50"] if row["kind"] == "wide"
           else row["e2e_ms"]["p99"])
    return (row["accepted"] == row["count"] and row["exactly_once"]
            and row["accepted_per_s"] >= 0.9 * row["rate"]
            and p99 is not None and p99 <= row["budget_ms"])


def close_call(row: dict[str, Any]) -> bool:
    """Missed the p99 budget by less than half of it, all else fine: try the next rate."""
    p99 = row["e2e_ms"]["p99"]
    return (row["accepted"] == row["count"] and row["exactly_once"]
            and row["accepted_per_s"] >= 0.9 * row["rate"]
            and p99 is not None and p99 <= 1.5 * row["budget_ms"])


def steps(target: Any, sizes: Sizes) -> Iterator[dict[str, Any]]:
    """Every row of one stack, step by step (see the module docstring)."""
    users, seconds = sizes.notify_users, sizes.notify_seconds
    measure(target, Load("warmup", users, int(20 * sizes.warmup_seconds), 20.0))
    best: dict[str, Any] | None = None
    for rate in sizes.notify_rates:
        row = measure(target, Load("single", users, int(rate * seconds), float(rate)))
        yield row
        if within_budget(row) and (best is None or
                                   row["delivered_per_s"] > best["delivered_per_s"]):
            best = row
        if not within_budget(row) and not close_call(row):
            break
    if best is not None:
        rate = round(0.8 * best["rate"])
        yield measure(target, Load("single80", users, int(rate * seconds), float(rate)))
    rate = sizes.notify_steady_rate
    yield measure(target, Load("steady", users, int(rate * sizes.notify_steady_seconds),
                               float(rate)))
    if target.batch_path:
        yield from _batch(target, sizes)
    yield measure(target, Load("wide", sizes.wide_users, sizes.wide_count,
                               sizes.wide_rate, WIDE_P50_MS, wide=True))


def _batch(target: Any, sizes: Sizes) -> Iterator[dict[str, Any]]:
    for rate in sizes.batch_rates:
        count = max(sizes.batch_size, int(rate * sizes.batch_seconds))
        count -= count % sizes.batch_size
        load = Load("batch", sizes.notify_users, count, float(rate), BATCH_P99_MS,
                    batch=sizes.batch_size)
        try:
            row = measure(target, load)
        except Missing as exc:
            yield {"kind": "batch", "missing": f"{target.batch_path}: {exc}"}
            return
        yield row
        if not within_budget(row) and not close_call(row):
            return
