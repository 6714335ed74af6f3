"""The ``herald`` command: run the stack, mint tokens, publish, send and listen.

Every failure a user can cause or meet (bad input, a configuration error, Redis or the
API unreachable) ends the command with a one-line message and a non-zero status, never
a traceback, and no message shows a password.

It imports only ``herald`` (the bottom layer): the services it starts are named by
their command lines, and commands of packages above it (``herald bench``) are plugins,
entry points in the ``herald.commands`` group, loaded when the command line names them
(or ``--help`` lists them).
"""

from __future__ import annotations

import functools
import json
import os
import sys
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import click
import httpx
import redis

from herald import config as herald_config
from herald.config import SETTINGS, Config, markdown_table, shown
from herald.errors import ConfigError, HeraldError, InvalidEvent, Refusal


@functools.cache
def _config() -> Config:
    """The command's configuration, read from the environment once."""
    try:
        return herald_config.load()
    except ConfigError as exc:
        raise click.ClickException(f"configuration error: {exc}") from exc


PLUGIN_GROUP = "herald.commands"


@functools.cache
def _plugins() -> dict[str, EntryPoint]:
    return {entry.name: entry for entry in entry_points(group=PLUGIN_GROUP)}


def _load_plugin(entry: EntryPoint) -> click.Command:
    """The plugin's command, or one that says why it cannot be loaded."""
    try:
        command = entry.load()
    except ImportError as exc:
        reason = f"{entry.value} cannot be imported: {exc}"

        @click.command(entry.name, help=f"(unavailable: {reason})",
                       context_settings={"ignore_unknown_options": True})
        @click.argument("args", nargs=-1, type=click.UNPROCESSED)
        def unavailable(args: tuple[str, ...]) -> None:
            raise click.ClickException(reason)

        return unavailable
    if not isinstance(command, click.Command):
        raise TypeError(f"entry point {entry.value} is not a click command")
    return command


class _Commands(click.Group):
    """Adds the plugins' commands; turns Redis being unreachable, in any command, into a
    one-line error."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_plugins()})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        command = super().get_command(ctx, name)
        if command is None and name in _plugins():
            command = _load_plugin(_plugins()[name])
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except redis.RedisError as exc:
            where = herald_config.redact_url(_config().redis_url)
            reason = " ".join(str(exc).split())
            raise click.ClickException(f"Redis at {where} unavailable: {reason}") from exc


@click.group(cls=_Commands)
@click.version_option(package_name="herald")
def main() -> None:
    """Herald: real-time notifications over Celery, Redis and Server-Sent Events."""


@main.command()
@click.option("--workers", type=click.IntRange(1, 32), default=1, show_default=True,
              help="In-app workers (the outbound worker runs beside them).")
@click.option("--streamers", type=click.IntRange(1, 64), default=None,
              help="Streamer processes sharing its port (default HERALD_STREAMER_PROCESSES).")
def run(workers: int, streamers: int | None) -> None:
    """Start the API, workers, a streamer and Flower (and Redis if none answers); print
    every URL, each internal /metrics among them."""
    from herald import stack

    try:
        sys.exit(stack.run(_config(), stack.Topology(workers, streamers)))
    except HeraldError as exc:
        raise click.ClickException(str(exc)) from exc


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (for scripts).")
@click.option("--streamer-metrics", "streamer_urls", multiple=True, metavar="URL",
              help="A streamer process' /metrics (repeatable; default: by "
                   "HERALD_STREAMER_METRICS_PORT and HERALD_STREAMER_PROCESSES).")
@click.option("--flower", "flower_url", metavar="URL",
              help="Ask Flower (basic auth from HERALD_FLOWER_AUTH) instead of Celery.")
@click.option("--timeout", type=click.FloatRange(0.1, 60), default=2.0, show_default=True,
              help="Seconds each worker and endpoint has to answer.")
@click.option("--strict", is_flag=True, help="Warnings (dead letters, memory) fail too.")
def status(as_json: bool, streamer_urls: tuple[str, ...], flower_url: str | None,
           timeout: float, strict: bool) -> None:
    """One screen: streamers, workers and queues, Redis, dead letters. Exit status 1 when
    something is unhealthy (see the README's "herald status" for the rules)."""
    from herald import status as herald_status

    verbose = sys.stderr.isatty()

    def progress(message: str) -> None:
        if verbose:
            click.echo(f"... {message}", err=True)

    sources = herald_status.Sources(streamer_urls, flower_url, timeout)
    report = herald_status.collect(_config(), sources, progress)
    if as_json:
        click.echo(json.dumps(report.as_json(), indent=2))
    else:
        click.echo(herald_status.render(report))
    sys.exit(0 if report.healthy and not (strict and report.warnings) else 1)


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def streamer(args: tuple[str, ...]) -> None:
    """Run one streamer process (same as `python -m streamer`)."""
    os.execv(sys.executable, [sys.executable, "-m", "streamer", *args])


@main.command()
@click.argument("user")
@click.option("--topic", "topics", multiple=True, help="Extra topic grant (repeatable; "
              "a trailing * grants a prefix).")
@click.option("--ttl", type=click.IntRange(min=1), help="Lifetime in seconds.")
def token(user: str, topics: tuple[str, ...], ttl: int | None) -> None:
    """Print a subscriber token for USER."""
    from herald import access

    try:
        minted, _ = access.issue(_config(), user, topics, ttl)
    except Refusal as exc:
        raise click.BadParameter(exc.message, param_hint="--ttl") from exc
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    click.echo(minted)


@main.command()
@click.argument("topic")
@click.argument("data")
@click.option("--type", "event_type", default="message", show_default=True,
              help="Event type.")
def publish(topic: str, data: str, event_type: str) -> None:
    """Publish DATA (JSON) as an event on TOPIC; print the event id."""
    from herald import services

    publisher = services.build(_config()).publisher
    try:
        payload = json.loads(data)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="DATA") from exc
    try:
        click.echo(publisher.publish(topic, payload, event_type))
    except InvalidEvent as exc:
        raise click.BadParameter(exc.message, param_hint=exc.field) from exc


