"""Settings of every Herald process: declared once in ``Config``, read once at start-up.

Guarantees:
- each setting is declared once, as a field of ``Config``: its environment variable,
  default, rule and meaning; ``SETTINGS`` describes them for ``herald config``, and the
  README's configuration table is generated from them (``herald config --markdown``;
  a test checks the README against it);
- importing a module reads no configuration: ``load()`` reads the environment, and each
  process' entry point calls it once (``api.wsgi``, ``tasks.app``, the streamer's
  ``main``, the CLI) and passes the ``Config`` to what it builds;
- a malformed value is refused by ``load()`` with a ``ConfigError`` naming the variable
  and the rule, all problems at once, never discovered at request time; so are settings
  that contradict each other (a visibility timeout not above the task time limit);
- with ``HERALD_ENV=production`` a missing required setting (``HERALD_SECRET``,
  ``REDIS_URL``) is refused by name, and so is the generated dev secret; in development a
  secret and a Flower password are generated once in ``$HERALD_HOME`` (mode 0600);
- no password or secret is ever shown: ``shown()`` (for ``herald config`` and error
  messages) prints secrets as ``(set)`` and URLs through ``redact_url()``, which every
  log line or message that names a Redis or broker URL uses too; a ``Config``'s repr
  leaves secrets out.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin
from urllib.parse import urlsplit

from annotated_types import Ge, Le, MinLen
from pydantic import AfterValidator, BeforeValidator, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from herald.errors import ConfigError

DEV_SECRET_FILE = "secret"
DEV_FLOWER_FILE = "flower-password"
DEV_API_KEY_FILE = "apikey"
MIN_SECRET_LENGTH = 32
HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")


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


# Rules that pydantic's constraints (ge, le, min_length, Literal) do not express. Each
# raises ValueError with the rule, which ``load`` puts after the variable's name.

def _scheme(*schemes: str) -> AfterValidator:
    def check(value: str) -> str:
        if urlsplit(value).scheme not in schemes:
            raise ValueError(f"must be a URL with scheme {' or '.join(schemes)}")
        return value

    return AfterValidator(check)


def _listed(value: Any) -> Any:
    """A comma-separated variable as a tuple (values given as tuples pass unchanged)."""
    return tuple(v.strip() for v in value.split(",") if v.strip()) if isinstance(
        value, str) else value


def _origins(origins: tuple[str, ...]) -> tuple[str, ...]:
    origins = tuple(o.rstrip("/") for o in origins)
    for origin in origins:
        if origin != "*" and urlsplit(origin).scheme not in ("http", "https"):
            raise ValueError("must be a comma-separated list of http(s)://host[:port] or *")
    return origins


def _algorithms(names: tuple[str, ...]) -> tuple[str, ...]:
    names = tuple(name.upper() for name in names)
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


def _mail_from(value: str) -> str:
    from email.headerregistry import Address
    from email.utils import parseaddr

    name, address = parseaddr(value)
    user, at, domain = address.rpartition("@")
    if not (user and at and domain) or "\n" in value or "\r" in value:
        raise ValueError("must be an address, as `Name <user@example.com>` or `user@example.com`")
    return str(Address(name, addr_spec=address)) if name else address


def _categories(names: tuple[str, ...]) -> tuple[str, ...]:
    from herald.channels import CATEGORY_RULE, DEFAULT_CATEGORY, valid_category

    if not names or any(not valid_category(name) for name in names):
        raise ValueError(f"must be a comma-separated list of names matching {CATEGORY_RULE}")
    if DEFAULT_CATEGORY not in names:
        raise ValueError(f"must include {DEFAULT_CATEGORY!r}, the category of a "
                         "notification that names none")
    return tuple(dict.fromkeys(names))


RedisUrl = Annotated[str, _scheme("redis", "rediss", "unix")]
BrokerUrl = Annotated[str, _scheme("redis", "rediss", "amqp", "amqps", "pyamqp")]
HttpUrl = Annotated[str, _scheme("http", "https")]
Origins = Annotated[tuple[str, ...], BeforeValidator(_listed), AfterValidator(_origins)]
Algorithms = Annotated[tuple[str, ...], BeforeValidator(_listed), AfterValidator(_algorithms)]
Categories = Annotated[tuple[str, ...], BeforeValidator(_listed), AfterValidator(_categories)]
SmtpUrl = Annotated[str, _scheme("smtp", "smtps")]
MailFrom = Annotated[str, AfterValidator(_mail_from)]
BasicAuth = Annotated[str, AfterValidator(_basic_auth)]
Prefix = Annotated[str, AfterValidator(_prefix)]
Home = Annotated[Path, AfterValidator(lambda path: path.expanduser().resolve())]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
Pool = Literal["prefork", "gevent", "solo", "threads"]


# Defaults computed from the settings declared before them (pydantic passes those in).

def _home(*_: Any) -> Path:
    return Path(".herald").resolve()


def _dev_secret(values: dict[str, Any]) -> str:
    return _generated(values["home"] / DEV_SECRET_FILE, lambda: secrets.token_urlsafe(48))


def _dev_flower_auth(values: dict[str, Any]) -> str:
    if values["env"] == "production":
        return ""
    password = _generated(values["home"] / DEV_FLOWER_FILE, lambda: secrets.token_urlsafe(12))
    return f"herald:{password}"


def _dev_api_key(values: dict[str, Any]) -> str | None:
    return None if values["env"] == "production" else _read(values["home"] / DEV_API_KEY_FILE)


def _local_url(host: str, port: str) -> Callable[[dict[str, Any]], str]:
    def url(values: dict[str, Any]) -> str:
        bind = values[host]
        reachable = "127.0.0.1" if bind in ("0.0.0.0", "::", "") else bind
        return f"http://{reachable}:{values[port]}"

    return url


def _var(env: str, default: Any = PydanticUndefined, doc: str = "", *,
         factory: Callable[..., Any] | None = None, shown: str | None = None,
         secret: bool = False, required_in_production: bool = False, **rule: Any) -> Any:
    """A field read from the variable ``env``, with its default, meaning and rule.

    ``factory`` computes the default at load time (from the settings declared before);
    ``shown`` is how the README and ``herald config`` describe that default; ``rule``
    holds pydantic constraints (``ge``, ``le``, ``min_length``).
    """
    extra = {"shown": shown, "secret": secret, "required_in_production": required_in_production}
    if factory is not None:
        return Field(default_factory=factory, validation_alias=env, description=doc,
                     repr=not secret, json_schema_extra=extra, **rule)
    return Field(default, validation_alias=env, description=doc, repr=not secret,
                 json_schema_extra=extra, **rule)


# The mapping ``load`` was given, for ``Config.settings_customise_sources`` during that
# call (pydantic-settings takes no environment as a parameter); None: ``os.environ``.
_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("herald_environ", default=None)


class Config(BaseSettings):
    """The validated settings of one process: each field is one environment variable.

    Build it with ``load()``; ``replace()`` gives a copy with some fields changed.
    """

    # Defaults are not validated again: some are computed from other settings (the
    # broker is REDIS_URL) or are deliberately empty (no Flower auth in production).
    model_config = SettingsConfigDict(frozen=True, case_sensitive=True, env_ignore_empty=True,
                                      enable_decoding=False, extra="ignore",
                                      allow_inf_nan=False, validate_default=False)

    env: Literal["development", "production"] = _var(
        "HERALD_ENV", "development",
        "`production` makes missing required settings fatal and forbids dev secrets.")
    home: Home = _var(
        "HERALD_HOME", factory=_home, shown="`.herald`",
        doc="Directory for dev state: generated secret, Flower password, embedded Redis "
            "data.")
    secret: str = _var(
        "HERALD_SECRET", factory=_dev_secret, shown="generated in dev", secret=True,
        required_in_production=True, min_length=MIN_SECRET_LENGTH,
        doc="HMAC key that signs subscriber tokens (32+ characters).")
    prefix: Prefix = _var(
        "HERALD_PREFIX", "herald",
        "Prefix of every Redis key and pub/sub channel, and of Celery's queue, exchanges "
        "and broker keys, so deployments can share a Redis.")
    redis_url: RedisUrl = _var(
        "REDIS_URL", "redis://127.0.0.1:6379/0",
        "Redis holding records, inboxes, event history and pub/sub.",
        required_in_production=True)
    broker_url: BrokerUrl = _var(
        "CELERY_BROKER_URL", factory=lambda values: values["redis_url"], shown="`REDIS_URL`",
        doc="Celery broker. RabbitMQ (`amqp://user:password@host:5672//`) works too.")
    api_host: str = _var("HERALD_API_HOST", "127.0.0.1", "Address the API binds in `herald run`.")
    api_port: int = _var("HERALD_API_PORT", 8000, "Port of the API.", ge=1, le=65535)
    api_workers: int = _var("HERALD_API_WORKERS", 2,
                            "gunicorn worker processes for the API in `herald run`.", ge=1, le=64)
    api_head_timeout: int = _var(
        "HERALD_API_HEAD_TIMEOUT", 5,
        "Seconds a client has to send each request head to the API, and that an idle "
        "kept-alive connection stays open (gunicorn `--keep-alive`); slower connections "
        "are closed.", ge=1, le=300)
    api_url: HttpUrl = _var(
        "HERALD_API_URL", factory=_local_url("api_host", "api_port"),
        shown="`http://HOST:PORT` of the API", doc="Where the CLI reaches the API.")
    streamer_host: str = _var("HERALD_STREAMER_HOST", "127.0.0.1", "Address the streamer binds.")
    streamer_port: int = _var("HERALD_STREAMER_PORT", 8001, "Port of the streamer.",
                              ge=1, le=65535)
    streamer_processes: int = _var(
        "HERALD_STREAMER_PROCESSES", 1,
        "Streamer processes sharing the port (SO_REUSEPORT); one Redis subscription each.",
        ge=1, le=256)
    streamer_url: HttpUrl = _var(
        "HERALD_STREAMER_URL", factory=_local_url("streamer_host", "streamer_port"),
        shown="`http://HOST:PORT` of the streamer",
        doc="Where clients reach the streamer (put in tokens' `stream_url`).")
    metrics_host: str = _var(
        "HERALD_METRICS_HOST", "127.0.0.1",
        "Address every internal `/metrics` endpoint binds (never the public ports).")
    streamer_metrics_port: int = _var(
        "HERALD_STREAMER_METRICS_PORT", 9200,
        "Port of the streamer's `/metrics`; with `--processes N` the i-th process (from 0) "
        "serves on this port + i. 0 turns it off.", ge=0, le=65535)
    flower_port: int = _var("HERALD_FLOWER_PORT", 5555, "Port of Flower in `herald run`.",
                            ge=1, le=65535)
    flower_auth: BasicAuth = _var(
        "HERALD_FLOWER_AUTH", factory=_dev_flower_auth, shown="`herald:<generated>` in dev",
        secret=True,
        doc="Flower basic auth as `user:password` (passed to Flower in its environment, "
            "never on its command line).")
    worker_pool: Pool = _var(
        "HERALD_WORKER_POOL", "prefork",
        "Celery pool of the worker in `herald run` (given on the command line).")
    worker_concurrency: int = _var("HERALD_WORKER_CONCURRENCY", 2,
                                   "Celery worker concurrency in `herald run`.", ge=1, le=1000)
    heartbeat: float = _var(
        "HERALD_HEARTBEAT", 15.0,
        "Seconds between SSE heartbeat comments (keep under proxies' 30-60 s idle limit).",
        ge=0.05, le=300)
    retry_ms: int = _var("HERALD_RETRY_MS", 3000,
                         "`retry:` hint sent to EventSource clients, in milliseconds.",
                         ge=100, le=600_000)
    token_algorithms: Algorithms = _var(
        "HERALD_TOKEN_ALGORITHMS", ("HS256",),
        "Signature algorithms accepted for subscriber tokens (HMAC only, never `none`); "
        "tokens are minted with the first.")
    api_key: str | None = _var(
        "HERALD_API_KEY", factory=_dev_api_key, shown="the dev key in `.herald/apikey`",
        secret=True, doc="API key the CLI sends to the API.")
    publish_rate: float = _var(
        "HERALD_PUBLISH_RATE", 50.0,
        "Sends, publishes and job starts per second allowed per API key.",
        ge=0.01, le=1_000_000)
    publish_burst: int = _var(
        "HERALD_PUBLISH_BURST", 100,
        "Requests an API key may make at once before `HERALD_PUBLISH_RATE` applies.",
        ge=1, le=10_000_000)
    max_connections_per_user: int = _var(
        "HERALD_MAX_CONNECTIONS_PER_USER", 20,
        "Open streams one user may hold on one streamer process.", ge=1, le=100_000)
    cors_origins: Origins = _var(
        "HERALD_CORS_ORIGINS", (),
        "Comma-separated origins (`https://app.example.com`) allowed to call the API and "
        "the streamer from a browser; empty allows none, `*` any.")
    token_ttl: int = _var("HERALD_TOKEN_TTL", 3600,
                          "Default lifetime of a minted subscriber token, in seconds.",
                          ge=1, le=31_536_000)
    token_max_ttl: int = _var("HERALD_TOKEN_MAX_TTL", 86400,
                              "Longest lifetime a token may be minted with, in seconds.",
                              ge=1, le=31_536_000)
    max_topics: int = _var("HERALD_MAX_TOPICS", 32,
                           "Topics one SSE connection may subscribe to.", ge=1, le=1024)
    max_recipients: int = _var(
        "HERALD_MAX_RECIPIENTS", 1000,
        "Recipients one notification may name (use a topic for more).", ge=1, le=100_000)
    client_buffer: int = _var(
        "HERALD_CLIENT_BUFFER", 262144,
        "Bytes a slow SSE client may fall behind before it is disconnected.",
        ge=1024, le=1 << 30)
    send_buffer: int = _var(
        "HERALD_SEND_BUFFER", 262144,
        "Kernel send buffer per SSE socket in bytes (bounds what a stalled client pins in "
        "kernel memory); 0 keeps the kernel's autotuning.", ge=0, le=1 << 26)
    replay_max: int = _var(
        "HERALD_REPLAY_MAX", 1000,
        "Most events replayed to one resuming client per topic; past them the replay ends "
        "with a `reset` event.", ge=1, le=100_000)
    replay_max_bytes: int = _var(
        "HERALD_REPLAY_MAX_BYTES", 8388608,
        "Most bytes of events (their envelopes, all topics together) replayed to one "
        "resuming client; past them the replay ends with a `reset` event.",
        ge=65_536, le=1 << 31)
    replay_concurrency: int = _var(
        "HERALD_REPLAY_CONCURRENCY", 8,
        "Replays one streamer process reads from Redis at once; others wait their turn. A "
        "replay holds its slot while it reads a page, not while its client reads it.",
        ge=1, le=64)
    drain_seconds: float = _var(
        "HERALD_DRAIN_SECONDS", 3.0,
        "On SIGTERM the streamer closes its clients spread over this many seconds, so "
        "their reconnections do not all land at once.", ge=0, le=300)
    streamer_head_timeout: float = _var(
        "HERALD_STREAMER_HEAD_TIMEOUT", 5.0,
        "Seconds a client has to send its request head to the streamer; slower "
        "connections are closed without an answer.", ge=0.1, le=300)
    write_timeout: float = _var(
        "HERALD_WRITE_TIMEOUT", 30.0,
        "Seconds a stream's socket may refuse every byte (the client stopped reading) "
        "before the client is disconnected.", ge=0.1, le=3600)
    subscribe_timeout: float = _var(
        "HERALD_SUBSCRIBE_TIMEOUT", 5.0,
        "Seconds a new stream (or a WebSocket `subscribe`) waits for Redis to confirm "
        "its subscriptions; then it is refused as unavailable (503, retry).",
        ge=0.1, le=300)
    pubsub_keepalive: float = _var(
        "HERALD_PUBSUB_KEEPALIVE", 15.0,
        "Seconds between PINGs on a streamer's otherwise idle Redis subscription.",
        ge=0.1, le=300)
    pubsub_silence: float = _var(
        "HERALD_PUBSUB_SILENCE", 45.0,
        "Seconds without a byte from Redis after which a streamer treats its subscription "
        "as lost and reconnects; must exceed `HERALD_PUBSUB_KEEPALIVE`.", ge=0.2, le=3600)
    revocation_poll: float = _var(
        "HERALD_REVOCATION_POLL", 3.0,
        "Seconds between a streamer's rereads of the revoked tokens: the longest a "
        "revoked token's stream stays open when the revocation notice was lost.",
        ge=0.1, le=3600)
    history_maxlen: int = _var(
        "HERALD_HISTORY_MAXLEN", 1000,
        "Events kept per topic in the replayable history (approximate).", ge=1, le=10_000_000)
    history_ttl: int = _var("HERALD_HISTORY_TTL", 86400,
                            "Seconds an event stays in a topic's history.", ge=1, le=31_536_000)
    inbox_max: int = _var("HERALD_INBOX_MAX", 500, "Newest inbox entries kept per user.",
                          ge=1, le=100_000)
    retention: int = _var(
        "HERALD_RETENTION", 2592000,
        "Seconds notification and job records (and idle inboxes) are kept.",
        ge=60, le=315_360_000)
    task_time_limit: int = _var("HERALD_TASK_TIME_LIMIT", 600,
                                "Hard time limit of a Celery task, in seconds.", ge=5, le=86_400)
    visibility_timeout: int = _var(
        "HERALD_VISIBILITY_TIMEOUT", 900,
        "Redis broker: seconds before an unacknowledged task (its worker died) is "
        "delivered again; must exceed `HERALD_TASK_TIME_LIMIT`.", ge=10, le=172_800)
    restore_interval: int = _var(
        "HERALD_RESTORE_INTERVAL", 5,
        "Redis broker: seconds between workers' sweeps for tasks to deliver again.",
        ge=1, le=3600)
    categories: Categories = _var(
        "HERALD_CATEGORIES", ("general", "account", "security", "marketing", "updates"),
        "Categories a notification may have (comma-separated; must include `general`, "
        "the default); users turn channels off per category.",
        shown="`general,account,security,marketing,updates`")
    outbound_concurrency: int = _var(
        "HERALD_OUTBOUND_CONCURRENCY", 50,
        "Greenlets of the e-mail and webhook worker in `herald run` (its deliveries wait "
        "on the network, not the CPU).", ge=1, le=10_000)
    smtp_url: SmtpUrl | None = _var(
        "HERALD_SMTP_URL", None,
        "SMTP server for e-mail: `smtp://user:password@host:587` (STARTTLS when offered; "
        "required with a password in production), `smtps://...:465` (implicit TLS). Unset "
        "in development: `herald run` starts a local mail sink keeping `.eml` files under "
        "`$HERALD_HOME/mail`. Unset in production: the `email` channel is refused.",
        shown="unset")
    mail_from: MailFrom = _var(
        "HERALD_MAIL_FROM", "Herald <herald@localhost>", "`From` of every e-mail.")
    templates_dir: Path | None = _var(
        "HERALD_TEMPLATES_DIR", None,
        "Directory whose `email/notification.{txt,html,subject}` (Jinja2) override the "
        "default e-mail templates.", shown="unset")
    smtp_timeout: float = _var(
        "HERALD_SMTP_TIMEOUT", 30.0,
        "Seconds an SMTP connection or command may take before the attempt is retried.",
        ge=0.1, le=600)
    email_rate: float = _var(
        "HERALD_EMAIL_RATE", 10.0,
        "E-mails per second, across all workers (a token bucket in Redis).",
        ge=0.01, le=100_000)
    webhook_rate: float = _var(
        "HERALD_WEBHOOK_RATE", 10.0,
        "Webhook deliveries per second to one endpoint, across all workers.",
        ge=0.01, le=100_000)
    webhook_timeout: float = _var(
        "HERALD_WEBHOOK_TIMEOUT", 10.0,
        "Seconds a webhook endpoint has to answer before the attempt is retried.",
        ge=0.1, le=600)
    webhook_allow_private: bool | None = _var(
        "HERALD_WEBHOOK_ALLOW_PRIVATE", None,
        "Allow webhook URLs on loopback, link-local and private addresses, and `http://`. "
        "Default: allowed in development, refused in production (server-side request "
        "forgery).", shown="development only")
    delivery_attempts: int = _var(
        "HERALD_DELIVERY_ATTEMPTS", 8,
        "Attempts of an e-mail or webhook delivery before it becomes a dead letter.",
        ge=1, le=100)
    retry_base: float = _var(
        "HERALD_RETRY_BASE", 2.0,
        "Seconds of the first retry's backoff ceiling; it doubles with each attempt "
        "(full jitter: the delay is drawn between 0 and the ceiling).", ge=0.01, le=3600)
    retry_max: float = _var(
        "HERALD_RETRY_MAX", 600.0,
        "Largest backoff ceiling, in seconds (also caps an honoured `Retry-After`); "
        "must be below `HERALD_VISIBILITY_TIMEOUT`.", ge=0.01, le=86_400)
    api_metrics_port: int = _var("HERALD_API_METRICS_PORT", 9101,
                                 "Port of the API's `/metrics`; 0 turns it off.", ge=0, le=65535)
    worker_metrics_port: int = _var(
        "HERALD_WORKER_METRICS_PORT", 9300,
        "Port of a worker's `/metrics`; 0 turns it off.", ge=0, le=65535)
    log_level: LogLevel = _var("HERALD_LOG_LEVEL", "INFO", "Log level of every service.")

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The environment only (or the mapping ``load`` was given): no ``.env`` file and
        no secrets directory, so secrets come from where the README says."""
        environ = _ENVIRON.get()
        if environ is None:
            return init_settings, env_settings
        given = {name: value for name, value in environ.items() if value}
        return init_settings, InitSettingsSource(settings_cls, given)

    @model_validator(mode="before")
    @classmethod
    def _required_in_production(cls, values: Any) -> Any:
        if isinstance(values, dict) and values.get("HERALD_ENV") == "production":
            missing = [f"{s.env} is required when HERALD_ENV=production: {s.doc.rstrip('.')}"
                       for s in SETTINGS if s.required_in_production and not values.get(s.env)]
            if missing:
                raise ValueError("; ".join(missing))
        return values

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        problems = []
        if self.production and self.secret == _read(self.home / DEV_SECRET_FILE):
            problems.append("HERALD_SECRET is the generated dev secret; set a real one")
        if self.visibility_timeout <= self.task_time_limit:
            problems.append(
                f"HERALD_VISIBILITY_TIMEOUT={self.visibility_timeout} must exceed "
                f"HERALD_TASK_TIME_LIMIT={self.task_time_limit}, or running tasks are "
                "delivered twice")
        if self.retry_max >= self.visibility_timeout:
            problems.append(
                f"HERALD_RETRY_MAX={self.retry_max:g} must be below "
                f"HERALD_VISIBILITY_TIMEOUT={self.visibility_timeout}, or a delayed retry "
                "is delivered again and again by a Redis broker")
        problems += self._metrics_ports()
        if self.pubsub_silence <= self.pubsub_keepalive:
            problems.append(
                f"HERALD_PUBSUB_SILENCE={self.pubsub_silence:g} must exceed "
                f"HERALD_PUBSUB_KEEPALIVE={self.pubsub_keepalive:g}, or an idle healthy "
                "subscription is taken for lost")
        problems += self._metrics_problems()
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _metrics_problems(self) -> list[str]:
        """A ``/metrics`` port that is a public port: it would never be internal."""
        public = {self.api_port: "HERALD_API_PORT", self.streamer_port: "HERALD_STREAMER_PORT"}
        internal = (("HERALD_API_METRICS_PORT", self.api_metrics_port),
                    ("HERALD_WORKER_METRICS_PORT", self.worker_metrics_port))
        return [f"{name}={port} must differ from {public[port]}: /metrics is internal, "
                "never on a public port" for name, port in internal if port in public]

    def _metrics_ports(self) -> list[str]:
        """The streamer's metrics ports (one per process) must fit and not be its own."""
        first, count = self.streamer_metrics_port, self.streamer_processes
        if not first:
            return []
        if first + count - 1 > 65535:
            return [f"HERALD_STREAMER_METRICS_PORT={first} + HERALD_STREAMER_PROCESSES="
                    f"{count} - 1 must be at most 65535 (one port per process)"]
        if first <= self.streamer_port < first + count:
            return [f"HERALD_STREAMER_PORT={self.streamer_port} must not be one of the "
                    f"streamer's metrics ports ({first}..{first + count - 1}): /metrics "
                    "is never served on the public port"]
        return []

    @property
    def production(self) -> bool:
        return self.env == "production"

    @property
    def webhooks_may_reach_private(self) -> bool:
        """Whether webhook URLs may be ``http://`` or point at non-public addresses."""
        allowed = self.webhook_allow_private
        return not self.production if allowed is None else allowed

    def replace(self, **changes: Any) -> Config:
        """A copy with some fields changed, not checked again (tests, ``herald run``)."""
        return self.model_copy(update=changes)


