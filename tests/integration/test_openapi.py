"""The OpenAPI 3.1 document describes what the API really answers."""

from __future__ import annotations

import httpx
import jsonschema
import pytest
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from tests.conftest import wait_until

pytestmark = pytest.mark.usefixtures("clean", "worker")


@pytest.fixture
def spec(api_url):
    answer = httpx.get(f"{api_url}/api/openapi.json")
    assert answer.status_code == 200
    document = answer.json()
    assert document["openapi"] == "3.1.0"
    return document


def _check(spec: dict, template: str, method: str, response: httpx.Response) -> None:
    """Validate ``response`` against the document's schema for it."""
    operation = spec["paths"][template][method.lower()]
    described = operation["responses"].get(str(response.status_code))
    assert described, f"{method} {template} answered undocumented {response.status_code}"
    schema = described["content"]["application/json"]["schema"]
    registry = Registry().with_resource(
        "urn:herald", Resource.from_contents(spec, default_specification=DRAFT202012))
    reference = {"$ref": "urn:herald" + schema["$ref"]}
    jsonschema.Draft202012Validator(reference, registry=registry).validate(response.json())


def test_real_answers_match_the_document(spec, api, api_url, mint, services):
    sent = api.post("/api/notifications",
                    json={"recipients": ["alice"], "title": "Hi", "data": {"k": [1]}})
    _check(spec, "/api/notifications", "POST", sent)
    batch = api.post("/api/notifications/batch", json={"items": [
        {"recipients": ["bob"], "title": "Hi", "idempotency_key": "b-1"},
        {"recipients": ["bob"], "title": ""}]})
    _check(spec, "/api/notifications/batch", "POST", batch)
    _check(spec, "/api/notifications/batch", "POST",
           api.post("/api/notifications/batch", json={"items": []}))
    notification_id = sent.json()["id"]
    status_url = f"/api/notifications/{notification_id}"
    wait_until(lambda: api.get(status_url).json()["status"] == "delivered", what="delivery")
    _check(spec, "/api/notifications/{id}", "GET", api.get(status_url))
    _check(spec, "/api/notifications/{id}", "GET", api.get("/api/notifications/n_nope"))
    # Outbound deliveries, as the e-mail and webhook channels record them; a dead letter.
    services.deliveries.create(notification_id, "email", "alice", "skipped",
                               "no e-mail address")
    dead, _ = services.deliveries.create(notification_id, "webhook", "wh_1")
    services.deliveries.claim(dead, 30)
    services.deliveries.finish(dead, "webhook", "dead", "HTTP 503")
    _check(spec, "/api/notifications/{id}", "GET", api.get(status_url))
    _check(spec, "/api/dead-letters", "GET", api.get("/api/dead-letters"))
    _check(spec, "/api/dead-letters", "GET", api.get("/api/dead-letters?channel=sms"))
    retried = api.post(f"/api/dead-letters/{dead}/retry")
    assert retried.status_code == 202
    _check(spec, "/api/dead-letters/{id}/retry", "POST", retried)
    _check(spec, "/api/dead-letters/{id}/retry", "POST",
           api.post(f"/api/dead-letters/{dead}/retry"))
    inbox = api.get("/api/users/alice/notifications", params={"limit": 5})
    _check(spec, "/api/users/{user}/notifications", "GET", inbox)
    marked = api.post("/api/users/alice/notifications/read", json={"ids": [notification_id]})
    _check(spec, "/api/users/{user}/notifications/read", "POST", marked)
    _check(spec, "/api/events", "POST", api.post("/api/events", json={"topic": "t"}))
    _check(spec, "/api/events", "POST", api.post("/api/events", json={"topic": "T T"}))
    job = api.post("/api/jobs", json={"kind": "demo.countdown", "owner": "alice",
                                      "params": {"steps": 1, "interval": 0}})
    _check(spec, "/api/jobs", "POST", job)
    job_url = f"/api/jobs/{job.json()['id']}"
    wait_until(lambda: api.get(job_url).json()["state"] == "succeeded", what="the job")
    _check(spec, "/api/jobs/{id}", "GET", api.get(job_url))
    minted = api.post("/api/tokens", json={"user": "alice", "topics": ["room:*"]})
    _check(spec, "/api/tokens", "POST", minted)
    revoked = api.post("/api/tokens/revoke", json={"token_id": minted.json()["token_id"]})
    _check(spec, "/api/tokens/revoke", "POST", revoked)
    _check(spec, "/healthz", "GET", httpx.get(f"{api_url}/healthz"))
    _check(spec, "/api/events", "POST", httpx.post(f"{api_url}/api/events", json={}))
    user = httpx.post(f"{api_url}/api/events", json={"topic": "t"},
                      headers={"Authorization": f"Bearer {mint('alice')}"})
    _check(spec, "/api/events", "POST", user)