@main.command()
@click.argument("user")
@click.argument("title")
@click.argument("body", required=False, default="")
@click.option("--data", default="{}", help="JSON object attached to the notification.")
def send(user: str, title: str, body: str, data: str) -> None:
    """Send a notification to USER through the API; print its id."""
    cfg = _config()
    payload = {"recipients": [user], "title": title, "body": body, "data": _json(data)}
    answer = _api(cfg, "POST", "/api/notifications", payload)
    click.echo(answer["id"])
    click.echo(f"status: {answer['status_url']}", err=True)


@main.command()
@click.argument("topics", nargs=-1, required=True)
@click.option("--user", default="cli", show_default=True,
              help="User the token is minted for (a user: topic implies its user).")
@click.option("--raw", is_flag=True, help="Print each event's JSON envelope.")
def listen(topics: tuple[str, ...], user: str, raw: bool) -> None:
    """Print events of TOPICS as they arrive (Ctrl-C to stop)."""
    from herald import access
    from herald.listen import ListenError
    from herald.listen import listen as listen_loop

    cfg = _config()
    owners = [t.split(":", 1)[1] for t in topics if t.startswith("user:")]
    who = owners[0] if len(owners) == 1 else user
    def fresh() -> str:
        return access.issue(cfg, who, topics, cfg.token_max_ttl)[0]

    try:
        fresh()
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="TOPICS") from exc
    try:
        listen_loop(cfg.streamer_url, fresh, list(topics), raw=raw)
    except ListenError as exc:
        raise click.ClickException(f"the streamer refused: {exc}") from exc
    except KeyboardInterrupt:
        pass


@main.group()
def apikey() -> None:
    """Create, list and revoke API keys (stored in Redis, only as hashes)."""


def _apikeys() -> Any:
    from herald.apikeys import ApiKeyStore
    from herald.connection import client
    from herald.keys import Keys

    cfg = _config()
    return ApiKeyStore(client(cfg.redis_url), Keys(cfg.prefix))


@apikey.command("create")
@click.argument("name")
def apikey_create(name: str) -> None:
    """Create a key named NAME and print it (it is shown only this once)."""
    try:
        key, record = _apikeys().create(name)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="NAME") from exc
    click.echo(key)
    click.echo(f"created API key {record.id} ({record.name}); store it now, it is not "
               "kept", err=True)


@apikey.command("list")
def apikey_list() -> None:
    """List keys: id, name, created, revoked."""
    for key in _apikeys().list():
        state = f"revoked {key.revoked_at}" if key.revoked_at else "active"
        click.echo(f"{key.id}  {key.name:<24} created {key.created_at}  {state}")


@apikey.command("revoke")
@click.argument("id_or_name")
def apikey_revoke(id_or_name: str) -> None:
    """Revoke the key with this id (or every active key with this name)."""
    revoked = _apikeys().revoke(id_or_name)
    if not revoked:
        raise click.ClickException(f"no active key {id_or_name!r}")
    for key in revoked:
        click.echo(f"revoked {key.id} ({key.name})")


@main.command("config")
@click.option("--markdown", is_flag=True,
              help="Print the README's table of settings (defaults, not values in effect).")
def show_config(markdown: bool) -> None:
    """Print every setting: variable, value in effect, default and meaning."""
    if markdown:
        click.echo(markdown_table(), nl=False)
        return
    cfg = _config()
    for setting in SETTINGS:
        value = shown(setting, getattr(cfg, setting.attr))
        click.echo(f"{setting.env}={value}\n    default {setting.default}: {setting.doc}")


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--data") from exc


def _api(cfg: Config, method: str, path: str, payload: dict[str, Any]) -> dict[str, Any]:
    if not cfg.api_key:
        raise click.ClickException("no API key: set HERALD_API_KEY (`herald apikey create`)")
    headers = {"Authorization": f"Bearer {cfg.api_key}"}
    try:
        response = httpx.request(method, cfg.api_url + path, json=payload, headers=headers,
                                 timeout=10)
    except httpx.HTTPError as exc:
        raise click.ClickException(f"API at {cfg.api_url} unreachable: {exc}") from exc
    body = response.json() if response.headers.get("content-type", "").startswith(
        "application/json") else {}
    if response.status_code >= 400:
        error = body.get("error", {}) if isinstance(body, dict) else {}
        raise click.ClickException(
            f"API answered {response.status_code}: {error.get('message', response.text)}")
    return body
