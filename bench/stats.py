"""The numbers of a benchmark run: percentiles, completion rates, ratios. Pure, so the unit tests pin them down."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100), interpolating linearly between closest ranks.

    The same definition as numpy's default and ``statistics.quantiles(method="inclusive")``, so p50 of two
    samples is their mean and p100 is the maximum; a p99 of 200 samples is not just the second largest value.
    """
    if not samples:
        raise ValueError("a percentile of no samples is undefined")
    if not 0.0 <= q <= 100.0 or math.isnan(q):
        raise ValueError(f"percentile {q!r} is not within 0..100")
    ordered = sorted(samples)
    position = (len(ordered) - 1) * q / 100.0
    lower = math.floor(position)
    upper = min(lower + 1, len(ordered) - 1)
    fraction = position - lower
    return ordered[lower] + (ordered[upper] - ordered[lower]) * fraction


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``, or None when either is missing or the denominator is zero (no division)."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def completion_rate(completed_at_ms: Iterable[int]) -> tuple[float, float]:
    """Items per second and the span in seconds, from the time each item was complete.

    The clock starts when the first item is complete, so startup is left out and ``n - 1`` items finish within
    the span. Broker timestamps have millisecond resolution: a span below 1 ms counts as 1 ms.
    """
    times = sorted(completed_at_ms)
    if len(times) < 2:
        raise ValueError("a rate needs at least two completed items")
    span_s = max(times[-1] - times[0], 1) / 1000.0
    return (len(times) - 1) / span_s, span_s


def completion_times(timestamps_by_item: Iterable[tuple[str, int]]) -> dict[str, int]:
    """When each item was complete: the latest timestamp among its outputs (a booking gives several filings)."""
    done: dict[str, int] = {}
    for item, timestamp in timestamps_by_item:
        done[item] = max(timestamp, done.get(item, timestamp))
    return done


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Produce-to-arrival latencies of one path, in milliseconds."""

    count: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float

    @classmethod
    def of(cls, samples_ms: Sequence[float]) -> LatencySummary:
        return cls(
            count=len(samples_ms),
            p50_ms=percentile(samples_ms, 50),
            p95_ms=percentile(samples_ms, 95),
            p99_ms=percentile(samples_ms, 99),
            max_ms=max(samples_ms),
            mean_ms=sum(samples_ms) / len(samples_ms),
        )


@dataclass(frozen=True, slots=True)
class Throughput:
    """How fast one path drained a pre-loaded input topic, timed from its first to its last completed item."""

    items: int
    outputs: int
    items_per_s: float
    span_s: float
    startup_s: float
    """From starting the process to the first completed item (connect, join the group, recover tables)."""

    @property
    def outputs_per_item(self) -> float:
        return self.outputs / self.items

    @property
    def outputs_per_s(self) -> float:
        return self.items_per_s * self.outputs_per_item


@dataclass(frozen=True, slots=True)
class PathResult:
    """Everything measured on one path: the pipeline worker or the raw passthrough."""

    name: str
    hops: int
    throughput: Throughput
    latency: LatencySummary
    peak_rss_kib: int | None
    latencies_ms: tuple[float, ...]
    cpu_ms_per_item: float | None = None
    """CPU time of the process per latency probe, over the latency phase."""

    def to_json(self) -> dict[str, Any]:
        throughput = asdict(self.throughput)
        throughput["outputs_per_s"] = self.throughput.outputs_per_s
        return {
            "name": self.name,
            "hops": self.hops,
            "throughput": throughput,
            "latency_ms": asdict(self.latency),
            "peak_rss_kib": self.peak_rss_kib,
            "cpu_ms_per_item": self.cpu_ms_per_item,
        }


def ratios(pipeline: PathResult, passthrough: PathResult) -> dict[str, float | None]:
    """Pipeline ÷ passthrough: below 1 for throughput and above 1 for latency and memory means the pipeline costs."""
    return {
        "throughput": ratio(pipeline.throughput.items_per_s, passthrough.throughput.items_per_s),
        "latency_p50": ratio(pipeline.latency.p50_ms, passthrough.latency.p50_ms),
        "latency_p99": ratio(pipeline.latency.p99_ms, passthrough.latency.p99_ms),
        "peak_rss": ratio(pipeline.peak_rss_kib, passthrough.peak_rss_kib),
    }


def rounded(values: Mapping[str, float | None], digits: int = 3) -> dict[str, float | None]:
    return {key: None if value is None else round(value, digits) for key, value in values.items()}
