"""Faults at the streamer: SIGKILL, SIGTERM, and clients reconnecting elsewhere."""

from __future__ import annotations

import signal
import threading
import time

import pytest
import redis

from herald.keys import Keys
from herald.publisher import Publisher
from tests.conftest import own_env, start_streamer
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
                    events: int = 120) -> tuple[list[str], list[EventSource]]:
    sources = _sources(urls, mint, count)
    ids: list[str] = []
    thread = threading.Thread(target=publish_steadily,
                              args=(_publisher(server, config), "ticker", events, 20.0, ids,
                                    []))
    thread.start()
    time.sleep(2)
    fault()
    thread.join(30)
    for source in sources:
        source.wait_for(len(ids), timeout=20)
    delivered = sum(len(s.events) for s in sources)
    print(f"published {len(ids)}; delivered {delivered} of {count * len(ids)}; "
          f"connections opened {sum(s.connections for s in sources)}")
    return ids, sources


def test_sigkill_streamer_clients_resume_on_a_sibling(own_redis, mint, config):
    env = own_env(own_redis)
    first, first_url = start_streamer(env, name="streamer-a")
    second, second_url = start_streamer(env, name="streamer-b")
    try:
        ids, sources = _run_with_fault([first_url, second_url], mint, own_redis, config,
                                       lambda: first.popen.send_signal(signal.SIGKILL))
        for source in sources:
            assert [e.id for e in source.events] == ids, "gap or duplicate after failover"
            assert source.connections >= 2
        for source in sources:
            source.close()
    finally:
        first.stop()
        second.stop()


def test_sigterm_drains_clients_to_a_sibling(own_redis, mint, config):
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
        ids, sources = _run_with_fault([first_url, second_url], mint, own_redis, config,
                                       terminate, count=50)
        assert first.popen.returncode == 0
        assert 1.0 <= stopped_in[0] < 10, stopped_in
        for source in sources:
            assert [e.id for e in source.events] == ids
        log = first.log()
        assert "draining 50 clients" in log
        for source in sources:
            source.close()
    finally:
        first.stop()
        second.stop()
