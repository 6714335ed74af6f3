"""Publisher API keys: who may send, publish, mint tokens and read any user's data.

A key reads ``hk_<id>_<secret>``. Only a SHA-256 hash of the secret is stored (in the
hash ``Keys.apikeys``, field ``<id>``), so the key is shown once, when created.
Checking a key costs one Redis read and a comparison of digests; a revoked key is
refused from the next request on. ``CHECK_FUNCTION`` is the same check in Lua, for
scripts that check the key and act in the same round trip (the API's submit script).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass

import redis

from herald.keys import Keys
from herald.times import iso, now_ms

KEY_RE = re.compile(r"hk_([0-9a-f]{12})_([A-Za-z0-9_-]{20,100})")
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}")

# herald_apikey(hash, id, digest): the stored record (JSON) of the active key ``id``
# whose secret hashes to ``digest``, or false. Lua compares digests in variable time,
# which is harmless here: timing can reveal at most a prefix of the stored SHA-256
# digest, and finding a secret that hashes to a known digest is a preimage attack.
CHECK_FUNCTION = """
local function herald_apikey(hash, id, digest)
  local raw = redis.call('HGET', hash, id)
  if not raw then return false end
  local record = cjson.decode(raw)
  if record['hash'] ~= digest or record['revoked_at'] ~= cjson.null then return false end
  return raw
end
"""


@dataclass(frozen=True)
class ApiKey:
    """A stored key, without its secret."""

    id: str
    name: str
    created_at: str | None
    revoked_at: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def looks_like_key(value: str) -> bool:
    return value.startswith("hk_")


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class ApiKeyStore:
    """Creates, lists, revokes and checks API keys."""

    def __init__(self, redis_client: redis.Redis, keys: Keys) -> None:
        self.redis = redis_client
        self.key = keys.apikeys

    def create(self, name: str) -> tuple[str, ApiKey]:
        """A new key named ``name``: the full key (shown once) and its record."""
        if not NAME_RE.fullmatch(name):
            raise ValueError("name must be 1-64 letters, digits, spaces, '.', '_' or '-'")
        key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        record = {"id": key_id, "name": name, "hash": _digest(secret),
                  "created_at": now_ms(), "revoked_at": None}
        self.redis.hset(self.key, key_id, json.dumps(record))
        return f"hk_{key_id}_{secret}", _public(record)

    def list(self) -> list[ApiKey]:
        records = [json.loads(raw) for raw in self.redis.hvals(self.key)]
        return sorted((_public(r) for r in records), key=lambda k: k.created_at or "")

    def revoke(self, id_or_name: str) -> list[ApiKey]:
        """Revoke the key with this id, or every active key with this name."""
        revoked = []
        for key_id, raw in self.redis.hgetall(self.key).items():
            record = json.loads(raw)
            if id_or_name in (key_id, record["name"]) and record["revoked_at"] is None:
                record["revoked_at"] = now_ms()
                self.redis.hset(self.key, key_id, json.dumps(record))
                revoked.append(_public(record))
        return revoked

    def check(self, presented: str) -> ApiKey | None:
        """The active key ``presented`` is, or None."""
        parts = split(presented)
        if parts is None:
            return None
        raw = self.redis.hget(self.key, parts[0])
        if raw is None:
            return None
        record = json.loads(raw)
        if not hmac.compare_digest(record["hash"], parts[1]):
            return None
        key = _public(record)
        return key if key.active else None


def split(presented: str) -> tuple[str, str] | None:
    """The id of the key ``presented`` and the digest of its secret (what
    ``CHECK_FUNCTION`` takes), or None when it is not shaped like a key."""
    match = KEY_RE.fullmatch(presented)
    if match is None:
        return None
    return match.group(1), _digest(match.group(2))


def from_record(raw: str) -> ApiKey:
    """The key a stored record (JSON, as ``CHECK_FUNCTION`` answers it) describes."""
    return _public(json.loads(raw))


def _public(record: dict) -> ApiKey:
    return ApiKey(record["id"], record["name"], iso(record["created_at"]),
                  iso(record["revoked_at"]))

