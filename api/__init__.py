"""Herald's HTTP API: a thin Flask app that validates, stores and dispatches.

``create_app(config)`` is the factory: it builds the app from the ``Config`` it is given
(its services and the Celery app it sends tasks through), and reads no environment
variable. ``api.wsgi`` is gunicorn's entry point (``gunicorn 'api.wsgi:from_environment()'``),
the one place the API loads its configuration. Handlers validate the request fully
before they store, dispatch or publish anything. The API publishes events (``POST
/api/events``, ``notification.read``, a new job's ``job.queued``) through
``herald.publisher`` but never subscribes: holding subscribers' connections is the
``streamer``'s job. The gunicorn worker is ``api.worker``: the master process imports it
before gevent patches the workers, so importing this package imports nothing but the
standard library (``create_app`` imports the rest).
"""

from __future__ import annotations

import logging
from functools import partial
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask

    from herald.config import Config


def create_app(config: Config) -> Flask:
    """Build the API for ``config``."""
    from flask import Flask
    from flask_cors import CORS

    from api import (
        deadletters,
        errors,
        events,
        health,
        inbox,
        jobs,
        metrics,
        notifications,
        openapi,
        tokens,
        unsubscribe,
        users,
        webhooks,
    )
    from api.schemas import MAX_BODY_BYTES
    from herald import logs, services
    from herald.config import redact_url
    from tasks.factory import make_celery
    from tasks.grouping import GroupCommit
    from tasks.notifications import dispatch

    logs.setup(config.log_level)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES + 1  # see api.schemas.parse
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["herald"] = services.build(config)
    app.extensions["celery"] = make_celery(config)
    app.extensions["send"] = GroupCommit(partial(dispatch, app.extensions["celery"]))
    errors.register(app)
    metrics.install(app, config)
    for module in (notifications, inbox, events, jobs, tokens, health, openapi, deadletters,
                   users, unsubscribe, webhooks):
        app.register_blueprint(module.bp)
    if not config.production:
        from api import demo

        app.register_blueprint(demo.bp)
    if config.cors_origins:
        CORS(app, resources={r"/api/*": {"origins": list(config.cors_origins)}},
             allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
             expose_headers=["Location", "Retry-After"], max_age=600)
    logging.getLogger(__name__).info("Herald API ready (redis %s, broker %s)",
                                     redact_url(config.redis_url), redact_url(config.broker_url))
    return app
