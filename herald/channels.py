"""The delivery channels and notification categories: names and rules, in one place.

A notification goes to one or more channels: ``inapp`` (the user's inbox and an event on
their stream), ``email`` (one message per recipient with an address) and ``webhook``
(one signed POST per registered endpoint that wants it). Each channel's tasks run on a
queue of their own (``herald.keys.Keys.channel_queue``), so a slow outside service never
holds up in-app delivery; ``queues`` names them all, for the workers (``tasks.settings``),
``herald run`` and ``herald status``.

A notification has a ``category`` (``HERALD_CATEGORIES``, default ``general``), which
is what a user's preferences turn on or off per channel; ``critical`` notifications
ignore opt-outs.
"""

from __future__ import annotations

import re

from herald.keys import Keys

INAPP, EMAIL, WEBHOOK = "inapp", "email", "webhook"
CHANNELS: tuple[str, ...] = (INAPP, EMAIL, WEBHOOK)
# Channels that reach the outside world: a delivery record per target, retries, dead
# letters (``herald.deliveries``). In-app delivery is recorded per destination topic by
# ``tasks.notifications``.
OUTBOUND: tuple[str, ...] = (EMAIL, WEBHOOK)



def queues(keys: Keys) -> list[str]:
    """Every queue a worker of this deployment may consume: jobs first, then one per
    channel (``Keys.channel_queue``). A worker started without ``-Q`` consumes them all."""
    return [keys.task_queue, *(keys.channel_queue(channel) for channel in CHANNELS)]


DEFAULT_CATEGORY = "general"
CATEGORY_RULE = r"[a-z][a-z0-9_-]{0,31}"
CATEGORY_RE = re.compile(CATEGORY_RULE)


def valid_category(value: object) -> bool:
    """True when ``value`` is shaped like a category name (``CATEGORY_RULE``)."""
    return isinstance(value, str) and CATEGORY_RE.fullmatch(value) is not None
