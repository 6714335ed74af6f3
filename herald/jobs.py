"""Job records: background tasks started through the API, and their progress.

A job's id is its Celery task id. Its record holds the kind, the owner (the user whose
topic receives the lifecycle events), the state (``queued``, ``started``, ``retrying``,
``succeeded``, ``failed``), progress ``{done, total}``, the result or error, and
timestamps. Records expire after ``HERALD_RETENTION`` seconds.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from herald.keys import Keys
from herald.times import iso, now_ms

QUEUED, STARTED, RETRYING, SUCCEEDED, FAILED = (
    "queued", "started", "retrying", "succeeded", "failed")

_UPDATE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""


class JobStore:
    """Reads and writes job records."""

    def __init__(self, redis_client: redis.Redis, keys: Keys, retention: int) -> None:
        self.redis = redis_client
        self.keys = keys
        self.retention = retention
        self._update = redis_client.register_script(_UPDATE)

    def create(self, job_id: str, kind: str, params: dict[str, Any], owner: str) -> None:
        now = now_ms()
        key = self.keys.job(job_id)
        pipe = self.redis.pipeline()
        pipe.hset(key, mapping={
            "id": job_id, "kind": kind, "owner": owner, "params": json.dumps(params),
            "state": QUEUED, "done": 0, "total": 0, "result": "", "error": "",
            "created_at": now, "updated_at": now, "started_at": "", "finished_at": "",
        })
        pipe.expire(key, self.retention)
        pipe.execute()

    def delete(self, job_id: str) -> None:
        self.redis.delete(self.keys.job(job_id))

    def owner(self, job_id: str) -> str | None:
        """The owner of a job, or None when the task is not a job started by the API."""
        return self.redis.hget(self.keys.job(job_id), "owner")

    def update(self, job_id: str, **fields: Any) -> bool:
        """Set fields of an existing record (never recreates an expired one)."""
        fields["updated_at"] = now_ms()
        flat = [item for pair in fields.items() for item in pair]
        return bool(self._update(keys=[self.keys.job(job_id)], args=flat))

    def describe(self, job_id: str) -> dict[str, Any] | None:
        """The record as the API shows it."""
        record = self.redis.hgetall(self.keys.job(job_id))
        if not record:
            return None
        return {
            "id": record["id"],
            "kind": record["kind"],
            "owner": record["owner"],
            "params": json.loads(record["params"]),
            "state": record["state"],
            "progress": {"done": int(record["done"]), "total": int(record["total"])},
            "result": json.loads(record["result"]) if record["result"] else None,
            "error": record["error"] or None,
            "created_at": iso(record["created_at"]),
            "started_at": iso(record["started_at"]),
            "finished_at": iso(record["finished_at"]),
            "updated_at": iso(record["updated_at"]),
        }
