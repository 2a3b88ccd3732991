"""The worker's tables: state kept in memory per partition, saved to a compacted changelog topic by one rule.

The rule (the only one): a stage's writes during a batch are held back in the table's *pending* layer, where the
stage itself (and the next records of the batch) sees them at once. The engine (``streams.pipeline.engine``) writes
them to the changelog only after every output of the batch was acknowledged by the broker, and makes them the
table's state only once the changelog acknowledged them too; then, and only then, it commits the batch's offsets.
A batch that fails is forgotten (``abandon``) and read again from its first offset. State is never saved ahead of
its outputs, and no offset is committed ahead of its state.

A table is partitioned like the topic its stage reads: a key written while record of partition ``p`` is processed
lives in changelog partition ``p`` (``by_key``: in the partition Kafka's partitioner gives the key, for tables
written once per batch, after the records). When the group assigns a partition, its changelog is read from where
this worker last read it (from the start the first time) to its end before any record of the partition is processed.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass

from aiokafka.partitioner import murmur2

#: A pending write: the changelog partition and the value (``None``: the key is deleted, a tombstone).
Pending = tuple[int, bytes | None]


def key_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives ``key`` (murmur2), as it placed the key's source records."""
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


@dataclass(frozen=True, slots=True)
class ChangelogRecord:
    """A table write as it goes to the changelog: explicit partition, tombstone as ``None``."""

    topic: str
    partition: int
    key: bytes
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


class StateTable(MutableMapping[str, bytes]):
    """One table of the worker: ``str`` keys, ``bytes`` values, a mapping as the stages expect.

    Reads see the pending layer first; ``items`` and ``len`` cover the partitions this worker holds now.
    """

    def __init__(self, name: str, changelog: str, partitions: int, *, by_key: bool = False) -> None:
        self.name = name
        self.changelog = changelog
        self.partitions = partitions
        self.by_key = by_key
        self.current_partition = 0
        """The partition of the record being processed: where a write goes unless ``by_key``."""
        self._data: dict[str, bytes] = {}
        self._where: dict[str, int] = {}
        self._pending: dict[str, Pending] = {}
        self.held: set[int] = set()
        """Partitions this worker processes now; their keys are the table's."""
        self.positions: dict[int, int] = {}
        """Per changelog partition, the next offset to read: a partition given back reads only what came since."""

    # -- the mapping the stages use -------------------------------------------------------------------------

    def __getitem__(self, key: str) -> bytes:
        if key in self._pending:
            value = self._pending[key][1]
            if value is None:
                raise KeyError(key)
            return value
        return self._data[key]

    def __setitem__(self, key: str, value: bytes) -> None:
        self._pending[key] = (self._partition_for(key), value)

    def __delitem__(self, key: str) -> None:
        if key not in self:
            raise KeyError(key)
        self._pending[key] = (self._partition_for(key), None)

    def __contains__(self, key: object) -> bool:
        if key in self._pending:
            return self._pending[key][1] is not None
        return key in self._data

    def __iter__(self) -> Iterator[str]:
        keys = {k for k, p in self._where.items() if p in self.held}
        for key, (_, value) in self._pending.items():
            if value is None:
                keys.discard(key)
            else:
                keys.add(key)
        return iter(sorted(keys))

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def _partition_for(self, key: str) -> int:
        if self.by_key:
            return key_partition(key.encode(), self.partitions)
        return self._where.get(key, self.current_partition) if key not in self._pending else self._pending[key][0]

    # -- the save rule, driven by the engine ----------------------------------------------------------------

    @property
    def dirty(self) -> bool:
        return bool(self._pending)

    def pending_records(self) -> list[ChangelogRecord]:
        """The batch's writes as changelog records, one per key (its last value)."""
        return [
            ChangelogRecord(self.changelog, partition, key.encode(), value)
            for key, (partition, value) in self._pending.items()
        ]

    def saved(self) -> None:
        """The changelog acknowledged the pending writes: they are the table's state now."""
        for key, (partition, value) in self._pending.items():
            self._apply(key, partition, value)
        self._pending.clear()

    def abandon(self) -> None:
        """The batch will be read again: its writes are forgotten."""
        self._pending.clear()

    # -- recovery and ownership -----------------------------------------------------------------------------

    def restore(self, partition: int, offset: int, key: bytes, value: bytes | None) -> None:
        """A changelog record read back (recovery): applied as it was written."""
        self._apply(key.decode(), partition, value)
        self.positions[partition] = offset + 1

    def forget_partition(self, partition: int) -> None:
        """The changelog partition's head was removed by retention: what was read of it is no proof any more."""
        for key in [k for k, p in self._where.items() if p == partition]:
            self._data.pop(key, None)
            self._where.pop(key, None)
        self.positions.pop(partition, None)

    def evict(self, key: str, partition: int) -> ChangelogRecord:
        """A key removed outside a batch (a timer): gone here at once, its tombstone for the caller to send."""
        self._data.pop(key, None)
        self._where.pop(key, None)
        return ChangelogRecord(self.changelog, partition, key.encode(), None)

    def owns(self, routing_key: str) -> bool:
        """Whether this worker processes the partition that ``routing_key``'s records (and table keys) are in."""
        return key_partition(routing_key.encode(), self.partitions) in self.held

    def _apply(self, key: str, partition: int, value: bytes | None) -> None:
        if value is None:
            self._data.pop(key, None)
            self._where.pop(key, None)
        else:
            self._data[key] = value
            self._where[key] = partition
