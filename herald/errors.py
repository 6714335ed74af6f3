"""Errors that are part of Herald's contract across packages, and the shape of an error
answer: ``{"error": {"code", "message", "field"}}``.

``Refusal`` is the one type of a refused request on every surface: the API renders it
as its JSON error response (``api.errors``), the streamer as its HTTP answer
(``streamer.protocol.answer``) or as a WebSocket command's error reply
(``streamer.commands``). Whichever surface answers, the ``error`` object is the same.

Imports only the standard library: the API's gunicorn master imports it (through
``api.worker``) before gevent patches a worker.
"""

from __future__ import annotations

from typing import Any

# The ``code`` of an error answer that has no more specific one, by HTTP status.
HTTP_ERROR_CODES = {
    400: "bad_request",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    417: "expectation_failed",
    422: "unprocessable",
    429: "too_many_requests",
    431: "request_too_large",
    500: "internal_error",
    501: "not_implemented",
    503: "service_unavailable",
}


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    """The inside of an error answer's ``{"error": ...}``; ``field`` names the part at
    fault (None for the request as a whole)."""
    return {"code": code, "message": message, "field": field}


class HeraldError(Exception):
    """Base class of Herald's own errors."""


class ConfigError(HeraldError):
    """A setting is missing or malformed; the message names the variable and the rule."""


class InvalidEvent(HeraldError, ValueError):
    """An event cannot be published; ``field`` names the offending part."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class Refusal(HeraldError):
    """A request Herald will not carry out, raised before anything is stored, dispatched
    or published.

    ``status`` is the HTTP status to answer with (also given to WebSocket commands,
    whose replies carry only the ``error`` object); ``field`` names the part of the
    request at fault (None for the request as a whole); ``headers`` go with an HTTP
    answer (``WWW-Authenticate``, ``Retry-After``); ``details`` lists every broken rule
    when there are several (the API's body validation).
    """

    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 headers: dict[str, str] | None = None,
                 details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = dict(headers or {})  # a copy: surfaces add their own (CORS)
        self.details = details

    def error(self) -> dict[str, Any]:
        """The ``error`` object of the answer (with ``details`` when there are any)."""
        body = error_body(self.code, self.message, self.field)
        if self.details:
            body["details"] = self.details
        return body

    def body(self) -> dict[str, Any]:
        """The whole answer: ``{"error": {...}}``."""
        return {"error": self.error()}


def invalid(field: str | None, message: str) -> Refusal:
    """A 400 ``invalid_field`` naming the field and the rule it breaks."""
    return Refusal(400, "invalid_field", f"{field}: {message}" if field else message, field)


class TokenError(HeraldError):
    """A subscriber token is missing, malformed, badly signed or expired."""


class DispatchError(HeraldError):
    """Work could not be handed to the broker; nothing was left stored."""
