"""Access to the current app's Herald services and Celery app from request handlers."""

from __future__ import annotations

from flask import current_app

from herald.services import Services
from tasks.factory import HeraldCelery
from tasks.notifications import Send


def services() -> Services:
    return current_app.extensions["herald"]


def celery() -> HeraldCelery:
    """The Celery app this API sends tasks through (built from its ``Config``)."""
    return current_app.extensions["celery"]


def send() -> Send:
    """How this process hands stored notifications to the broker: its one
    ``tasks.grouping.GroupCommit`` around ``tasks.notifications.dispatch``, so that
    concurrent requests share their in-app task and publish batch."""
    return current_app.extensions["send"]
