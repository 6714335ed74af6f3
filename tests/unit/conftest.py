"""Unit tests: no Redis, no network, no environment.

Every test here runs with Internet sockets refused (pytest-socket): one that opens a
TCP or UDP socket, even to reach Redis on this machine, fails at once with
``SocketBlockedError``. Unix socket pairs stay allowed (they reach nothing outside the
process). None of the fixtures they use reads or edits ``os.environ`` (see
``tests/conftest.py``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import pytest_socket


@pytest.fixture(autouse=True)
def no_network() -> Iterator[None]:
    """Refuse Internet sockets for the duration of the test."""
    pytest_socket.disable_socket(allow_unix_socket=True)
    yield
    pytest_socket.enable_socket()
