"""The webhook channel: one signed JSON POST per notification and matching endpoint.

Targets are the endpoints whose topics and categories want the notification
(``herald.webhooks.Endpoint.wants``). Users' preferences do not apply: an endpoint is
the customer's own system, not a person who opted out.

A delivery is a POST of ``{"type": "notification.created", "timestamp", "data"}``
(``data``: the notification as the API shows it, without its delivery state),
signed as the Standard Webhooks specification says with the ``standardwebhooks``
library: ``webhook-id`` is the delivery id (the same on every attempt, so receivers can
drop a duplicate), ``webhook-timestamp`` the attempt's time, ``webhook-signature``
``v1,<base64 HMAC-SHA256>`` under the endpoint's secret. The body is the same on every
attempt (``timestamp`` is when the notification was created).

Each attempt checks the URL again (``herald.webhooks.check_url``: a DNS answer can
change) and connects to an address it checked, so a name that turns private after
registration is not reached ("address not allowed", a permanent failure). No redirect
is followed and no proxy from the environment is used. Outcomes: 2xx sent; 408, 429,
5xx, connection errors and timeouts (``HERALD_WEBHOOK_TIMEOUT`` per connect, write and
read) are retried, honouring ``Retry-After`` (seconds or an HTTP date); any other
status, redirects included, fails at once with the status recorded; so does an endpoint
deleted meanwhile ("endpoint deleted").

``POST /api/webhooks/<id>/test`` goes through the same channel (``send_test``): a test
notification (topic ``webhook.test``, dispatched to no other channel) and one delivery
of type ``webhook.test`` to that endpoint only.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx
from celery import Celery
from kombu.exceptions import OperationalError
from standardwebhooks import Webhook

import herald
from herald.channels import DEFAULT_CATEGORY, WEBHOOK
from herald.config import Config
from herald.errors import DispatchError
from herald.notifications import NewNotification
from herald.services import Services
from herald.times import iso
from herald.webhooks import Endpoint, Unresolvable, UrlRefused, reachable
from tasks.outbound import Permanent, Retryable, Target, channel_tasks, send_task_name

NOTIFICATION_TYPE = "notification.created"
TEST_TYPE = "webhook.test"
TEST_TOPIC = "webhook.test"
TYPE_FIELD = "event_type"  # on a test delivery's record: the payload's ``type``
USER_AGENT = f"Herald-Webhooks/{herald.__version__}"
# Addresses of one host tried in turn when a connection is refused at once (the
# resolver may list an IPv6 address the receiver does not listen on first).
MAX_ADDRESSES = 2


class WebhookChannel:
    """The ``Channel`` of ``tasks.outbound`` for webhooks."""

    name = WEBHOOK

    def targets(self, svc: Services, notification: dict[str, str]) -> list[Target]:
        return [Target(endpoint.id) for endpoint in svc.webhooks.matching(notification)]

    def send(self, svc: Services, delivery: dict[str, str],
             notification: dict[str, str]) -> None:
        endpoint = svc.webhooks.get(delivery["target"])
        if endpoint is None:
            raise Permanent("endpoint deleted")
        body = payload(delivery.get(TYPE_FIELD) or NOTIFICATION_TYPE, notification)
        post(svc.config, endpoint, delivery["id"], body)

    def bucket(self, delivery: dict[str, str]) -> str:
        return f"{WEBHOOK}:{delivery['target']}"

    def rate(self, config: Config) -> float:
        return config.webhook_rate

    def lease(self, config: Config) -> float:
        # Connect, write and read may each take the timeout; then a margin.
        return 3 * config.webhook_timeout + 2


CHANNEL = WebhookChannel()
dispatch_webhooks, send_webhook = channel_tasks(CHANNEL)


def payload(event_type: str, notification: dict[str, str]) -> bytes:
    """The body of a delivery of ``notification`` (its raw record)."""
    data = {
        "id": notification["id"],
        "title": notification["title"],
        "body": notification["body"],
        "data": json.loads(notification["data"]),
        "channels": json.loads(notification["channels"]),
        "recipients": (json.loads(notification["recipients"])
                       if notification["recipients"] else None),
        "topic": notification["topic"] or None,
        "category": notification.get("category") or DEFAULT_CATEGORY,
        "critical": notification.get("critical") == "1",
        "created_at": iso(notification["created_at"]),
    }
    envelope = {"type": event_type, "timestamp": data["created_at"], "data": data}
    return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode()


def signed_headers(endpoint: Endpoint, message_id: str, body: bytes,
                   now: datetime | None = None) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt."""
    moment = now or datetime.now(UTC)
    signature = Webhook(endpoint.secret).sign(message_id, moment, body.decode())
    return {"webhook-id": message_id, "webhook-timestamp": str(math.floor(moment.timestamp())),
            "webhook-signature": signature, "content-type": "application/json",
            "user-agent": USER_AGENT}


