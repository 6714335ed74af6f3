"""Access to the current app's Herald services and Celery app from request handlers."""

from __future__ import annotations

from flask import current_app

from herald.services import Services
from tasks.factory import HeraldCelery


def services() -> Services:
    return current_app.extensions["herald"]


def celery() -> HeraldCelery:
    """The Celery app this API sends tasks through (built from its ``Config``)."""
    return current_app.extensions["celery"]
