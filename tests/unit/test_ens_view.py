"""The one view of every ENS: the changelog's latest state per MBL, the worker's own table for its partitions."""

from __future__ import annotations

from streams.pipeline.ens_view import CHANGELOG, TABLE, EnsView


def view(table: dict[str, bytes | None], owned: set[int]) -> EnsView:
    return EnsView(table, lambda: owned)


class TestEnsView:
    def test_changelog_gives_the_mbls_of_other_workers(self):
        ens = view({}, {0})
        ens.apply(b"MBL-B", b'{"v": 1}', 1)
        ens.apply(b"MBL-B", b'{"v": 2}', 1)
        assert ens.get("MBL-B") == b'{"v": 2}', "the latest record wins"
        assert ens.items() == [("MBL-B", b'{"v": 2}')]

    def test_own_table_wins_for_owned_partitions(self):
        ens = view({"MBL-A": b"table"}, {0})
        ens.apply(b"MBL-A", b"changelog", 0)
        assert ens.lookup("MBL-A") == (b"table", TABLE)

    def test_changelog_wins_for_partitions_moved_away(self):
        """A table keeps what it held before a rebalance; once the partition moved, the owner's changelog is newer."""
        ens = view({"MBL-A": b"stale"}, {1})
        ens.apply(b"MBL-A", b"owner's", 0)
        assert ens.lookup("MBL-A") == (b"owner's", CHANGELOG)

    def test_table_alone_before_the_changelog_is_read(self):
        ens = view({"MBL-A": b"table", "EMPTY": None}, set())
        assert ens.get("MBL-A") == b"table"
        assert ens.items() == [("MBL-A", b"table")]

    def test_tombstone_forgets_and_keyless_records_are_ignored(self):
        ens = view({}, set())
        ens.apply(b"MBL-A", b"x", 2)
        ens.apply(None, b"y", 2)
        ens.apply(b"MBL-A", None, 2)
        assert ens.get("MBL-A") is None and ens.items() == [] and len(ens) == 0

    def test_items_sorted_by_mbl_across_table_and_changelog(self):
        ens = view({"MBL-C": b"c"}, {0})
        ens.apply(b"MBL-B", b"b", 1)
        ens.apply(b"MBL-A", b"a", 2)
        assert [mbl for mbl, _ in ens.items()] == ["MBL-A", "MBL-B", "MBL-C"]
