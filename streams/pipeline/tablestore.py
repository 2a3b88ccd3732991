"""Where the worker's tables live, and how a key leaves them from outside a stream (a timer).

The default is Faust's RocksDB store through ``rocksdict``: one database per table partition below the worker's own
directory (``Settings.table_dir``), so memory holds only RocksDB's bounded caches, and a restart replays only the
changelog records written after the offset each database remembers. ``memory`` keeps Faust's in-memory store,
rebuilt from the whole changelog at every start.
"""

from __future__ import annotations

from typing import Any

from aiokafka.partitioner import murmur2
from faust.stores import STORES
from faust.stores.rocksdb import Store as RocksDBStore
from faust.types import TableT
from faust.types.tables import CollectionT

from streams.settings import Settings, TableStore

#: Small RocksDB buffers and caches per partition database (Faust's defaults are a 2 GiB block cache and three
#: 64 MiB write buffers each); the tables' values are a few KiB and mostly read right after being written.
ROCKSDB_OPTIONS: dict[str, int] = {
    "write_buffer_size": 4 * 1024 * 1024,
    "max_write_buffer_number": 2,
    "target_file_size_base": 16 * 1024 * 1024,
    "block_cache_size": 8 * 1024 * 1024,
    "block_cache_compressed_size": 0,
}


def key_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives ``key`` (murmur2), as it placed the key's source records."""
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


class KeyedRocksDBStore(RocksDBStore):
    """Faust's RocksDB store, with a ``use_partitioner`` table's key kept in the database of its own partition.

    Why: Faust's store writes into the database of the record being processed, while the changelog record goes to
    the key's partition; a table written after a batch (the audit chain heads) then had keys in another partition's
    database than their changelog's, and a worker given only the changelog's partition lost them.
    """

    def _set(self, key: bytes, value: bytes | None) -> None:
        if not self.table.use_partitioner:
            super()._set(key, value)
            return
        partition = key_partition(key, table_partitions(self.table))
        self._key_index[key] = partition
        self._db_for_partition(partition).put(key, value)


STORES.aliases["ics2-rocksdb"] = f"{__name__}:KeyedRocksDBStore"


def store_url(settings: Settings) -> str:
    return "ics2-rocksdb://" if settings.table_store is TableStore.ROCKSDB else "memory://"


def table_options(settings: Settings) -> dict[str, Any] | None:
    """Options for each table's store; a fresh dict per table (Faust's RocksDB store pops keys from it)."""
    return dict(ROCKSDB_OPTIONS) if settings.table_store is TableStore.ROCKSDB else None


def delete_key(table: TableT[str, bytes], key: str, routing_key: str, *, elsewhere: bool) -> bool:
    """Removes ``key`` from the worker's copy and writes its tombstone to the changelog; whether it was held here.

    ``routing_key``: the key of the source records that wrote it, whose partition holds it (a plan memory
    ``<mbl>|<party>`` was written by a booking keyed by the MBL). Outside a stream Faust's ``del table[key]`` has
    no record to take the partition from, so the tombstone is sent to that partition explicitly. ``elsewhere``:
    that partition is another worker's, which may hold the key; a tombstone is written even if it is not held here.
    """
    held = key in table.data
    if held:
        del table.data[key]
    if held or elsewhere:
        partition = key_partition(routing_key.encode(), table_partitions(table))
        table.send_changelog(partition, key, None, value_serializer="raw")
    return held


def table_partitions(table: CollectionT) -> int:
    return int(table.partitions or table.app.conf.topic_partitions)
