"""docker-compose.yml is valid and keeps its promises (checked with `docker-compose config`)."""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess

import pytest
import yaml

from tests.conftest import ROOT

pytestmark = pytest.mark.skipif(shutil.which("docker-compose") is None,
                                reason="docker-compose not installed (.ci/run installs it)")
SECRETS = {"HERALD_SECRET": "s" * 40, "HERALD_FLOWER_AUTH": "ops:pw",
           "HERALD_GRAFANA_PASSWORD": "grafana-pw"}
WORKERS = ("worker-inapp", "worker-outbound")


def _config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    return subprocess.run(["docker-compose", "config"], cwd=ROOT, env={**clean, **env},
                          capture_output=True, text=True, timeout=60)


def test_secrets_must_come_from_the_environment():
    for missing in SECRETS:
        env = {k: v for k, v in SECRETS.items() if k != missing}
        result = _config(env)
        assert result.returncode != 0
        assert missing in result.stderr


def test_services_healthchecks_limits_and_auth():
    result = _config(SECRETS)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert {"redis", "api", "worker-inapp", "worker-outbound", "streamer", "flower",
            "edge"} <= set(services)
    redis_command = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis_command and "noeviction" in redis_command
    for name in ("redis", "api", *WORKERS, "streamer", "flower"):
        assert "healthcheck" in services[name], name
    for name in (*WORKERS, "streamer"):
        assert "container_name" not in services[name] and "ports" not in services[name]
    assert services["streamer"]["ulimits"]["nofile"]["soft"] >= 65536
    assert "gunicorn" in services["api"]["command"]
    worker = services["worker-inapp"]["command"]
    assert worker[worker.index("-P") + 1] in ("prefork", "gevent")
    flower = " ".join(services["flower"]["command"])
    assert "-A tasks.app flower" in flower, "Flower needs tasks.settings' names and prefix"
    assert "ops:pw" not in flower, "a password on the command line is visible to all users"
    assert services["flower"]["environment"]["FLOWER_BASIC_AUTH"] == "ops:pw"
    assert all(str(p).startswith("127.0.0.1:") or p.get("host_ip") == "127.0.0.1"
               for p in services["flower"]["ports"])
    for name in ("api", *WORKERS, "streamer", "flower"):
        env = services[name]["environment"]
        assert env["HERALD_ENV"] == "production" and env["HERALD_SECRET"] == "s" * 40


