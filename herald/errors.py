"""Errors that are part of Herald's contract across packages, and the shape of an error
answer over HTTP: ``{"error": {"code", "message", "field"}}``.

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


class TokenError(HeraldError):
    """A subscriber token is missing, malformed, badly signed or expired."""


class DispatchError(HeraldError):
    """Work could not be handed to the broker; nothing was left stored."""
