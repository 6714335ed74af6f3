"""Herald's HTTP API: a thin Flask app that validates, stores and dispatches.

``create_app()`` is the factory (``gunicorn 'api:create_app()'``). Handlers validate the
request fully before they store, dispatch or publish anything. The API publishes
events (``POST /api/events``, ``notification.read``, a new job's ``job.queued``) through
``herald.publisher`` but never subscribes: holding subscribers' connections is the
``streamer``'s job. The gunicorn worker is
``api.worker``: the master process imports it before gevent patches the workers, so
importing this package imports nothing but the standard library (``create_app`` imports
the rest).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask

    from herald.config import Config


def create_app(config: Config | None = None) -> Flask:
    """Build the API for ``config`` (default: from the environment)."""
    from flask import Flask
    from flask_cors import CORS

    from api import errors, events, health, inbox, jobs, notifications, openapi, tokens
    from api.schemas import MAX_BODY_BYTES
    from herald import config as herald_config
    from herald import logs, services
    from herald.config import redact_url
    from herald.errors import ConfigError

    try:
        cfg = config or herald_config.get()
    except ConfigError as exc:
        raise SystemExit(f"herald api: configuration error: {exc}") from None
    logs.setup(cfg.log_level)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES + 1  # see api.schemas.parse
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["herald"] = services.build(cfg)
    errors.register(app)
    for module in (notifications, inbox, events, jobs, tokens, health, openapi):
        app.register_blueprint(module.bp)
    if not cfg.production:
        from api import demo

        app.register_blueprint(demo.bp)
    if cfg.cors_origins:
        CORS(app, resources={r"/api/*": {"origins": list(cfg.cors_origins)}},
             allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
             expose_headers=["Location", "Retry-After"], max_age=600)
    logging.getLogger(__name__).info("Herald API ready (redis %s, broker %s)",
                                     redact_url(cfg.redis_url), redact_url(cfg.broker_url))
    return app
