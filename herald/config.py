"""Settings of every Herald process, read once from environment variables.

Guarantees:
- every setting has one documented default here (``SETTINGS``), and the README's
  configuration table is checked against this list by a test;
- a malformed value is refused at start-up with a message naming the variable and the
  rule, never discovered at request time;
- with ``HERALD_ENV=production`` a missing required setting (``HERALD_SECRET``,
  ``REDIS_URL``) stops the process with a message naming it; in development a secret is
  generated once and kept in ``$HERALD_HOME/secret`` (mode 0600);
- no password or secret is ever shown: ``shown()`` (for ``herald config`` and error
  messages) prints secrets as ``(set)`` and URLs through ``redact_url()``, which every
  log line or message that names a Redis or broker URL uses too.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from herald.errors import ConfigError

DEV_SECRET_FILE = "secret"
DEV_FLOWER_FILE = "flower-password"
DEV_API_KEY_FILE = "apikey"
MIN_SECRET_LENGTH = 32


def redact_url(url: str) -> str:
    """``url`` with its password, in the user info or a ``password`` parameter, as ``***``.

    ``redis://:pw@host:6379/0`` -> ``redis://:***@host:6379/0``. Everything else is kept,
    so the result still says where the URL points.
    """
    try:
        parts = urlsplit(url)
        has_password = parts.password is not None
    except ValueError:
        return "(a malformed URL)"
    if has_password:
        user = parts.netloc.rpartition("@")[0].partition(":")[0]
        host = parts.netloc.rpartition("@")[2]
        url = url.replace(parts.netloc, f"{user}:***@{host}", 1)
    if parts.query:
        query = "&".join(_redact_param(param) for param in parts.query.split("&"))
        url = url.replace(f"?{parts.query}", f"?{query}", 1)
    return url


def _redact_param(param: str) -> str:
    name, _, _ = param.partition("=")
    return f"{name}=***" if name.lower() == "password" else param


def _url(schemes: tuple[str, ...]) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if urlsplit(value).scheme not in schemes:
            raise ValueError(f"must be a URL with scheme {' or '.join(schemes)}")
        return value

    return parse


def _int(low: int, high: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        number = int(value)
        if not low <= number <= high:
            raise ValueError(f"must be an integer from {low} to {high}")
        return number

    return parse


def _float(low: float, high: float) -> Callable[[str], float]:
    def parse(value: str) -> float:
        number = float(value)
        if not low <= number <= high:
            raise ValueError(f"must be a number from {low} to {high}")
        return number

    return parse


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return value

    return parse


def _text(value: str) -> str:
    return value


def _origins(value: str) -> tuple[str, ...]:
    origins = tuple(o.strip().rstrip("/") for o in value.split(",") if o.strip())
    for origin in origins:
        if origin != "*" and urlsplit(origin).scheme not in ("http", "https"):
            raise ValueError("must be a comma-separated list of http(s)://host[:port] or *")
    return origins


HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")


def _algorithms(value: str) -> tuple[str, ...]:
    names = tuple(a.strip().upper() for a in value.split(",") if a.strip())
    if not names or any(name not in HMAC_ALGORITHMS for name in names):
        raise ValueError(f"must be a comma-separated list of {', '.join(HMAC_ALGORITHMS)}")
    return names


def _basic_auth(value: str) -> str:
    user, colon, password = value.partition(":")
    if not (user and colon and password) or "," in value:
        raise ValueError("must be user:password, without commas (Flower splits on them)")
    return value


def _prefix(value: str) -> str:
    if not value or any(c in value for c in " :\r\n\0{}"):
        raise ValueError("must be non-empty, without spaces, colons or braces")
    return value


_REDIS = ("redis", "rediss", "unix")
_BROKER = ("redis", "rediss", "amqp", "amqps", "pyamqp")
_HTTP = ("http", "https")


@dataclass(frozen=True)
class Setting:
    """One environment variable: its attribute, default, parser and meaning."""

    env: str
    attr: str
    default: str | None
    parse: Callable[[str], Any]
    doc: str
    required_in_production: bool = False
    secret: bool = False  # never shown, only whether it is set


def shown(setting: Setting, value: Any) -> str:
    """How a value may be printed: secrets as ``(set)``/``(empty)``, URLs redacted."""
    if setting.secret:
        return "(set)" if value else "(empty)"
    if isinstance(value, tuple):
        value = ",".join(value)
    return redact_url(value) if isinstance(value, str) and "://" in value else str(value)


SETTINGS: tuple[Setting, ...] = (
    Setting("HERALD_ENV", "env", "development", _choice("development", "production"),
            "`production` makes missing required settings fatal and forbids dev secrets."),
    Setting("HERALD_HOME", "home", ".herald", _text,
            "Directory for dev state: generated secret, Flower password, embedded Redis data."),
    Setting("HERALD_SECRET", "secret", None, _text,
            "HMAC key that signs subscriber tokens (32+ characters). Dev: generated.",
            required_in_production=True, secret=True),
    Setting("HERALD_PREFIX", "prefix", "herald", _prefix,
            "Prefix of every Redis key and pub/sub channel, and of Celery's queue, exchanges "
            "and broker keys, so deployments can share a Redis."),
    Setting("REDIS_URL", "redis_url", "redis://127.0.0.1:6379/0", _url(_REDIS),
            "Redis holding records, inboxes, event history and pub/sub.",
            required_in_production=True),
    Setting("CELERY_BROKER_URL", "broker_url", None, _url(_BROKER),
            "Celery broker; defaults to REDIS_URL. RabbitMQ (`amqp://`) works too."),
    Setting("HERALD_API_HOST", "api_host", "127.0.0.1", _text, "Address the API binds."),
    Setting("HERALD_API_PORT", "api_port", "8000", _int(1, 65535), "Port of the API."),
    Setting("HERALD_API_WORKERS", "api_workers", "2", _int(1, 64),
            "gunicorn worker processes for the API in `herald run`."),
    Setting("HERALD_API_HEAD_TIMEOUT", "api_head_timeout", "5", _int(1, 300),
            "Seconds a client has to send each request head to the API, and that an idle "
            "kept-alive connection stays open (gunicorn `--keep-alive`); slower "
            "connections are closed."),
    Setting("HERALD_API_URL", "api_url", None, _url(_HTTP),
            "Where the CLI reaches the API; defaults to http://HERALD_API_HOST:HERALD_API_PORT."),
    Setting("HERALD_STREAMER_HOST", "streamer_host", "127.0.0.1", _text,
            "Address the streamer binds."),
    Setting("HERALD_STREAMER_PORT", "streamer_port", "8001", _int(1, 65535),
            "Port of the streamer (SSE)."),
    Setting("HERALD_STREAMER_PROCESSES", "streamer_processes", "1", _int(1, 256),
            "Streamer processes sharing the port (SO_REUSEPORT); one Redis subscription each."),
    Setting("HERALD_STREAMER_URL", "streamer_url", None, _url(_HTTP),
            "Where clients reach the streamer; defaults to http://HOST:PORT of the streamer."),
    Setting("HERALD_FLOWER_PORT", "flower_port", "5555", _int(1, 65535),
            "Port of Flower in `herald run`."),
    Setting("HERALD_FLOWER_AUTH", "flower_auth", None, _basic_auth,
            "Flower basic auth as `user:password`, given to Flower in its environment. "
            "Dev: `herald:<generated>`.", secret=True),
    Setting("HERALD_WORKER_POOL", "worker_pool", "prefork", _choice("prefork", "gevent", "solo",
                                                                    "threads"),
            "Celery pool of the worker in `herald run` (given on the command line)."),
    Setting("HERALD_WORKER_CONCURRENCY", "worker_concurrency", "2", _int(1, 1000),
            "Celery worker concurrency in `herald run`."),
    Setting("HERALD_HEARTBEAT", "heartbeat", "15", _float(0.05, 300),
            "Seconds between SSE heartbeat comments (keep under proxies' 30-60 s idle limit)."),
    Setting("HERALD_RETRY_MS", "retry_ms", "3000", _int(100, 600_000),
            "`retry:` hint sent to EventSource clients, in milliseconds."),
    Setting("HERALD_TOKEN_ALGORITHMS", "token_algorithms", "HS256", _algorithms,
            "Signature algorithms accepted for subscriber tokens (HMAC only, never `none`); "
            "tokens are minted with the first."),
    Setting("HERALD_API_KEY", "api_key", None, _text,
            "API key the CLI sends to the API. Dev: the key `herald run` keeps in "
            "$HERALD_HOME/apikey.", secret=True),
    Setting("HERALD_PUBLISH_RATE", "publish_rate", "50", _float(0.01, 1_000_000),
            "Sends, publishes and job starts per second allowed per API key."),
    Setting("HERALD_PUBLISH_BURST", "publish_burst", "100", _int(1, 10_000_000),
            "Requests an API key may make at once before HERALD_PUBLISH_RATE applies."),
    Setting("HERALD_MAX_CONNECTIONS_PER_USER", "max_connections_per_user", "20",
            _int(1, 100_000), "Open streams one user may hold on one streamer process."),
    Setting("HERALD_CORS_ORIGINS", "cors_origins", "", _origins,
            "Comma-separated origins (`https://app.example.com`) allowed to call the API "
            "and the streamer from a browser; empty allows none, `*` any."),
    Setting("HERALD_TOKEN_TTL", "token_ttl", "3600", _int(1, 31_536_000),
            "Default lifetime of a minted subscriber token, in seconds."),
    Setting("HERALD_TOKEN_MAX_TTL", "token_max_ttl", "86400", _int(1, 31_536_000),
            "Longest lifetime a token may be minted with, in seconds."),
    Setting("HERALD_MAX_TOPICS", "max_topics", "32", _int(1, 1024),
            "Topics one SSE connection may subscribe to."),
    Setting("HERALD_MAX_RECIPIENTS", "max_recipients", "1000", _int(1, 100_000),
            "Recipients one notification may name (use a topic for more)."),
    Setting("HERALD_CLIENT_BUFFER", "client_buffer", "262144", _int(1024, 1 << 30),
            "Bytes a slow SSE client may fall behind before it is disconnected."),
    Setting("HERALD_SEND_BUFFER", "send_buffer", "262144", _int(0, 1 << 26),
            "Kernel send buffer per SSE socket in bytes (bounds what a stalled client pins "
            "in kernel memory); 0 keeps the kernel's autotuning."),
    Setting("HERALD_REPLAY_MAX", "replay_max", "1000", _int(1, 100_000),
            "Most events replayed to one resuming client per topic; past them the replay "
            "ends with a `reset` event."),
    Setting("HERALD_REPLAY_MAX_BYTES", "replay_max_bytes", "8388608",
            _int(65_536, 1 << 31),
            "Most bytes of events (envelopes) replayed to one resuming client, all topics "
            "together; past them the replay ends with a `reset` event."),
    Setting("HERALD_REPLAY_CONCURRENCY", "replay_concurrency", "8", _int(1, 64),
            "Replays one streamer process reads from Redis at once; others wait their turn "
            "(a replay holds a slot while it reads a page, not while its client reads)."),
    Setting("HERALD_DRAIN_SECONDS", "drain_seconds", "3", _float(0, 300),
            "On SIGTERM the streamer closes its clients spread over this many seconds, so "
            "their reconnections do not all land at once."),
    Setting("HERALD_HISTORY_MAXLEN", "history_maxlen", "1000", _int(1, 10_000_000),
            "Events kept per topic in the replayable history (approximate, Redis `~`)."),
    Setting("HERALD_HISTORY_TTL", "history_ttl", "86400", _int(1, 31_536_000),
            "Seconds an event stays in a topic's history."),
    Setting("HERALD_INBOX_MAX", "inbox_max", "500", _int(1, 100_000),
            "Newest inbox entries kept per user."),
    Setting("HERALD_RETENTION", "retention", "2592000", _int(60, 315_360_000),
            "Seconds notification and job records (and idle inboxes) are kept."),
    Setting("HERALD_TASK_TIME_LIMIT", "task_time_limit", "600", _int(5, 86_400),
            "Hard time limit of a Celery task, in seconds."),
    Setting("HERALD_VISIBILITY_TIMEOUT", "visibility_timeout", "900", _int(10, 172_800),
            "Redis broker: seconds before an unacknowledged task (its worker died) is "
            "delivered again; must exceed HERALD_TASK_TIME_LIMIT."),
    Setting("HERALD_RESTORE_INTERVAL", "restore_interval", "5", _int(1, 3600),
            "Redis broker: seconds between workers' sweeps for tasks to deliver again."),
    Setting("HERALD_LOG_LEVEL", "log_level", "INFO",
            _choice("DEBUG", "INFO", "WARNING", "ERROR"), "Log level of every service."),
)


@dataclass(frozen=True)
class Config:
    """The validated settings of one process; see ``SETTINGS`` for each field."""

    env: str
    home: Path
    secret: str
    prefix: str
    redis_url: str
    broker_url: str
    api_host: str
    api_port: int
    api_workers: int
    api_head_timeout: int
    api_url: str
    streamer_host: str
    streamer_port: int
    streamer_processes: int
    streamer_url: str
    flower_port: int
    flower_auth: str
    worker_pool: str
    worker_concurrency: int
    heartbeat: float
    retry_ms: int
    token_algorithms: tuple[str, ...]
    api_key: str | None
    publish_rate: float
    publish_burst: int
    max_connections_per_user: int
    cors_origins: tuple[str, ...]
    token_ttl: int
    token_max_ttl: int
    max_topics: int
    max_recipients: int
    client_buffer: int
    send_buffer: int
    replay_max: int
    replay_max_bytes: int
    replay_concurrency: int
    drain_seconds: float
    history_maxlen: int
    history_ttl: int
    inbox_max: int
    retention: int
    task_time_limit: int
    visibility_timeout: int
    restore_interval: int
    log_level: str

    @property
    def production(self) -> bool:
        return self.env == "production"

    def replace(self, **changes: Any) -> Config:
        """A copy with some fields changed (tests use it for short heartbeats)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return Config(**values)


