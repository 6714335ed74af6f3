"""``herald run``: the whole stack in the foreground, for a developer's machine.

Starts the API (gunicorn), two Celery workers, one streamer and Flower under a
``herald.processes.Supervisor`` (each in its own process group, its output prefixed
with its name), with Redis from ``REDIS_URL`` when it answers and an embedded
``redis-server`` (data under ``$HERALD_HOME/redis``) when it does not. Prints every URL
and the dev credentials once the services answer their health checks (probed without
credentials). No secret is on a command line: Flower reads its basic auth from
``FLOWER_BASIC_AUTH`` in its environment. In development without ``HERALD_SMTP_URL``
it also starts a mail sink (``herald.mailsink``, mail kept under ``$HERALD_HOME/mail``)
and points every service's ``HERALD_SMTP_URL`` at it.

The two workers split the queues (``worker_queues``) so a slow outside service never
takes the in-app worker's slots: ``worker`` (``herald@%h``, the configured pool) runs
jobs and in-app delivery, ``outbound`` (``outbound@%h``, gevent, one greenlet per
delivery waiting on the network) runs e-mail and webhooks. ``docker-compose.yml`` runs
the same split as ``worker-inapp`` and ``worker-outbound``.

Guarantees: a service that exits is logged and restarted with capped exponential
backoff while the others keep running. Only Ctrl-C or SIGTERM stops the stack: SIGTERM
to each service, then to what is left of its process group, SIGKILL after
``STOP_GRACE`` seconds, then the embedded Redis; nothing is left running.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

from herald.apikeys import ApiKeyStore
from herald.channels import INAPP, OUTBOUND
from herald.config import DEV_API_KEY_FILE, Config, as_environ, redact_url
from herald.connection import answers, client
from herald.embedded import EmbeddedRedis
from herald.errors import HeraldError
from herald.keys import Keys
from herald.processes import Command, Output, Supervisor, stop_on

HEALTH_WAIT = 90.0
STOP_GRACE = 10.0  # seconds a service has to stop on SIGTERM before SIGKILL
# The API's gunicorn worker, hooks and request-head limits (docker-compose.yml and the
# Dockerfile pass the same): gevent, so a slow client holds a greenlet rather than a
# worker; the master serves one /metrics for all workers (api.gunicorn_conf); request
# line <= 4094 bytes (414), <= 32 header fields of <= 8190 bytes (431). See api.worker.
API_WORKER = ("--worker-class", "api.worker.ApiWorker", "--config", "python:api.gunicorn_conf")
API_HEAD_LIMITS = ("--limit-request-line", "4094", "--limit-request-fields", "32",
                   "--limit-request-field_size", "8190")
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", None)
WORKERS = ("worker", "outbound")  # no health URL of their own: Flower shows them
MAILSINK, MAIL_DIR = "mailsink", "mail"


@dataclass(frozen=True)
class Service:
    """One process of the stack: its name, command line, health URL (empty: it has none;
    the mail sink) and extra environment.

    Secrets go in ``env``, never in ``command`` (any local user can read command lines).
    """

    name: str
    command: list[str]
    health_url: str
    env: dict[str, str] = field(default_factory=dict)


def worker_queues(keys: Keys) -> tuple[list[str], list[str]]:
    """The queues of the in-app worker (jobs, in-app delivery) and of the outbound worker
    (every channel that reaches the outside world): together, all of ``tasks.settings``'."""
    return ([keys.task_queue, keys.channel_queue(INAPP)],
            [keys.channel_queue(channel) for channel in OUTBOUND])


