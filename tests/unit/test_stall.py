"""The stall guard: lag with nothing consumed, for long enough, makes the worker seek back; progress never does."""

from __future__ import annotations

import faust
import pytest
from aiokafka.consumer.group_coordinator import GroupCoordinator
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.types import TP

from streams.pipeline.runner import StageStats
from streams.pipeline.stall import FetchState, StallGuard, fetch_state, lagging, restore_fetching
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
        self.never_fetched: set[TP] = set()
        self.asked_ends: list[set[TP]] = []
        self._paused_partitions: set[TP] = set()
        self._active_partitions: set[TP] = set(ends)
        self._buffered_partitions: set[TP] = set()
        self.rejoins = 0
        self._thread = self

    def resume_partitions(self, tps: set[TP]) -> None:
        self._active_partitions |= tps
        self._paused_partitions -= tps

    async def call_thread(self, fun) -> None:
        await fun()

    def _ensure_consumer(self) -> Consumer:
        return self

    @property
    def _coordinator(self) -> Consumer:
        return self

    def request_rejoin(self) -> None:
        self.rejoins += 1

    def assignment(self) -> set[TP]:
        return set(self.ends) | {TP("p.ics2.plans-changelog", 0)}

    def highwater(self, tp: TP) -> int | None:
        return None if tp in self.never_fetched else self.ends[tp]

    async def highwaters(self, *tps: TP) -> dict[TP, int]:
        self.asked_ends.append(set(tps))
        return {tp: self.ends[tp] for tp in tps}

    async def perform_seek(self) -> None:
        self.performed += 1

    async def seek_wait(self, partitions: dict[TP, int]) -> None:
        self.seeks.append(partitions)


class App:
    rebalancing = False
    should_stop = False

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer
        self.topics = Conductor(set(consumer.ends))


class Conductor:
    """Faust's router from partitions to streams, reduced to which partitions have a route."""

    def __init__(self, routed: set[TP]) -> None:
        self._tp_to_callback = dict.fromkeys(routed)
        self.rebuilt = 0

    async def on_partitions_assigned(self, assigned: set[TP]) -> None:
        self._tp_to_callback = dict.fromkeys(assigned)
        self.rebuilt += 1


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


class TestNeverFetched:
    async def test_a_partition_never_fetched_since_its_assignment_is_seen_lagging(self):
        """No high-water mark in the consumer (no fetch since the rebalance): its end is asked of the broker, and a
        partition with records and nothing consumed is sought back like any other."""
        g = guard({BOOKINGS[0]: 6, BOOKINGS[1]: 0}, StageStats())
        g.app.consumer.never_fetched = {BOOKINGS[0]}
        assert [await g.check() for _ in range(4)][3] == [BOOKINGS[0]]
        assert g.app.consumer.asked_ends[-1] == {BOOKINGS[0]} and g.resyncs == 1

    async def test_ends_are_not_asked_when_the_consumer_knows_them(self):
        """The usual case costs no request: every partition fetched has its high-water mark."""
        g = guard({BOOKINGS[0]: 6}, StageStats())
        g.committed = {BOOKINGS[0]: 6}
        assert [await g.check() for _ in range(4)] == [[]] * 4
        assert g.app.consumer.asked_ends == []


class TestEscalation:
    async def test_a_partition_left_out_of_fetching_is_put_back_before_the_seek(self):
        """Paused, dropped from the active set, marked full and without a route: all undone when the guard acts."""
        g = guard({BOOKINGS[0]: 6, BOOKINGS[1]: 0}, StageStats())
        consumer = g.app.consumer
        consumer._paused_partitions.add(BOOKINGS[0])
        consumer._active_partitions.discard(BOOKINGS[0])
        consumer._buffered_partitions.add(BOOKINGS[0])
        del g.app.topics._tp_to_callback[BOOKINGS[0]]
        assert fetch_state(consumer, g.app.topics, BOOKINGS[0]) == FetchState(True, True, True, True)
        assert [await g.check() for _ in range(4)][3] == [BOOKINGS[0]]
        assert fetch_state(consumer, g.app.topics, BOOKINGS[0]).describe() == "fetchable"
        assert g.app.topics.rebuilt == 1 and consumer.performed == 1 and consumer.rejoins == 0

    async def test_the_same_partitions_stuck_after_a_seek_ask_the_group_for_a_rebalance(self):
        """Seeking did not help: the next action on those partitions is a rebalance, and the one after a seek."""
        g = guard({BOOKINGS[0]: 6}, StageStats())
        consumer = g.app.consumer
        for _ in range(4):
            await g.check()
        assert (g.resyncs, g.rebalances, consumer.rejoins) == (1, 0, 0)
        for _ in range(3):
            await g.check()
        assert (g.resyncs, g.rebalances, consumer.rejoins) == (1, 1, 1)
        for _ in range(3):
            await g.check()
        assert (g.resyncs, g.rebalances) == (2, 1), "after a rebalance the guard starts over with a seek"

    async def test_progress_in_between_starts_over_with_a_seek(self):
        """A stall that cleared and came back is a new one: seek first, no rebalance."""
        stats = StageStats()
        g = guard({BOOKINGS[0]: 6}, stats)
        for _ in range(4):
            await g.check()
        stats.consumed["plan-bookings"] = 1
        for _ in range(4):
            await g.check()
        assert (g.resyncs, g.rebalances) == (2, 0)

    async def test_the_real_faust_consumer_and_conductor_are_restored(self):
        """Against faust-streaming's own bookkeeping: the flags are read from and undone in its real objects."""
        app = faust.App("stall-unit", broker="kafka://127.0.0.1:1")
        tp = TP("stall-unit-topic", 0)
        consumer, conductor = app.consumer, app.topics
        consumer.assignment = lambda: {tp}
        conductor.add(app.topic(tp.topic))
        await conductor.on_partitions_assigned({tp})
        consumer._set_active_tps({tp})
        consumer.pause_partitions({tp})
        consumer.on_buffer_full(tp)
        conductor._tp_to_callback.clear()
        assert fetch_state(consumer, conductor, tp) == FetchState(True, True, True, True)
        await restore_fetching(consumer, conductor, {tp})
        assert fetch_state(consumer, conductor, tp).describe() == "fetchable"
        assert tp in consumer._get_active_partitions()

    @pytest.mark.parametrize(
        "owner, name",
        [(AIOKafkaConsumerThread, "_ensure_consumer"), (AIOKafkaConsumerThread, "call_thread"),
         (GroupCoordinator, "request_rejoin")],
    )  # fmt: skip
    def test_the_rebalance_request_uses_what_the_libraries_have(self, owner, name):
        """The rebalance goes through aiokafka's coordinator in Faust's consumer thread: both must still exist."""
        assert callable(getattr(owner, name))


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
