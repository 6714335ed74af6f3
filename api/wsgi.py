"""gunicorn's entry point: ``gunicorn 'api.wsgi:from_environment()'``.

The one place the API reads its configuration: ``from_environment`` loads it from the
environment (``herald.config.load``) and builds the app with ``create_app``. A bad
setting stops gunicorn, master included, with one line naming the variable and the rule
("App failed to load"), instead of workers failing to boot over and over.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gunicorn.errors import AppImportError

from api import create_app
from herald import config as herald_config
from herald.errors import ConfigError

if TYPE_CHECKING:
    from flask import Flask


def from_environment() -> Flask:
    """The API for the configuration in the environment."""
    try:
        config = herald_config.load()
    except ConfigError as exc:
        # gunicorn prints this one line and halts with status 4 (App failed to load).
        raise AppImportError(f"herald api: configuration error: {exc}") from None
    return create_app(config)
