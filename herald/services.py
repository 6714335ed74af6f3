"""The objects a Herald process works with, built from the ``Config`` it was given.

There is no process-wide default: each entry point builds its ``Services`` from the
configuration it loaded and passes them on (the API keeps them on its Flask app, a
streamer in its service, a Celery app for its tasks: ``tasks.factory.services_of``).
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from herald.apikeys import ApiKeyStore
from herald.config import Config
from herald.connection import client
from herald.deliveries import DeliveryStore
from herald.inbox import Inbox
from herald.jobs import JobStore
from herald.keys import Keys
from herald.notifications import NotificationStore
from herald.preferences import PreferenceStore
from herald.profiles import ProfileStore
from herald.publisher import Publisher
from herald.ratelimit import RateLimiter
from herald.revocation import Revocations
from herald.webhooks import WebhookStore


@dataclass(frozen=True)
class Services:
    """Stores and the publisher of one process, sharing one Redis connection pool."""

    config: Config
    keys: Keys
    redis: redis.Redis
    notifications: NotificationStore
    inbox: Inbox
    jobs: JobStore
    publisher: Publisher
    apikeys: ApiKeyStore
    revocations: Revocations
    limiter: RateLimiter
    deliveries: DeliveryStore
    profiles: ProfileStore
    preferences: PreferenceStore
    webhooks: WebhookStore


def build(config: Config, redis_client: redis.Redis | None = None) -> Services:
    """Services for ``config``; cheap, opens no connection until first use.

    ``redis_client`` (decoded responses) replaces the process-wide shared client.
    """
    redis_client = redis_client or client(config.redis_url)
    keys = Keys(config.prefix)
    return Services(
        config=config,
        keys=keys,
        redis=redis_client,
        notifications=NotificationStore(redis_client, keys, config.retention),
        inbox=Inbox(redis_client, keys),
        jobs=JobStore(redis_client, keys, config.retention),
        publisher=Publisher(redis_client, keys, config.history_maxlen, config.history_ttl),
        apikeys=ApiKeyStore(redis_client, keys),
        revocations=Revocations(redis_client, keys),
        limiter=RateLimiter(redis_client, keys.rate, config.publish_rate, config.publish_burst),
        deliveries=DeliveryStore(redis_client, keys, config.retention),
        profiles=ProfileStore(redis_client, keys),
        preferences=PreferenceStore(redis_client, keys),
        webhooks=WebhookStore(redis_client, keys),
    )
