"""A guard against a worker that has records waiting and processes none of them.

Why: after a rebalance, faust-streaming was seen (0.15.x, a restart with a backlog) to fetch records that never
reached the agents: the partitions' positions are at their ends, nothing is committed, nothing is in flight, and
the worker would wait forever. The guard compares what the group has committed with the partitions' high-water
marks; when there is lag and no stage has consumed anything for a while, it seeks the stream partitions back to
their committed offsets (at-least-once: whatever is read twice is recognised by its deterministic ids).

Seeking is not always enough. A worker whose group session expired while it opened its tables (a 6.5 s stall on a
loaded machine) rejoined and then never fetched two of its partitions again, sought back every 15 s for 14 minutes.
So the guard escalates, one step per action on the same partitions: it first puts them back into Faust's fetch
bookkeeping (a partition left paused, out of the active set, marked as having a full buffer, or without a route to
its stream is never fetched or never delivered) and seeks; when they are still stuck the next time, it asks the
group for a new rebalance, which rebuilds all of that from the assignment.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from faust.types import TP

from streams.admin import admin_client
from streams.pipeline.recovery import seek_streams
from streams.pipeline.runner import StageStats
from streams.settings import Settings

log = structlog.get_logger(__name__)

#: Checks in a row with lag and nothing consumed before the guard acts.
PATIENCE = 3


def lagging(highwaters: Mapping[TP, int | None], committed: Mapping[TP, int | None]) -> list[TP]:
    """Partitions whose high-water mark is beyond the committed offset (no commit counts as offset 0)."""
    return sorted(tp for tp, end in highwaters.items() if end is not None and end > max(committed.get(tp) or 0, 0))


@dataclass(frozen=True, slots=True)
class FetchState:
    """Where one stuck partition stands in Faust's fetch bookkeeping: any flag set keeps its records away."""

    paused: bool
    inactive: bool
    buffer_full: bool
    unrouted: bool
    kafka_unassigned: bool = False
    """aiokafka's own view, read for the log only: not in its assignment, paused, or without a fetch position."""
    kafka_paused: bool = False
    kafka_no_position: bool = False

    def describe(self) -> str:
        flags = [name for name in self.__slots__ if getattr(self, name)]
        return ",".join(flags) or "fetchable"


def fetch_state(consumer: Any, conductor: Any, tp: TP) -> FetchState:
    """How ``consumer`` (Faust's) and ``conductor`` (its router from partitions to streams) treat ``tp``, and how
    the aiokafka consumer beneath sees it (a snapshot read across threads, for the log)."""
    active = getattr(consumer, "_active_partitions", None)
    kafka = _kafka_assignment(consumer)
    state = None if kafka is None else kafka.state_value(tp)
    return FetchState(
        paused=tp in getattr(consumer, "_paused_partitions", ()),
        inactive=active is not None and tp not in active,
        buffer_full=tp in getattr(consumer, "_buffered_partitions", ()),
        unrouted=not _routed(conductor, tp),
        kafka_unassigned=kafka is not None and state is None,
        kafka_paused=state is not None and bool(state.paused),
        kafka_no_position=state is not None and not state.has_valid_position,
    )


def _routed(conductor: Any, tp: TP) -> bool:
    """Whether Faust's conductor hands ``tp``'s records to a stream (a conductor without the map: assume so)."""
    return tp in getattr(conductor, "_tp_to_callback", {tp: None})


def _kafka_assignment(consumer: Any) -> Any:
    """aiokafka's assignment (its per-partition fetch states) under Faust's consumer thread; None when absent."""
    try:
        return consumer._thread._consumer._subscription.subscription.assignment
    except AttributeError:
        return None


async def restore_fetching(consumer: Any, conductor: Any, stuck: Iterable[TP]) -> None:
    """Puts ``stuck`` partitions back where Faust fetches and delivers them (a no-op for healthy ones)."""
    stuck = set(stuck)
    consumer.resume_partitions(stuck)
    getattr(consumer, "_buffered_partitions", set()).difference_update(stuck)
    if not all(_routed(conductor, tp) for tp in stuck):
        await conductor.on_partitions_assigned(consumer.assignment())


async def request_rebalance(consumer: Any) -> None:
    """Asks the group coordinator, from the consumer's own thread, for a new rebalance of this member."""
    thread = consumer._thread

    async def rejoin() -> None:
        thread._ensure_consumer()._coordinator.request_rejoin()

    await thread.call_thread(rejoin)


class StallGuard:
    """Called by a timer; acts only after ``patience`` checks with lag and an unchanged consumed count."""

    def __init__(
        self, app: Any, settings: Settings, stats: StageStats, sources: Iterable[str], patience: int = PATIENCE
    ):
        self.app = app
        self.settings = settings
        self.stats = stats
        self.sources = set(sources)
        self.patience = patience
        self._consumed = -1
        self._idle_checks = 0
        self._last_stuck: set[TP] = set()
        self.resyncs = 0
        self.rebalances = 0

    async def check(self) -> list[TP]:
        """One look; returns the partitions it re-sought (usually none)."""
        if self.app.rebalancing or self.app.should_stop:
            self._idle_checks = 0
            return []
        consumed = sum(self.stats.consumed.values())
        progressed, self._consumed = consumed != self._consumed, consumed
        if progressed:
            self._idle_checks = 0
            self._last_stuck = set()
            return []
        consumer = self.app.consumer
        streams = [tp for tp in consumer.assignment() if tp.topic in self.sources]
        if not streams:
            return []
        highwaters = {tp: consumer.highwater(tp) for tp in streams}
        unknown = [tp for tp, end in highwaters.items() if end is None]
        if unknown:
            # A partition never fetched since its assignment has no high-water mark in the consumer: exactly the
            # partition a stuck fetch leaves behind (seen after a group session expired), so ask the broker.
            highwaters.update(await consumer.highwaters(*unknown))
        # The worker's own record of its commits rules out an idle, caught-up worker without asking the broker.
        suspects = lagging(highwaters, consumer._committed_offset)
        behind = lagging({tp: highwaters[tp] for tp in suspects}, await self._committed(suspects)) if suspects else []
        self._idle_checks = self._idle_checks + 1 if behind else 0
        if not behind:
            self._last_stuck = set()
        if self._idle_checks < self.patience:
            return []
        self._idle_checks = 0
        conductor = self.app.topics
        states = {f"{tp.topic}:{tp.partition}": fetch_state(consumer, conductor, tp).describe() for tp in behind}
        again, self._last_stuck = self._last_stuck & set(behind), set(behind)
        if again:
            self.rebalances += 1
            self._last_stuck = set()
            log.warning("stall_persists_requesting_rebalance", partitions=states)
            await request_rebalance(consumer)
            return behind
        self.resyncs += 1
        log.warning("stall_detected_reseeking", partitions=states)
        await restore_fetching(consumer, conductor, behind)
        await seek_streams(consumer, set(streams))
        return behind

    async def _committed(self, streams: list[TP]) -> dict[TP, int | None]:
        async with admin_client(self.settings, request_timeout=10.0) as admin:
            offsets = await admin.list_consumer_group_offsets(self.settings.app_id, partitions=streams)
        return {TP(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items()}
