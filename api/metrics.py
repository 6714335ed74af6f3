"""The API's Prometheus metrics: what ``install(app)`` counts in each worker process.

- ``herald_api_requests_total{route,method,status}`` and
  ``herald_api_request_seconds{route,method}`` (from the request's start to its answer,
  the body excluded): every request the app answers, errors included. ``route`` is the
  Flask rule (``/api/notifications/<notification_id>``, never the raw path) or
  ``unmatched`` (404, 405); ``method`` is one of ``METHODS`` or ``other``: every label
  takes a bounded set of values whatever clients send.
- ``herald_notifications_accepted_total{channel}``: notifications stored and dispatched,
  once per requested channel (``accepted``; a repeated idempotency key is not counted).
- ``herald_notifications_refused_total{reason}``: submissions refused, counted where a
  ``Refusal`` is rendered (``api.errors.render``), so every refusal of every kind is
  counted whichever check raised it. ``reason``: ``validation`` (400, 413, 415, 422),
  ``auth`` (401, 403), ``rate_limit`` (429), ``broker_unavailable``,
  ``redis_unavailable`` (503).

Under gunicorn with ``api.gunicorn_conf`` every worker writes its counts into its
instance's metrics directory (prometheus-client's multiprocess mode) and the master
serves their sum; elsewhere (tests, ``flask run``) they stay in this process, readable
through ``metrics_of(app)``. With ``HERALD_API_METRICS_PORT=0`` nothing is installed and
nothing is counted.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from flask import Flask, Response, current_app, g, request
from prometheus_client import CollectorRegistry, Counter, Histogram

from herald.config import Config
from herald.errors import Refusal

EXTENSION = "herald.metrics"
SUBMIT_ENDPOINTS = frozenset({"notifications.create", "notifications.create_batch"})  # refused
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED, OTHER = "unmatched", "other"
UNAVAILABLE = ("broker_unavailable", "redis_unavailable")  # Refusal codes of a 503


@dataclass(frozen=True)
class ApiMetrics:
    """The API's metrics, registered in ``registry`` (this process' view)."""

    registry: CollectorRegistry
    requests: Counter
    seconds: Histogram
    accepted: Counter
    refused: Counter

    @classmethod
    def create(cls) -> ApiMetrics:
        registry = CollectorRegistry()
        return cls(
            registry=registry,
            requests=Counter("herald_api_requests", "Requests answered by the API.",
                             ["route", "method", "status"], registry=registry),
            seconds=Histogram("herald_api_request_seconds",
                              "Seconds from a request's start to its answer.",
                              ["route", "method"], registry=registry),
            accepted=Counter("herald_notifications_accepted",
                             "Notifications accepted, per requested channel.",
                             ["channel"], registry=registry),
            refused=Counter("herald_notifications_refused",
                            "Notifications refused, by reason.", ["reason"],
                            registry=registry),
        )


def install(app: Flask, config: Config) -> None:
    """Count ``app``'s requests (nothing when ``HERALD_API_METRICS_PORT`` is 0)."""
    if not config.api_metrics_port:
        return
    app.extensions[EXTENSION] = ApiMetrics.create()
    app.before_request(_started)
    app.after_request(_answered)


def metrics_of(app: Flask) -> ApiMetrics | None:
    """The metrics ``install`` gave ``app``, or None."""
    return app.extensions.get(EXTENSION)


def accepted(channels: Iterable[str]) -> None:
    """Count one accepted notification for each of its ``channels``."""
    metrics = metrics_of(current_app)
    if metrics is not None:
        for channel in channels:
            metrics.accepted.labels(channel).inc()


def refused(refusal: Refusal) -> None:
    """Count ``refusal`` when it refuses a notification (``api.errors.render``)."""
    metrics = metrics_of(current_app)
    why = reason(refusal)
    if metrics is not None and why is not None and request.endpoint in SUBMIT_ENDPOINTS:
        metrics.refused.labels(why).inc()


def reason(refusal: Refusal) -> str | None:
    """The ``reason`` label of a refusal; None for one that is not the client's or the
    deployment's doing (an internal error)."""
    if refusal.code in UNAVAILABLE:
        return refusal.code
    if refusal.status in (401, 403):
        return "auth"
    if refusal.status == 429:
        return "rate_limit"
    return "validation" if 400 <= refusal.status < 500 else None


def _started() -> None:
    g.herald_started = time.perf_counter()


def _answered(response: Response) -> Response:
    metrics = metrics_of(current_app)
    if metrics is None:
        return response
    rule = request.url_rule
    route = rule.rule if rule is not None else UNMATCHED
    method = request.method if request.method in METHODS else OTHER
    metrics.requests.labels(route, method, str(response.status_code)).inc()
    started = g.get("herald_started")
    if started is not None:
        metrics.seconds.labels(route, method).observe(time.perf_counter() - started)
    return response
