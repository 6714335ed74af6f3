"""The API's gunicorn worker: gevent, answering requests it cannot parse in JSON.

Why gevent: a sync worker is busy until the request it is reading is complete, so two
clients dripping header lines held both workers of ``herald run`` for 30 s and more.
Under gevent a connection that is slow to send holds one greenlet (a few KB) and its
worker goes on serving everyone else, up to ``--worker-connections`` connections at
once. gunicorn patches each worker with gevent before it loads the app (the API is
never ``--preload``-ed), so redis-py and kombu (Celery's publishing) use cooperative
sockets. ``herald.stack.services`` builds the command line that runs it.

Guarantees, with that command line:

- a connection has ``--keep-alive`` seconds (``HERALD_API_HEAD_TIMEOUT``) to send each
  request head, the first one included: gunicorn's gevent worker reads every head under
  ``timeout_ctx()``, a silent ``gevent.Timeout`` of that length, and closes the
  connection without an answer when it fires;
- a request line over ``--limit-request-line`` bytes is answered 414, a head with more
  than ``--limit-request-fields`` fields or with a field over
  ``--limit-request-field_size`` bytes 431, any other malformed request 400 (and a few
  rarer statuses gunicorn chooses, below), as JSON ``{"error": {"code", "message",
  "field"}}`` like every error of the app (gunicorn's own answers are HTML), each logged
  as one WARNING line;
- an error outside the app (Flask answers all of its own) is answered a JSON 500 and
  logged with its traceback;
- a bad Herald setting stops gunicorn before any worker starts: the master prints
  ``Error: herald api: configuration error: ...`` (one line naming the variable and the
  rule) and exits 1 (``check_config``).

The master process imports this module before it forks and before gevent patches the
worker, so it imports only gunicorn, the standard library and ``herald.errors``
(importing redis-py first would leave its ssl imports unpatched); what it needs of the
configuration it reads in a child process (``master_view``: for ``check_config`` and
the master's ``/metrics``, ``api.gunicorn_conf``).
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from gunicorn import util
from gunicorn.http import errors as http
from gunicorn.workers.ggevent import GeventWorker

from herald.errors import HTTP_ERROR_CODES, error_body

# gunicorn's parse errors, most specific first; None marks a fault of the server or the
# app rather than of the request (gunicorn answers those 500 too).
_STATUSES: tuple[tuple[type[BaseException], int | None], ...] = (
    (http.InvalidResponseHeader, None),
    (http.InvalidResponseHeaderName, None),
    (http.ConfigurationProblem, None),
    (http.LimitRequestLine, 414),
    (http.LimitRequestHeaders, 431),
    (http.ExpectationFailed, 417),
    (http.UnsupportedTransferCoding, 501),
    (http.ForbiddenProxyRequest, 403),
    (http.ParseException, 400),
)


class ApiWorker(GeventWorker):
    """gunicorn's gevent worker whose error answers are the API's JSON errors."""

    @classmethod
    def check_config(cls, cfg: Any, log: Any) -> None:
        """In the master, before it forks: refuse to start with a bad configuration.

        gunicorn prints a ``RuntimeError`` as ``Error: <message>`` and exits 1; without
        this every worker would fail to load the app, and they would race to stop it.
        """
        problem = configuration_problem()
        if problem is not None:
            raise RuntimeError(problem)

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        status = refusal_status(exc)
        if status is None:
            self.log.exception("error outside the app, answered 500")
            status, message = 500, "internal error; see the API log"
        else:
            message = self._describe(status, exc)
            peer = addr[0] if isinstance(addr, tuple) and addr else "unix socket"
            self.log.warning("refused a request from %s: %d %s", peer, status, message)
        try:
            util.write_nonblock(client, json_answer(status, message))
        except OSError:
            self.log.debug("could not send the %d answer", status)

    def _describe(self, status: int, exc: BaseException) -> str:
        cfg = self.cfg
        if status == 414:
            return f"request line must be at most {cfg.limit_request_line} bytes"
        if status == 431:
            return (f"request head must have at most {cfg.limit_request_fields} header "
                    f"fields of at most {cfg.limit_request_field_size} bytes each")
        return f"malformed request: {exc}" if status == 400 else str(exc)


@dataclass(frozen=True)
class MasterView:
    """What the master needs of the configuration: what is wrong with it (None: nothing),
    and where the API's ``/metrics`` is served (port 0: nowhere)."""

    problem: str | None = None
    metrics_host: str = ""
    metrics_port: int = 0


def configuration_problem() -> str | None:
    """What ``herald.config.load()`` refuses in this environment, or None."""
    return master_view().problem


@functools.cache
def master_view() -> MasterView:
    """The configuration as the master needs it, read once in a child process.

    It runs in a child process that exits at once: loading the configuration imports
    pydantic-settings and, through it, ``ssl``, which the master must not import before
    gevent patches its workers. A failure other than a ``ConfigError`` is left to the
    workers, which report it with its traceback. Read once: gunicorn's master never
    reads its environment again (a reload keeps it).
    """
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: check, report, and never return into gunicorn
        try:
            os.write(write, json.dumps(_read_configuration()).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        answer = pipe.read().decode()
    os.waitpid(pid, 0)
    return MasterView(**json.loads(answer)) if answer else MasterView()


def _read_configuration() -> dict[str, Any]:
    """In the child: the ``MasterView`` fields for this environment."""
    from herald.config import load
    from herald.errors import ConfigError

    try:
        cfg = load()
    except ConfigError as exc:
        return {"problem": f"herald api: configuration error: {exc}"}
    return {"metrics_host": cfg.metrics_host, "metrics_port": cfg.api_metrics_port}


def refusal_status(exc: BaseException) -> int | None:
    """The 4xx/5xx for a request gunicorn could not parse; None for a server fault."""
    for kind, status in _STATUSES:
        if isinstance(exc, kind):
            return status
    return None


def json_answer(status: int, message: str) -> bytes:
    """A complete HTTP/1.1 answer with the API's error body; the connection closes."""
    body = json.dumps({"error": error_body(HTTP_ERROR_CODES.get(status, "http_error"), message)},
                      separators=(",", ":")).encode()
    head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
            "Connection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode("latin-1") + body
