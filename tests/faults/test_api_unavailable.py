"""Fault: the API (under gunicorn, as ``herald run`` starts it) while Redis or the broker
is down: every endpoint answers 503 JSON with ``Retry-After``, logs one WARNING line and
no traceback, and stores, dispatches and publishes nothing.
"""

from __future__ import annotations

import httpx
import pytest

from herald import config as herald_config
from herald import services as herald_services
from herald import tokens, unsubscribe
from herald.keys import Keys
from tests.conftest import free_port, start_api

pytestmark = pytest.mark.faults

UNSUBSCRIBE = "/api/unsubscribe/{token}"  # the signed token is made by the test
ENDPOINT = "wh_01M8FXDK8WXPWT8MAE5X1406RT"

# Every endpoint of the API but /healthz and /api/openapi.json, which need no Redis:
# (method, rule, path, body, credential: "key" or a user token's user).
ENDPOINTS = [
    ("POST", "/api/notifications", "/api/notifications",
     {"recipients": ["alice"], "title": "Hi"}, "key"),
    ("POST", "/api/notifications/batch", "/api/notifications/batch",
     {"items": [{"recipients": ["alice"], "title": "Hi"}]}, "key"),
    ("GET", "/api/notifications/<notification_id>",
     "/api/notifications/n_01M8FXDK8WXPWT8MAE5X1406RT", None, "key"),
    ("GET", "/api/users/<user>/notifications", "/api/users/alice/notifications", None,
     "key"),
    ("GET", "/api/users/<user>/notifications", "/api/users/alice/notifications", None,
     "alice"),
    ("POST", "/api/users/<user>/notifications/read",
     "/api/users/alice/notifications/read", {"all": True}, "alice"),
    ("POST", "/api/events", "/api/events", {"topic": "t", "data": 1}, "key"),
    ("POST", "/api/jobs", "/api/jobs", {"kind": "demo.countdown", "owner": "alice"}, "key"),
    ("GET", "/api/jobs/<job_id>", "/api/jobs/j_01M8FXDK8WXPWT8MAE5X1406RT", None, "alice"),
    ("POST", "/api/tokens", "/api/tokens", {"user": "alice"}, "key"),
    ("POST", "/api/tokens/revoke", "/api/tokens/revoke", {"token_id": "abc"}, "key"),
    ("GET", "/api/dead-letters", "/api/dead-letters", None, "key"),
    ("POST", "/api/dead-letters/<delivery_id>/retry",
     "/api/dead-letters/d_aaaaaaaaaaaaaaaaaaaaaaaa/retry", None, "key"),
    ("GET", "/api/users/<user>/profile", "/api/users/alice/profile", None, "alice"),
    ("PUT", "/api/users/<user>/profile", "/api/users/alice/profile",
     {"email": "alice@example.com"}, "key"),
    ("GET", "/api/users/<user>/preferences", "/api/users/alice/preferences", None, "alice"),
    ("PUT", "/api/users/<user>/preferences", "/api/users/alice/preferences",
     {"email": {"marketing": False}}, "alice"),
    ("POST", "/api/unsubscribe/<token>", UNSUBSCRIBE, "List-Unsubscribe=One-Click", "-"),
    ("POST", "/api/webhooks", "/api/webhooks",
     {"url": "https://hooks.example.com/h", "topics": ["orders"]}, "key"),
    ("GET", "/api/webhooks", "/api/webhooks", None, "key"),
    ("GET", "/api/webhooks/<endpoint_id>", "/api/webhooks/" + ENDPOINT, None, "key"),
    ("DELETE", "/api/webhooks/<endpoint_id>", "/api/webhooks/" + ENDPOINT, None, "key"),
    ("POST", "/api/webhooks/<endpoint_id>/test", f"/api/webhooks/{ENDPOINT}/test", None,
     "key"),
    ("GET", "/api/webhooks/<endpoint_id>/deliveries/<delivery_id>",
     f"/api/webhooks/{ENDPOINT}/deliveries/d_aaaaaaaaaaaaaaaaaaaaaaaa", None, "key"),
]
# Answered without Redis: the API's description, and the unsubscribe page (a GET only
# shows the signed choice; the POST that records it is in ENDPOINTS).
WITHOUT_REDIS = {("GET", "/api/openapi.json"), ("GET", "/api/unsubscribe/<token>")}


