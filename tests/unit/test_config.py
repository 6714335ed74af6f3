"""Configuration from the environment (no network)."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest

from herald import config
from herald.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


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


def test_production_names_every_missing_setting(tmp_path):
    with pytest.raises(ConfigError) as caught:
        config.load({"HERALD_ENV": "production", "HERALD_HOME": str(tmp_path)})
    assert "HERALD_SECRET is required" in str(caught.value)
    assert "REDIS_URL is required" in str(caught.value)


def test_production_refuses_the_dev_secret(tmp_path):
    dev = config.load({"HERALD_HOME": str(tmp_path)}).secret
    with pytest.raises(ConfigError, match="dev secret"):
        config.load({"HERALD_ENV": "production", "HERALD_HOME": str(tmp_path),
                     "HERALD_SECRET": dev, "REDIS_URL": "redis://r:6379/0"})


@pytest.mark.parametrize(("name", "value", "words"), [
    ("HERALD_API_PORT", "99999", "from 1 to 65535"),
    ("HERALD_API_PORT", "http", "must be valid"),
    ("REDIS_URL", "http://x", "scheme"),
    ("CELERY_BROKER_URL", "kafka://x", "scheme"),
    ("HERALD_ENV", "staging", "one of"),
    ("HERALD_SECRET", "short", "at least 32"),
    ("HERALD_PREFIX", "a:b", "colons"),
    ("HERALD_FLOWER_AUTH", "admin:pa,ss", "user:password"),
    ("HERALD_FLOWER_AUTH", "admin", "user:password"),
])
def test_malformed_values_are_named(tmp_path, name, value, words):
    with pytest.raises(ConfigError) as caught:
        config.load({"HERALD_HOME": str(tmp_path), name: value})
    assert name in str(caught.value) and words in str(caught.value)


def test_readme_documents_every_setting():
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", readme, re.MULTILINE))
    assert documented == {s.env for s in config.SETTINGS}


def test_visibility_timeout_must_exceed_the_task_time_limit(tmp_path):
    with pytest.raises(ConfigError, match="HERALD_VISIBILITY_TIMEOUT=600 must exceed"):
        config.load({"HERALD_HOME": str(tmp_path), "HERALD_TASK_TIME_LIMIT": "600",
                     "HERALD_VISIBILITY_TIMEOUT": "600"})


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
