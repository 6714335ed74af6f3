"""Access to the current app's Herald services from request handlers."""

from __future__ import annotations

from flask import current_app

from herald.services import Services


def services() -> Services:
    return current_app.extensions["herald"]
