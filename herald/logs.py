"""Logging set-up shared by Herald's own entry points, and a throttled warning."""

from __future__ import annotations

import logging
import time

FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"


def setup(level: str = "INFO") -> None:
    """Log to stderr at ``level`` with one line per record."""
    logging.basicConfig(level=level, format=FORMAT)


class Throttled:
    """A recurring warning, logged at most once per ``interval`` seconds.

    For failures that can repeat thousands of times a second (a Redis outage seen by
    every request): the first is logged at once, the next one after ``interval``, with
    how many were held back in between. Never with a traceback.
    """

    def __init__(self, logger: logging.Logger, interval: float,
                 level: int = logging.WARNING) -> None:
        self.logger = logger
        self.interval = interval
        self.level = level
        self._next = 0.0
        self._held = 0

    def __call__(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now < self._next:
            self._held += 1
            return
        held, self._held = self._held, 0
        self._next = now + self.interval
        if held:
            message += " (and %d more since the last report)"
            args = (*args, held)
        self.logger.log(self.level, message, *args)
