"""Webhook endpoints: the customer's systems that receive notifications as signed POSTs.

An endpoint is a URL, the ``topics`` (token-grant syntax: ``orders``, ``user:*``) and/or
``categories`` it wants, a description, and its signing secret (``whsec_`` + base64 of
24 random bytes, as the Standard Webhooks specification says). Records live in one
Redis hash (``Keys.webhooks``) and do not expire: they are the publisher's
configuration, removed with ``delete``.

Which notifications an endpoint wants (``Endpoint.wants``): one of the notification's
destination topics (``user:<u>`` per recipient, or its topic) is covered by one of the
endpoint's topics, AND its category is one of the endpoint's categories; a list left
empty places no condition, and at least one of the two must be given at registration.
So ``{"categories": ["security"]}`` gets every security notification, ``{"topics":
["user:*"]}`` every notification to users, and both together only security
notifications to users. User preferences do not apply: an endpoint is not a person.

Who may be an endpoint (``check_url``, one rule for registration and every send): an
``http(s)://`` URL with a host; ``https://`` only and every address the host resolves
to public, unless ``HERALD_WEBHOOK_ALLOW_PRIVATE`` (by default allowed in development
only). A non-public address is loopback, link-local, private, multicast, reserved,
unspecified or otherwise not global (server-side request forgery: a URL must not reach
the deployment's own network). The rule runs again at each send, since a DNS answer can
change after registration, and the sender connects to the address it checked.

Guarantees: ``list`` and ``public`` never show the secret (only ``create`` answers it);
at most ``MAX_ENDPOINTS`` endpoints exist (checked and stored in one atomic script).
"""

from __future__ import annotations

import base64
import ipaddress
import json
import secrets
import socket
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import SplitResult, urlsplit

import redis

from herald.channels import DEFAULT_CATEGORY
from herald.ids import new_id, valid_id
from herald.keys import Keys
from herald.notifications import NotificationStore
from herald.times import iso, now_ms
from herald.tokens import grant_matches

ID_PREFIX = "wh"
SECRET_PREFIX = "whsec_"
SECRET_BYTES = 24
MAX_ENDPOINTS = 100  # endpoints of a deployment; each matching one costs a POST per notification
MAX_URL_LENGTH = 2048

Resolver = Callable[..., list[tuple[Any, ...]]]

# KEYS: the endpoints hash; ARGV: id, record, the cap
_CREATE = """
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""


class UrlRefused(ValueError):
    """A URL that may not be an endpoint; the message says which rule it breaks."""


class AddressRefused(UrlRefused):
    """The URL's host resolves to an address it may not reach (not a public one)."""


class Unresolvable(UrlRefused):
    """The URL's host does not resolve (now: a later attempt may succeed)."""


class TooManyEndpoints(Exception):
    """``MAX_ENDPOINTS`` endpoints exist already."""


@dataclass(frozen=True)
class Endpoint:
    """A registered endpoint (``created_at`` in milliseconds)."""

    id: str
    url: str
    topics: tuple[str, ...]
    categories: tuple[str, ...]
    description: str
    secret: str
    created_at: int

    def wants(self, topics: Iterable[str], category: str) -> bool:
        """True when a notification to ``topics`` in ``category`` goes to this endpoint
        (the rule is in the module's docstring)."""
        if self.categories and category not in self.categories:
            return False
        return not self.topics or any(
            grant_matches(grant, topic) for topic in topics for grant in self.topics)

    def public(self) -> dict[str, Any]:
        """The record as the API lists it: everything but the secret."""
        return {"id": self.id, "url": self.url, "topics": list(self.topics),
                "categories": list(self.categories), "description": self.description,
                "created_at": iso(self.created_at)}


