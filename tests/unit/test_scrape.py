"""``herald.scrape``: a page in the text format read as Prometheus reads it."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest

from herald.scrape import ScrapeError, parse, quantile


def _page() -> str:
    registry = CollectorRegistry()
    connections = Gauge("herald_streamer_connections", "open", ["transport"],
                        registry=registry)
    connections.labels("sse").set(3)
    connections.labels("websocket").set(2)
    age = Histogram("herald_streamer_event_age_seconds", "age", registry=registry,
                    buckets=(0.01, 0.1, 1.0))
    for value in [0.005] * 90 + [0.05] * 9 + [0.5]:
        age.observe(value)
    return generate_latest(registry).decode()


def test_sums_over_labels_and_estimates_a_quantile_as_promql_does():
    samples = parse(_page())
    assert samples.total("herald_streamer_connections") == 5
    assert samples.total("herald_streamer_topics") is None
    # 99 of 100 at or under 0.1: the 99th lies at the top of the (0.01, 0.1] bucket.
    assert samples.quantile("herald_streamer_event_age_seconds", 0.99) == pytest.approx(0.1)
    assert samples.quantile("herald_streamer_event_age_seconds", 0.5) == pytest.approx(
        0.01 * 50 / 90)


def test_quantile_edges():
    assert quantile(0.99, []) is None
    assert quantile(0.99, [(1.0, 0), (float("inf"), 0)]) is None
    assert quantile(0.99, [(1.0, 0), (float("inf"), 10)]) == 1.0  # past the last bound


def test_not_the_text_format_is_refused():
    with pytest.raises(ScrapeError):
        parse("this is { not metrics")
