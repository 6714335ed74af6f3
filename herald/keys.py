"""Every Redis key and pub/sub channel name Herald uses, built here and nowhere else.

Every other module asks a ``Keys`` for a name (``tests/unit/test_key_names.py`` checks
that no shipped module builds one itself). All names start with the configured prefix
(``HERALD_PREFIX``), so several deployments, or a test run beside a dev stack, can share
one Redis without seeing each other. Pub/sub channels are not scoped by Redis database
number, which is why the prefix, not the database, is what isolates them.

Celery follows the same prefix: its task queue, its control (``inspect``, ``ping``) and
event exchanges, and, on a Redis broker, every key and channel kombu uses (the queue,
``unacked``, ``_kombu.binding.*``, pub/sub fan-out). Two deployments on one broker never
take, acknowledge or inspect each other's tasks.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names under one prefix."""

    prefix: str = "herald"

    # Event history and fan-out.
    @property
    def clock(self) -> str:
        """Hash ``{ms, seq}`` that makes event ids one total order across all topics."""
        return f"{self.prefix}:clock"

    def stream(self, topic: str) -> str:
        """Redis Stream holding a topic's replayable history."""
        return f"{self.prefix}:stream:{topic}"

    def floor(self, topic: str) -> str:
        """The first id a topic's history kept the last time it was trimmed."""
        return f"{self.prefix}:floor:{topic}"

    def published(self, key: str) -> str:
        """Id of the event published under an idempotency key (see ``Publisher``)."""
        return f"{self.prefix}:published:{key}"

    def channel(self, topic: str) -> str:
        """Pub/sub channel carrying a topic's live events."""
        return f"{self.prefix}:topic:{topic}"

    @property
    def channel_prefix(self) -> str:
        """What every topic channel starts with (a subscriber strips it to get the topic)."""
        return f"{self.prefix}:topic:"

    @property
    def control(self) -> str:
        """Pub/sub channel of notices to every streamer (``revoke <token id>``)."""
        return f"{self.prefix}:control"

    # Access control.
    @property
    def revoked(self) -> str:
        """Sorted set of revoked token ids, scored by when each may be forgotten."""
        return f"{self.prefix}:revoked"

    @property
    def apikeys(self) -> str:
        """Hash of API key id -> its record (name, hash of the secret, timestamps)."""
        return f"{self.prefix}:apikeys"

    def rate(self, name: str) -> str:
        """Token bucket (hash ``tokens``, ``at``) of the caller ``name``."""
        return f"{self.prefix}:rate:{name}"

    # Notifications.
    def notification(self, notification_id: str) -> str:
        return f"{self.prefix}:notification:{notification_id}"

    def recipient_state(self, notification_id: str) -> str:
        """Hash recipient -> pending | delivered | failed."""
        return f"{self.prefix}:notification:{notification_id}:state"

    def recipient_event(self, notification_id: str) -> str:
        """Hash recipient -> id of the event that delivered it."""
        return f"{self.prefix}:notification:{notification_id}:event"

    def idempotency(self, key: str) -> str:
        return f"{self.prefix}:idempotency:{key}"

    def inbox(self, user: str) -> str:
        """Sorted set of a user's notification ids (score 0, ordered by id = by time)."""
        return f"{self.prefix}:inbox:{user}"

    def unread(self, user: str) -> str:
        return f"{self.prefix}:inbox:{user}:unread"

    # Delivery channels (herald.deliveries, herald.profiles, herald.preferences).
    def delivery(self, delivery_id: str) -> str:
        """Hash: one outbound delivery's state, attempts, error and timestamps."""
        return f"{self.prefix}:delivery:{delivery_id}"

    def deliveries_of(self, notification_id: str) -> str:
        """Hash ``<channel> <target>`` -> delivery id, for a notification's status."""
        return f"{self.prefix}:notification:{notification_id}:deliveries"

    def dead_letters(self, channel: str) -> str:
        """Sorted set of a channel's dead delivery ids, scored by when each died (ms)."""
        return f"{self.prefix}:dead:{channel}"

    def profile(self, user: str) -> str:
        """Hash of a user's ``email``, ``name`` and ``locale``."""
        return f"{self.prefix}:profile:{user}"

    def preferences(self, user: str) -> str:
        """Hash ``<channel>:<category>`` -> ``0`` (off) or ``1`` (on) of a user."""
        return f"{self.prefix}:preferences:{user}"

    @property
    def webhooks(self) -> str:
        """Hash of webhook endpoint id -> its record (JSON)."""
        return f"{self.prefix}:webhooks"

    def channel_rate(self, name: str) -> str:
        """Token bucket shared by every worker for an outbound channel (or endpoint)."""
        return f"{self.prefix}:rate:channel:{name}"

    # Jobs.
    def job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    # Celery, on whichever broker: see tasks.settings.
    @property
    def task_queue(self) -> str:
        """The queue of tasks that are not a channel's (jobs, the demo), a RabbitMQ queue or a
        list under ``broker_keyprefix``."""
        return f"{self.prefix}.tasks"

    def channel_queue(self, channel: str) -> str:
        """The queue a channel's tasks go to (``herald.inapp``, ``herald.email``, ...)."""
        return f"{self.prefix}.{channel}"

    @property
    def control_exchange(self) -> str:
        """Celery's ``control_exchange``: its mailbox exchange is ``<this>.pidbox``."""
        return self.prefix

    @property
    def event_exchange(self) -> str:
        """Exchange of the task events Flower watches."""
        return f"{self.prefix}.events"

    @property
    def broker_keyprefix(self) -> str:
        """Redis broker: kombu's ``global_keyprefix``, put before each of its keys and channels."""
        return f"{self.prefix}:celery:"

    def queue_key(self, queue: str) -> str:
        """Redis broker: the list holding the tasks waiting in ``queue``."""
        return self.broker_keyprefix + queue
