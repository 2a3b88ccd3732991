"""The end of table recovery: which stream partitions go back to their start, and that the worker uses it."""

from __future__ import annotations

from faust.types import TP

from streams.pipeline.app import build_pipeline
from streams.pipeline.recovery import OrderedRecovery, never_committed
from streams.settings import Settings

BOOKINGS = [TP("p.ics2.bookings", n) for n in range(3)]


class TestNeverCommitted:
    def test_partitions_without_an_offset_or_at_zero_start_over(self):
        """aiokafka skips missing and 0 committed offsets when seeking, so exactly those are sought to the start."""
        committed = {BOOKINGS[0]: 5, BOOKINGS[1]: 0}
        assert never_committed(BOOKINGS, committed) == [BOOKINGS[1], BOOKINGS[2]]

    def test_all_committed_means_nothing_to_do(self):
        """When every stream partition has a committed offset, the plain seek to committed offsets suffices."""
        assert never_committed(BOOKINGS, dict.fromkeys(BOOKINGS, 3)) == []


class TestWiring:
    def test_the_worker_recovers_tables_in_the_safe_order(self, tmp_path):
        """The pipeline's Faust app ends recovery with ``OrderedRecovery``, not Faust's own."""
        app = build_pipeline(Settings(state_dir=tmp_path)).app
        assert isinstance(app.tables.recovery, OrderedRecovery)
