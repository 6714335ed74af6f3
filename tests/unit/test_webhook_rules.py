"""The webhook rules that need no network: which notifications an endpoint wants, which
URLs and addresses may be endpoints, the signature, the answer's verdict."""

from __future__ import annotations

import base64
import json
import socket
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from standardwebhooks import Webhook

from herald.webhooks import (
    AddressRefused,
    Endpoint,
    Unresolvable,
    UrlRefused,
    check_url,
    new_secret,
    public,
    reachable,
)
from tasks.outbound import Permanent, Retryable
from tasks.webhooks import payload, retry_after, signed_headers, verdict


def endpoint(topics: tuple[str, ...] = (), categories: tuple[str, ...] = ()) -> Endpoint:
    return Endpoint(id="wh_1", url="https://example.com/h", topics=topics,
                    categories=categories, description="", secret=new_secret(), created_at=0)


def resolver(*answers: str):
    def resolve(host: str, port: int, type: int = 0) -> list[tuple]:
        if not answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in answers]

    return resolve


@pytest.mark.parametrize(("topics", "categories", "to", "category", "wanted"), [
    (("user:*",), (), ["user:alice"], "general", True),
    (("user:*",), (), ["orders"], "general", False),
    (("orders",), (), ["orders"], "marketing", True),
    (("orders",), (), ["orders.eu"], "general", False),
    ((), ("security",), ["user:bob"], "security", True),
    ((), ("security",), ["user:bob"], "general", False),
    (("user:*",), ("security",), ["user:bob"], "security", True),   # both must match
    (("user:*",), ("security",), ["user:bob"], "general", False),
    (("user:*",), ("security",), ["orders"], "security", False),
    (("user:alice",), (), ["user:bob", "user:alice"], "general", True),  # any recipient
])
def test_an_endpoint_wants_what_its_topics_and_categories_both_cover(
        topics, categories, to, category, wanted):
    assert endpoint(topics, categories).wants(to, category) is wanted


def test_a_secret_is_whsec_and_24_random_bytes_and_never_listed():
    secret = new_secret()
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 24
    assert secret != new_secret()
    assert "secret" not in endpoint(("a",)).public()


@pytest.mark.parametrize("url", ["not a url", "example.com/hook", "ftp://example.com/",
                                 "https://", "https:///path", "http//example.com",
                                 "https://example.com:99999/", "javascript:alert(1)",
                                 "https://exa mple.com/", "https://bücher.de/"])
def test_urls_that_are_no_http_url_with_a_host_are_refused(url):
    with pytest.raises(UrlRefused):
        check_url(url, True, resolver("93.184.215.14"))


def test_plain_http_only_where_private_addresses_are_allowed():
    assert check_url("http://127.0.0.1:8080/h", True).hostname == "127.0.0.1"
    with pytest.raises(UrlRefused, match="https://"):
        check_url("http://example.com/h", False, resolver("93.184.215.14"))
    assert check_url("https://example.com/h", False, resolver("93.184.215.14"))


@pytest.mark.parametrize("address", ["127.0.0.1", "10.0.0.1", "172.16.3.4", "192.168.1.1",
                                     "169.254.169.254", "0.0.0.0", "224.0.0.1", "240.0.0.1",
                                     "100.64.0.1", "::1", "fe80::1", "fd00::1", "::",
                                     "::ffff:127.0.0.1", "ff02::1"])
def test_non_public_addresses_are_refused(address):
    assert not public(address)
    with pytest.raises(AddressRefused, match="address not allowed"):
        check_url("https://hooks.example.com/h", False, resolver(address))


def test_one_private_address_among_public_ones_is_refused_and_none_is_unresolvable():
    with pytest.raises(AddressRefused):
        check_url("https://h.example.com/", False, resolver("93.184.215.14", "10.1.1.1"))
    with pytest.raises(Unresolvable):
        check_url("https://h.example.com/", False, resolver())
    assert reachable("https://h.example.com/", False,
                     resolver("93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c")) == [
        "93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"]


def test_a_send_checks_the_address_again_even_for_an_http_url_in_development():
    assert reachable("http://localhost:1/", True, resolver("127.0.0.1")) == ["127.0.0.1"]


def record(**changes: str) -> dict[str, str]:
    return {"id": "n_1", "title": "Hi", "body": "b", "data": '{"k": 1}',
            "channels": '["webhook"]', "recipients": '["alice"]', "topic": "",
            "category": "general", "critical": "0", "created_at": "1795830715759",
            "status": "queued", **changes}


def test_the_payload_is_the_notification_without_its_delivery_state():
    body = json.loads(payload("notification.created", record()))
    assert body["type"] == "notification.created"
    assert body["timestamp"] == body["data"]["created_at"] == "2026-11-28T01:51:55.759Z"
    assert body["data"] == {"id": "n_1", "title": "Hi", "body": "b", "data": {"k": 1},
                            "channels": ["webhook"], "recipients": ["alice"], "topic": None,
                            "category": "general", "critical": False,
                            "created_at": "2026-11-28T01:51:55.759Z"}


def test_the_signature_verifies_with_the_standardwebhooks_library():
    hook = endpoint(("a",))
    body = payload("notification.created", record())
    headers = signed_headers(hook, "d_abc", body)
    assert headers["webhook-id"] == "d_abc" and headers["webhook-signature"].startswith("v1,")
    assert Webhook(hook.secret).verify(body, headers)["data"]["id"] == "n_1"
    with pytest.raises(Exception, match="signature"):
        Webhook(new_secret()).verify(body, headers)
    old = signed_headers(hook, "d_abc", body, datetime.now(UTC) - timedelta(hours=1))
    with pytest.raises(Exception, match="too old"):
        Webhook(hook.secret).verify(body, old)


@pytest.mark.parametrize(("status", "outcome"), [
    (200, None), (204, None), (408, Retryable), (429, Retryable), (500, Retryable),
    (503, Retryable), (301, Permanent), (307, Permanent), (400, Permanent),
    (404, Permanent), (410, Permanent)])
def test_the_verdict_on_an_answer(status, outcome):
    if outcome is None:
        verdict(status, httpx.Headers())
        return
    with pytest.raises(outcome, match=f"HTTP {status}"):
        verdict(status, httpx.Headers())


def test_retry_after_in_seconds_or_as_an_http_date():
    now = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)
    assert retry_after("7") == 7.0
    assert retry_after("Sat, 28 Nov 2026 12:00:30 GMT", now) == 30.0
    assert retry_after("Sat, 28 Nov 2026 11:00:00 GMT", now) == 0.0
    assert retry_after(None) is retry_after("soon") is retry_after("-3") is None
    with pytest.raises(Retryable) as caught:
        verdict(429, httpx.Headers({"Retry-After": "12"}))
    assert caught.value.retry_after == 12.0
