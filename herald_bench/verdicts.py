"""Herald's figures against the targets of issue 3 and against the reference servers."""

from __future__ import annotations

from typing import Any

from herald_bench.report import ms
from herald_bench.scenarios import within_budget

FANOUT_P99_MS = 150
RSS_PER_CONN_KB = 16
CONNECT_S = 2.0
STORM_S = 1.0  # issue 9: a restarted process' clients all streaming again
THROUGHPUT = 250_000
SLOW_P99_DELTA_MS = 10


def _ms(us: float | None) -> float:
    """Microseconds as milliseconds; nothing measured counts as infinitely slow."""
    return float("inf") if us is None else us / 1000


def _rows(document: dict[str, Any] | None, target: str) -> list[dict[str, Any]]:
    if not document:
        return []
    return [r for r in document["results"] if r.get("target") == target and "conns" in r]


def _complete(row: dict[str, Any]) -> bool:
    return row["conns_complete"] >= row["conns"] - row.get("stalled", 0)


def _mark(ok: bool) -> str:
    return "met" if ok else "MISSED"


def _best(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    good = [r for r in rows if within_budget(r)]
    return max(good, key=lambda r: r["deliveries_per_s"]) if good else None


def verdicts(documents: dict[str, dict[str, Any]]) -> list[str]:
    lines: list[str] = []
    fanout = _rows(documents.get("fanout"), "herald")
    distinct = [r for r in fanout if r.get("tokens") != "shared"]
    if distinct:
        r = distinct[0]
        in_order = r["duplicates_or_reordered"] == 0 and r["gaps"] == 0 and _complete(r)
        p99 = _ms(r["completion_us"]["p99"])
        lines.append(f"1. {r['conns']} clients, every event in order, fan-out completion p99 "
                     f"≤ {FANOUT_P99_MS} ms: **{_mark(in_order and p99 <= FANOUT_P99_MS)}** "
                     f"({p99:.0f} ms; delivery p99 {_ms(r['latency_us']['p99']):.0f} ms; "
                     f"{'all delivered in order' if in_order else 'NOT all delivered in order'})")
        kb = r["rss_per_conn_kb"]
        lines.append(f"2. RSS per idle connection ≤ {RSS_PER_CONN_KB} KB: "
                     f"**{_mark(kb <= RSS_PER_CONN_KB)}** ({kb:.1f} KB)")
        seconds = r["ready"]["seconds"]
        lines.append(f"3. {r['conns']} connections accepted and streaming ≤ {CONNECT_S:.0f} s: "
                     f"**{_mark(seconds <= CONNECT_S)}** ({seconds:.2f} s)")
    best = _best(_rows(documents.get("throughput"), "herald"))
    if documents.get("throughput"):
        rate = best["deliveries_per_s"] if best else 0
        lines.append(f"4. ≥ {THROUGHPUT:,} deliveries/s with p99 ≤ 100 ms: "
                     f"**{_mark(rate >= THROUGHPUT)}** ({rate:,.0f}/s"
                     + (f", p99 {_ms(best['latency_us']['p99']):.0f} ms)" if best else ")"))
    lines += _routing(documents.get("routing"))
    lines.append("6. A streamer subscribes a topic on its first local client and "
                 "unsubscribes on its last: by design (`streamer/hub.py`), checked by "
                 "`tests/integration/test_streamer.py::test_a_closed_connection_is_removed_at_once`.")
    two = _best(_rows(documents.get("throughput"), "herald x2"))
    if best and two:
        ratio = two["deliveries_per_s"] / best["deliveries_per_s"]
        lines.append(
            f"7. 2 processes: {two['deliveries_per_s']:,.0f} deliveries/s within budget, "
            f"{ratio:.2f}x one process (**{_mark(ratio >= 1.7)}**, target about 2x). "
            f"This machine has {documents['throughput']['machine']['cpus']} cores for the "
            f"streamers, Redis, the publisher and the load generator: at its best step one "
            f"streamer process used {_core(best)} of a core and the load generator "
            f"{best['loadgen_cpu_percent']:.0f}%; two processes used {_core(two)} together "
            f"(load generator {two['loadgen_cpu_percent']:.0f}%), so there was no idle core "
            "for the second process to scale into.")
    lines += _slow(documents.get("slow"))
    lines.append("9. Token checks (each client its own signed token), heartbeats, per-client "
                 "buffers and the Redis subscription stay on in every run: the bench starts "
                 "the production entry point, `python -m streamer`.")
    lines += _storm(fanout)
    lines += notify_verdicts(documents.get("notify"))
    return lines


NOTIFY_RATIO = 1.5
STEADY_P50_MS = 8.0
BATCH_RATE = 3_000
WIDE_P50_MS = 100.0


def _kind(document: dict[str, Any] | None, target: str, kind: str) -> list[dict[str, Any]]:
    if not document:
        return []
    return [r for r in document["results"]
            if r.get("target") == target and r.get("kind") == kind and "missing" not in r]


def _best_notify(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    from herald_bench.notify import within_budget as check

    good = [r for r in rows if check(r)]
    return max(good, key=lambda r: r["delivered_per_s"]) if good else None


def notify_verdicts(document: dict[str, Any] | None) -> list[str]:
    """Issue 12's four targets, from ``herald bench notify``."""
    if not document:
        return []
    lines = [_single(document), _steady(document), _batch(document), _wide(document)]
    if document.get("quick"):
        lines = [f"{line} (a `--quick` run: smaller sizes, not figures)" for line in lines]
    return lines


def _single(document: dict[str, Any]) -> str:
    ours = _best_notify(_kind(document, "herald", "single"))
    theirs = _best_notify(_kind(document, "naive", "single"))
    at80 = _kind(document, "herald", "single80")
    head = (f"11. (issue 12) Single notifications: Herald ≥ {NOTIFY_RATIO}x the naive "
            "stack's delivered/s, end-to-end p99 ≤ 250 ms at 80% of its best rate: ")
    if ours is None or theirs is None:
        who = "Herald" if ours is None else "the naive stack"
        return head + f"**MISSED** ({who} kept no rate within the 250 ms p99 budget)"
    ratio = ours["delivered_per_s"] / theirs["delivered_per_s"]
    if at80:
        p99 = at80[-1]["e2e_ms"]["p99"]
        at = (f"p99 at 80% ({at80[-1]['rate']:,.0f}/s): "
              f"{'-' if p99 is None else f'{p99:.0f}'} ms")
    else:
        at = "no step at 80%"
    ok = ratio >= NOTIFY_RATIO and bool(at80) and _best_notify(at80[-1:]) is not None
    return head + (f"**{_mark(ok)}** (Herald {ours['delivered_per_s']:,.0f}/s, naive "
                   f"{theirs['delivered_per_s']:,.0f}/s: {ratio:.2f}x; {at})")


def _steady(document: dict[str, Any]) -> str:
    rows = _kind(document, "herald", "steady")
    head = f"12. (issue 12) At 50 notifications/s, end-to-end p50 ≤ {STEADY_P50_MS:.0f} ms: "
    if not rows or rows[-1]["e2e_ms"]["p50"] is None:
        return head + "**MISSED** (nothing delivered)"
    r, naive = rows[-1], _kind(document, "naive", "steady")
    p50 = r["e2e_ms"]["p50"]
    ok = p50 <= STEADY_P50_MS and r["exactly_once"] and r["accepted"] == r["count"]
    other = (f"; naive {naive[-1]['e2e_ms']['p50']:.1f} ms"
             if naive and naive[-1]["e2e_ms"]["p50"] is not None else "")
    return head + f"**{_mark(ok)}** ({p50:.1f} ms{other})"


def _batch(document: dict[str, Any]) -> str:
    head = (f"13. (issue 12) Batch path: ≥ {BATCH_RATE:,} notifications/s delivered end to "
            "end, p99 ≤ 500 ms: ")
    missing = [r for r in document["results"]
               if r.get("target") == "herald" and r.get("kind") == "batch" and "missing" in r]
    if missing:
        return head + f"**MISSED** (not measured: {missing[0]['missing']})"
    rows = _kind(document, "herald", "batch")
    best = _best_notify(rows)
    if best is None:
        return head + "**MISSED** (no rate within the 500 ms p99 budget)"
    rate = best["delivered_per_s"]
    return head + (f"**{_mark(rate >= BATCH_RATE)}** ({rate:,.0f}/s, p99 "
                   f"{best['e2e_ms']['p99']:.0f} ms, {best['batch']} per request)")


def _wide(document: dict[str, Any]) -> str:
    rows = _kind(document, "herald", "wide")
    head = (f"14. (issue 12) One notification to 1,000 streaming recipients: last delivery "
            f"≤ {WIDE_P50_MS:.0f} ms p50 after the POST's answer: ")
    if not rows or rows[-1].get("after_answer_ms", {}).get("p50") is None:
        return head + "**MISSED** (nothing delivered)"
    r, naive = rows[-1], _kind(document, "naive", "wide")
    p50 = r["after_answer_ms"]["p50"]
    ok = p50 <= WIDE_P50_MS and r["exactly_once"] and r["accepted"] == r["count"]
    other = (f"; naive {naive[-1]['after_answer_ms']['p50']:.0f} ms"
             if naive and naive[-1].get("after_answer_ms", {}).get("p50") is not None else "")
    return head + (f"**{_mark(ok)}** ({p50:.0f} ms p50 over {r['count']} notifications to "
                   f"{r['recipients']} recipients{other})")


def _storm(fanout: list[dict[str, Any]]) -> list[str]:
    """Issue 9: every client of one process reconnecting at once, by kind of token."""
    seconds = {r.get("tokens") or "distinct": r["ready"]["seconds"] for r in fanout}
    if set(seconds) != {"distinct", "shared"}:
        return []
    met = max(seconds.values()) <= STORM_S
    return [f"10. (issue 9) {fanout[0]['conns']} connections to one process streaming "
            f"≤ {STORM_S:.1f} s, with a token per client and with one shared token: "
            f"**{_mark(met)}** (distinct {seconds['distinct']:.2f} s, shared "
            f"{seconds['shared']:.2f} s; one run each on a shared machine, see the load "
            "average above the fan-out table)"]


def _core(row: dict[str, Any]) -> str:
    return f"{100 * row['server_cpu_s'] / max(row['publish_seconds'], 1e-9):.0f}%"


def _routing(document: dict[str, Any] | None) -> list[str]:
    rows = sorted(_rows(document, "herald"), key=lambda r: r["conns"])
    if not rows:
        return []
    exact = all(r["misrouted"] == 0 and _complete(r) for r in rows)
    cpu = ", ".join(f"{r['server_cpu_per_event_us']:.0f} µs/event at {r['conns']} clients"
                    for r in rows)
    growth = rows[-1]["server_cpu_per_event_us"] / max(rows[0]["server_cpu_per_event_us"], 1e-9)
    return [f"5. Each targeted event reaches exactly its one client: **{_mark(exact)}**; "
            f"CPU per event does not grow with clients: **{_mark(growth <= 1.5)}** "
            f"({cpu}; {growth:.2f}x)"]


def _slow(document: dict[str, Any] | None) -> list[str]:
    rows = {r["stalled"]: r for r in _rows(document, "herald")}
    if 0 not in rows or 1 not in rows:
        return []
    delta = _ms(rows[1]["latency_us"]["p99"]) - _ms(rows[0]["latency_us"]["p99"])
    closed = rows[1].get("stalled_closed", 0) == 1
    return [f"8. The stalled client is disconnected and the others' p99 moves by < "
            f"{SLOW_P99_DELTA_MS} ms: **{_mark(closed and delta < SLOW_P99_DELTA_MS)}** "
            f"(closed: {'yes' if closed else 'no'}; p99 {_ms(rows[0]['latency_us']['p99']):.1f}"
            f" → {_ms(rows[1]['latency_us']['p99']):.1f} ms, {delta:+.1f} ms)"]


def ratios(scenario: str, rows: list[dict[str, Any]]) -> list[str]:
    """Herald's headline figure divided by each reference's, for this scenario."""
    if scenario == "notify":
        return _notify_ratios(rows)
    measured = [r for r in rows if "conns" in r]
    herald = [r for r in measured if r["target"] == "herald"]
    if not herald:
        return []
    lines = []
    for name in sorted({r["target"] for r in measured} - {"herald", "herald x2"}):
        theirs = [r for r in measured if r["target"] == name]
        line = _ratio(scenario, herald, theirs, name)
        if line:
            lines.append(line)
    return lines


def _ratio(scenario: str, ours: list[dict[str, Any]], theirs: list[dict[str, Any]],
           name: str) -> str | None:
    if scenario == "throughput":
        a, b = _best(ours), _best(theirs)
        if not a:
            return None
        if not b:
            return f"- vs {name}: {name} kept no rate within the 100 ms p99 budget"
        ours, theirs_rate = a["deliveries_per_s"], b["deliveries_per_s"]
        return (f"- vs {name}: sustained deliveries/s {ours:,.0f} vs {theirs_rate:,.0f} "
                f"({ours / theirs_rate:.2f}x)")
    if scenario == "fanout":  # the references have no tokens: compare like with like
        ours = [r for r in ours if r.get("tokens") != "shared"] or ours
    a, b = ours[-1], theirs[-1]
    key = "completion_us" if scenario == "fanout" else "latency_us"
    ours_p99, theirs_p99 = a[key]["p99"], b[key]["p99"]
    what = "fan-out completion p99" if scenario == "fanout" else "delivery p99"
    if ours_p99 is None or theirs_p99 is None:
        speed = "no ratio: one side delivered nothing"
    else:
        speed = f"{theirs_p99 / max(ours_p99, 1):.2f}x faster"
    return (f"- vs {name}: {what} {ms(ours_p99)} ms vs {ms(theirs_p99)} ms ({speed}); "
            f"RSS per connection {a['rss_per_conn_kb']:.1f} vs {b['rss_per_conn_kb']:.1f} KB; "
            f"delivered {a['events_received']} vs {b['events_received']}")


def _notify_ratios(rows: list[dict[str, Any]]) -> list[str]:
    document = {"results": rows}
    ours = _best_notify(_kind(document, "herald", "single"))
    theirs = _best_notify(_kind(document, "naive", "single"))
    if not ours or not theirs:
        return []
    return [f"- vs naive: best single-notification rate within the 250 ms p99 budget, "
            f"delivered {ours['delivered_per_s']:,.0f}/s vs {theirs['delivered_per_s']:,.0f}/s "
            f"({ours['delivered_per_s'] / theirs['delivered_per_s']:.2f}x; asked "
            f"{ours['rate']:,.0f}/s vs {theirs['rate']:,.0f}/s)"]