def services(cfg: Config) -> list[Service]:
    """The processes ``herald run`` starts, with the commands compose uses too."""
    python = sys.executable
    flower_url = f"http://127.0.0.1:{cfg.flower_port}"
    inapp, outbound = worker_queues(Keys(cfg.prefix))
    return [
        Service("api", [
            python, "-m", "gunicorn", "--bind", f"{cfg.api_host}:{cfg.api_port}",
            "--workers", str(cfg.api_workers), *API_WORKER,
            "--keep-alive", str(cfg.api_head_timeout), *API_HEAD_LIMITS,
            "--control-socket", str(cfg.home / f"gunicorn-api-{cfg.api_port}.ctl"),
            "--graceful-timeout", "5", "--access-logfile", "-", "api.wsgi:from_environment()",
        ], f"{cfg.api_url}/healthz"),
        Service("worker", [
            python, "-m", "celery", "-A", "tasks.app", "worker", "-Q", ",".join(inapp),
            "-P", cfg.worker_pool, "-c", str(cfg.worker_concurrency),
            "-l", "INFO", "-n", "herald@%h",
        ], f"{cfg.api_url}/healthz"),
        Service("outbound", [
            python, "-m", "celery", "-A", "tasks.app", "worker", "-Q", ",".join(outbound),
            "-P", "gevent", "-c", str(cfg.outbound_concurrency),
            "-l", "INFO", "-n", "outbound@%h",
        ], f"{cfg.api_url}/healthz"),
        Service("streamer", [python, "-m", "streamer"], f"{cfg.streamer_url}/healthz"),
        Service("flower", [
            python, "-m", "celery", "-A", "tasks.app", "flower",
            "--address=127.0.0.1", f"--port={cfg.flower_port}",
            "--purge_offline_workers=60", "--max_tasks=10000",
        ], f"{flower_url}/healthcheck", _flower_env(cfg)),
    ]


def _flower_env(cfg: Config) -> dict[str, str]:
    """Flower's basic auth, read by Flower from its environment."""
    return {"FLOWER_BASIC_AUTH": cfg.flower_auth} if cfg.flower_auth else {}


def with_redis(cfg: Config) -> tuple[Config, EmbeddedRedis | None]:
    """``cfg`` unchanged when REDIS_URL answers; else one pointing at a new embedded Redis."""
    if answers(cfg.redis_url):
        return cfg, None
    if cfg.production:
        raise HeraldError(f"REDIS_URL {redact_url(cfg.redis_url)} does not answer")
    parts = urlsplit(cfg.redis_url)
    port = (parts.port or 6379) if parts.hostname in LOCAL_HOSTS else free_port()
    embedded = EmbeddedRedis(port, cfg.home / "redis")
    print(f"herald: no Redis answers at {redact_url(cfg.redis_url)}; starting an embedded "
          f"redis-server on 127.0.0.1:{port} (data in {embedded.data_dir})", flush=True)
    embedded.start()
    url = f"redis://127.0.0.1:{port}{parts.path or '/0'}"
    broker = url if cfg.broker_url == cfg.redis_url else cfg.broker_url
    return cfg.replace(redis_url=url, broker_url=broker), embedded


def dev_mailsink(cfg: Config) -> tuple[Config, Service | None]:
    """In development without HERALD_SMTP_URL: a mail sink on a free port, and ``cfg``
    pointing at it (every child gets its URL); else ``cfg`` unchanged and no service."""
    if cfg.smtp_url is not None or cfg.production:
        return cfg, None
    port = free_port()
    sink = Service(MAILSINK, [
        sys.executable, "-m", "herald.mailsink", "--host", "127.0.0.1", "--port", str(port),
        "--dir", str(cfg.home / MAIL_DIR),
    ], health_url="")
    return cfg.replace(smtp_url=f"smtp://127.0.0.1:{port}"), sink


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def dev_api_key(cfg: Config) -> Config:
    """``cfg`` with a working API key: the one in $HERALD_HOME/apikey, or a new one.

    Only in development: in production keys are created with ``herald apikey create``.
    """
    if cfg.production:
        return cfg
    store = ApiKeyStore(client(cfg.redis_url), Keys(cfg.prefix))
    if cfg.api_key and store.check(cfg.api_key):
        return cfg
    key, _ = store.create("dev")
    path = cfg.home / DEV_API_KEY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return cfg.replace(api_key=key)


