"""The stall guard: lag with nothing consumed, for long enough, makes the worker seek back; progress never does."""

from __future__ import annotations

from faust.types import TP

from streams.pipeline.runner import StageStats
from streams.pipeline.stall import StallGuard, lagging
from streams.settings import Settings

BOOKINGS = [TP("p.ics2.bookings", n) for n in range(2)]


class TestLagging:
    def test_high_water_beyond_committed_is_lag(self):
        """A partition whose end is past its committed offset lags; one at its end does not."""
        assert lagging({BOOKINGS[0]: 6, BOOKINGS[1]: 3}, {BOOKINGS[0]: 6, BOOKINGS[1]: 1}) == [BOOKINGS[1]]

    def test_never_committed_counts_from_zero(self):
        """No committed offset with records in the partition is lag; an empty partition is not."""
        assert lagging({BOOKINGS[0]: 4, BOOKINGS[1]: 0}, {}) == [BOOKINGS[0]]

    def test_unknown_high_water_is_not_lag(self):
        """Before the first fetch the high-water mark is unknown: nothing to say yet."""
        assert lagging({BOOKINGS[0]: None}, {}) == []


class Consumer:
    def __init__(self, ends: dict[TP, int]) -> None:
        self.ends = ends
        self._committed_offset: dict[TP, int] = {}
        self.seeks: list[dict[TP, int]] = []
        self.performed = 0

    def assignment(self) -> set[TP]:
        return set(self.ends) | {TP("p.ics2.plans-changelog", 0)}

    def highwater(self, tp: TP) -> int:
        return self.ends[tp]

    async def perform_seek(self) -> None:
        self.performed += 1

    async def seek_wait(self, partitions: dict[TP, int]) -> None:
        self.seeks.append(partitions)


class App:
    rebalancing = False
    should_stop = False

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer


class Guard(StallGuard):
    """The guard with the group's committed offsets given by the test instead of asked of the broker."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.committed: dict[TP, int | None] = {}

    async def _committed(self, streams):
        return dict(self.committed)


def guard(ends: dict[TP, int], stats: StageStats) -> Guard:
    return Guard(App(Consumer(ends)), Settings(), stats, {"p.ics2.bookings"}, patience=3)


class TestStallGuard:
    async def test_acts_after_patience_checks_with_lag_and_no_progress(self):
        """Three idle looks with lag: the stream partitions are sought back, uncommitted ones to their start."""
        stats = StageStats()
        g = guard({BOOKINGS[0]: 6, BOOKINGS[1]: 0}, stats)
        results = [await g.check() for _ in range(4)]
        assert results[:3] == [[], [], []] and results[3] == [BOOKINGS[0]]
        assert g.app.consumer.performed == 1 and g.app.consumer.seeks == [{BOOKINGS[0]: 0, BOOKINGS[1]: 0}]

    async def test_progress_resets_the_count(self):
        """A stage that consumes something between looks is not stalled, however large the lag."""
        stats = StageStats()
        g = guard({BOOKINGS[0]: 6}, stats)
        for n in range(6):
            stats.consumed["plan-bookings"] = n
            assert await g.check() == []
        assert g.resyncs == 0

    async def test_no_lag_no_action(self):
        """Idle with everything committed is a quiet worker, not a stalled one."""
        g = guard({BOOKINGS[0]: 6}, StageStats())
        g.committed = {BOOKINGS[0]: 6}
        assert [await g.check() for _ in range(5)] == [[]] * 5

    async def test_never_acts_while_rebalancing(self):
        """During a rebalance positions move under Faust's control: the guard keeps out."""
        g = guard({BOOKINGS[0]: 6}, StageStats())
        g.app.rebalancing = True
        assert [await g.check() for _ in range(5)] == [[]] * 5


class TestStallGuardCost:
    async def test_a_caught_up_idle_worker_does_not_ask_the_broker(self):
        """When the worker's own commits reach the high-water marks, no admin request is made."""
        asked: list[list[TP]] = []
        g = guard({BOOKINGS[0]: 6}, StageStats())
        g.app.consumer._committed_offset = {BOOKINGS[0]: 6}

        async def committed(streams):
            asked.append(streams)
            return {}

        g._committed = committed
        assert [await g.check() for _ in range(5)] == [[]] * 5
        assert asked == []
