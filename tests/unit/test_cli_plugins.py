"""Commands of packages above herald join the ``herald`` CLI as entry-point plugins."""

from __future__ import annotations

from importlib.metadata import EntryPoint

from click.testing import CliRunner

from herald import cli


def test_bench_is_registered_as_a_plugin_and_listed():
    assert cli._plugins()["bench"].value == "herald_bench.cli:bench"
    shown = CliRunner().invoke(cli.main, ["--help"])
    assert shown.exit_code == 0 and "bench " in shown.output
    helped = CliRunner().invoke(cli.main, ["bench", "--help"])
    assert helped.exit_code == 0, helped.output
    assert "fanout|throughput|routing|slow|notify|all|report" in helped.output


def test_a_plugin_that_cannot_be_imported_says_why_when_run(monkeypatch):
    broken = EntryPoint("broken", "no_such_module_here:command", cli.PLUGIN_GROUP)
    monkeypatch.setattr(cli, "_plugins", lambda: {"broken": broken})
    listed = CliRunner().invoke(cli.main, ["--help"])
    assert listed.exit_code == 0 and "broken" in listed.output
    ran = CliRunner().invoke(cli.main, ["broken", "--quick"])
    assert ran.exit_code == 1
    assert "no_such_module_here:command cannot be imported" in ran.output


def test_bench_reads_the_configuration_and_names_a_bad_setting(monkeypatch):
    """Before any benchmark runs, ``herald bench`` loads the settings like every command."""
    monkeypatch.setenv("HERALD_RETRY_MS", "5")
    ran = CliRunner().invoke(cli.main, ["bench", "fanout"])
    assert ran.exit_code == 1, ran.output
    assert "configuration error" in ran.output and "HERALD_RETRY_MS" in ran.output
