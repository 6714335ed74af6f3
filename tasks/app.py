"""The Celery application of Herald, configured by ``celeryconfig``.

Run a worker with ``celery -A tasks.app worker`` (add ``-P gevent`` on the command line
for a gevent pool; set in configuration only, it would leave the process unpatched).
"""

from __future__ import annotations

from celery import Celery

app = Celery("herald")
app.config_from_object("celeryconfig")
