"""The worker's tables: a batch's writes are seen at once, saved only when the engine says so, forgotten on failure."""

from __future__ import annotations

import pytest

from streams.pipeline.tables import StateTable, key_partition


def held(partitions: int = 4, *, by_key: bool = False) -> StateTable:
    table = StateTable("ledger", "c.ledger-changelog", partitions, by_key=by_key)
    table.held = set(range(partitions))
    return table


class TestPendingLayer:
    def test_a_write_is_read_back_at_once_but_is_not_state_until_saved(self):
        table = held()
        table.current_partition = 2
        table["lrn:A"] = b"1"
        assert table["lrn:A"] == b"1" and "lrn:A" in table and table.dirty
        [record] = table.pending_records()
        assert (record.topic, record.partition, record.key, record.value) == ("c.ledger-changelog", 2, b"lrn:A", b"1")
        table.abandon()
        assert "lrn:A" not in table and table.get("lrn:A") is None and not table.dirty

    def test_saved_writes_are_the_state_and_a_delete_is_a_tombstone(self):
        table = held()
        table.current_partition = 1
        table["k"] = b"v"
        table.saved()
        del table["k"]
        assert "k" not in table
        [tombstone] = table.pending_records()
        assert (tombstone.partition, tombstone.value) == (1, None), "deleted where it was written"
        table.abandon()
        assert table["k"] == b"v", "an abandoned delete leaves the key"
        with pytest.raises(KeyError):
            del table["missing"]

    def test_one_record_per_key_its_last_value(self):
        table = held()
        for value in (b"1", b"2", b"3"):
            table["k"] = value
        assert [(r.key, r.value) for r in table.pending_records()] == [(b"k", b"3")]

    def test_by_key_writes_go_to_the_keys_partition(self):
        table = held(12, by_key=True)
        table.current_partition = 0
        table["OCLU26TYO7781234"] = b"s"
        [record] = table.pending_records()
        assert record.partition == key_partition(b"OCLU26TYO7781234", 12)

    def test_a_key_stays_in_the_partition_that_wrote_it(self):
        table = held()
        table.current_partition = 3
        table["plan"] = b"1"
        table.saved()
        table.current_partition = 0
        table["plan"] = b"2"
        assert table.pending_records()[0].partition == 3


class TestOwnership:
    def test_items_cover_the_held_partitions_only(self):
        table = held()
        for partition, key in enumerate("abcd"):
            table.restore(partition, 0, key.encode(), b"v")
        table.held = {1, 3}
        assert list(table) == ["b", "d"] and len(table) == 2
        assert table.get("a") == b"v", "a stage reads what it has; only the views are limited to what it holds"

    def test_restore_remembers_where_to_resume_and_applies_tombstones(self):
        table = held()
        table.restore(0, 7, b"k", b"v")
        table.restore(0, 8, b"k", None)
        assert "k" not in table and table.positions[0] == 9

    def test_a_partition_whose_head_is_gone_is_read_again_from_scratch(self):
        table = held()
        table.restore(1, 4, b"k", b"v")
        table.forget_partition(1)
        assert "k" not in table and 1 not in table.positions

    def test_evict_removes_now_and_hands_back_the_tombstone(self):
        table = held()
        table.restore(2, 0, b"k", b"v")
        tombstone = table.evict("k", 2)
        assert "k" not in table and (tombstone.partition, tombstone.value) == (2, None)

    def test_owns_follows_the_partition_of_the_routing_key(self):
        table = held(4)
        partition = key_partition(b"OCLU26TYO7781234", 4)
        table.held = {partition}
        assert table.owns("OCLU26TYO7781234")
        table.held = set(range(4)) - {partition}
        assert not table.owns("OCLU26TYO7781234")