def test_the_list_names_every_endpoint(config):
    from api import create_app

    rules = {(method, rule.rule) for rule in create_app(config).url_map.iter_rules()
             for method in rule.methods - {"HEAD", "OPTIONS"}
             if rule.rule.startswith("/api/")
             and (method, rule.rule) not in WITHOUT_REDIS}
    assert rules == {(method, rule) for method, rule, *_ in ENDPOINTS}


def _assert_unavailable(answer: httpx.Response, code: str) -> None:
    assert answer.status_code == 503, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert int(answer.headers["retry-after"]) > 0
    assert answer.json()["error"]["code"] == code


def test_every_endpoint_answers_503_while_redis_is_down(own_redis, own_env, config):
    env = own_env(own_redis)
    key, _ = herald_services.build(herald_config.load(env)).apikeys.create("tests")
    credentials = {"key": key, "alice": tokens.mint(config.secret, "alice", (), 600)[0]}
    signed = unsubscribe.token(config, "alice", "marketing")
    process, url = start_api(env, name="api-redis-down")
    try:
        own_redis.stop()
        for method, _, path, body, who in ENDPOINTS:
            answer = httpx.request(method, url + path.format(token=signed), timeout=30,
                                   **_request(body, credentials.get(who)))
            _assert_unavailable(answer, "redis_unavailable")
        assert httpx.get(f"{url}/healthz", timeout=30).status_code == 503

        own_redis.start()
        assert httpx.post(f"{url}/api/tokens", json={"user": "alice"}, timeout=30,
                          headers={"Authorization": f"Bearer {key}"}).status_code == 201
    finally:
        process.stop()
    log = process.log()
    warnings = [line for line in log.splitlines() if "503, Redis unavailable" in line]
    assert len(warnings) == len(ENDPOINTS), log
    assert all(" WARNING " in line for line in warnings), warnings
    assert "Traceback" not in log and " ERROR " not in log, log


def _request(body: object, credential: str | None) -> dict[str, object]:
    """A form body (the one-click unsubscribe's) as is, anything else as JSON; the
    credential, if any, as a bearer token."""
    headers = {"Authorization": f"Bearer {credential}"} if credential else {}
    if isinstance(body, str):
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        return {"content": body, "headers": headers}
    return {"json": body, "headers": headers}


def test_a_job_or_notification_the_broker_refuses_stores_and_publishes_nothing(
        clean, services, subscribe, rdb, broker_db, config, child_env):
    dead_broker = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    process, url = start_api({**child_env, "CELERY_BROKER_URL": dead_broker},
                             name="api-no-broker", healthy=False)
    key, _ = services.apikeys.create("tests")
    alice = subscribe("alice")
    assert alice.status == 200
    try:
        for path, body in [
            ("/api/jobs", {"kind": "demo.countdown", "owner": "alice",
                           "params": {"steps": 1, "interval": 0}}),
            ("/api/notifications", {"recipients": ["alice"], "title": "Hi"}),
            ("/api/notifications/batch", {"items": [{"recipients": ["alice"], "title": "Hi"},
                                                    {"recipients": ["bob"], "title": "Yo"}]}),
        ]:
            answer = httpx.post(url + path, json=body, timeout=30,
                                headers={"Authorization": f"Bearer {key}"})
            _assert_unavailable(answer, "broker_unavailable")
            assert "id" not in answer.json()
    finally:
        process.stop()

    sentinel = services.publisher.publish("user:alice", {"after": "the refusals"}, "sentinel")
    alice.wait_for(1)
    assert [(e.event, e.id) for e in alice.events] == [("sentinel", sentinel)]
    keys = Keys(config.prefix)
    assert rdb.keys(keys.job("*")) == [] and rdb.keys(keys.notification("*")) == []
    assert rdb.keys(keys.inbox("*")) == [] and broker_db.keys("*") == []
    log = process.log()
    warnings = [line for line in log.splitlines() if "503, broker unavailable" in line]
    assert len(warnings) == 3 and all(" WARNING " in line for line in warnings), log
    assert "Traceback" not in log, log
