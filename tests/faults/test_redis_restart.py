"""Fault: Redis restarts while clients stream and events are published steadily."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from herald.keys import Keys
from herald.publisher import Publisher
from tests.conftest import start_streamer, wait_until
from tests.sse import SSEClient

pytestmark = pytest.mark.faults


def publish_steadily(publisher: Publisher, topic: str, count: int, rate: float,
                     ids: list[str], errors: list[str]) -> None:
    """Publish ``count`` events at ``rate``, retrying each (same key) until Redis takes it."""
    start = time.monotonic()
    for n in range(count):
        delay = start + n / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        while True:
            try:
                ids.append(publisher.publish(topic, {"seq": n}, "tick", key=f"{topic}-{n}"))
                break
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as exc:
                errors.append(type(exc).__name__)
                time.sleep(0.05)


def test_redis_restart_while_100_clients_stream(own_redis, own_env, mint, config):
    process, url = start_streamer(own_env(own_redis))
    clients = [SSEClient(url, {"token": mint(f"c{i}", ("ticker",)), "topics": "ticker"})
               for i in range(100)]
    publisher = Publisher(redis.Redis.from_url(own_redis.url, decode_responses=True),
                          Keys(config.prefix), history_maxlen=1000, history_ttl=600)
    ids: list[str] = []
    errors: list[str] = []
    thread = threading.Thread(target=publish_steadily,
                              args=(publisher, "ticker", 200, 20.0, ids, errors))
    try:
        assert {c.status for c in clients} == {200}
        thread.start()
        wait_until(lambda: len(ids) >= 60, 30, what="60 events before the restart")
        own_redis.stop()
        wait_until(lambda: bool(errors), 30, what="a publish refused while Redis is down")
        own_redis.start()
        thread.join(30)
        assert len(ids) == 200
        sentinel = publisher.publish("ticker", "sentinel", "sentinel")
        received = [[e.id for e in c.events_before(sentinel, timeout=20)] for c in clients]
        print(f"published {len(ids)} events (retried {len(errors)} times across the "
              f"restart); delivered {sum(map(len, received))} of {100 * len(ids)}")
        for events in received:
            assert events == ids
        assert "Redis subscription lost" in process.log()
    finally:
        for client in clients:
            client.close()
        process.stop()
