"""Who may call what on the API: API keys, user tokens, revoked keys, rate limits."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from herald import tokens

pytestmark = pytest.mark.usefixtures("clean")

NOTIFY = {"recipients": ["alice"], "title": "Hi"}
PROTECTED = [
    ("POST", "/api/notifications", NOTIFY),
    ("GET", "/api/notifications/n_01M8FXDK8WXPWT8MAE5X1406RT", None),
    ("GET", "/api/users/alice/notifications", None),
    ("POST", "/api/users/alice/notifications/read", {"all": True}),
    ("POST", "/api/events", {"topic": "t", "data": 1}),
    ("POST", "/api/jobs", {"kind": "demo.countdown", "owner": "alice"}),
    ("GET", "/api/jobs/j_01M8FXDK8WXPWT8MAE5X1406RT", None),
    ("POST", "/api/tokens", {"user": "alice"}),
    ("POST", "/api/tokens/revoke", {"token_id": "abc"}),
]


def _call(api_url: str, method: str, path: str, body, credential: str | None):
    headers = {"Authorization": f"Bearer {credential}"} if credential else {}
    return httpx.request(method, api_url + path, json=body, headers=headers)


@pytest.mark.parametrize(("method", "path", "body"), PROTECTED,
                         ids=[f"{m} {p}" for m, p, _ in PROTECTED])
@pytest.mark.parametrize("credential", ["none", "garbage", "unknown key", "revoked key"])
def test_every_protected_endpoint_refuses_without_a_valid_credential(
        api_url, services, rdb, method, path, body, credential):
    key, record = services.apikeys.create("doomed")
    services.apikeys.revoke(record.id)
    presented = {"none": None, "garbage": "x", "unknown key": "hk_0123456789ab_" + "z" * 43,
                 "revoked key": key}[credential]
    before = set(rdb.keys("*"))
    answer = _call(api_url, method, path, body, presented)
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"].startswith("Bearer")
    assert answer.json()["error"]["field"] == "Authorization"
    assert set(rdb.keys("*")) == before


@pytest.mark.parametrize(("method", "path", "body"), [
    p for p in PROTECTED if "/users/alice" not in p[1] and "/jobs/" not in p[1]])
def test_a_user_token_cannot_send_publish_or_mint(api_url, mint, method, path, body):
    answer = _call(api_url, method, path, body, mint("alice"))
    assert answer.status_code == 403
    assert "API key" in answer.json()["error"]["message"]


def test_a_user_token_reads_and_marks_only_its_own_inbox(api, api_url, mint, worker):
    api.post("/api/notifications", json={"recipients": ["alice", "bob"], "title": "x"})
    alice = {"Authorization": f"Bearer {mint('alice')}"}
    own = httpx.get(f"{api_url}/api/users/alice/notifications", headers=alice)
    assert own.status_code == 200
    other = httpx.get(f"{api_url}/api/users/bob/notifications", headers=alice)
    assert other.status_code == 403
    mark = httpx.post(f"{api_url}/api/users/bob/notifications/read", json={"all": True},
                      headers=alice)
    assert mark.status_code == 403
    assert httpx.post(f"{api_url}/api/users/alice/notifications/read", json={"all": True},
                      headers=alice).status_code == 200


def test_a_user_token_reads_its_own_jobs_only(api, api_url, mint):
    job_id = api.post("/api/jobs", json={"kind": "demo.countdown", "owner": "alice",
                                         "params": {"steps": 1, "interval": 0}}).json()["id"]
    mine = httpx.get(f"{api_url}/api/jobs/{job_id}",
                     headers={"Authorization": f"Bearer {mint('alice')}"})
    theirs = httpx.get(f"{api_url}/api/jobs/{job_id}",
                       headers={"Authorization": f"Bearer {mint('bob')}"})
    assert mine.status_code == 200
    assert theirs.status_code == 404


def test_a_revoked_user_token_is_refused_by_the_api(api, api_url, config):
    token, grant = tokens.mint(config.secret, "alice", ttl=600)
    assert api.post("/api/tokens/revoke", json={"token_id": grant.token_id}).status_code == 200
    answer = httpx.get(f"{api_url}/api/users/alice/notifications",
                       headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 401
    assert "revoked" in answer.json()["error"]["message"]


@pytest.fixture
def slow_api(config, services):
    """A second API process-alike with a tight rate limit: 1/s, bursts of 2."""
    from werkzeug.serving import make_server

    from api import create_app

    app = create_app(config.replace(publish_rate=1.0, publish_burst=2))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    key, _ = services.apikeys.create("limited")
    yield f"http://127.0.0.1:{server.server_port}", key
    server.shutdown()


def test_the_publish_rate_per_key_is_enforced_with_retry_after(slow_api, rdb, keys):
    url, key = slow_api
    headers = {"Authorization": f"Bearer {key}"}
    first = [httpx.post(f"{url}/api/events", json={"topic": "t", "data": n}, headers=headers)
             for n in range(2)]
    assert [a.status_code for a in first] == [202, 202]
    stream = keys.stream("t")
    stored = rdb.xlen(stream)
    refused = httpx.post(f"{url}/api/events", json={"topic": "t", "data": 3}, headers=headers)
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["error"]["code"] == "too_many_requests"
    assert rdb.xlen(stream) == stored
    time.sleep(int(refused.headers["retry-after"]))  # as the answer says
    again = httpx.post(f"{url}/api/events", json={"topic": "t", "data": 4}, headers=headers)
    assert again.status_code == 202


def test_idempotency_keys_are_scoped_to_the_api_key(api, api_url, services):
    other, _ = services.apikeys.create("other")
    headers = {"Idempotency-Key": "same-key"}
    mine = api.post("/api/notifications", json=NOTIFY, headers=headers).json()["id"]
    theirs = httpx.post(f"{api_url}/api/notifications", json=NOTIFY,
                        headers={**headers, "Authorization": f"Bearer {other}"}).json()["id"]
    assert mine != theirs