def _option(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


@pytest.mark.parametrize("prefix", ["herald", "acme"])
def test_in_app_and_outbound_workers_are_separate_services_splitting_the_queues(prefix):
    """Each scales on its own (no container name, no port), and a slow outside service
    never takes an in-app worker's slots: the queues of ``herald run``'s two workers."""
    from herald.keys import Keys
    from herald.stack import worker_queues

    env = {**SECRETS, "HERALD_PREFIX": prefix} if prefix != "herald" else SECRETS
    result = _config(env)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    inapp, outbound = (services[name]["command"] for name in WORKERS)
    assert [_option(inapp, "-Q"), _option(outbound, "-Q")] == [
        ",".join(queues) for queues in worker_queues(Keys(prefix))]
    assert _option(outbound, "-P") == "gevent" and _option(outbound, "-c") == "50"
    assert _option(inapp, "-n") == "herald@%h" and _option(outbound, "-n") == "outbound@%h"
    for name in WORKERS:
        assert services[name]["environment"]["HERALD_PREFIX"] == prefix
        assert "$HOSTNAME" in " ".join(services[name]["healthcheck"]["test"])


def test_smtp_settings_come_from_the_environment():
    env = {**SECRETS, "HERALD_SMTP_URL": "smtp://mailer:pw@mail.example.com:587",
           "HERALD_MAIL_FROM": "Acme <noreply@example.com>",
           "HERALD_PUBLIC_URL": "https://herald.example.com"}
    result = _config(env)
    assert result.returncode == 0, result.stderr
    outbound = yaml.safe_load(result.stdout)["services"]["worker-outbound"]["environment"]
    assert outbound["HERALD_SMTP_URL"] == "smtp://mailer:pw@mail.example.com:587"
    assert outbound["HERALD_MAIL_FROM"] == "Acme <noreply@example.com>"
    assert outbound["HERALD_API_URL"] == "https://herald.example.com"  # unsubscribe links


def _options(command: list[str]) -> dict[str, str]:
    """The ``--name value`` pairs of a command line."""
    return {arg: value for arg, value in itertools.pairwise(command)
            if arg.startswith("--")}


def _dockerfile_command() -> list[str]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    line = next(line for line in text.splitlines() if line.startswith("CMD "))
    return json.loads(line.removeprefix("CMD "))


def test_the_api_runs_with_the_worker_and_limits_of_herald_run(config):
    from herald.stack import services as stack

    herald_run = _options(next(s.command for s in stack(config) if s.name == "api"))
    result = _config(SECRETS)
    assert result.returncode == 0, result.stderr
    compose = yaml.safe_load(result.stdout)["services"]["api"]["command"]
    same = ("--worker-class", "--keep-alive", "--limit-request-line",
            "--limit-request-fields", "--limit-request-field_size")
    for command in (compose, _dockerfile_command()):
        options = _options(command)
        assert {name: options.get(name) for name in same} == {
            name: herald_run[name] for name in same}
        assert options["--control-socket"].startswith("/var/lib/herald/")


# The metric names agreed for issue 13 (and listed in the README's "Metrics and
# monitoring"): the dashboard and the alerts may use these and no others.
METRICS = {
    "herald_api_requests_total", "herald_api_request_seconds",
    "herald_notifications_accepted_total", "herald_notifications_refused_total",
    "herald_streamer_connections", "herald_streamer_handshakes_refused_total",
    "herald_streamer_topics", "herald_streamer_events_received_total",
    "herald_streamer_deliveries_total", "herald_streamer_bytes_written_total",
    "herald_streamer_clients_dropped_total", "herald_streamer_resumes_total",
    "herald_streamer_replayed_events_total", "herald_streamer_resets_total",
    "herald_streamer_redis_reconnects_total", "herald_streamer_event_age_seconds",
    "herald_tasks_total", "herald_task_seconds", "herald_deliveries_total",
    "herald_dead_letters", "herald_queue_length",
}
HISTOGRAM_SERIES = re.compile(r"_(bucket|sum|count)$")
# Each scraped service, its internal metrics port, and the Prometheus job finding it.
SCRAPED = {"api": (9101, "herald-api"), "worker-inapp": (9300, "herald-worker"),
           "worker-outbound": (9300, "herald-worker"), "streamer": (9200, "herald-streamer")}
DEPLOY = ROOT / "deploy"


def _metric_names(text: str) -> set[str]:
    """The ``herald_*`` metric families a PromQL text uses (histogram series folded)."""
    names = set(re.findall(r"\bherald_[a-z_]+", text))
    return {HISTOGRAM_SERIES.sub("", name) if HISTOGRAM_SERIES.sub("", name) in METRICS
            else name for name in names}


def _published(service: dict) -> list[int]:
    """The container ports a service publishes on the host."""
    found = []
    for port in service.get("ports", []):
        found.append(int(port["target"]) if isinstance(port, dict)
                     else int(str(port).rsplit(":", 1)[-1].split("/")[0]))
    return found


def test_prometheus_and_grafana_run_beside_herald_on_loopback_only():
    result = _config(SECRETS)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    prometheus, grafana = services["prometheus"], services["grafana"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    assert "/etc/prometheus" in {_target(v) for v in _volumes(prometheus)}
    assert {"/etc/grafana/provisioning", "/etc/grafana/dashboards"} <= {
        _target(v) for v in _volumes(grafana)}
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "grafana-pw"
    assert grafana["environment"]["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    for name in ("prometheus", "grafana", "flower"):
        assert all(str(p).startswith("127.0.0.1:") or p.get("host_ip") == "127.0.0.1"
                   for p in services[name]["ports"]), name


def _volumes(service: dict) -> list:
    return service.get("volumes", [])


def _target(volume: str | dict) -> str:
    return volume["target"] if isinstance(volume, dict) else volume.split(":")[1]


@pytest.mark.parametrize("scale", [False, True])
def test_metrics_ports_are_internal_and_every_replica_is_scraped(scale):
    """No metrics port is published to the host; each scraped service serves /metrics on
    its port on the compose network (0.0.0.0 inside it), and Prometheus finds every
    replica of it through Docker's DNS (type A: one record per container), so
    ``--scale`` needs no change to its configuration."""
    result = _config(SECRETS)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    for name, service in services.items():
        assert not {9101, 9200, 9300} & set(_published(service)), name
    jobs = {job["job_name"]: job for job in
            yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())[
                "scrape_configs"]}
    for name, (port, job) in SCRAPED.items():
        env = services[name]["environment"]
        assert env["HERALD_METRICS_HOST"] == "0.0.0.0"
        kind = "API" if name == "api" else "STREAMER" if name == "streamer" else "WORKER"
        assert env[f"HERALD_{kind}_METRICS_PORT"] == str(port)
        assert "container_name" not in services[name]  # --scale needs none
        found = [sd for sd in jobs[job]["dns_sd_configs"] if name in sd["names"]]
        assert found and found[0]["type"] == "A" and found[0]["port"] == port, (name, job)


def test_the_dashboard_loads_and_uses_only_herald_metrics():
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "herald.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"]
             for target in panel.get("targets", [])]
    used = set().union(*map(_metric_names, exprs))
    assert used <= METRICS, used - METRICS
    for needed in ("herald_streamer_connections", "herald_streamer_deliveries_total",
                   "herald_streamer_event_age_seconds", "herald_streamer_clients_dropped_total",
                   "herald_streamer_resets_total", "herald_api_requests_total",
                   "herald_tasks_total", "herald_queue_length"):
        assert needed in used, needed
    titles = " ".join(panel["title"] for panel in dashboard["panels"]).lower()
    for word in ("connections", "deliveries/s", "p50, p99", "dropped", "resets", "errors",
                 "tasks/s", "retries", "queue lengths"):
        assert word in titles, word
    source = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" /
                             "prometheus.yml").read_text())["datasources"][0]
    assert source["url"] == "http://prometheus:9090"
    assert {t["datasource"]["uid"] for p in dashboard["panels"]
            for t in p.get("targets", [])} == {source["uid"]}
    provider = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" /
                               "herald.yml").read_text())["providers"][0]
    assert provider["options"]["path"] == "/etc/grafana/dashboards"


def test_the_alert_rules_use_only_herald_metrics_and_cover_the_issue():
    groups = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"]
    rules = {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}
    used = set().union(*map(_metric_names, rules.values()))
    assert used <= METRICS, used - METRICS
    for metric in ("herald_streamer_event_age_seconds", "herald_streamer_clients_dropped_total",
                   "herald_streamer_redis_reconnects_total", "herald_dead_letters"):
        assert metric in used, metric


@pytest.mark.skipif(shutil.which("promtool") is None,
                    reason="promtool not installed (.ci/run installs Debian's prometheus)")
def test_promtool_accepts_the_config_and_the_rules_and_their_tests_pass():
    prometheus = DEPLOY / "prometheus"
    for command in (["check", "config", "prometheus.yml"], ["check", "rules", "alerts.yml"],
                    ["test", "rules", "alerts.test.yml"]):
        done = subprocess.run(["promtool", *command], cwd=prometheus, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