def load(environ: Mapping[str, str] | None = None) -> Config:
    """Read and check every setting from ``environ`` (default: this process' environment).

    Raises ``ConfigError`` naming each bad variable and its rule. An empty variable counts
    as unset.
    """
    token = _ENVIRON.set(environ)
    try:
        return Config()
    except ValidationError as exc:
        raise ConfigError("; ".join(_problems(exc))) from None
    finally:
        _ENVIRON.reset(token)


def _problems(exc: ValidationError) -> Iterator[str]:
    for error in exc.errors():
        if error["type"] == "default_factory_not_called":
            continue  # the variable it derives from is reported instead
        if not error["loc"]:  # a rule across settings: the message names them
            yield str(error["ctx"]["error"]) if "ctx" in error else error["msg"]
            continue
        setting = _BY_ENV[str(error["loc"][0])]
        rule = _rule(setting, error)
        yield (f"{setting.env} {rule}" if setting.secret
               else f"{setting.env}={shown(setting, error['input'])!r} {rule}")


def _rule(setting: Setting, error: Any) -> str:
    if error["type"] == "value_error":
        return str(error["ctx"]["error"])
    return setting.rule or f"must be valid ({error['msg'].lower()})"


@dataclass(frozen=True)
class Setting:
    """How one field of ``Config`` is documented: variable, default, rule and meaning."""

    env: str
    attr: str
    default: str  # as the README shows it (Markdown)
    doc: str
    rule: str | None = None  # what ge/le/min_length/Literal allow, in words
    required_in_production: bool = False
    secret: bool = False  # never shown, only whether it is set


