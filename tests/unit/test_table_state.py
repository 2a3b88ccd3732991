"""The table store settings, the partition of a key, and what the eviction timer picks and deletes keys for."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from aiokafka.partitioner import DefaultPartitioner

from streams.domain.retention import eviction
from streams.pipeline.eviction import Evictor, related_keys
from streams.pipeline.stages import answers, changes
from streams.pipeline.stages.lifecycle import TickSchedule
from streams.pipeline.tablestore import Cursor, key_partition, scan_databases, store_url, table_options
from streams.settings import Settings, SettingsError, TableStore
from tests.unit.test_retention import DEADLINE, RETENTION, lodged_and_assessed


class TestSettings:
    def test_rocksdb_by_default_memory_on_request(self):
        assert Settings.from_env({}).table_store is TableStore.ROCKSDB
        assert store_url(Settings.from_env({})) == "ics2-rocksdb://"
        memory = Settings.from_env({"ICS2_TABLE_STORE": "MEMORY"})
        assert store_url(memory) == "memory://" and table_options(memory) is None

    def test_each_worker_has_its_own_table_directory(self, tmp_path: Path):
        """RocksDB locks its files: two workers of one app on one machine (two ports) get two directories."""
        env = {"ICS2_STATE_DIR": str(tmp_path), "ICS2_APP_ID": "app"}
        first = Settings.from_env({**env, "ICS2_WEB_PORT": "6066"}).table_dir
        second = Settings.from_env({**env, "ICS2_WEB_PORT": "6067"}).table_dir
        named = Settings.from_env({**env, "ICS2_WORKER_ID": "worker-0"}).table_dir
        assert len({first, second, named}) == 3
        assert named == tmp_path / "faust" / "app" / "worker-0"

    @pytest.mark.parametrize(
        "env",
        [
            {"ICS2_TABLE_STORE": "leveldb"},
            {"ICS2_CLOSED_ENS_RETENTION_DAYS": "0"},
            {"ICS2_EVICTIONS_PER_TICK": "-1"},
            {"ICS2_WORKER_ID": "../other"},
        ],
    )
    def test_unusable_values_are_refused(self, env: dict[str, str]):
        with pytest.raises(SettingsError):
            Settings.from_env(env)

    def test_retention_in_days(self):
        assert Settings.from_env({"ICS2_CLOSED_ENS_RETENTION_DAYS": "1.5"}).closed_ens_retention == timedelta(hours=36)


@pytest.mark.parametrize("key", [b"OCLU26TYO7781234", b"lrn:F15V1ZVD6UQ7QVTMXUFNZN", b"mrn:27NL00000000009004", b""])
@pytest.mark.parametrize("partitions", [1, 4, 12])
def test_key_partition_is_kafkas_default_partitioner(key: bytes, partitions: int):
    """Tombstones written from a timer must land where the producer placed the key's records."""
    every = list(range(partitions))
    assert key_partition(key, partitions) == DefaultPartitioner()(key, every, every)


class Items(dict[str, bytes]):
    """What ``Evictor.due`` reads of a table: its items."""


def states(*states_: object) -> Items:
    return Items({s.mbl: json.dumps(s.to_json()).encode() for s in states_})  # type: ignore[attr-defined]


