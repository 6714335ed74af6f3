"""``herald bench fanout|throughput|routing|slow|notify|all``: run scenarios, store, report.

Each scenario runs against Herald's streamer (and, for throughput, Herald on two
processes) and against the reference servers (nginx + nchan, flask-sse) in the same
run; ``notify`` runs Herald's whole stack and the naive Flask + Celery stack
(``herald_bench.notify``). A reference that cannot be located or installed is reported
as missing, with the reason, and the run goes on.
"""

from __future__ import annotations

import datetime
import shlex
import sys
import time
from collections.abc import Iterator
from typing import Any

from herald.stack import free_port
from herald_bench import loadgen, notify, poster, report
from herald_bench.herald_target import HeraldTarget
from herald_bench.refs import REFERENCES
from herald_bench.refs.naive import NaiveStack
from herald_bench.scenarios import SCENARIOS, Sizes, runner, within_budget
from herald_bench.stack_target import HeraldStack
from herald_bench.verdicts import ratios, verdicts

REFERENCE_NAMES = ("nchan", "flask-sse")


def targets_for(scenario: str, redis_url: str, with_references: bool) -> Iterator[Any]:
    yield HeraldTarget(redis_url)
    if scenario == "throughput":
        yield HeraldTarget(redis_url, processes=2)
    if with_references:
        for name in REFERENCE_NAMES:
            yield REFERENCES[name]()


def run_scenario(scenario: str, redis_url: str, sizes: Sizes, with_references: bool,
                 only: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    if scenario == "notify":
        return run_notify(redis_url, sizes, with_references, only)
    rows: list[dict[str, Any]] = []
    for target in targets_for(scenario, redis_url, with_references):
        label = getattr(target, "label", target.name)
        if only and label not in only:
            continue
        missing = type(target).locate()
        if missing:
            print(f"  {label}: MISSING, {missing}", flush=True)
            rows.append({"target": label, "missing": missing})
            continue
        rows.extend(_measure_target(scenario, target, label, sizes))
    return rows


def _measure_target(scenario: str, target: Any, label: str,
                    sizes: Sizes) -> list[dict[str, Any]]:
    port = free_port()
    rows = []
    try:
        target.start(port)
        for result in SCENARIOS[scenario](runner(target, port), sizes):
            if result is None:  # a run that does not apply to this target
                continue
            result["target"] = label
            result["within_budget"] = within_budget(result)
            rows.append(result)
            print("  " + _summary(result), flush=True)
    except Exception as exc:  # a reference falling over is a result, not a crash
        print(f"  {label}: FAILED, {exc}", flush=True)
        rows.append({"target": label, "error": f"{type(exc).__name__}: {exc}"[:500]})
    finally:
        target.stop()
    return rows


def run_notify(redis_url: str, sizes: Sizes, with_references: bool,
               only: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Herald's stack, then the naive one: every row of ``notify`` for each."""
    rows: list[dict[str, Any]] = []
    for cls in (HeraldStack, NaiveStack) if with_references else (HeraldStack,):
        if only and cls.name not in only:
            continue
        target = cls(redis_url)
        try:
            target.start()
            for result in notify.steps(target, sizes):
                result["target"] = cls.name
                if "missing" not in result:
                    result["within_budget"] = notify.within_budget(result)
                rows.append(result)
                print("  " + _notify_summary(result), flush=True)
        except Exception as exc:  # a stack falling over is a result, not a crash
            print(f"  {cls.name}: FAILED, {exc}\n{target.log_tails()}", flush=True)
            rows.append({"target": cls.name, "error": f"{type(exc).__name__}: {exc}"[:500]})
        finally:
            target.close()
    return rows


def _notify_summary(r: dict[str, Any]) -> str:
    if "missing" in r:
        return f"{r['target']:>6} {r['kind']}: MISSING, {r['missing']}"
    e2e, api = r["e2e_ms"], r["api_ms"]
    return (f"{r['target']:>6} {r['kind']:>8} {r['rate']:>6.0f}/s: accepted "
            f"{r['accepted_per_s']:,.0f}/s, delivered {r['delivered_per_s']:,.0f}/s, API p50 "
            f"{report.num(api['p50'])} p99 {report.num(api['p99'])} ms, end to end p50 "
            f"{report.num(e2e['p50'])} p99 {report.num(e2e['p99'])} max "
            f"{report.num(e2e['max'])} ms, exactly once "
            f"{'yes' if r['exactly_once'] else 'NO'}, poster CPU "
            f"{r['poster_cpu_percent']:.0f}%")


def _summary(r: dict[str, Any]) -> str:
    lat = r["latency_us"]
    return (f"{r['target']:>10}: {r['ok']}/{r['conns']} clients, {r['events_received']} "
            f"deliveries, {r['deliveries_per_s']:,.0f}/s, p50 {report.ms(lat['p50'])} ms, "
            f"p99 {report.ms(lat['p99'])} ms, max {report.ms(lat['max'])} ms, "
            f"connected in {r['ready']['seconds']:.2f} s, RSS/conn "
            f"{r['rss_per_conn_kb']:.1f} KB, load generator CPU "
            f"{r['loadgen_cpu_percent']:.0f}%")


def main(scenarios: list[str], redis_url: str, quick: bool, with_references: bool,
         only: tuple[str, ...] = ()) -> int:
    """Run ``scenarios``; store results; rewrite BENCHMARKS.md; print verdicts."""
    sizes = Sizes.quick() if quick else Sizes()
    print(f"building the load generator: {loadgen.build()}", flush=True)
    if "notify" in scenarios:
        print(f"building the poster: {loadgen.build(source=poster.SOURCE, binary=poster.BINARY)}",
              flush=True)
    command = "herald bench " + " ".join(shlex.quote(a) for a in sys.argv[2:])
    for scenario in scenarios:
        print(f"\n== {scenario}", flush=True)
        started, machine = time.monotonic(), report.machine()  # load before we add ours
        rows = run_scenario(scenario, redis_url, sizes, with_references, only)
        document = {"scenario": scenario, "command": command.strip(), "quick": quick,
                    "finished": datetime.datetime.now(datetime.UTC).isoformat(
                        timespec="seconds"),
                    "seconds": round(time.monotonic() - started, 1),
                    "machine": machine, "results": rows}
        document["notes"] = ratios(scenario, rows)
        print("\n".join(document["notes"]), flush=True)
        print(f"  stored {report.save(scenario, document)}", flush=True)
    rewrite_report()
    return 0


def rewrite_report() -> None:
    """Print the verdicts and rewrite BENCHMARKS.md from the stored results."""
    documents = report.load_all()
    for scenario, document in documents.items():
        document["notes"] = ratios(scenario, document["results"])
    lines = verdicts(documents)
    print("\n" + "\n".join(lines), flush=True)
    print(f"wrote {report.write_document(lines, documents)}", flush=True)
