"""Where the worker's tables live, and how a key leaves them from outside a stream (a timer).

The default is Faust's RocksDB store through ``rocksdict``: one database per table partition below the worker's own
directory (``Settings.table_dir``), so memory holds only RocksDB's bounded caches, and a restart replays only the
changelog records written after the offset each database remembers. ``memory`` keeps Faust's in-memory store,
rebuilt from the whole changelog at every start.

Only a worker that stopped cleanly keeps its files. The stages write a table when they process a record, before its
outputs are acknowledged; a worker killed then (SIGKILL, power loss) leaves databases ahead of its committed offsets,
and the records it reprocesses would meet a state that already saw them (a parked notification already released, a
plan already stored). Its files are discarded at the next start, and the tables are rebuilt from the changelogs, as
the memory store always does. A clean stop flushes the changelog like the files, so the files equal the changelog.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import structlog
from aiokafka.partitioner import murmur2
from faust.stores import STORES
from faust.stores.rocksdb import Store as RocksDBStore
from faust.types import TP, TableT
from faust.types.tables import CollectionT

from streams.settings import Settings, TableStore

log = structlog.get_logger(__name__)

#: Small RocksDB buffers and caches per partition database (Faust's defaults are a 2 GiB block cache and three
#: 64 MiB write buffers each). Values are a few KiB, mostly read right after being written (from the memtable), so a
#: worker holding 5 tables x P partitions stays below 5 x P x (2 x 1 + 2) MiB of RocksDB memory: 80 MiB at P = 4.
ROCKSDB_OPTIONS: dict[str, int] = {
    "write_buffer_size": 1024 * 1024,
    "max_write_buffer_number": 2,
    "target_file_size_base": 8 * 1024 * 1024,
    "block_cache_size": 2 * 1024 * 1024,
    "block_cache_compressed_size": 0,
}


def key_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives ``key`` (murmur2), as it placed the key's source records."""
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


class KeyedRocksDBStore(RocksDBStore):
    """Faust's RocksDB store, with a ``use_partitioner`` table's key kept in the database of its own partition, and
    the files of a worker that did not stop cleanly discarded at start (see the module's docstring).

    Why the partition: Faust's store writes into the database of the record being processed, while the changelog
    record goes to the key's partition; a table written after a batch (the audit chain heads) would have keys in
    another partition's database than their changelog's, lost to a worker given only the changelog's partition.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _discard_unless_clean(*self._files())
        self._opened: dict[int, Any] = {}

    def open_all(self) -> None:
        """Opens the database of every partition of the table now, before the worker joins its consumer group.

        Why: rocksdict holds the GIL while RocksDB opens a database, which syncs files to disk. Faust opens a
        partition's database when the group assigns the partition; on a machine busy writing, one open was seen to
        take 6.5 s, so the consumer thread could not heartbeat, the group dropped the worker (its session is 6 s)
        and some partitions were not fetched again. Opened here, each database is reused for the life of the
        store, across every rebalance (``_open_for_partition``)."""
        for partition in range(table_partitions(self.table)):
            self._open_for_partition(partition)

    def _open_for_partition(self, partition: int) -> Any:
        """The partition's database, opened once: a rebalance that takes the partition away and gives it back
        finds it open (Faust forgets a revoked partition's database and would open it again)."""
        db = self._opened.get(partition)
        if db is None:
            db = self._opened[partition] = super()._open_for_partition(partition)
        return db

    async def stop(self) -> None:
        self._opened.clear()
        await super().stop()
        directory, table = self._files()
        directory.mkdir(parents=True, exist_ok=True)
        _clean_marker(directory, table).touch()

    def _files(self) -> tuple[Path, str]:
        """The directory of the table's databases and their name before ``-<partition>.db``."""
        first = self.partition_path(0)
        return first.parent, first.name.rsplit("-", 1)[0]

    def _set(self, key: bytes, value: bytes | None) -> None:
        if not self.table.use_partitioner:
            super()._set(key, value)
            return
        partition = key_partition(key, table_partitions(self.table))
        self._key_index[key] = partition
        self._db_for_partition(partition).put(key, value)

    def scan(self, after: Cursor | None) -> Iterator[tuple[Cursor, bytes, bytes]]:
        """The active partitions' items in (partition, key) order, from just after ``after``."""
        topic = self.table.changelog_topic_name  # type: ignore[attr-defined]
        actives = self.app.assignor.assigned_actives()
        databases = sorted(
            (partition, db) for partition, db in self._dbs.items() if TP(topic, partition) in actives
        )  # fmt: skip
        return scan_databases(databases, after, skip=self.offset_key)


class Cursor(NamedTuple):
    """Where a scan of a table stopped: the partition and the last key it returned."""

    partition: int
    key: bytes


def scan_databases(
    databases: Iterable[tuple[int, Any]], after: Cursor | None, skip: bytes = b""
) -> Iterator[tuple[Cursor, bytes, bytes]]:
    """Items of RocksDB databases (``rocksdict.Rdict``, raw mode) in (partition, key) order, each with its cursor,
    starting just after ``after``: RocksDB seeks to it instead of walking the keys before it."""
    for partition, db in databases:
        if after is not None and partition < after.partition:
            continue
        start = after.key if after is not None and partition == after.partition else None
        for key, value in db.items(from_key=start) if start is not None else db.items():
            if key in (skip, start):
                continue
            yield Cursor(partition, key), key, value


def scan_table(table: TableT[str, bytes], after: Cursor | None) -> Iterator[tuple[Cursor, str, bytes]]:
    """The table's items from just after ``after``, each with the cursor to resume after it: a timer can walk a
    large table a slice per tick. The memory store (tests, small deployments) is walked in key order."""
    store = getattr(table, "data", None)
    if isinstance(store, KeyedRocksDBStore) and store.use_rocksdict:
        for cursor, key, value in store.scan(after):
            yield cursor, key.decode(), value
        return
    for key, value in sorted(table.items()):
        if after is None or key.encode() > after.key:
            yield Cursor(0, key.encode()), key, value


#: Table directories this process already checked: a second store of the same table must not discard the first's.
_CHECKED: set[Path] = set()


def _clean_marker(directory: Path, table: str) -> Path:
    return directory / f"{table}.clean-stop"


def _discard_unless_clean(directory: Path, table: str) -> None:
    """Keeps the table's databases if the last worker on them stopped cleanly, else removes them; either way the
    marker goes, so that a crash of this worker leaves none."""
    marker = _clean_marker(directory, table)
    if marker in _CHECKED:
        return
    _CHECKED.add(marker)
    if marker.exists():
        marker.unlink()
        return
    stale = sorted(directory.glob(f"{table}-*.db"))
    for database in stale:
        shutil.rmtree(database)
    if stale:
        log.warning("table_files_discarded", table=table, databases=len(stale), reason="no clean stop recorded")


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
