"""Unit tests: no Redis, no network, no environment.

Every test here runs with sockets refused (pytest-socket): one that opens a socket,
even to reach Redis on this machine, fails at once with ``SocketBlockedError``. None
of the fixtures they use reads or edits ``os.environ`` (see ``tests/conftest.py``).
"""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def no_network(socket_disabled: None) -> None:
    """Refuse sockets for the duration of the test."""
