"""A guard against a worker that has records waiting and processes none of them.

Why: after a rebalance, faust-streaming was seen (0.15.x, a restart with a backlog) to fetch records that never
reached the agents: the partitions' positions are at their ends, nothing is committed, nothing is in flight, and
the worker would wait forever. The guard compares what the group has committed with the partitions' high-water
marks; when there is lag and no stage has consumed anything for a while, it seeks the stream partitions back to
their committed offsets (at-least-once: whatever is read twice is recognised by its deterministic ids).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
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
        self.resyncs = 0

    async def check(self) -> list[TP]:
        """One look; returns the partitions it re-sought (usually none)."""
        if self.app.rebalancing or self.app.should_stop:
            self._idle_checks = 0
            return []
        consumed = sum(self.stats.consumed.values())
        progressed, self._consumed = consumed != self._consumed, consumed
        if progressed:
            self._idle_checks = 0
            return []
        consumer = self.app.consumer
        streams = [tp for tp in consumer.assignment() if tp.topic in self.sources]
        if not streams:
            return []
        highwaters = {tp: consumer.highwater(tp) for tp in streams}
        # The worker's own record of its commits rules out an idle, caught-up worker without asking the broker.
        suspects = lagging(highwaters, consumer._committed_offset)
        behind = lagging({tp: highwaters[tp] for tp in suspects}, await self._committed(suspects)) if suspects else []
        self._idle_checks = self._idle_checks + 1 if behind else 0
        if self._idle_checks < self.patience:
            return []
        self._idle_checks = 0
        self.resyncs += 1
        log.warning("stall_detected_reseeking", partitions=[f"{tp.topic}:{tp.partition}" for tp in behind])
        await seek_streams(consumer, set(streams))
        return behind

    async def _committed(self, streams: list[TP]) -> dict[TP, int | None]:
        async with admin_client(self.settings, request_timeout=10.0) as admin:
            offsets = await admin.list_consumer_group_offsets(self.settings.app_id, partitions=streams)
        return {TP(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items()}
