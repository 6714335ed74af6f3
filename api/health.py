"""GET /healthz: answers 200 when Redis and the broker both answer, else 503."""

from __future__ import annotations

import redis
from flask import Blueprint, Response, jsonify

from api.context import celery, services

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    checks = {"redis": _redis(), "broker": _broker()}
    healthy = all(value == "ok" for value in checks.values())
    return jsonify(status="ok" if healthy else "unavailable", **checks), 200 if healthy else 503


def _redis() -> str:
    try:
        services().redis.ping()
    except redis.RedisError as exc:
        return f"error: {exc}"
    return "ok"


def _broker() -> str:
    try:
        with celery().connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0.5,
                                   timeout=2)
    except Exception as exc:  # kombu raises transport-specific errors
        return f"error: {exc}"
    return "ok"
