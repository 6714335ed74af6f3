"""Faults at the streamer: SIGKILL, SIGTERM, and clients reconnecting elsewhere."""

from __future__ import annotations

import signal
import threading
import time

import pytest
import redis

from herald.keys import Keys
from herald.publisher import Publisher
from tests.conftest import start_streamer, wait_until
from tests.faults.test_redis_restart import publish_steadily
from tests.sse import EventSource

pytestmark = pytest.mark.faults


def _sources(urls: list[str], mint, count: int) -> list[EventSource]:
    sources = [EventSource(urls, {"token": mint(f"s{i}", ("ticker",)), "topics": "ticker"})
               for i in range(count)]
    for source in sources:
        assert source.wait_opened(), source.statuses
    return sources


def _publisher(server, config) -> Publisher:
    return Publisher(redis.Redis.from_url(server.url, decode_responses=True),
                     Keys(config.prefix), history_maxlen=1000, history_ttl=600)


def _run_with_fault(urls, mint, server, config, fault, count: int = 100,
                    events: int = 120) -> tuple[list[str], list[EventSource], list[list[str]]]:
    """Publish ``events`` steadily, cause ``fault`` after a third of them, then publish a
    sentinel: the ids published, the sources, and the ids each received before it."""
    sources = _sources(urls, mint, count)
    ids: list[str] = []
    publisher = _publisher(server, config)
    thread = threading.Thread(target=publish_steadily,
                              args=(publisher, "ticker", events, 20.0, ids, []))
    thread.start()
    wait_until(lambda: len(ids) >= events // 3, 30, what="a third of the events published")
    fault()
    thread.join(30)
    assert len(ids) == events
    sentinel = publisher.publish("ticker", "sentinel", "sentinel")
    received = [[e.id for e in s.events_before(sentinel, timeout=20)] for s in sources]
    print(f"published {len(ids)}; delivered {sum(map(len, received))} of {count * len(ids)}; "
          f"connections opened {sum(s.connections for s in sources)}")
    return ids, sources, received


def test_sigkill_streamer_clients_resume_on_a_sibling(own_redis, own_env, mint, config):
    env = own_env(own_redis)
    first, first_url = start_streamer(env, name="streamer-a")
    second, second_url = start_streamer(env, name="streamer-b")
    try:
        ids, sources, received = _run_with_fault(
            [first_url, second_url], mint, own_redis, config,
            lambda: first.popen.send_signal(signal.SIGKILL))
        for source, events in zip(sources, received, strict=True):
            assert events == ids, "gap or duplicate after failover"
            assert source.connections >= 2
        for source in sources:
            source.close()
    finally:
        first.stop()
        second.stop()


def test_sigterm_drains_clients_to_a_sibling(own_redis, own_env, mint, config):
    env = own_env(own_redis, HERALD_DRAIN_SECONDS="1.5")
    first, first_url = start_streamer(env, name="streamer-a")
    second, second_url = start_streamer(env, name="streamer-b")
    stopped_in: list[float] = []

    def terminate() -> None:
        began = time.monotonic()
        first.popen.send_signal(signal.SIGTERM)
        first.popen.wait(20)
        stopped_in.append(time.monotonic() - began)

    try:
        ids, sources, received = _run_with_fault([first_url, second_url], mint, own_redis,
                                                 config, terminate, count=50)
        assert first.popen.returncode == 0
        assert stopped_in[0] >= 1.0, "did not spread the disconnections over the drain"
        for events in received:
            assert events == ids
        log = first.log()
        assert "draining 50 clients" in log
        for source in sources:
            source.close()
    finally:
        first.stop()
        second.stop()
