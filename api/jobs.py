"""POST /api/jobs and GET /api/jobs/<id>: background tasks that report progress."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request, url_for
from pydantic import ValidationError

from api import auth
from api.context import celery, services
from api.errors import from_validation
from api.schemas import JobIn, parse
from herald.errors import Refusal, invalid
from herald.ids import valid_id
from tasks import jobs

bp = Blueprint("jobs", __name__, url_prefix="/api/jobs")


@bp.post("")
def start() -> tuple[Response, int]:
    """Validate the kind's params, dispatch the job; answer 202 with its id."""
    auth.sender()
    body = parse(request, JobIn)
    known = jobs.kinds()
    kind = known.get(body.kind)
    if kind is None:
        raise invalid("kind", f"must be one of {', '.join(sorted(known))}")
    try:
        params = kind.params.model_validate(body.params).model_dump()
    except ValidationError as exc:
        raise from_validation(exc, prefix="params") from None
    job_id = jobs.submit(services(), celery(), kind.name, params, body.owner)
    status_url = url_for("jobs.show", job_id=job_id, _external=True)
    answer = jsonify(id=job_id, status_url=status_url)
    answer.headers["Location"] = status_url
    return answer, 202


@bp.get("/<job_id>")
def show(job_id: str) -> Response:
    """The job's state, progress, result or error, and timestamps (key or owner)."""
    who = auth.caller()
    record = services().jobs.describe(job_id) if valid_id(job_id, "j") else None
    if record is None or (who.grant is not None and who.grant.user != record["owner"]):
        raise Refusal(404, "not_found", f"no job {job_id!r}", "id")
    return jsonify(record)