def _describe(attr: str, field: FieldInfo) -> Setting:
    extra = field.json_schema_extra
    assert isinstance(extra, dict) and isinstance(field.validation_alias, str)
    return Setting(env=field.validation_alias, attr=attr,
                   default=str(extra["shown"] or _shown_default(field.default)),
                   doc=field.description or "", rule=_rule_of(field),
                   required_in_production=bool(extra["required_in_production"]),
                   secret=bool(extra["secret"]))


def _shown_default(value: Any) -> str:
    if isinstance(value, tuple):
        value = ",".join(value)
    if isinstance(value, float):
        value = _number(value)
    return f"`{value}`" if value not in ("", None) else "empty"


def _rule_of(field: FieldInfo) -> str | None:
    bounds = {type(m): m for m in field.metadata if isinstance(m, Ge | Le | MinLen)}
    if Ge in bounds and Le in bounds:
        kind = "an integer" if field.annotation is int else "a number"
        return f"must be {kind} from {_number(bounds[Ge].ge)} to {_number(bounds[Le].le)}"
    if MinLen in bounds:
        return f"must be at least {bounds[MinLen].min_length} characters"
    if get_origin(field.annotation) is Literal:
        return f"must be one of {', '.join(get_args(field.annotation))}"
    return None


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


SETTINGS: tuple[Setting, ...] = tuple(
    _describe(attr, field) for attr, field in Config.model_fields.items())
_BY_ENV = {setting.env: setting for setting in SETTINGS}


def shown(setting: Setting, value: Any) -> str:
    """How a value may be printed: secrets as ``(set)``/``(empty)``, URLs redacted."""
    if setting.secret:
        return "(set)" if value else "(empty)"
    if isinstance(value, tuple):
        value = ",".join(value)
    return redact_url(value) if isinstance(value, str) and "://" in value else str(value)


def markdown_table() -> str:
    """The README's configuration table: one row per setting, in declaration order."""
    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for setting in SETTINGS:
        required = " **Required in production.**" if setting.required_in_production else ""
        rows.append(f"| `{setting.env}` | {setting.default} | {setting.doc}{required} |")
    return "\n".join(rows) + "\n"


def as_environ(config: Config) -> dict[str, str]:
    """Environment variables that make a child process load the same ``config``."""
    out: dict[str, str] = {}
    for setting in SETTINGS:
        value = getattr(config, setting.attr)
        if isinstance(value, tuple):
            value = ",".join(value)
        if isinstance(value, float):
            value = repr(value)
        if value is not None:
            out[setting.env] = str(value)
    return out


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
