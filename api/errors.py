"""Error answers of the API: always JSON ``{"error": {"code", "message", "field"}}``.

Every handler raises ``herald.errors.Refusal`` (the one error type of every surface;
rendered here as a JSON response) or lets Flask raise an HTTP error, before it stores
or dispatches anything, so an error answer means nothing changed. When Redis does not
answer (or refuses writes) or the broker cannot take work, the answer is 503 with
``Retry-After``, logged as one WARNING line without a traceback. The gunicorn worker
(``api.worker``) answers requests it cannot parse in the same shape
(``herald.errors.error_body``).
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from flask import Flask, Response, jsonify, request
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

from api import metrics
from herald.errors import HTTP_ERROR_CODES, DispatchError, Refusal

log = logging.getLogger(__name__)

# Seconds a client should wait before retrying while Redis or the broker is away.
RETRY_AFTER = 5
# Redis errors that mean "not now" rather than a bug: unreachable, loading, a
# read-only replica after a failover, out of memory under noeviction.
REDIS_UNAVAILABLE = (redis.ConnectionError, redis.TimeoutError,
                     redis.exceptions.ReadOnlyError, redis.exceptions.OutOfMemoryError)


def render(refusal: Refusal) -> Response:
    """A refusal as the API answers it (and counted: ``api.metrics.refused``)."""
    metrics.refused(refusal)
    answer = jsonify(refusal.body())
    answer.status_code = refusal.status
    answer.headers.update(refusal.headers)
    return answer


def unavailable(code: str, message: str) -> Refusal:
    """A 503 telling the client to come back in ``RETRY_AFTER`` seconds."""
    return Refusal(503, code, f"{message}; retry in {RETRY_AFTER}s", None,
                   headers={"Retry-After": str(RETRY_AFTER)})


def from_validation(exc: ValidationError, prefix: str = "") -> Refusal:
    """A 400 from pydantic's errors: the first names the field, all are in ``details``."""
    details = [_detail(error, prefix) for error in exc.errors(include_url=False)]
    first = details[0]
    if first["code"] == "json_invalid":
        return Refusal(400, "invalid_json", f"body is not valid JSON: {first['message']}",
                       None)
    return Refusal(400, "invalid_field", f"{first['field'] or 'body'}: {first['message']}",
                   first["field"], details=details)


def _detail(error: Any, prefix: str) -> dict[str, Any]:
    path = ".".join(str(part) for part in error["loc"])
    field = ".".join(p for p in (prefix, path) if p) or None
    return {"field": field, "message": error["msg"], "code": error["type"]}


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def register(app: Flask) -> None:
    """Answer every error, including Flask's own, as JSON."""

    @app.errorhandler(Refusal)
    def _refused(exc: Refusal) -> Response:
        return render(exc)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        if status == 413:
            from api.schemas import MAX_BODY_BYTES, too_large  # schemas imports us

            limit = request.max_content_length
            return render(too_large(limit - 1 if limit else MAX_BODY_BYTES))
        code = HTTP_ERROR_CODES.get(status, "http_error")
        answer = render(Refusal(status, code, exc.description or exc.name))
        for name in ("Allow",):
            value = exc.get_response().headers.get(name)
            if value:
                answer.headers[name] = value
        return answer

    @app.errorhandler(DispatchError)
    def _broker_down(exc: DispatchError) -> Response:
        log.warning("%s %s: 503, %s", request.method, request.path, _one_line(exc))
        return render(unavailable("broker_unavailable", "the broker cannot take work"))

    def _redis_down(exc: redis.RedisError) -> Response:
        log.warning("%s %s: 503, Redis unavailable: %s", request.method, request.path,
                    _one_line(exc))
        return render(unavailable("redis_unavailable", "Redis is unavailable"))

    for kind in REDIS_UNAVAILABLE:
        app.register_error_handler(kind, _redis_down)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error")
        return render(Refusal(500, "internal_error", "internal error; see the API log"))