def test_profile_preferences_and_unsubscribe_answers_match_the_document(spec, api, api_url,
                                                                        mint, config):
    from herald import unsubscribe

    profile, prefs = "/api/users/{user}/profile", "/api/users/{user}/preferences"
    _check(spec, profile, "GET", api.get("/api/users/alice/profile"))
    _check(spec, profile, "PUT", api.put("/api/users/alice/profile",
                                         json={"email": "alice@example.com", "locale": "en"}))
    _check(spec, profile, "PUT", api.put("/api/users/alice/profile", json={"email": "x"}))
    _check(spec, profile, "GET", api.get("/api/users/alice/profile"))
    _check(spec, prefs, "PUT", api.put("/api/users/alice/preferences",
                                       json={"email": {"marketing": False}}))
    _check(spec, prefs, "PUT", api.put("/api/users/alice/preferences",
                                       json={"email": {"promo": False}}))
    bob = {"Authorization": f"Bearer {mint('bob')}"}
    _check(spec, prefs, "GET", httpx.get(f"{api_url}/api/users/alice/preferences",
                                         headers=bob))
    _check(spec, prefs, "GET", httpx.get(f"{api_url}/api/users/bob/preferences",
                                         headers=bob))
    link = unsubscribe.url(config.replace(api_url=api_url), "alice", "updates")
    operation = spec["paths"]["/api/unsubscribe/{token}"]
    for method, answer in [("get", httpx.get(link)), ("get", httpx.get(link[:-2])),
                           ("post", httpx.post(link, data={"List-Unsubscribe": "One-Click"})),
                           ("post", httpx.post(link, data={}))]:
        described = operation[method]["responses"][str(answer.status_code)]
        assert answer.headers["content-type"].split(";")[0] in described["content"]


def test_webhook_answers_match_the_document(spec, api):
    created = api.post("/api/webhooks", json={"url": "http://127.0.0.1:9/hook",
                                              "topics": ["orders"], "description": "d"})
    _check(spec, "/api/webhooks", "POST", created)
    _check(spec, "/api/webhooks", "POST", api.post("/api/webhooks", json={"url": "ftp://x"}))
    _check(spec, "/api/webhooks", "GET", api.get("/api/webhooks"))
    endpoint = f"/api/webhooks/{created.json()['id']}"
    _check(spec, "/api/webhooks/{id}", "GET", api.get(endpoint))
    sent = api.post(f"{endpoint}/test")
    _check(spec, "/api/webhooks/{id}/test", "POST", sent)
    template = "/api/webhooks/{id}/deliveries/{delivery_id}"
    _check(spec, template, "GET", api.get(sent.json()["status_url"]))
    _check(spec, template, "GET", api.get(f"{endpoint}/deliveries/d_nope"))
    assert api.delete(endpoint).status_code == 204
    assert "204" in spec["paths"]["/api/webhooks/{id}"]["delete"]["responses"]
    _check(spec, "/api/webhooks/{id}", "DELETE", api.delete(endpoint))
    _check(spec, "/api/webhooks/{id}/test", "POST", api.post(f"{endpoint}/test"))
