"""flask-sse served by gunicorn's gevent worker as a reference SSE server.

Guarantees: ``start`` runs ``python -m gunicorn -k gevent -w 1 --worker-connections 19000``
on ``herald_bench.refs.flask_sse_app:app`` (a master and one worker), from the repository root,
with heartbeat files in its own temp dir and gunicorn's control socket off. Every topic
maps to the Redis channel ``flask-sse:<topic>``, so this reference's pub/sub traffic never
meets Herald's (``<prefix>:topic:...``) nor anyone else's. ``publish`` does what
``sse.publish(data, type="bench", channel=...)`` does - a Redis PUBLISH of flask-sse's JSON
message ``{"data": ..., "type": "bench"}`` - over one reused Redis connection; the server
then writes ``event:bench`` and ``data:<compact JSON>`` lines (chunked HTTP/1.1).

Quirks of flask-sse a client must expect: the response headers only arrive with the first
event (the view yields nothing before), so wait for subscribers with
``publisher().subscribers(topic)`` rather than for headers; and each stream holds its own
Redis connection, so Redis' ``maxclients`` bounds the subscriber count. gunicorn gets
``--graceful-timeout 2`` so that SIGTERM stops it within ``stop``'s 5 s.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import redis

from herald.config import redact_url

from . import Reference

REPO_ROOT = Path(__file__).resolve().parents[2]
APP = "herald_bench.refs.flask_sse_app:app"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
CHANNEL_PREFIX = "flask-sse:"
EVENT_TYPE = "bench"
# Importable module -> the pip requirement that brings it.
REQUIREMENTS = {"flask_sse": "flask-sse", "flask": "flask", "gunicorn": "gunicorn",
                "gevent": "gevent", "packaging": "packaging", "redis": "redis"}


def redis_url() -> str:
    """The Redis the reference and its publisher use (``REDIS_URL``, else the default)."""
    return os.environ.get("REDIS_URL", DEFAULT_REDIS_URL)


def channel(topic: str) -> str:
    """The Redis channel carrying ``topic`` for this reference."""
    return CHANNEL_PREFIX + topic


def _missing_requirements() -> list[str]:
    importlib.invalidate_caches()
    return [req for module, req in REQUIREMENTS.items()
            if importlib.util.find_spec(module) is None]


def _pip_install(requirements: list[str]) -> str | None:
    """Install ``requirements`` into the running interpreter's venv; the failure, or None."""
    pip = Path(sys.executable).parent / "pip"
    argv = [str(pip)] if pip.exists() else [sys.executable, "-m", "pip"]
    result = subprocess.run([*argv, "install", "-q", *requirements], capture_output=True,
                            text=True, timeout=600, check=False)
    if result.returncode == 0:
        return None
    tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
    return f"pip install {' '.join(requirements)} failed: {' | '.join(tail)}"


def _redis_problem() -> str | None:
    client = redis.Redis.from_url(redis_url(), socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        return f"Redis at {redact_url(redis_url())} does not answer ({exc})"
    finally:
        client.close()
    return None


def _control_socket_flags() -> list[str]:
    """``--no-control-socket`` where gunicorn has one (it would write under $HOME)."""
    from gunicorn.config import KNOWN_SETTINGS

    names = {setting.name for setting in KNOWN_SETTINGS}
    return ["--no-control-socket"] if "control_socket" in names else []


class FlaskSsePublisher:
    """Publishes flask-sse messages with one reused Redis connection."""

    def __init__(self, url: str) -> None:
        self._redis = redis.Redis.from_url(url)

    def publish(self, topic: str, data: dict) -> None:
        """PUBLISH flask-sse's message JSON for ``data`` with type ``bench``."""
        message = {"data": data, "type": EVENT_TYPE}
        self._redis.publish(channel(topic), json.dumps(message, separators=(",", ":")))

    def subscribers(self, topic: str) -> int:
        """Streams subscribed to ``topic`` (each holds its own Redis subscription)."""
        return int(self._redis.pubsub_numsub(channel(topic))[0][1])

    def close(self) -> None:
        """Close the Redis connection."""
        self._redis.close()


class FlaskSseReference(Reference):
    """flask-sse's blueprint under gunicorn -k gevent, one worker."""

    name = "flask-sse"
    counts_clients = True  # one subscription per client
    _redis_url = DEFAULT_REDIS_URL

    @classmethod
    def locate(cls) -> str | None:
        """None if flask-sse, gunicorn and gevent import and Redis answers; pip-installs."""
        missing = _missing_requirements()
        if missing:
            print(f"flask-sse reference: installing {' '.join(missing)} with pip", flush=True)
            failure = _pip_install(missing)
            if failure:
                return failure
            missing = _missing_requirements()
            if missing:
                return f"{', '.join(missing)} still not importable after pip install"
        return _redis_problem()

    def _argv(self, port: int) -> list[str]:
        return [
            sys.executable, "-m", "gunicorn", "-k", "gevent", "-w", "1",
            "--worker-connections", "19000", "-b", f"127.0.0.1:{port}",
            "--graceful-timeout", "2", "--worker-tmp-dir", str(self.tmpdir),
            *_control_socket_flags(), APP,
        ]

    def start(self, port: int) -> None:
        """Run gunicorn on 127.0.0.1:``port`` and wait until it answers."""
        self._prepare(port)
        pythonpath = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
        self._redis_url = redis_url()
        env = {**os.environ, "REDIS_URL": self._redis_url, "PYTHONPATH": pythonpath}
        self._spawn(self._argv(port), cwd=REPO_ROOT, env=env)
        self._wait_ready(port, "/probe")

    def subscribe_path(self, topic: str) -> str:
        """``/stream?channel=flask-sse:<topic>``."""
        return "/stream?channel=" + quote(channel(topic), safe=":._-")

    def publisher(self) -> FlaskSsePublisher:
        """A publisher on the same Redis as the server."""
        if self.port is None:
            raise RuntimeError("flask-sse reference is not running")
        return FlaskSsePublisher(self._redis_url)
