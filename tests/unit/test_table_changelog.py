"""Table changelogs: what Faust writes for a table update must read back, on recovery, as the same key and value."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from faust.types import TP
from faust.types.tuples import Message

from streams.pipeline.app import Pipeline, build_pipeline
from streams.pipeline.tablestore import KeyedRocksDBStore, table_partitions
from streams.settings import Settings


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    state_dir: Path = tmp_path_factory.mktemp("state")
    return build_pipeline(Settings(state_dir=state_dir, topic_prefix="u.", app_id="u.app"))


def written_then_recovered(pipeline: Pipeline, name: str, key: str, value: bytes) -> tuple[object, object]:
    """Encode as ``Table.send_changelog`` does, decode as recovery does (the changelog topic's schema)."""
    table = pipeline.tables[name]
    topic = table.changelog_topic
    raw_key, _ = topic.prepare_key(key, table.key_serializer)
    raw_value, _ = topic.prepare_value(value, table.value_serializer)
    message = Message(topic.get_topic_name(), 0, 0, time.time(), 0, [], raw_key, raw_value, None)
    schema = topic.schema
    return schema.loads_key(pipeline.app, message), schema.loads_value(pipeline.app, message)


class TestTableChangelog:
    @pytest.mark.parametrize("name", ["plans", "ledger", "parked", "ens-state", "audit-chain"])
    def test_an_update_recovers_to_the_same_key_and_value(self, pipeline, name):
        """A key and JSON bytes written to a changelog come back unchanged, so a fresh worker finds its state."""
        value = json.dumps({"mbl": "OCLU26TYO7781234", "state": "planned"}).encode()
        assert written_then_recovered(pipeline, name, "OCLU26TYO7781234|ML-TYO", value) == (
            "OCLU26TYO7781234|ML-TYO",
            value,
        )

    def test_changelog_keys_are_the_plain_utf8_key(self, pipeline):
        """The changelog key is the key's UTF-8 bytes, like every topic the stages key by MBL (no JSON quotes)."""
        table = pipeline.tables["ens-state"]
        raw_key, _ = table.changelog_topic.prepare_key("OCLU26TYO7781234", table.key_serializer)
        assert raw_key == b"OCLU26TYO7781234"


def test_the_tables_written_after_a_batch_are_partitioned_by_key(pipeline):
    """The chain's heads and the ENS states are stored after a whole batch, when the record at hand may be of
    another partition: their changelog partition comes from the MBL itself; the other tables are written while their
    record is at hand."""
    by_key = {name for name, table in pipeline.tables.items() if table.use_partitioner}
    assert by_key == {"audit-chain", "ens-state"}


class TestDatabasesOpenedBeforeJoining:
    def test_every_partition_database_is_open_once_the_pipeline_is_built(self, pipeline: Pipeline):
        """Built, before Faust starts the consumer: each table holds an open database for each of its partitions."""
        for name, table in pipeline.tables.items():
            store = table.data
            assert isinstance(store, KeyedRocksDBStore), name
            assert sorted(store._opened) == list(range(table_partitions(table))), name
            assert all(store.partition_path(p).is_dir() for p in store._opened), name

    async def test_an_assignment_opens_nothing(self, pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch):
        """Faust's assignment after a rebalance, and again after the partition was revoked, reuses the databases:
        no RocksDB open (which holds the GIL, so the heartbeat too) happens while the worker is in the group."""
        table = pipeline.tables["ens-state"]
        store = table.data
        assert isinstance(store, KeyedRocksDBStore)
        opened: list[Path] = []
        options = store.rocksdb_options
        monkeypatch.setattr(options, "open", lambda path, **kw: opened.append(path) or pytest.fail("opened"))
        topic = table.changelog_topic.get_topic_name()
        every = {TP(topic, p) for p in range(table_partitions(table))}
        monkeypatch.setattr(pipeline.app.assignor, "assigned_standbys", lambda: set())
        await store.assign_partitions(table, every)
        store.revoke_partitions(table, {TP(topic, 1)})
        await store.assign_partitions(table, {TP(topic, 1)})
        assert opened == [] and sorted(store._dbs) == sorted(store._opened)
