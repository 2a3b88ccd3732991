"""The worker's settings for its table directory, the partition of a key, and what the eviction timer picks and deletes
keys for."""

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
from streams.pipeline.tables import StateTable, key_partition
from streams.settings import Settings, SettingsError
from tests.unit.test_retention import DEADLINE, RETENTION, lodged_and_assessed


class TestSettings:
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


def table(name: str = "ens-state", items: dict[str, bytes] | None = None, partitions: int = 4) -> StateTable:
    """A table of the worker holding every partition, with ``items`` saved in it."""
    made = StateTable(name, f"{name}-changelog", partitions, by_key=True)
    made.held = set(range(partitions))
    for key, value in (items or {}).items():
        made[key] = value
    made.saved()
    return made


def states(*states_: object) -> StateTable:
    return table(items={s.mbl: json.dumps(s.to_json()).encode() for s in states_})  # type: ignore[attr-defined]


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

    def _evictor(self, held: StateTable, **kwargs: object) -> Evictor:
        return Evictor({"ens-state": held}, RETENTION, limit=kwargs.pop("limit", 10), **kwargs)  # type: ignore[arg-type]

    def test_due_skips_pending_and_foreign_states_and_respects_the_limit(self, seed):
        closed = [lodged_and_assessed(seed) for _ in range(3)]
        for number, state in enumerate(closed):
            state.mbl = f"MBL{number}"
        held = states(*closed)
        now = DEADLINE + RETENTION
        assert [e.mbl for e in self._evictor(held).due(now)] == ["MBL0", "MBL1", "MBL2"]
        assert [e.mbl for e in self._evictor(held, pending=lambda: {"MBL1": object()}).due(now)] == ["MBL0", "MBL2"]
        assert [e.mbl for e in self._evictor(held, owned=lambda _t, mbl: mbl != "MBL0").due(now)] == ["MBL1", "MBL2"]
        assert len(self._evictor(held, limit=2).due(now)) == 2
        assert self._evictor(held).due(now - timedelta(seconds=1)) == []

    def test_an_evicted_ens_leaves_the_watchdog_schedule(self, seed):
        """The watchdog reads its schedule, not the table: an evicted ENS must leave it, or it would be ticked back
        to life as a new, empty consolidation."""

        closed = lodged_and_assessed(seed)
        schedule = TickSchedule(timedelta(hours=48))
        schedule.due[closed.mbl] = DEADLINE
        tables = {name: table(name) for name in ("plans", "ledger", "parked")}
        tables["ens-state"] = states(closed)
        evictor = Evictor(tables, RETENTION, limit=10, forget=lambda mbl: schedule.note(mbl, None))
        assert [e.mbl for e in evictor.evict(DEADLINE + RETENTION)] == [closed.mbl]
        tombstones = evictor.take_tombstones()
        assert [(t.topic, t.key, t.value) for t in tombstones] == [("ens-state-changelog", closed.mbl.encode(), None)]
        assert tombstones[0].partition == key_partition(closed.mbl.encode(), 4)
        assert closed.mbl not in tables["ens-state"] and closed.mbl not in schedule.due


class TestScan:
    """Timers walk a large table a slice per tick, resuming where the last slice stopped."""

    def test_the_evictor_examines_a_slice_per_tick_and_starts_over_after_the_last(self, seed):
        closed = []
        for number in range(7):
            state = lodged_and_assessed(seed)
            state.mbl = f"MBL{number}"
            closed.append(state)
        held = states(*closed)
        now = DEADLINE + RETENTION
        evictor = Evictor({"ens-state": held}, RETENTION, limit=10, scan_limit=3)
        slices = [[e.mbl for e in evictor.due(now)] for _ in range(4)]
        assert slices == [["MBL0", "MBL1", "MBL2"], ["MBL3", "MBL4", "MBL5"], ["MBL6"], ["MBL0", "MBL1", "MBL2"]]
        limited = Evictor({"ens-state": held}, RETENTION, limit=2, scan_limit=100)
        assert [e.mbl for e in limited.due(now)] == ["MBL0", "MBL1"]
        assert [e.mbl for e in limited.due(now)] == ["MBL2", "MBL3"], "the next tick goes on after the last examined"
