"""Every refused request is answered 4xx naming the field, and changes nothing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytestmark = pytest.mark.usefixtures("clean", "unchanged")

N = "/api/notifications"
OK = {"recipients": ["alice"], "title": "Hello"}


def body(**changes: object) -> dict:
    out = {**OK, **changes}
    return {k: v for k, v in out.items() if v is not ...}


CASES = [
    # (method, path, request keyword arguments, status, field, words in the message)
    ("POST", N, {"content": "title=x", "headers": {"Content-Type": "text/plain"}}, 415, None,
     "application/json"),
    ("POST", N, {"content": "{", "headers": {"Content-Type": "application/json"}}, 400, None,
     "not valid JSON"),
    ("POST", N, {"json": [OK]}, 400, None, "body: Input should be an object"),
    ("POST", "/api/events", {"json": "t"}, 400, None, "body: Input should be an object"),
    ("POST", N, {"json": body(title=...)}, 400, "title", "required"),
    ("POST", N, {"json": body(title="")}, 400, "title", "at least 1"),
    ("POST", N, {"json": body(title="x" * 201)}, 400, "title", "at most 200"),
    ("POST", N, {"json": body(title=5)}, 400, "title", "string"),
    ("POST", N, {"json": body(body="x" * 4001)}, 400, "body", "at most 4000"),
    ("POST", N, {"json": body(data=[1, 2])}, 400, "data", "object"),
    ("POST", N, {"json": body(recipients=[])}, 400, "recipients", "at least 1"),
    ("POST", N, {"json": body(recipients=["Alice"])}, 400, "recipients.0", "pattern"),
    ("POST", N, {"json": body(recipients="alice")}, 400, "recipients", "array"),
    ("POST", N, {"json": body(recipients=[f"u{i}" for i in range(1001)])}, 400,
     "recipients", "at most 1000"),
    ("POST", N, {"json": body(recipients=..., topic=...)}, 400, "recipients", "either"),
    ("POST", N, {"json": body(topic="news")}, 400, "recipients", "not both"),
    ("POST", N, {"json": body(recipients=..., topic="News!")}, 400, "topic", "pattern"),
    ("POST", N, {"json": body(channels=["sms"])}, 400, "channels.0",
     "'inapp', 'email' or 'webhook'"),
    ("POST", N, {"json": body(channels=[])}, 400, "channels", "at least 1"),
    ("POST", N, {"json": body(channels=["email", "inapp", "email"])}, 400, "channels",
     "each channel at most once"),
    ("POST", N, {"json": body(topic="news", recipients=..., channels=["inapp", "email"])},
     400, "channels", "a topic has no e-mail addresses"),
    ("POST", N, {"json": body(category="promotions")}, 400, "category",
     "must be one of general, account"),
    ("POST", N, {"json": body(category="Bad Category")}, 400, "category", "pattern"),
    ("POST", N, {"json": body(critical="yes")}, 400, "critical", "boolean"),
    ("POST", N, {"json": body(priority="high")}, 400, "priority", "not permitted"),
    ("POST", N, {"json": OK, "headers": {"Idempotency-Key": "k" * 256}}, 400,
     "Idempotency-Key", "1-255"),
    ("POST", N, {"json": body(body="x" * 70_000)}, 413, None, "65536 bytes"),
    ("GET", f"{N}/n_01M8FXDK8WXPWT8MAE5X1406RT", {}, 404, "id", "no notification"),
    ("GET", f"{N}/not-an-id", {}, 404, "id", "no notification"),
    ("DELETE", N, {}, 405, None, ""),
    ("GET", "/api/nothing-here", {}, 404, None, ""),
    ("GET", "/api/users/Bad User/notifications", {}, 400, "user", "must match"),
    ("GET", "/api/users/alice/notifications?limit=0", {}, 400, "limit", "1 to 100"),
    ("GET", "/api/users/alice/notifications?limit=101", {}, 400, "limit", "1 to 100"),
    ("GET", "/api/users/alice/notifications?limit=ten", {}, 400, "limit", "integer"),
    # Unicode digits: "²" (int() refuses it) and Arabic-Indic "٣" (int() reads 3).
    ("GET", "/api/users/alice/notifications?limit=%C2%B2", {}, 400, "limit", "ASCII digits"),
    ("GET", "/api/users/alice/notifications?limit=%D9%A3", {}, 400, "limit", "ASCII digits"),
    ("GET", "/api/users/alice/notifications?limit=5%0A", {}, 400, "limit", "ASCII digits"),
    ("GET", "/api/users/alice/notifications?cursor=zzz", {}, 400, "cursor", "next_cursor"),
    ("GET", "/api/dead-letters?channel=inapp", {}, 400, "channel", "email, webhook"),
    ("GET", "/api/dead-letters?channel=sms", {}, 400, "channel", "email, webhook"),
    ("GET", "/api/dead-letters?limit=0", {}, 400, "limit", "1 to 100"),
    ("POST", "/api/dead-letters/d_aaaaaaaaaaaaaaaaaaaaaaaa/retry", {}, 404, "id",
     "no dead letter"),
    ("POST", "/api/dead-letters/nope/retry", {}, 404, "id", "no dead letter"),
    ("POST", "/api/users/alice/notifications/read", {"json": {}}, 400, "ids", "either"),
    ("POST", "/api/users/alice/notifications/read", {"json": {"all": False}}, 400, "ids",
     "either"),
    ("POST", "/api/users/alice/notifications/read", {"json": {"ids": ["x"]}}, 400, "ids.0",
     "pattern"),
    ("POST", "/api/users/alice/notifications/read",
     {"json": {"ids": ["n_01M8FXDK8WXPWT8MAE5X1406RT"], "all": True}}, 400, "ids", "either"),
    ("POST", "/api/events", {"json": {"type": "x", "data": 1}}, 400, "topic", "required"),
    ("POST", "/api/events", {"json": {"topic": "a b"}}, 400, "topic", "pattern"),
    ("POST", "/api/events", {"json": {"topic": "t", "type": "bad\ntype"}}, 400, "type",
     "pattern"),
    ("POST", "/api/events", {"json": {"topic": "t", "type": "x\r"}}, 400, "type", "pattern"),
    ("POST", "/api/events", {"json": {"topic": "t", "data": "x" * 66_000}}, 413, None,
     "bytes"),
    ("POST", "/api/events", {"json": {"topic": "t", "data": "x" * 65_500}}, 400, "data",
     "at most 65536"),
    ("POST", "/api/jobs", {"json": {"kind": "rm -rf", "owner": "alice"}}, 400, "kind",
     "demo.countdown"),
    ("POST", "/api/jobs", {"json": {"kind": "demo.countdown"}}, 400, "owner", "required"),
    ("POST", "/api/jobs", {"json": {"kind": "demo.countdown", "owner": "A"}}, 400, "owner",
     "pattern"),
    ("POST", "/api/jobs", {"json": {"kind": "demo.countdown", "owner": "alice",
                                    "params": {"steps": 0}}}, 400, "params.steps",
     "greater than or equal to 1"),
    ("POST", "/api/jobs", {"json": {"kind": "demo.countdown", "owner": "alice",
                                    "params": {"interval": "1"}}}, 400, "params.interval",
     "number"),
    ("POST", "/api/jobs", {"json": {"kind": "demo.countdown", "owner": "alice",
                                    "params": {"steps": 1000, "interval": 10}}}, 400,
     "params", "at most 300 seconds"),
    ("POST", "/api/jobs", {"json": {"kind": "demo.countdown", "owner": "alice",
                                    "params": {"boom": 1}}}, 400, "params.boom",
     "not permitted"),
    ("GET", "/api/jobs/j_01M8FXDK8WXPWT8MAE5X1406RT", {}, 404, "id", "no job"),
    ("POST", "/api/tokens", {"json": {"user": "Alice"}}, 400, "user", "pattern"),
    ("POST", "/api/tokens", {"json": {"user": "alice", "topics": ["*"]}}, 400, "topics.0",
     "pattern"),
    ("POST", "/api/tokens", {"json": {"user": "alice", "ttl": 0}}, 400, "ttl",
     "greater than or equal to 1"),
    ("POST", "/api/tokens", {"json": {"user": "alice", "ttl": 86401}}, 400, "ttl",
     "at most 86400"),
]


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "field", "words"), CASES,
                         ids=[f"{c[0]} {c[1][:40]} {c[3]} {c[4]}" for c in CASES])
def test_refused_with_a_clear_error(api, method, path, kwargs, status, field, words):
    answer = api.request(method, path, **kwargs)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json"
    error = answer.json()["error"]
    assert set(error) >= {"code", "message", "field"}
    assert error["field"] == field
    assert words in error["message"]


def _streamed(size: int) -> Iterator[bytes]:
    """A JSON event body of about ``size`` bytes, sent chunked (no Content-Length)."""
    yield b'{"topic": "t", "data": "'
    for _ in range(size // 1024):
        yield b"x" * 1024
    yield b'"}'


@pytest.mark.parametrize("size", [70 * 1024, 1024 * 1024])
def test_a_chunked_body_over_the_limit_is_413(api, size):
    answer = api.post("/api/events", content=_streamed(size),
                      headers={"Content-Type": "application/json"})
    assert answer.status_code == 413, answer.text
    assert answer.json()["error"]["code"] == "payload_too_large"
    assert "65536 bytes" in answer.json()["error"]["message"]
