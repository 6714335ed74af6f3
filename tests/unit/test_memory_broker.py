"""The in-process broker keeps the promises of ``streamer.broker.Broker`` as RedisBroker
does, so that the hub's unit tests exercise what production will do."""

from __future__ import annotations

import gevent
import pytest

from streamer.memory_broker import MemoryBroker


def turns(count: int = 3) -> None:
    for _ in range(count):
        gevent.sleep(0)


@pytest.fixture
def delivered() -> list[list[tuple[str, bytes]]]:
    return []


@pytest.fixture
def broker(delivered):
    box = MemoryBroker(delivered.append)
    box.start()
    turns()
    yield box
    box.stop()


def test_a_subscription_is_confirmed_later_and_loses_what_came_before(broker, delivered):
    broker.want("t")
    assert not broker.ready(("t",)), "confirmed on a later turn, as Redis answers later"
    broker.publish("t", "too early")
    assert broker.wait_ready(("t",), 1)
    broker.publish("t", "on time")
    turns()
    assert [len(batch) for batch in delivered] == [1]
    assert b'"on time"' in delivered[0][0][1]


def test_what_one_turn_publishes_is_one_batch_in_order(broker, delivered):
    for topic in ("a", "b"):
        broker.want(topic)
    assert broker.wait_ready(("a", "b"), 1)
    ids = [broker.publish(topic, n) for n, topic in enumerate("abab")]
    turns()
    broker.publish("a", "next turn")
    turns()
    assert [[topic for topic, _ in batch] for batch in delivered] == [list("abab"), ["a"]]
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))


def test_a_barrier_passes_once_everything_before_it_is_delivered():
    seen: list[tuple[int, bool]] = []  # (batch size, had the barrier passed yet)
    broker = MemoryBroker(lambda batch: seen.append((len(batch), passed.ready())))
    broker.start()
    broker.want("t")
    assert broker.wait_ready(("t",), 1)
    broker.publish("t", 1)
    broker.publish("t", 2)
    passed = broker.barrier()
    broker.publish("t", 3)
    assert passed.get(timeout=1) is True
    turns()
    assert seen == [(2, False), (1, True)]
    broker.stop()


def test_an_unwanted_topic_is_let_go_at_once(broker, delivered):
    broker.want("t")
    assert broker.wait_ready(("t",), 1)
    broker.unwant("t")
    assert not broker.ready(("t",))
    broker.publish("t", "gone")
    turns()
    assert delivered == []


def test_after_a_lost_connection_the_gap_is_filled_before_anything_live(delivered):
    order: list[str] = []
    broker = MemoryBroker(lambda batch: order.append("live"),
                          on_resync=lambda: order.append("resync"))
    broker.start()
    broker.want("t")
    assert broker.wait_ready(("t",), 1)
    passed = broker.barrier()
    broker.disconnect()
    with pytest.raises(ConnectionError):
        passed.get(timeout=1)
    with pytest.raises(ConnectionError):
        broker.barrier()
    broker.publish("t", "lost")
    broker.reconnect()
    assert broker.wait_ready(("t",), 1)
    broker.publish("t", "live")
    turns()
    assert order == ["resync", "live"]
    broker.stop()
