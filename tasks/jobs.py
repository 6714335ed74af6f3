"""Jobs: tasks started through the API whose lifecycle is published to their owner.

Every task declared with ``job_kind`` runs on ``JobTask``, which publishes to the
owner's topic ``user:<owner>``, once per run and in this order: ``job.started``, any
number of ``job.progress`` (from ``self.progress(done, total)``), then ``job.succeeded``
or ``job.failed`` (``job.retrying`` before a retry). ``job.queued`` comes before all of
them, once per job: ``submit`` publishes it after the broker took the task, and the
worker before ``job.started``, with one idempotency key, so whichever comes first
publishes it and the other is a no-op. Every event's data is
``{"job_id", "kind", "state", "done", "total"}`` plus ``result`` or ``error`` at the end.
A task redelivered after its worker died runs again and publishes ``job.started`` again.

A job the broker refuses is not a job: ``submit`` (which sends the task through the
producer's Celery app) removes its record and publishes nothing. Lifecycle events are
best effort: when Redis refuses them, the job still runs and the failure is logged. A
job task reaches Redis through its app's services (``tasks.factory.services_of``).
"""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from celery import Celery, Task, shared_task
from kombu.exceptions import OperationalError
from pydantic import BaseModel

from herald.errors import DispatchError
from herald.event import user_topic
from herald.ids import new_id
from herald.jobs import FAILED, QUEUED, RETRYING, STARTED, SUCCEEDED
from herald.services import Services
from herald.times import now_ms
from tasks.factory import services_of
from tasks.settings import TASK_MODULES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobKind:
    """A task the API may start: its name, its Celery task and its parameter model."""

    name: str
    task: Task
    params: type[BaseModel]
    description: str


KINDS: dict[str, JobKind] = {}


def kinds() -> dict[str, JobKind]:
    """Every registered job kind, importing the task modules (``TASK_MODULES``)."""
    for module in TASK_MODULES:
        importlib.import_module(module)
    return KINDS


def job_kind(name: str, params: type[BaseModel],
             description: str) -> Callable[[Callable[..., Any]], Task]:
    """Register a bound Celery task on ``JobTask`` as the job kind ``name``."""

    def register(func: Callable[..., Any]) -> Task:
        task = shared_task(base=JobTask, bind=True, name=name, default_retry_delay=1)(func)
        KINDS[name] = JobKind(name, task, params, description)
        return task

    return register


class JobTask(Task):
    """Base class of job tasks: records state and publishes lifecycle events."""

    def before_start(self, task_id: str, args: tuple, kwargs: dict) -> None:
        if not self.request.retries:
            try:
                _announce_queued(services_of(self), task_id)
            except redis.RedisError:
                log.warning("job %s: could not publish job.queued", task_id, exc_info=True)
        self._transition(task_id, STARTED, started_at=now_ms(), error="")

    def on_success(self, retval: Any, task_id: str, args: tuple, kwargs: dict) -> None:
        self._transition(task_id, SUCCEEDED, result=json.dumps(retval), finished_at=now_ms())

    def on_failure(self, exc: BaseException, task_id: str, args: tuple, kwargs: dict,
                   einfo: Any) -> None:
        self._transition(task_id, FAILED, error=_describe(exc), finished_at=now_ms())

    def on_retry(self, exc: BaseException, task_id: str, args: tuple, kwargs: dict,
                 einfo: Any) -> None:
        self._transition(task_id, RETRYING, error=_describe(exc))

    def progress(self, done: int, total: int) -> None:
        """Record and publish progress of the running job."""
        self._transition(self.request.id, STARTED, done=done, total=total,
                         event="job.progress")

    def _transition(self, job_id: str, state: str, event: str | None = None,
                    **fields: Any) -> None:
        svc = services_of(self)
        event_type = event or f"job.{state}"
        # One event per transition and attempt, even if Redis drops a reply and the
        # client retries the publish.
        key = f"job:{job_id}:{self.request.retries}:{event_type}:{fields.get('done', '')}"
        try:
            if not svc.jobs.update(job_id, state=state, **fields):
                return  # not started through the API (or expired): no lifecycle
            _announce(svc, job_id, event_type, key)
        except redis.RedisError:
            log.warning("job %s: could not record or publish %s", job_id, state,
                        exc_info=True)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _announce(svc: Services, job_id: str, event_type: str, key: str | None = None,
              state: str | None = None) -> None:
    job = svc.jobs.describe(job_id)
    if job is None:
        return
    state = state or job["state"]
    data = {"job_id": job_id, "kind": job["kind"], "state": state, **job["progress"]}
    if state == SUCCEEDED:
        data["result"] = job["result"]
    elif state in (FAILED, RETRYING):
        data["error"] = job["error"]
    svc.publisher.publish(user_topic(job["owner"]), data, event_type, key)


def _announce_queued(svc: Services, job_id: str) -> None:
    """Publish ``job.queued`` unless the API or the worker already did."""
    _announce(svc, job_id, "job.queued", f"job:{job_id}:queued", state=QUEUED)


def submit(svc: Services, celery: Celery, kind: str, params: dict[str, Any],
           owner: str) -> str:
    """Record a job, send it through ``celery`` and publish ``job.queued`` to its owner;
    return its id.

    ``params`` must already be validated by the kind's model. Raises ``DispatchError``
    when the broker cannot take the task: the record is then removed and nothing is
    published. A Redis error before dispatching propagates (nothing was dispatched);
    once dispatched, failing to publish ``job.queued`` is only logged (the worker
    publishes it before ``job.started``).
    """
    job_id = new_id("j")
    svc.jobs.create(job_id, kind, params, owner)
    try:
        celery.send_task(KINDS[kind].name, kwargs=params, task_id=job_id)
    except OperationalError as exc:
        svc.jobs.delete(job_id)
        raise DispatchError(f"broker unavailable: {exc}") from exc
    try:
        _announce_queued(svc, job_id)
    except redis.RedisError as exc:
        log.warning("job %s: dispatched; could not publish job.queued (the worker will): "
                    "%s", job_id, exc)
    return job_id


__all__ = ["KINDS", "QUEUED", "JobKind", "JobTask", "job_kind", "kinds", "submit"]
