"""``herald bench``: the benchmark's command, added to the ``herald`` CLI as a plugin.

``setup.cfg`` registers ``bench`` in the ``herald.commands`` entry-point group; the
``herald`` command loads it from there, so ``herald`` itself imports nothing of this
package. Importing this module costs only click: the benchmark is imported when it runs.
"""

from __future__ import annotations

import sys

import click

SCENARIOS = ("fanout", "throughput", "routing", "slow", "notify")
TARGETS = ("herald", "herald x2", "nchan", "flask-sse", "naive")


@click.command()
@click.argument("scenario", type=click.Choice([*SCENARIOS, "all", "report"]))
@click.option("--quick", is_flag=True, help="Small sizes: a smoke run, not figures.")
@click.option("--no-references", is_flag=True,
              help="Skip nginx+nchan, flask-sse and the naive Flask + Celery stack.")
@click.option("--only", "only", multiple=True, type=click.Choice(TARGETS),
              help="Measure only these targets (repeatable).")
def bench(scenario: str, quick: bool, no_references: bool, only: tuple[str, ...]) -> None:
    """Benchmark the streamer and the notification path (and the references) and update
    BENCHMARKS.md.

    ``report`` only rewrites BENCHMARKS.md from the stored results.
    """
    from herald import config as herald_config
    from herald import stack
    from herald.errors import ConfigError, HeraldError

    try:
        from herald_bench.run import main, rewrite_report
    except ImportError as exc:
        raise click.ClickException(f"the benchmark needs the dev extras: {exc}") from exc
    if scenario == "report":
        rewrite_report()
        return
    try:
        cfg, embedded = stack.with_redis(herald_config.load())
    except ConfigError as exc:
        raise click.ClickException(f"configuration error: {exc}") from exc
    except HeraldError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        scenarios = list(SCENARIOS) if scenario == "all" else [scenario]
        sys.exit(main(scenarios, cfg.redis_url, quick, not no_references, only))
    finally:
        if embedded is not None:
            embedded.stop()