def load(environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate every setting; raise ``ConfigError`` listing all problems."""
    env = os.environ if environ is None else environ
    values, problems = _parse_all(env)
    if values.get("env") == "production":
        problems += [
            f"{s.env} is required when HERALD_ENV=production: {s.doc}"
            for s in SETTINGS
            if s.required_in_production and not env.get(s.env)
        ]
    problems += _inconsistencies(values)
    if problems:
        raise ConfigError("; ".join(problems))
    return _complete(values)


def _inconsistencies(values: dict[str, Any]) -> list[str]:
    limit, visibility = values.get("task_time_limit"), values.get("visibility_timeout")
    if limit and visibility and visibility <= limit:
        return [f"HERALD_VISIBILITY_TIMEOUT={visibility} must exceed "
                f"HERALD_TASK_TIME_LIMIT={limit}, or running tasks are delivered twice"]
    return []


def _parse_all(env: Mapping[str, str]) -> tuple[dict[str, Any], list[str]]:
    values: dict[str, Any] = {}
    problems: list[str] = []
    for setting in SETTINGS:
        raw = env.get(setting.env) or setting.default
        if raw is None:
            values[setting.attr] = None
            continue
        try:
            values[setting.attr] = setting.parse(raw)
        except ValueError as exc:
            problems.append(f"{setting.env}={shown(setting, raw)!r} {_rule(exc)}")
    return values, problems


def _rule(exc: ValueError) -> str:
    text = str(exc)
    return text if text.startswith("must") else f"must be valid ({text})"


def _complete(values: dict[str, Any]) -> Config:
    home = Path(values["home"]).expanduser().resolve()
    production = values["env"] == "production"
    values["home"] = home
    values["secret"] = _secret(values["secret"], home, production)
    values["broker_url"] = values["broker_url"] or values["redis_url"]
    values["api_url"] = values["api_url"] or f"http://{_host(values['api_host'])}:{values['api_port']}"
    values["streamer_url"] = values["streamer_url"] or (
        f"http://{_host(values['streamer_host'])}:{values['streamer_port']}"
    )
    values["flower_auth"] = values["flower_auth"] or _dev_flower_auth(home, production)
    if not values["api_key"] and not production:
        values["api_key"] = _read(home / DEV_API_KEY_FILE)
    return Config(**values)


def _host(bind: str) -> str:
    return "127.0.0.1" if bind in ("0.0.0.0", "::", "") else bind


def _secret(secret: str | None, home: Path, production: bool) -> str:
    if secret is not None:
        if len(secret) < MIN_SECRET_LENGTH:
            raise ConfigError(f"HERALD_SECRET must be at least {MIN_SECRET_LENGTH} characters")
        if production and secret == _read(home / DEV_SECRET_FILE):
            raise ConfigError("HERALD_SECRET is the generated dev secret; set a real one")
        return secret
    return _generated(home / DEV_SECRET_FILE, lambda: secrets.token_urlsafe(48))


def _dev_flower_auth(home: Path, production: bool) -> str:
    if production:
        return ""
    return "herald:" + _generated(home / DEV_FLOWER_FILE, lambda: secrets.token_urlsafe(12))


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return None


def _generated(path: Path, make: Callable[[], str]) -> str:
    """Read a dev value from ``path``, creating it (mode 0600) on first use.

    The value is written to a temporary file and hard-linked into place, so processes
    starting together all read the same complete value.
    """
    existing = _read(path)
    if existing:
        return existing
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(make() + "\n")
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return _read(path) or ""


_cached: Config | None = None


def get() -> Config:
    """The process-wide configuration, loaded on first use."""
    global _cached
    if _cached is None:
        _cached = load()
    return _cached


def as_environ(config: Config) -> dict[str, str]:
    """Environment variables that make a child process load the same ``config``."""
    out: dict[str, str] = {}
    for setting in SETTINGS:
        value = getattr(config, setting.attr)
        if isinstance(value, tuple):
            value = ",".join(value)
        if value is not None:
            out[setting.env] = str(value)
    return out
