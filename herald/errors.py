"""Errors that are part of Herald's contract across packages."""

from __future__ import annotations


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
