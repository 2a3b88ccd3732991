"""One view of every ENS on every worker: the ENS-state changelog read in full, beside the worker's own table.

The ``ens-state`` table of a worker holds the MBLs of its partitions only, so with two workers each dashboard and
each ``GET /ens/<mbl>`` knew half of the consolidations. The table's changelog (``ics2.ens-state-changelog`` in
``streams.topics``) is a compacted topic keyed by MBL whose latest record is the ENS state: every worker reads it in
full with a consumer of its own (no group, read-committed) and so knows every ENS, whoever owns it.

For an MBL of a partition this worker processes, its own table is the freshest and wins; for the others the
changelog's latest record is what the owning worker last wrote (it lags the owner by the changelog's flush only).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer

from streams.client import keep_reading, stop_consumer
from streams.settings import Settings

log = structlog.get_logger(__name__)

#: Where a state was read: this worker's own table, or the changelog written by the worker that owns the MBL.
TABLE, CHANGELOG = "table", "changelog"
#: The response header of ``GET /ens/<mbl>`` naming the source, for operators and tests.
SOURCE_HEADER = "X-ICS2-ENS-Source"


class EnsView:
    """ENS state (JSON bytes) by MBL for the whole deployment; ``get`` and ``items`` like the table it stands for."""

    def __init__(self, table: Mapping[str, bytes | None] | Any, owned: Callable[[], set[int]]) -> None:
        self.table = table
        self.owned = owned
        self._states: dict[str, tuple[int, bytes]] = {}

    def apply(self, key: bytes | None, value: bytes | None, partition: int) -> None:
        """One changelog record: the latest state of its MBL, or a tombstone that forgets it."""
        if key is None:
            return
        mbl = key.decode(errors="replace")
        if value is None:
            self._states.pop(mbl, None)
        else:
            self._states[mbl] = (partition, value)

    def _pick(self, mbl: str, owned: set[int]) -> tuple[bytes | None, str]:
        seen = self._states.get(mbl)
        local = self.table.get(mbl)
        if seen is None or (local is not None and seen[0] in owned):
            return local, TABLE
        return seen[1], CHANGELOG

    def get(self, mbl: str) -> bytes | None:
        return self._pick(mbl, self.owned())[0]

    def lookup(self, mbl: str) -> tuple[bytes | None, str]:
        """The state and where it came from: ``table`` (this worker's own) or ``changelog`` (another's, as read)."""
        return self._pick(mbl, self.owned())

    def items(self) -> list[tuple[str, bytes]]:
        """Every known ENS, by MBL."""
        owned = self.owned()
        keys = set(self._states) | {mbl for mbl, raw in self.table.items() if raw}
        picked = ((mbl, self._pick(mbl, owned)[0]) for mbl in sorted(keys))
        return [(mbl, raw) for mbl, raw in picked if raw]

    def __len__(self) -> int:
        return len(self._states)


class ChangelogReader:
    """Feeds an ``EnsView`` from the changelog topic, from its start, until cancelled."""

    def __init__(self, settings: Settings, topic: str, view: EnsView) -> None:
        self.settings = settings
        self.topic = topic
        self.view = view

    async def run(self) -> None:
        """A broker hiccup restarts the reader from the start (the topic is compacted, so that stays small)."""
        await keep_reading(self._read, "ens_view_reader_restarting")

    async def _read(self) -> None:
        consumer = AIOKafkaConsumer(
            self.topic,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            **self.settings.kafka_client_kwargs(),
        )
        await consumer.start()
        try:
            while True:
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    for record in records:
                        self.view.apply(record.key, record.value, record.partition)
        finally:
            await stop_consumer(consumer)
