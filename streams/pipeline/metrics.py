"""The worker's Prometheus metrics, rendered at scrape time from what the pipeline already keeps.

Each app gets its own ``CollectorRegistry`` (several apps live in one test process). Stage counters come from
``StageStats``, ENS filings by state from the ``ens-state`` table, consumer lag from the engine's consumers
at the moment of the scrape; dead letters and alert latency are fed by the topic observer of ``streams.pipeline.feed``.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from streams.domain.lifecycle import FilingState
from streams.pipeline.runner import StageStats
from streams.pipeline.stages.lifecycle import decode_state

__all__ = ["CONTENT_TYPE_LATEST", "LatencyMatcher", "PipelineMetrics", "consumer_lag", "filings_by_state"]

#: Seconds from a notification's arrival to its alert: sub-second normally, minutes when a worker lags behind.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
#: How many notification arrivals (or early alerts) the latency matcher remembers.
MATCH_LIMIT = 5000

TopicPartition = tuple[str, int]


def filings_by_state(states: Iterable[bytes]) -> Counter[str]:
    """How many filings of the ENS in ``states`` (the table's raw values) are in each state."""
    counts: Counter[str] = Counter({s.value: 0 for s in FilingState})
    for raw in states:
        state = decode_state(raw)
        counts.update(f.state.value for f in state.filings.values())
    return counts


def consumer_lag(
    highwaters: Mapping[TopicPartition, int | None], positions: Mapping[TopicPartition, int | None]
) -> dict[TopicPartition, int]:
    """Records not yet consumed per partition; a partition whose offsets are not known yet is left out."""
    lag: dict[TopicPartition, int] = {}
    for tp, highwater in highwaters.items():
        position = positions.get(tp)
        if highwater is not None and position is not None:
            lag[tp] = max(0, highwater - position)
    return lag


def dead_letter_labels(stage_field: str, error_class: str) -> tuple[str, str, str]:
    """``DeadLetter.stage`` is ``<stage>/<phase>``; the reason's class is the exception's class name."""
    stage, _, phase = stage_field.partition("/")
    return stage, phase or "unknown", error_class.rpartition(".")[2] or "unknown"


class LatencyMatcher:
    """Pairs a notification's arrival on the inbound topic with the first alert it caused, in either order.

    Both times are Kafka record timestamps, so the latency covers parsing, correlation and the lifecycle step.
    """

    def __init__(self, limit: int = MATCH_LIMIT) -> None:
        self.limit = limit
        self._arrived: OrderedDict[str, float] = OrderedDict()
        self._alerted: OrderedDict[str, float] = OrderedDict()
        self._done: OrderedDict[str, None] = OrderedDict()

    def arrived(self, notification_id: str, at: float) -> float | None:
        """Record an arrival; the latency if its alert was seen first."""
        if notification_id in self._done:
            return None
        alerted = self._alerted.pop(notification_id, None)
        if alerted is not None:
            return self._finish(notification_id, alerted - at)
        self._remember(self._arrived, notification_id, at)
        return None

    def alerted(self, notification_id: str, at: float) -> float | None:
        """Record an alert; the latency if it is the first alert of an arrived notification."""
        if notification_id in self._done:
            return None
        arrived = self._arrived.pop(notification_id, None)
        if arrived is not None:
            return self._finish(notification_id, at - arrived)
        if notification_id not in self._alerted:
            self._remember(self._alerted, notification_id, at)
        return None

    def _finish(self, notification_id: str, latency: float) -> float:
        self._remember(self._done, notification_id, None)
        return max(0.0, latency)

    def _remember(self, memory: OrderedDict[str, Any], key: str, value: Any) -> None:
        memory[key] = value
        while len(memory) > self.limit:
            memory.popitem(last=False)


class PipelineMetrics(Collector):
    """One app's metrics: a collector read at scrape time plus the alert latency histogram."""

    def __init__(
        self,
        stats: StageStats,
        states: Callable[[], Iterable[bytes]],
        evicted: Mapping[str, int] | None = None,
        waiting: Callable[[], int] = lambda: 0,
    ) -> None:
        self.stats = stats
        self.waiting = waiting
        self.states = states
        self.evicted = evicted if evicted is not None else {}
        """The eviction timer's counts: keys per table, and ENS per reason as ``ens:<reason>``."""
        self.lag: dict[TopicPartition, int] = {}
        self.dead_letters: Counter[tuple[str, str, str]] = Counter()
        self.latency = LatencyMatcher()
        self.registry = CollectorRegistry(auto_describe=False)
        self.alert_latency = Histogram(
            "ics2_alert_latency_seconds",
            "From a customs notification's arrival on the inbound topic to the first alert it caused",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(self)

    def dead_lettered(self, stage_field: str, error_class: str) -> None:
        self.dead_letters[dead_letter_labels(stage_field, error_class)] += 1

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)

    def collect(self) -> Iterator[Metric]:
        for name, counts, text in (
            ("ics2_stage_records_consumed", self.stats.consumed, "Records a stage consumed"),
            ("ics2_stage_records_emitted", self.stats.emitted, "Records a stage produced"),
            ("ics2_stage_dead_letters", self.stats.dead_lettered, "Records a stage sent to the dead-letter topic"),
            ("ics2_stage_records_with_output", self.stats.with_output, "Records a stage handled with outputs"),
            (
                "ics2_stage_records_without_output",
                self.stats.without_output,
                "Records a stage handled without outputs (duplicate, parked, kept for a queue to come)",
            ),
        ):
            family = CounterMetricFamily(name, text, labels=["stage"])
            for stage, count in sorted(counts.items()):
                family.add_metric([stage], count)
            yield family
        dead = CounterMetricFamily(
            "ics2_dead_letters", "Dead-letter records on the topic by stage, phase and error class",
            labels=["stage", "phase", "error_class"],
        )  # fmt: skip
        for labels, count in sorted(self.dead_letters.items()):
            dead.add_metric(list(labels), count)
        yield dead
        evicted_keys = CounterMetricFamily(
            "ics2_evicted_table_keys", "Table keys the closed-ENS eviction deleted (tombstoned)", labels=["table"]
        )
        evicted_ens = CounterMetricFamily(
            "ics2_evicted_ens", "Closed ENS evicted after their retention, by why they were closed", labels=["reason"]
        )
        for name, count in sorted(self.evicted.items()):
            what, _, reason = name.partition("ens:")
            if reason:
                evicted_ens.add_metric([reason], count)
            else:
                evicted_keys.add_metric([what], count)
        yield evicted_keys
        yield evicted_ens
        lag = GaugeMetricFamily(
            "ics2_consumer_lag", "Highwater minus position per assigned partition", labels=["topic", "partition"]
        )
        for (topic, partition), value in sorted(self.lag.items()):
            lag.add_metric([topic, str(partition)], value)
        yield lag
        waiting = GaugeMetricFamily(
            "ics2_alerts_waiting_for_queue", "Alerts kept for parties whose queue does not exist yet"
        )
        waiting.add_metric([], self.waiting())
        yield waiting
        filings = GaugeMetricFamily(
            "ics2_ens_filings", "Filings of the ENS this worker holds, by filing state", labels=["state"]
        )
        for state, count in sorted(filings_by_state(self.states()).items()):
            filings.add_metric([state], count)
        yield filings
