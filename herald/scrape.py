"""Reading one internal ``/metrics`` endpoint (Prometheus text format), as Prometheus does.

``scrape`` fetches and parses a page into ``Samples``; the sums and the quantile
estimate are what ``herald status`` shows. A quantile comes from a histogram's
cumulative buckets the way PromQL's ``histogram_quantile`` does (linear inside the
bucket), over everything the process has counted since it started, not a recent window:
Prometheus' ``rate()`` is the tool for that.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

from herald.errors import HeraldError


class ScrapeError(HeraldError):
    """The endpoint did not answer 200 with a page in the text format."""


@dataclass(frozen=True)
class Sample:
    name: str  # as exposed: ``herald_streamer_deliveries_total``, ``..._bucket``
    labels: dict[str, str]
    value: float


class Samples:
    """The samples of one page."""

    def __init__(self, samples: Iterable[Sample]) -> None:
        self.samples = list(samples)

    def total(self, name: str) -> float | None:
        """The sum of every sample named ``name`` (over its labels); None if it has none."""
        values = [s.value for s in self.samples if s.name == name]
        return sum(values) if values else None

    def quantile(self, histogram: str, q: float) -> float | None:
        """The ``q`` quantile of ``histogram`` (its ``_bucket`` samples summed per bound);
        None when it has counted nothing."""
        buckets: dict[float, float] = {}
        for sample in self.samples:
            if sample.name == f"{histogram}_bucket":
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
        return quantile(q, sorted(buckets.items()))


def quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """``histogram_quantile(q, ...)`` over sorted ``(upper bound, cumulative count)``."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower  # beyond the highest finite bound: its bound, as PromQL does
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, count
    return lower


def parse(text: str) -> Samples:
    """The samples of a page in the text format; ``ScrapeError`` if it is not one."""
    try:
        return Samples(Sample(s.name, dict(s.labels), s.value)
                       for family in text_string_to_metric_families(text)
                       for s in family.samples)
    except ValueError as exc:
        raise ScrapeError(f"not the Prometheus text format: {exc}") from exc


def scrape(url: str, timeout: float = 2.0) -> Samples:
    """Fetch and parse ``url``; ``ScrapeError`` saying why when that fails."""
    try:
        response = httpx.get(url, timeout=timeout)
    except httpx.HTTPError as exc:
        raise ScrapeError(f"unreachable ({type(exc).__name__}: {exc})") from exc
    if response.status_code != 200:
        raise ScrapeError(f"answered {response.status_code}")
    return parse(response.text)
