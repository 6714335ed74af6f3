"""The entry point of ``celery -A tasks.app`` (worker, Flower, inspect): ``app``.

``app`` is a ``tasks.factory.HeraldCelery`` configured from the environment
(``herald.config.load``) once, when Celery first needs a setting, not when this module
is imported. A bad setting ends the command with one line naming the variable and the
rule (``Error: configuration error: ...``), not a traceback. This is the only Celery app
built from the environment; the API builds its own from its ``Config`` with
``make_celery``.

Each worker started from this app serves its Prometheus metrics (``tasks.metrics``).

Run a worker with ``celery -A tasks.app worker`` (add ``-P gevent`` on the command line
for a gevent pool; set in configuration only, it would leave the process unpatched).
"""

from __future__ import annotations

import click

from herald import config as herald_config
from herald.config import Config
from herald.errors import ConfigError
from tasks import metrics
from tasks.factory import HeraldCelery


def _from_environment() -> Config:
    try:
        return herald_config.load()
    except ConfigError as exc:
        # Celery's command line prints a ClickException as one line and exits 1.
        raise click.ClickException(f"configuration error: {exc}") from None


app = HeraldCelery(_from_environment, set_as_current=True)
metrics.connect()  # each worker of this app serves its /metrics (tasks.metrics)
