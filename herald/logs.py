"""Logging set-up shared by Herald's own entry points."""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"


def setup(level: str = "INFO") -> None:
    """Log to stderr at ``level`` with one line per record."""
    logging.basicConfig(level=level, format=FORMAT)
