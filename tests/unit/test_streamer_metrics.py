"""The streamer's metrics module: the age histogram, the labels, the hub's figures."""

from __future__ import annotations

import json

from prometheus_client.parser import text_string_to_metric_families

from streamer.client import STALLED, TOO_SLOW
from streamer.history import _gaps
from streamer.hub import Hub
from streamer.metrics import AGE_BUCKETS, EventAges, StreamerMetrics, reset_kind
from tests.unit.test_hub import SSE, WS, Streamer


def samples(metrics: StreamerMetrics) -> dict[tuple[str, tuple], float]:
    text = metrics.exposition().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_ages_fall_in_le_buckets_clamp_at_zero_and_skip_unknown_stamps():
    ages = EventAges()
    now = 1_000.0
    ages.observe(now, [999_990, 999_000, 1_001_000, 0])  # 10 ms, 1 s, the future, unknown
    family = ages.family("age", "doc")
    buckets = {s.labels["le"]: s.value for s in family.samples if s.name == "age_bucket"}
    assert buckets["0.001"] == 1  # the future counts as 0, not negative
    assert buckets["0.01"] == 2
    assert buckets["1.0"] == 3 and buckets["+Inf"] == 3
    assert len(buckets) == len(AGE_BUCKETS) + 1
    count = next(s.value for s in family.samples if s.name == "age_count")
    total = next(s.value for s in family.samples if s.name == "age_sum")
    assert count == 3 and abs(total - 1.01) < 1e-9


def test_every_reset_reason_of_history_has_a_word_of_its_own():
    gaps = _gaps({"a": (5, 0), "b": (9, 0)}, [b"7-0", None], (8, 0))
    assert sorted(map(reset_kind, gaps.values())) == ["ahead", "trimmed"]
    reasons = {  # as streamer.history words them
        "position is older than the history's retention": "retention",
        "history of a lost events during the replay": "trimmed",
        "history of a expired during the replay": "expired",
        "more than 1000 events were missed on a": "too_many_events",
        "more than 8388608 bytes of events were missed": "too_many_bytes",
        "something new": "other",
    }
    assert {reason: reset_kind(reason) for reason in reasons} == reasons


def test_drops_are_counted_by_reason_and_other_closes_are_not():
    metrics = StreamerMetrics()
    for reason in (TOO_SLOW, STALLED, STALLED, "disconnected", "token revoked"):
        metrics.dropped(reason)
    got = samples(metrics)
    name = "herald_streamer_clients_dropped_total"
    assert got[(name, (("reason", "too_slow"),))] == 1
    assert got[(name, (("reason", "stalled"),))] == 2
    assert {labels for n, labels in got if n == name} == {
        (("reason", "too_slow"),), (("reason", "stalled"),)}


def test_the_hub_figures_are_read_at_scrape_time():
    metrics = StreamerMetrics()
    streamer = Streamer()
    streamer.hub = hub = Hub(streamer._want, streamer._unwant, metrics)
    streamer.broker._deliver = hub.dispatch
    metrics.follow(hub)
    try:
        sse, peer = streamer.live("news", transport=SSE, user="a")
        streamer.live("news", transport=SSE, user="b")
        streamer.live("news", "sport", transport=WS, user="c")
        streamer.settle()
        for n in range(3):
            streamer.broker.publish("news", {"n": n})
        streamer.settle()
        got = samples(metrics)
        assert got[("herald_streamer_connections", (("transport", "sse"),))] == 2
        assert got[("herald_streamer_connections", (("transport", "ws"),))] == 1
        assert got[("herald_streamer_topics", ())] == 2
        assert got[("herald_streamer_events_received_total", ())] == 3
        assert got[("herald_streamer_deliveries_total", ())] == 9
        assert got[("herald_streamer_bytes_written_total", ())] == hub.bytes_out > 0
        assert got[("herald_streamer_event_age_seconds_count", ())] == 3
        peer.until(lambda messages: len(messages) >= 3)
        sse.close("disconnected")
        got = samples(metrics)
        assert got[("herald_streamer_connections", (("transport", "sse"),))] == 1
    finally:
        streamer.close()


def test_metrics_off_observe_no_ages():
    hub = Hub(lambda topic: None, lambda topic: None)  # no metrics given: off
    assert not hub.metrics.enabled
    envelope = json.dumps({"id": "1-0", "ts": 1, "topic": "t", "type": "m", "data": 0})
    hub.dispatch([("t", envelope.encode())])
    assert hub.metrics.ages.counts == [0] * (len(AGE_BUCKETS) + 1)
