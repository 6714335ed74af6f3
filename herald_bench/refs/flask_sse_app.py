"""The flask-sse reference app: flask-sse's message stream, served at ``/stream``.

Guarantees: ``GET /stream?channel=<name>`` streams, as SSE, every flask-sse message
published on the Redis channel ``<name>`` of ``REDIS_URL`` (default
``redis://127.0.0.1:6379/0``) while the client is connected. Two departures from
flask-sse's own view, both so the load generator can measure it like the others:
- the stream starts with an SSE comment, so the response headers are sent at once (the
  blueprint's view sends nothing until the first event; Herald and nchan both flush a
  comment first); the messages themselves come from flask-sse's ``sse.messages``;
- a JSON provider with compact separators, so that the ``data:`` line reads
  ``{"seq":5,"t":...}`` rather than ``{"seq": 5, "t": ...}`` (keys stay sorted).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from flask import Flask, Response, request, stream_with_context
from flask.json.provider import DefaultJSONProvider
from flask_sse import sse

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


class CompactJSONProvider(DefaultJSONProvider):
    """Flask's default JSON provider, writing compact JSON."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        kwargs.setdefault("separators", (",", ":"))
        return super().dumps(obj, **kwargs)


def create_app() -> Flask:
    """The Flask app serving flask-sse's stream at ``/stream``."""
    app = Flask(__name__)
    app.json = CompactJSONProvider(app)
    app.config["REDIS_URL"] = os.environ.get("REDIS_URL", DEFAULT_REDIS_URL)
    app.register_blueprint(sse, url_prefix="/sse")
    app.add_url_rule("/stream", "stream", stream)
    return app


def stream() -> Response:
    """flask-sse's stream view, plus a first comment that flushes the headers."""
    channel = request.args.get("channel") or "sse"

    @stream_with_context
    def generator() -> Iterator[str]:
        yield ": connected\n\n"
        for message in sse.messages(channel=channel):
            yield str(message)

    return Response(generator(), mimetype="text/event-stream")


app = create_app()