def dev_origins(cfg: Config) -> Config:
    """In development, let the demo page (served by the API) reach the streamer."""
    if cfg.production or cfg.cors_origins:
        return cfg
    port = urlsplit(cfg.api_url).port
    return cfg.replace(cors_origins=(f"http://127.0.0.1:{port}", f"http://localhost:{port}"))


def run(cfg: Config) -> int:
    """Run the stack until SIGINT or SIGTERM, then stop all of it; return 0."""
    supervisor = Supervisor(Output(sys.stdout), grace=STOP_GRACE)
    with stop_on(supervisor, signal.SIGINT, signal.SIGTERM):
        cfg, embedded = with_redis(cfg)
        cfg, sink = dev_mailsink(cfg)
        try:
            _supervise(dev_origins(dev_api_key(cfg)), embedded, supervisor,
                       [sink] if sink else [])
        finally:
            if embedded is not None:
                embedded.stop()
    return 0


def _supervise(cfg: Config, embedded: EmbeddedRedis | None, supervisor: Supervisor,
               extra: list[Service]) -> None:
    env = {**os.environ, **as_environ(cfg), "PYTHONUNBUFFERED": "1"}
    stack = [*services(cfg), *extra]
    for service in stack:
        supervisor.add(Command(service.name, service.command, {**env, **service.env}))
    watcher = threading.Thread(target=_announce, daemon=True,
                               args=(cfg, stack, embedded, supervisor))
    watcher.start()
    supervisor.run()


def _announce(cfg: Config, stack: list[Service], embedded: EmbeddedRedis | None,
              supervisor: Supervisor) -> None:
    waiting = {s.name: s.health_url for s in stack if s.health_url and s.name not in WORKERS}
    deadline = time.monotonic() + HEALTH_WAIT
    while waiting and time.monotonic() < deadline and not supervisor.stopping:
        for name, url in list(waiting.items()):
            if _healthy(url):
                del waiting[name]
        time.sleep(0.3)
    if supervisor.stopping:
        return
    if waiting:
        supervisor.say(f"still waiting for {', '.join(sorted(waiting))}; see its log above")
        return
    sink = any(s.name == MAILSINK for s in stack)
    supervisor.output.write(banner(cfg, embedded, sink) + "\n")


def _healthy(url: str) -> bool:
    """True when ``url`` answers 200. Sends no credentials: health checks need none."""
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def banner(cfg: Config, embedded: EmbeddedRedis | None, mail_sink: bool = False) -> str:
    """What a developer needs to start using the running stack."""
    user, _, password = cfg.flower_auth.partition(":")
    redis_note = f" (embedded, data in {embedded.data_dir})" if embedded else ""
    mail = (f"dev sink at {cfg.smtp_url}, each mail in {cfg.home / MAIL_DIR}" if mail_sink
            else redact_url(cfg.smtp_url) if cfg.smtp_url else "unset (no e-mail)")
    lines = [
        "",
        "Herald is running. Ctrl-C stops everything.",
        f"  Demo      {cfg.api_url}/demo/      (open it in two windows)",
        f"  API       {cfg.api_url}            (GET /healthz)",
        f"  Streamer  {cfg.streamer_url}/events     (SSE)",
        f"  Flower    http://127.0.0.1:{cfg.flower_port}         user {user!r} "
        f"password {password!r}",
        f"  Redis     {redact_url(cfg.redis_url)}{redis_note}",
        f"  Mail      {mail}",
        f"  Dev secret in {cfg.home / 'secret'} (signs subscriber tokens)",
        f"  Dev API key {cfg.api_key} (also in {cfg.home / DEV_API_KEY_FILE})",
        "Try, in another terminal of this directory:",
        "  herald listen user:alice",
        "  herald send alice Hello",
        "",
    ]
    return "\n".join(lines)
