"""The herald command against the running services, as a user types it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import jwt
import pytest

from herald import tokens
from herald.stack import free_port
from tasks.events import publish
from tests.conftest import ROOT, start_streamer

pytestmark = pytest.mark.usefixtures("clean", "worker")
HERALD = str(Path(sys.executable).with_name("herald"))


@pytest.fixture
def cli_env(child_env, api_url, streamer):
    """``cli_env(key="")``: the environment of a user's shell, pointed at the services."""
    def make(key: str = "") -> dict[str, str]:
        return {**child_env, "HERALD_API_URL": api_url, "HERALD_STREAMER_URL": streamer,
                "HERALD_API_KEY": key}

    return make


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HERALD, *args], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=30)


class Listener:
    """``herald listen`` in the background, its output lines collected."""

    def __init__(self, topics: list[str], env: dict[str, str], raw: bool = False) -> None:
        args = [HERALD, "listen", *topics] + (["--raw"] if raw else [])
        self.process = subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.connected = threading.Event()
        self.connections = 0
        threading.Thread(target=self._read, args=(self.process.stdout, self.lines),
                         daemon=True).start()
        threading.Thread(target=self._watch_err, daemon=True).start()

    def _read(self, stream, into: list[str]) -> None:
        for line in stream:
            into.append(line.rstrip("\n"))

    def _watch_err(self) -> None:
        for line in self.process.stderr:
            if "connected" in line:
                self.connections += 1
                self.connected.set()

    def wait_line(self, words: str, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines:
                if words in line:
                    return line
            time.sleep(0.02)
        return None

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(5)


def test_send_appears_in_listen(cli_env, api_key):
    env = cli_env(api_key)
    listener = Listener(["user:alice"], env)
    try:
        assert listener.connected.wait(10), "herald listen did not connect"
        sent = _run(["send", "alice", "Hello", "from the CLI"], env)
        assert sent.returncode == 0, sent.stderr
        line = listener.wait_line("Hello", 10.0)
        assert line is not None, "herald listen did not print the notification"
        assert "user:alice notification" in line and "from the CLI" in line
        assert sent.stdout.strip() in line
    finally:
        listener.stop()


def test_listen_gives_up_when_fresh_tokens_are_refused_too(cli_env):
    """A refused token is retried once with a fresh one; refused again, listen exits 1."""
    env = {**cli_env(), "HERALD_SECRET": "another-deployment-" + "x" * 32}
    refused = _run(["listen", "user:alice"], env)
    assert refused.returncode == 1, refused.stderr
    assert "401" in refused.stderr and "signature" in refused.stderr.lower()


def test_listen_outlives_its_tokens(cli_env):
    """The streamer ends a stream at its token's expiry: listen carries on, missing nothing."""
    env = {**cli_env(), "HERALD_TOKEN_MAX_TTL": "1"}
    listener = Listener(["room:6"], env, raw=True)
    try:
        assert listener.connected.wait(10)
        published = []
        while listener.connections < 3:  # across two expiries at least
            assert len(published) < 100, "herald listen did not reconnect at its token's expiry"
            published.append(publish("room:6", len(published), "tick"))
            time.sleep(0.2)
        published.append(publish("room:6", len(published), "tick"))
        sentinel = publish("room:6", "sentinel", "sentinel")
        assert listener.wait_line(sentinel, 10.0) is not None
        ids = [json.loads(line)["id"] for line in listener.lines]
        assert ids[:ids.index(sentinel)] == published
        assert listener.process.poll() is None
    finally:
        listener.stop()


def test_publish_and_raw_listen(cli_env):
    env = cli_env()
    listener = Listener(["room:5", "broadcast"], env, raw=True)
    try:
        assert listener.connected.wait(10)
        published = _run(["publish", "room:5", '{"seat": 12}', "--type", "booking"], env)
        assert published.returncode == 0, published.stderr
        line = listener.wait_line("booking", 2.0)
        envelope = json.loads(line)
        assert envelope["id"] == published.stdout.strip()
        assert envelope["data"] == {"seat": 12} and envelope["topic"] == "room:5"
    finally:
        listener.stop()


def test_token_command_and_refusals(cli_env, config, api_key):
    env = cli_env(api_key)
    minted = _run(["token", "alice", "--topic", "room:*", "--ttl", "60"], env)
    assert minted.returncode == 0
    grant = tokens.verify(config.secret, minted.stdout.strip())
    assert grant.user == "alice" and grant.topics == ("room:*",)

    assert _run(["token", "Not A User"], env).returncode == 2
    assert _run(["token", "alice", "--ttl", "99999999"], env).returncode == 2
    bad_json = _run(["publish", "room:5", "{nope"], env)
    assert bad_json.returncode == 2 and "not JSON" in bad_json.stderr
    bad_topic = _run(["publish", "Room 5", "1"], env)
    assert bad_topic.returncode == 2 and "must match" in bad_topic.stderr
    refused = _run(["send", "Alice", "x"], env)
    assert refused.returncode == 1 and "recipients.0" in refused.stderr


def test_token_and_listen_mint_with_the_configured_algorithm(cli_env, config):
    """With HERALD_TOKEN_ALGORITHMS=HS512 the CLI's tokens are HS512 ones, which a
    streamer of that deployment (accepting HS512 only) takes."""
    env = {**cli_env(), "HERALD_TOKEN_ALGORITHMS": "HS512"}
    process, url = start_streamer(env, name="streamer-hs512")
    env["HERALD_STREAMER_URL"] = url
    listener = Listener(["user:alice"], env, raw=True)
    try:
        minted = _run(["token", "alice"], env)
        assert minted.returncode == 0, minted.stderr
        token = minted.stdout.strip()
        assert jwt.get_unverified_header(token)["alg"] == "HS512"
        assert tokens.verify(config.secret, token, ("HS512",)).user == "alice"
        assert listener.connected.wait(10), "herald listen was refused by the streamer"
        event_id = publish("user:alice", {"n": 1}, "note")
        assert listener.wait_line(event_id, 5.0) is not None
    finally:
        listener.stop()
        process.stop()


def test_production_mode_refuses_to_start_without_its_settings():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HERALD_", "REDIS_URL"))}
    env.update({"HERALD_ENV": "production", "PATH": os.environ["PATH"]})
    result = subprocess.run([sys.executable, "-m", "streamer"], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "HERALD_SECRET is required" in result.stderr
    assert "REDIS_URL is required" in result.stderr
    worker = subprocess.run([sys.executable, "-m", "celery", "-A", "tasks.app", "report"],
                            env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert worker.returncode != 0 and "HERALD_SECRET is required" in worker.stderr


def test_config_shows_urls_without_their_passwords(child_env):
    env = {**child_env, "REDIS_URL": "redis://:s3cret-redis@127.0.0.1:6390/15",
           "CELERY_BROKER_URL": "amqp://herald:s3cret-amqp@rabbit:5672//"}
    shown = _run(["config"], env)
    assert shown.returncode == 0, shown.stderr
    assert "s3cret" not in shown.stdout + shown.stderr
    assert "REDIS_URL=redis://:***@127.0.0.1:6390/15" in shown.stdout
    assert "CELERY_BROKER_URL=amqp://herald:***@rabbit:5672//" in shown.stdout


def test_publish_with_redis_down_fails_with_one_line(child_env):
    env = {**child_env, "REDIS_URL": f"redis://:pw-not-shown@127.0.0.1:{free_port()}/15"}
    failed = _run(["publish", "room:5", '{"seat": 12}'], env)
    assert failed.returncode == 1
    assert "Traceback" not in failed.stderr
    lines = failed.stderr.strip().splitlines()
    assert len(lines) == 1 and "Redis" in lines[0] and "Connection refused" in lines[0], lines
    assert "pw-not-shown" not in failed.stderr
