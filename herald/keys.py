"""Every Redis key and pub/sub channel name Herald uses, defined once.

All names start with the configured prefix (``HERALD_PREFIX``), so several deployments,
or a test run beside a dev stack, can share one Redis without seeing each other. Pub/sub
channels are not scoped by Redis database number, which is why the prefix, not the
database, is what isolates them.
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
        return f"{self.prefix}:topic:"

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

    # Jobs.
    def job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"
