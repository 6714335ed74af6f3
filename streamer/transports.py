"""The transports a streamer serves, each at its own path (see ``streamer.transport``).

Adding a wire format (HTTP long-polling, say) is one module with a ``Transport`` and its
``Session``, plus its line here: the handlers route its path to it, and the contract
tests (``tests/unit/test_transport_contract.py``) run against it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from streamer.sse import EventStream
from streamer.websocket import WebSocket

if TYPE_CHECKING:
    from herald.config import Config
    from streamer.transport import Transport

REGISTERED: tuple[type[Transport], ...] = (EventStream, WebSocket)


def configured(config: Config) -> dict[str, Transport]:
    """Every registered transport with the deployment's settings, by path."""
    return {cls.path: cls.configured(config) for cls in REGISTERED}
