"""Table recovery that seeks the stream partitions *before* it lets them be fetched again.

Why: faust-streaming 0.15.x ends recovery (``Recovery.on_recovery_completed``) by resuming the stream partitions,
then seeking them to their committed offsets, then resuming flow control, which empties the agents' buffers. A
worker that starts with records waiting (a restart after a crash) fetches some in between: they are dropped with
the buffers while the read offsets move past them, and as a partition never committed has no gap to respect (and
aiokafka does not seek it back), Faust then commits past them. They are never processed. Here the partitions are
sought first (a partition never committed goes back to its start), the buffers are emptied while nothing can
reach them, and only then are the partitions resumed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any, cast

from faust.tables.manager import TableManager
from faust.tables.recovery import Recovery
from faust.types import TP


class OrderedRecovery(Recovery):
    """Faust's recovery with the end of it in the safe order: seek, empty the buffers, resume."""

    async def on_recovery_completed(self, generation_id: int = 0) -> None:
        app = cast(Any, self.app)
        consumer = app.consumer
        self.log.info("Restore complete!")
        await app.on_rebalance_complete.send()
        self._set_recovery_ended()
        restored = [
            asyncio.ensure_future(
                table.on_recovery_completed(self.actives_for_table[table], self.standbys_for_table[table])
            )
            for table in self.tables.values()
        ]
        if restored:
            await asyncio.wait(restored)
        if app.consumer_generation_id != generation_id:
            self.log.warning("Recovery rebalancing again")
            return
        streams = {tp for tp in consumer.assignment() if not self._is_changelog_tp(tp)}
        if streams:
            self.log.info("Seek stream partitions to committed offsets (never committed: to their start).")
            await self._wait(seek_streams(consumer, streams), timeout=app.conf.broker_request_timeout)
        self.completed.set()
        app.flow_control.resume()
        consumer.resume_partitions(streams)
        consumer.resume_flow()
        await app._fetcher.maybe_start()
        self.tables.on_actives_ready()
        if not app.assignor.assigned_standbys():
            self.tables.on_standbys_ready()
        app.on_rebalance_end()
        self.log.info("Worker ready")


async def seek_streams(consumer: Any, streams: set[TP]) -> None:
    """Committed offset where there is one; the partition's start where there is none (aiokafka leaves those)."""
    await consumer.perform_seek()
    fresh = never_committed(streams, consumer._committed_offset)
    if fresh:
        await consumer.seek_wait(dict.fromkeys(fresh, 0))


def never_committed(streams: Iterable[TP], committed: Mapping[TP, int | None]) -> list[TP]:
    """Partitions without a committed offset (or at 0, which aiokafka's ``seek_to_committed`` also skips)."""
    return sorted(tp for tp in streams if not committed.get(tp))


class OrderedTableManager(TableManager):
    """The table manager whose recovery is ``OrderedRecovery``; set as the app's ``TableManager``."""

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = OrderedRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery
