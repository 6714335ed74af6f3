"""docker-compose.yml is valid and keeps its promises (checked with `docker-compose config`)."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess

import pytest
import yaml

from tests.conftest import ROOT

pytestmark = pytest.mark.skipif(shutil.which("docker-compose") is None,
                                reason="docker-compose not installed (.ci/run installs it)")
SECRETS = {"HERALD_SECRET": "s" * 40, "HERALD_FLOWER_AUTH": "ops:pw"}
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