class TestEvictor:
    def test_related_keys_cover_plans_ledger_and_parked_the_state_last(self, seed):
        evicted = eviction(lodged_and_assessed(seed), DEADLINE + RETENTION, RETENTION)
        assert evicted is not None
        keys = related_keys(evicted)
        assert keys[-1] == ("ens-state", seed.mbl, seed.mbl)
        assert ("plans", f"{seed.mbl}|{seed.planning_party}", seed.mbl) in keys
        some = evicted.ledger_keys[0]
        for parked in (some, answers.parked_key(some), changes.parked_key(some), changes.rejected_key(some)):
            assert ("parked", parked, some) in keys
        assert {k for t, k, _ in keys if t == "ledger"} == set(evicted.ledger_keys)
        assert not [k for t, k, _ in keys if t == "audit-chain"]

    def _evictor(self, table: Items, **kwargs: object) -> Evictor:
        return Evictor({"ens-state": table}, RETENTION, limit=kwargs.pop("limit", 10), **kwargs)  # type: ignore[arg-type]

    def test_due_skips_pending_and_foreign_states_and_respects_the_limit(self, seed):
        closed = [lodged_and_assessed(seed) for _ in range(3)]
        for number, state in enumerate(closed):
            state.mbl = f"MBL{number}"
        table = states(*closed)
        now = DEADLINE + RETENTION
        assert [e.mbl for e in self._evictor(table).due(now)] == ["MBL0", "MBL1", "MBL2"]
        assert [e.mbl for e in self._evictor(table, pending=lambda: {"MBL1": object()}).due(now)] == ["MBL0", "MBL2"]
        assert [e.mbl for e in self._evictor(table, owned=lambda _t, mbl: mbl != "MBL0").due(now)] == ["MBL1", "MBL2"]
        assert len(self._evictor(table, limit=2).due(now)) == 2
        assert self._evictor(table).due(now - timedelta(seconds=1)) == []

    def test_an_evicted_ens_leaves_the_watchdog_schedule(self, seed):
        """The watchdog reads its schedule, not the table: an evicted ENS must leave it, or it would be ticked back
        to life as a new, empty consolidation."""

        class Table:
            partitions = 4

            def __init__(self, data: dict[str, bytes]) -> None:
                self.data = data
                self.tombstones: list[str] = []

            def items(self) -> object:
                return self.data.items()

            def send_changelog(self, partition: int, key: str, value: None, **kwargs: object) -> None:
                self.tombstones.append(key)

        closed = lodged_and_assessed(seed)
        schedule = TickSchedule(timedelta(hours=48))
        schedule.due[closed.mbl] = DEADLINE
        tables = {name: Table({}) for name in ("plans", "ledger", "parked")}
        tables["ens-state"] = Table(dict(states(closed)))
        evictor = Evictor(tables, RETENTION, limit=10, forget=lambda mbl: schedule.note(mbl, None))  # type: ignore[arg-type]
        assert [e.mbl for e in evictor.evict(DEADLINE + RETENTION)] == [closed.mbl]
        assert tables["ens-state"].tombstones == [closed.mbl] and closed.mbl not in schedule.due


class TestScan:
    """Timers walk a large table a slice per tick, resuming where the last slice stopped."""

    def test_rocksdb_databases_resume_after_the_cursor_in_partition_and_key_order(self, tmp_path: Path):
        from rocksdict import Options, Rdict

        databases = []
        for partition, keys in ((0, [b"b", b"a", b"__offset__"]), (2, [b"c", b"a"]), (5, [])):
            db = Rdict(str(tmp_path / f"t-{partition}.db"), Options(raw_mode=True))
            for key in keys:
                db.put(key, b"v" + key)
            databases.append((partition, db))
        try:
            everything = [(c.partition, k) for c, k, _ in scan_databases(databases, None, skip=b"__offset__")]
            assert everything == [(0, b"a"), (0, b"b"), (2, b"a"), (2, b"c")]
            resumed = [(c.partition, k) for c, k, _ in scan_databases(databases, Cursor(0, b"b"), skip=b"__offset__")]
            assert resumed == [(2, b"a"), (2, b"c")]
            assert [k for _, k, _ in scan_databases(databases, Cursor(2, b"a"))] == [b"c"]
            assert list(scan_databases(databases, Cursor(2, b"c"))) == []
            databases[1][1].delete(b"a")
            gone = [(c.partition, k) for c, k, _ in scan_databases(databases, Cursor(2, b"a"))]
            assert gone == [(2, b"c")], "a cursor on a key deleted since resumes at the next one"
        finally:
            for _, db in databases:
                db.close()

    def test_the_evictor_examines_a_slice_per_tick_and_starts_over_after_the_last(self, seed):
        closed = []
        for number in range(7):
            state = lodged_and_assessed(seed)
            state.mbl = f"MBL{number}"
            closed.append(state)
        table = states(*closed)
        now = DEADLINE + RETENTION
        evictor = Evictor({"ens-state": table}, RETENTION, limit=10, scan_limit=3)  # type: ignore[dict-item]
        slices = [[e.mbl for e in evictor.due(now)] for _ in range(4)]
        assert slices == [["MBL0", "MBL1", "MBL2"], ["MBL3", "MBL4", "MBL5"], ["MBL6"], ["MBL0", "MBL1", "MBL2"]]
        limited = Evictor({"ens-state": table}, RETENTION, limit=2, scan_limit=100)  # type: ignore[dict-item]
        assert [e.mbl for e in limited.due(now)] == ["MBL0", "MBL1"]
        assert [e.mbl for e in limited.due(now)] == ["MBL2", "MBL3"], "the next tick goes on after the last examined"