def new_secret() -> str:
    """A signing secret: ``whsec_`` + base64 of 24 random bytes (Standard Webhooks)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def valid_endpoint_id(value: object) -> bool:
    return valid_id(value, ID_PREFIX)


class WebhookStore:
    """Reads and writes endpoint records (see the module's guarantees)."""

    def __init__(self, redis_client: redis.Redis, keys: Keys) -> None:
        self.redis = redis_client
        self.keys = keys
        self._create = redis_client.register_script(_CREATE)

    def create(self, url: str, topics: list[str], categories: list[str],
               description: str = "") -> Endpoint:
        """Store a new endpoint with a fresh secret; the caller checked its fields.

        Raises ``TooManyEndpoints`` (nothing stored) past ``MAX_ENDPOINTS``.
        """
        endpoint = Endpoint(id=new_id(ID_PREFIX), url=url,
                            topics=tuple(dict.fromkeys(topics)),
                            categories=tuple(dict.fromkeys(categories)),
                            description=description, secret=new_secret(),
                            created_at=now_ms())
        stored = self._create(keys=[self.keys.webhooks],
                              args=[endpoint.id, json.dumps(asdict(endpoint)), MAX_ENDPOINTS])
        if not stored:
            raise TooManyEndpoints(f"at most {MAX_ENDPOINTS} webhook endpoints; delete one "
                                   "first")
        return endpoint

    def get(self, endpoint_id: str) -> Endpoint | None:
        raw = self.redis.hget(self.keys.webhooks, endpoint_id)
        return _endpoint(raw) if raw else None

    def list(self) -> list[Endpoint]:
        """Every endpoint, oldest first."""
        endpoints = [_endpoint(raw) for raw in self.redis.hvals(self.keys.webhooks)]
        return sorted(endpoints, key=lambda endpoint: endpoint.id)

    def delete(self, endpoint_id: str) -> bool:
        """Remove an endpoint; False when there was none. Its deliveries still due fail
        ("endpoint deleted")."""
        return bool(self.redis.hdel(self.keys.webhooks, endpoint_id))

    def matching(self, notification: dict[str, str]) -> list[Endpoint]:
        """The endpoints a stored notification (its raw record) goes to."""
        topics = NotificationStore.destinations(notification)
        category = notification.get("category") or DEFAULT_CATEGORY
        return [endpoint for endpoint in self.list() if endpoint.wants(topics, category)]


def _endpoint(raw: str) -> Endpoint:
    fields = json.loads(raw)
    fields["topics"], fields["categories"] = (tuple(fields["topics"]),
                                              tuple(fields["categories"]))
    return Endpoint(**fields)


# The URL rule.

def check_url(url: str, may_reach_private: bool,
              resolve: Resolver = socket.getaddrinfo) -> SplitResult:
    """``url`` split, when it may be an endpoint; else ``UrlRefused`` with the rule.

    Without ``may_reach_private`` the host is resolved and every address must be public
    (``AddressRefused`` otherwise, ``Unresolvable`` when it does not resolve).
    """
    parts = _shape(url, may_reach_private)
    if not may_reach_private:
        addresses(parts, may_reach_private, resolve)
    return parts


def reachable(url: str, may_reach_private: bool,
              resolve: Resolver = socket.getaddrinfo) -> list[str]:
    """The addresses a send to ``url`` may connect to: the rule of ``check_url``,
    applied again (the host is resolved whatever ``may_reach_private`` says)."""
    return addresses(_shape(url, may_reach_private), may_reach_private, resolve)


def addresses(parts: SplitResult, may_reach_private: bool,
              resolve: Resolver = socket.getaddrinfo) -> list[str]:
    """The addresses the URL's host resolves to, in the resolver's order; refused
    (``AddressRefused``) when one of them is not public and ``may_reach_private`` is
    false: an answer mixing public and private addresses is not trusted either."""
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        answers = resolve(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise Unresolvable(f"host {host!r} does not resolve ({exc})") from None
    found = list(dict.fromkeys(str(answer[4][0]).partition("%")[0] for answer in answers))
    if not found:
        raise Unresolvable(f"host {host!r} does not resolve")
    if not may_reach_private:
        for address in found:
            if not public(address):
                raise AddressRefused(f"address not allowed: {host!r} resolves to {address}, "
                                     "which is not a public address")
    return found


def public(address: str) -> bool:
    """True for a public (global unicast) IP address."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not (ip.is_loopback or ip.is_link_local or ip.is_private
                                 or ip.is_multicast or ip.is_reserved or ip.is_unspecified)


def _shape(url: str, may_reach_private: bool) -> SplitResult:
    schemes = ("http", "https") if may_reach_private else ("https",)
    rule = f"must be an {' or '.join(s + '://' for s in schemes)} URL with a host"
    if not url.isascii() or any(c in url for c in " \t\r\n\0") or len(url) > MAX_URL_LENGTH:
        raise UrlRefused(f"{rule} (ASCII, no spaces, at most {MAX_URL_LENGTH} characters)")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        raise UrlRefused(rule) from None
    if parts.scheme not in schemes or not parts.hostname:
        if parts.scheme == "http" and not may_reach_private:
            raise UrlRefused(f"{rule}: plain http:// is allowed only with "
                             "HERALD_WEBHOOK_ALLOW_PRIVATE")
        raise UrlRefused(rule)
    return parts