def post(config: Config, endpoint: Endpoint, message_id: str, body: bytes) -> None:
    """One attempt: POST ``body`` to ``endpoint``; raise ``Retryable`` or ``Permanent``."""
    allowed = config.webhooks_may_reach_private
    try:
        found = reachable(endpoint.url, allowed)
    except Unresolvable as exc:  # DNS may answer later
        raise Retryable(str(exc)) from None
    except UrlRefused as exc:  # a private address, or plain http:// no longer allowed
        raise Permanent(str(exc)) from None
    headers = signed_headers(endpoint, message_id, body)
    try:
        status, answer = _post_pinned(endpoint.url, found, body, headers,
                                      config.webhook_timeout)
    except httpx.TimeoutException:
        raise Retryable(f"no answer within {config.webhook_timeout:g}s") from None
    except httpx.TransportError as exc:
        raise Retryable(f"connection failed: {type(exc).__name__}: {exc}") from None
    verdict(status, answer)


def _post_pinned(url: str, found: list[str], body: bytes, headers: dict[str, str],
                 timeout: float) -> tuple[int, httpx.Headers]:
    """POST to the first of ``found`` that takes the connection, as ``url``'s host
    (its ``Host`` header and TLS server name): the address checked is the one reached."""
    original = httpx.URL(url)
    host = original.host
    headers = {**headers, "host": original.netloc.decode("ascii")}
    refused: httpx.ConnectError | None = None
    with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
        for address in found[:MAX_ADDRESSES]:
            try:
                with client.stream("POST", original.copy_with(host=address), content=body,
                                   headers=headers,
                                   extensions={"sni_hostname": host}) as response:
                    return response.status_code, response.headers
            except httpx.ConnectError as exc:
                refused = exc
    assert refused is not None
    raise refused


def verdict(status: int, headers: httpx.Headers) -> None:
    """Nothing for a 2xx; ``Retryable`` for 408, 429 and 5xx; ``Permanent`` otherwise."""
    if 200 <= status < 300:
        return
    if status in (408, 429) or status >= 500:
        raise Retryable(f"HTTP {status}", retry_after(headers.get("retry-after")))
    if 300 <= status < 400:
        raise Permanent(f"HTTP {status} (redirects are not followed)")
    raise Permanent(f"HTTP {status}")


def retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (delta-seconds or an HTTP date);
    None when absent or malformed."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


@dataclass(frozen=True)
class SentTest:
    """What ``send_test`` started: a test notification and its one delivery."""

    notification_id: str
    delivery_id: str


def send_test(svc: Services, celery: Celery, endpoint: Endpoint) -> SentTest:
    """Record a ``webhook.test`` delivery to ``endpoint`` and send it through the channel.

    Raises ``DispatchError`` when the broker cannot take it; nothing stays stored then.
    """
    new = NewNotification(title="Test delivery", topic=TEST_TOPIC, channels=[WEBHOOK],
                          body=f"A test of webhook endpoint {endpoint.id}.",
                          data={"endpoint": endpoint.id})
    created = svc.notifications.create(new)
    delivery_id, _ = svc.deliveries.create(created.id, WEBHOOK, endpoint.id)
    svc.deliveries.annotate(delivery_id, TYPE_FIELD, TEST_TYPE)
    try:
        celery.send_task(send_task_name(WEBHOOK), kwargs={"delivery_id": delivery_id},
                         task_id=delivery_id)
    except OperationalError as exc:
        svc.notifications.discard(created.id)
        svc.deliveries.discard(created.id, delivery_id)
        raise DispatchError(f"broker unavailable: {exc}") from exc
    svc.notifications.dispatched(created.id, WEBHOOK)  # its one delivery is queued
    return SentTest(created.id, delivery_id)
