"""The attempt loop every outbound channel (e-mail, webhooks) shares.

A channel module describes its channel with a ``Channel`` (who the targets of a
notification are, how one delivery is sent, its rate bucket) and gets two Celery tasks
from ``channel_tasks``: ``herald.<channel>.dispatch`` (one per notification: records a
delivery per target, ``skipped`` with the reason where it must not go, and sends the
rest) and ``herald.<channel>.send`` (one per delivery: one attempt, retried).
``tasks.settings`` routes both to the channel's own queue. Once ``dispatch`` has recorded
every target, the notification counts the channel as run (``NotificationStore.dispatched``).
``redeliver`` gives a dead letter another round of attempts (the API's
``POST /api/dead-letters/<id>/retry``).

Guarantees of ``send`` (see ``herald.deliveries`` for the records):
- a delivery is attempted only while it is not done, one attempt at a time (a lease);
  it is recorded ``sent`` after the channel's ``send`` returned and before the task is
  acknowledged, so a worker killed mid-attempt leads to another attempt (at least once),
  and a redelivered task whose delivery is ``sent`` sends nothing;
- attempts wait for the channel's shared token bucket in Redis (``HERALD_EMAIL_RATE``,
  ``HERALD_WEBHOOK_RATE`` per endpoint), across all workers; waiting costs no attempt;
- ``Retryable`` failures (and unexpected exceptions) are retried after an exponential
  backoff with full jitter (``backoff``), at most ``HERALD_DELIVERY_ATTEMPTS`` attempts
  in all; the last one makes the delivery ``dead`` (a dead letter). ``Permanent``
  failures make it ``failed`` at once. Every failure's reason is recorded.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from celery import Celery, Task, shared_task
from kombu.exceptions import OperationalError

from herald.channels import OUTBOUND
from herald.config import Config
from herald.deliveries import (
    BUSY,
    DEAD,
    DONE,
    FAILED,
    PENDING,
    RETRYING,
    SENT,
    SKIPPED,
    public,
)
from herald.errors import DispatchError
from herald.ratelimit import RateLimiter
from herald.services import Services
from herald.times import now_ms
from tasks import metrics
from tasks.factory import RETRY_ON_REDIS, NotificationTask, services_of

log = logging.getLogger(__name__)

OPTED_OUT = "opted out"


class Retryable(Exception):
    """A failure another attempt may fix: a connection error or timeout, a webhook's
    5xx/408/429, an SMTP 4xx. ``retry_after``: seconds the receiver asked for."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class Permanent(Exception):
    """A failure no other attempt would fix: a webhook's other 4xx, an SMTP 5xx, an
    invalid address."""


@dataclass(frozen=True)
class Target:
    """Where a notification goes over a channel; ``skip`` says why it must not go."""

    target: str
    skip: str | None = None


class Channel(Protocol):
    """What a channel module tells the attempt loop about its channel."""

    name: str

    def targets(self, svc: Services, notification: dict[str, str]) -> list[Target]:
        """The targets of a stored notification (its raw record)."""

    def send(self, svc: Services, delivery: dict[str, str],
             notification: dict[str, str]) -> None:
        """Make one attempt; raise ``Retryable`` or ``Permanent`` when it fails."""

    def bucket(self, delivery: dict[str, str]) -> str:
        """The name of the token bucket this delivery's attempt spends from."""

    def rate(self, config: Config) -> float:
        """Attempts per second allowed per bucket, across all workers."""

    def lease(self, config: Config) -> float:
        """Seconds an attempt may take at most (its network timeouts, with margin)."""


