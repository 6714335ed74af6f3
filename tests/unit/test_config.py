"""Configuration: one declaration per setting, read from the environment (no network)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from herald import config
from herald.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
# Settings whose value is free text: every other one must declare a rule.
FREE_TEXT = {"HERALD_HOME", "HERALD_API_HOST", "HERALD_STREAMER_HOST", "HERALD_API_KEY",
             "HERALD_TEMPLATES_DIR", "HERALD_METRICS_HOST"}
# Settings whose rule is a validator of ours: a value each refuses, and words of its rule.
CHECKED = {
    "REDIS_URL": ("http://x", "scheme redis or rediss or unix"),
    "CELERY_BROKER_URL": ("kafka://x", "scheme"),
    "HERALD_API_URL": ("ftp://x", "scheme http or https"),
    "HERALD_STREAMER_URL": ("redis://x", "scheme http or https"),
    "HERALD_PREFIX": ("a:b", "colons"),
    "HERALD_FLOWER_AUTH": ("admin:pa,ss", "user:password"),
    "HERALD_CORS_ORIGINS": ("app.example.com", "http(s)://host[:port]"),
    "HERALD_TOKEN_ALGORITHMS": ("HS256,none", "HS256, HS384, HS512"),
    "HERALD_CATEGORIES": ("news,alerts", "must include 'general'"),
    "HERALD_SMTP_URL": ("http://mail", "scheme smtp or smtps"),
    "HERALD_MAIL_FROM": ("not an address", "must be an address"),
    "HERALD_WEBHOOK_ALLOW_PRIVATE": ("maybe", "valid boolean"),
}


def _ruled() -> list[tuple[str, str, str]]:
    """(variable, bad value, words of the rule) for every setting with a declared rule."""
    cases = []
    for setting in config.SETTINGS:
        rule = setting.rule or ""
        if rule.startswith("must be an integer from") or rule.startswith("must be a number"):
            low, high = rule.rsplit(" from ", 1)[1].split(" to ")
            cases += [(setting.env, value, rule) for value in
                      (str(float(low) - 1), str(float(high) * 2), "x", "nan")]
        elif rule.startswith("must be one of"):
            cases.append((setting.env, "nope", rule))
        elif rule.startswith("must be at least"):
            cases.append((setting.env, "short", rule))
    cases += [(env, value, words) for env, (value, words) in CHECKED.items()]
    return cases


def test_defaults_and_dev_secret(tmp_path):
    cfg = config.load({"HERALD_HOME": str(tmp_path)})
    assert cfg.env == "development" and cfg.api_port == 8000 and cfg.streamer_port == 8001
    assert cfg.broker_url == cfg.redis_url == "redis://127.0.0.1:6379/0"
    assert cfg.api_url == "http://127.0.0.1:8000"
    secret_file = tmp_path / "secret"
    assert len(cfg.secret) >= 32 and secret_file.read_text().strip() == cfg.secret
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert config.load({"HERALD_HOME": str(tmp_path)}).secret == cfg.secret
    assert cfg.flower_auth.startswith("herald:")


def test_streamer_timings_default_to_what_they_were_before_they_were_settings(tmp_path):
    cfg = config.load({"HERALD_HOME": str(tmp_path)})
    assert (cfg.streamer_head_timeout, cfg.write_timeout, cfg.subscribe_timeout,
            cfg.pubsub_keepalive, cfg.pubsub_silence, cfg.revocation_poll) == (
        5.0, 30.0, 5.0, 15.0, 45.0, 3.0)


def test_production_names_every_missing_setting(tmp_path):
    with pytest.raises(ConfigError) as caught:
        config.load({"HERALD_ENV": "production", "HERALD_HOME": str(tmp_path)})
    assert "HERALD_SECRET is required" in str(caught.value)
    assert "REDIS_URL is required" in str(caught.value)
    assert not (tmp_path / "secret").exists(), "production generated a dev secret"


def test_production_refuses_the_dev_secret(tmp_path):
    dev = config.load({"HERALD_HOME": str(tmp_path)}).secret
    with pytest.raises(ConfigError, match="dev secret"):
        config.load({"HERALD_ENV": "production", "HERALD_HOME": str(tmp_path),
                     "HERALD_SECRET": dev, "REDIS_URL": "redis://r:6379/0"})


def test_production_generates_nothing(tmp_path):
    cfg = config.load({"HERALD_ENV": "production", "HERALD_HOME": str(tmp_path),
                       "HERALD_SECRET": "s" * 40, "REDIS_URL": "redis://r:6379/0"})
    assert cfg.production and cfg.flower_auth == "" and cfg.api_key is None
    assert list(tmp_path.iterdir()) == []


def test_every_setting_declares_a_rule_or_is_free_text():
    unruled = {s.env for s in config.SETTINGS if s.rule is None} - set(CHECKED)
    assert unruled == FREE_TEXT


@pytest.mark.parametrize(("name", "value", "words"), _ruled())
def test_a_value_outside_its_rule_is_refused_naming_the_variable(tmp_path, name, value, words):
    with pytest.raises(ConfigError) as caught:
        config.load({"HERALD_HOME": str(tmp_path), name: value})
    message = str(caught.value)
    assert message.startswith(name) and words in message
    assert "\n" not in message


def test_every_problem_is_named_at_once(tmp_path):
    with pytest.raises(ConfigError) as caught:
        config.load({"HERALD_HOME": str(tmp_path), "HERALD_API_PORT": "0",
                     "HERALD_LOG_LEVEL": "LOUD", "REDIS_URL": "http://r"})
    message = str(caught.value)
    assert all(name in message for name in ("HERALD_API_PORT", "HERALD_LOG_LEVEL", "REDIS_URL"))


def test_secrets_are_never_shown(tmp_path):
    secret = "a-real-secret-" + "x" * 20
    cfg = config.load({"HERALD_HOME": str(tmp_path), "HERALD_SECRET": secret,
                       "HERALD_FLOWER_AUTH": "ops:hunter2", "HERALD_API_KEY": "hk_secret"})
    assert not any(s in repr(cfg) for s in (secret, "hunter2", "hk_secret"))
    with pytest.raises(ConfigError) as caught:
        config.load({"HERALD_HOME": str(tmp_path), "HERALD_SECRET": "short-secret",
                     "HERALD_FLOWER_AUTH": "hunter2"})
    assert "short-secret" not in str(caught.value) and "hunter2" not in str(caught.value)


def test_visibility_timeout_must_exceed_the_task_time_limit(tmp_path):
    with pytest.raises(ConfigError, match="HERALD_VISIBILITY_TIMEOUT=600 must exceed"):
        config.load({"HERALD_HOME": str(tmp_path), "HERALD_TASK_TIME_LIMIT": "600",
                     "HERALD_VISIBILITY_TIMEOUT": "600"})


def test_pubsub_silence_must_exceed_the_keepalive(tmp_path):
    with pytest.raises(ConfigError, match="HERALD_PUBSUB_SILENCE=2 must exceed"):
        config.load({"HERALD_HOME": str(tmp_path), "HERALD_PUBSUB_KEEPALIVE": "2",
                     "HERALD_PUBSUB_SILENCE": "2"})


@pytest.mark.parametrize("name", ["HERALD_API_METRICS_PORT", "HERALD_WORKER_METRICS_PORT"])
@pytest.mark.parametrize(("public", "port"), [("HERALD_API_PORT", "8000"),
                                              ("HERALD_STREAMER_PORT", "8001")])
def test_a_metrics_port_is_never_a_public_port(tmp_path, name, public, port):
    with pytest.raises(ConfigError, match=f"{name}={port} must differ from {public}"):
        config.load({"HERALD_HOME": str(tmp_path), name: port})


def test_a_metrics_port_of_0_turns_the_endpoint_off(tmp_path):
    cfg = config.load({"HERALD_HOME": str(tmp_path), "HERALD_API_METRICS_PORT": "0",
                       "HERALD_WORKER_METRICS_PORT": "0"})
    assert (cfg.api_metrics_port, cfg.worker_metrics_port) == (0, 0)
    assert (cfg.metrics_host, config.load({"HERALD_HOME": str(tmp_path)}).api_metrics_port
            ) == ("127.0.0.1", 9101)


def test_streamer_metrics_default_to_an_internal_port_and_0_turns_them_off(tmp_path):
    cfg = config.load({"HERALD_HOME": str(tmp_path)})
    assert (cfg.metrics_host, cfg.streamer_metrics_port) == ("127.0.0.1", 9200)
    off = config.load({"HERALD_HOME": str(tmp_path), "HERALD_STREAMER_METRICS_PORT": "0",
                       "HERALD_STREAMER_PORT": "9200"})
    assert off.streamer_metrics_port == 0


def test_streamer_metrics_ports_are_never_the_public_port(tmp_path):
    with pytest.raises(ConfigError, match="HERALD_STREAMER_PORT=9201 must not be one of"):
        config.load({"HERALD_HOME": str(tmp_path), "HERALD_STREAMER_PORT": "9201",
                     "HERALD_STREAMER_PROCESSES": "2"})
    cfg = config.load({"HERALD_HOME": str(tmp_path), "HERALD_STREAMER_PORT": "9202",
                       "HERALD_STREAMER_PROCESSES": "2"})
    assert cfg.streamer_metrics_port == 9200


def test_streamer_metrics_need_a_port_per_process(tmp_path):
    with pytest.raises(ConfigError, match="one port per process"):
        config.load({"HERALD_HOME": str(tmp_path), "HERALD_STREAMER_METRICS_PORT": "65535",
                     "HERALD_STREAMER_PROCESSES": "2"})


def test_a_given_environment_replaces_the_process_one(tmp_path, monkeypatch):
    monkeypatch.setenv("HERALD_API_PORT", "1234")
    monkeypatch.setenv("HERALD_HOME", str(tmp_path))
    assert config.load().api_port == 1234
    assert config.load({"HERALD_HOME": str(tmp_path)}).api_port == 8000
    assert config.load({"HERALD_HOME": str(tmp_path), "HERALD_API_PORT": ""}).api_port == 8000


def test_a_child_given_as_environ_loads_the_same_config(tmp_path):
    cfg = config.load({"HERALD_HOME": str(tmp_path), "HERALD_CORS_ORIGINS": "https://a.b,*",
                       "HERALD_HEARTBEAT": "0.25", "HERALD_TOKEN_ALGORITHMS": "hs512,HS256"})
    assert config.load(config.as_environ(cfg)) == cfg


def test_readme_table_is_the_generated_one():
    readme = (ROOT / "README.md").read_text()
    begin = readme.index("| Variable | Default | Meaning |")
    end = readme.index("<!-- end of generated table -->")
    assert readme[begin:end] == config.markdown_table(), (
        "README's configuration table is stale: paste `herald config --markdown`")


def test_herald_config_markdown_prints_the_table():
    herald = Path(sys.executable).with_name("herald")
    done = subprocess.run([str(herald), "config", "--markdown"], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "HERALD_RETRY_MS": "5"})
    assert done.returncode == 0, done.stderr  # the defaults, not the settings in effect
    assert done.stdout == config.markdown_table()


def test_importing_the_code_reads_no_configuration(tmp_path):
    """A bad setting breaks no import: only the entry points' ``load()`` reads it."""
    modules = ("api", "api.wsgi", "api.notifications", "tasks.app", "tasks.factory",
               "tasks.notifications", "tasks.jobs", "tasks.events", "tasks.demo",
               "streamer.server", "herald.cli", "herald.services", "herald.stack")
    env = {**os.environ, "HERALD_HOME": str(tmp_path), "HERALD_RETRY_MS": "5"}
    done = subprocess.run([sys.executable, "-c", f"import {', '.join(modules)}"], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "secret").exists(), "an import generated the dev secret"


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://:pw@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
    ("rediss://default:p%40ss@cache.example.com:6380/1",
     "rediss://default:***@cache.example.com:6380/1"),
    ("amqp://guest:guest@rabbit:5672//", "amqp://guest:***@rabbit:5672//"),
    ("redis://127.0.0.1:6379/0?password=pw&db=2", "redis://127.0.0.1:6379/0?password=***&db=2"),
    ("redis://user@127.0.0.1:6379/0", "redis://user@127.0.0.1:6379/0"),
    ("unix:///run/redis.sock", "unix:///run/redis.sock"),
    ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
])
def test_urls_are_shown_without_their_passwords(url, shown):
    assert config.redact_url(url) == shown