def backoff(attempt: int, base: float, cap: float, retry_after: float | None = None,
            rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1, 2, ...).

    Full jitter: uniform between 0 and ``min(cap, base * 2 ** (attempt - 1))``. A
    receiver's ``retry_after`` is honoured (never waited less), up to ``cap``.
    """
    delay = rand() * min(cap, base * 2 ** (attempt - 1))
    if retry_after is not None:
        delay = max(delay, min(retry_after, cap))
    return delay


def opted_out(svc: Services, notification: dict[str, str], users: list[str],
              channel: str) -> set[str]:
    """Those of ``users`` who turned ``channel`` off for the notification's category;
    nobody when it is ``critical``."""
    if notification.get("critical") == "1":
        return set()
    return svc.preferences.opted_out(users, channel, notification["category"])


def dispatch(svc: Services, channel: Channel, notification_id: str,
             send: Callable[[str], Any]) -> int:
    """Record the notification's deliveries over ``channel`` and ``send`` each that is
    still due (created now, or left ``pending`` by an earlier run); answer how many."""
    notification = svc.notifications.start(notification_id)  # read, marked sending
    if notification is None:
        log.warning("notification %s has no record (expired or discarded); no %s",
                    notification_id, channel.name)
        return 0
    due = 0
    for target in channel.targets(svc, notification):
        state = SKIPPED if target.skip else PENDING
        delivery_id, existing = svc.deliveries.create(notification_id, channel.name,
                                                      target.target, state, target.skip or "")
        if target.skip is None and existing in (None, PENDING):
            send(delivery_id)
            due += 1
        elif existing is None:
            metrics.delivered(channel.name, SKIPPED)
    svc.notifications.dispatched(notification_id, channel.name)
    return due


def attempt(task: Task, channel: Channel, delivery_id: str) -> str:
    """One attempt at ``delivery_id`` (see the module's guarantees); answer its state.

    Raises Celery's ``Retry`` when another attempt is scheduled.
    """
    svc = services_of(task)
    cfg = svc.config
    delivery = svc.deliveries.load(delivery_id)
    if delivery is None or delivery["state"] in DONE:
        return delivery["state"] if delivery else "missing"
    wait = _limiter(svc, channel).take(channel.bucket(delivery))
    if wait > 0:
        raise task.retry(countdown=wait)
    claim = svc.deliveries.claim(delivery_id, channel.lease(cfg))
    if claim.state == BUSY:  # look again when the lease may have run out; a countdown
        # beyond HERALD_RETRY_MAX could outlive a Redis broker's visibility timeout
        raise task.retry(countdown=min(channel.lease(cfg), cfg.retry_max))
    if not claim.attempt:
        return claim.state
    notification = svc.notifications.load(delivery["notification_id"])
    if notification is None:
        return _decide(svc, channel, delivery_id, FAILED, "notification expired")
    return _outcome(task, svc, channel, delivery, notification, claim.attempt)


def _outcome(task: Task, svc: Services, channel: Channel, delivery: dict[str, str],
             notification: dict[str, str], number: int) -> str:
    delivery_id, cfg = delivery["id"], svc.config
    try:
        channel.send(svc, delivery, notification)
    except Permanent as exc:
        log.warning("%s delivery %s failed: %s", channel.name, delivery_id, exc)
        return _decide(svc, channel, delivery_id, FAILED, str(exc))
    except Retryable as exc:
        reason, retry_after = str(exc), exc.retry_after
    except Exception as exc:  # a bug or an unforeseen failure: retried, not lost
        log.exception("%s delivery %s: unexpected error", channel.name, delivery_id)
        reason, retry_after = f"{type(exc).__name__}: {exc}", None
    else:
        return _decide(svc, channel, delivery_id, SENT)
    if number >= cfg.delivery_attempts:
        log.warning("%s delivery %s is dead after %d attempts: %s", channel.name,
                    delivery_id, number, reason)
        return _decide(svc, channel, delivery_id, DEAD, reason)
    delay = backoff(number, cfg.retry_base, cfg.retry_max, retry_after)
    _decide(svc, channel, delivery_id, RETRYING, reason, now_ms() + int(delay * 1000))
    raise task.retry(countdown=delay)


def _decide(svc: Services, channel: Channel, delivery_id: str, state: str, error: str = "",
            next_attempt_ms: int | None = None) -> str:
    """Where an attempt decides its delivery's state: record it and count it; answer it."""
    svc.deliveries.finish(delivery_id, channel.name, state, error, next_attempt_ms)
    metrics.delivered(channel.name, state)
    return state


def _limiter(svc: Services, channel: Channel) -> RateLimiter:
    rate = channel.rate(svc.config)
    return RateLimiter(svc.redis, svc.keys.channel_rate, rate, max(1, int(rate)))


def channel_tasks(channel: Channel) -> tuple[Task, Task]:
    """The ``dispatch`` and ``send`` tasks of ``channel`` (named ``herald.<name>.*``).

    ``send`` has no Celery retry bound: ``attempt`` bounds the attempts itself, and
    waiting for the rate limit or a lease is not an attempt.
    """

    @shared_task(bind=True, name=send_task_name(channel.name),
                 **{**RETRY_ON_REDIS, "max_retries": None})
    def send(self: Task, delivery_id: str) -> str:
        return attempt(self, channel, delivery_id)

    @shared_task(base=NotificationTask, bind=True, name=dispatch_task_name(channel.name),
                 **RETRY_ON_REDIS)
    def dispatch_task(self: Task, notification_id: str) -> int:
        return dispatch(services_of(self), channel, notification_id,
                        lambda delivery_id: send.apply_async(
                            kwargs={"delivery_id": delivery_id}, task_id=delivery_id))

    send.__doc__ = f"One attempt at a {channel.name} delivery (``tasks.outbound.attempt``)."
    dispatch_task.__doc__ = (f"Record and send a notification's {channel.name} deliveries "
                             "(``tasks.outbound.dispatch``).")
    return dispatch_task, send


def dispatch_task_name(channel: str) -> str:
    """The name of ``channel``'s dispatch task on the broker (what the API sends)."""
    return f"herald.{channel}.dispatch"


def send_task_name(channel: str) -> str:
    """The name of ``channel``'s send task (one attempt at one delivery)."""
    return f"herald.{channel}.send"


def redeliver(svc: Services, celery: Celery, delivery_id: str) -> dict[str, Any] | None:
    """Give dead letter ``delivery_id`` another round of attempts: revive it (``pending``,
    no attempts, out of the dead letters) and send its channel's send task through
    ``celery``; answer the delivery as the API shows it.

    None when it is not a dead letter (unknown, or not ``dead``: nothing changes; of two
    concurrent calls, one revives). Raises ``DispatchError`` when the broker cannot take
    the task; the delivery is then dead again, with its last error.
    """
    delivery = svc.deliveries.load(delivery_id)
    if delivery is None or delivery["channel"] not in OUTBOUND:
        return None
    channel = delivery["channel"]
    if not svc.deliveries.revive(delivery_id, channel):
        return None
    try:
        celery.send_task(send_task_name(channel), kwargs={"delivery_id": delivery_id})
    except OperationalError as exc:
        svc.deliveries.finish(delivery_id, channel, DEAD, delivery["error"])
        raise DispatchError(f"broker unavailable: {exc}") from exc
    revived = svc.deliveries.load(delivery_id)
    return public(revived) if revived else None
