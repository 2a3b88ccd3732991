"""The pure parts of ``make soak`` and ``make scaling``: /proc parsing, lag, rates over a window, RSS growth."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.scaling import scaling_verdict, unsettled_groups
from bench.soak import (
    CLOCK_TICKS,
    RssGrowth,
    Sample,
    cpu_percent,
    cpu_ticks,
    filings_per_booking,
    group_lag,
    rss_growth,
    soak_bookings,
    stage_lags,
    status_kib,
    steady_window,
    summarise,
    topic_lag,
    topic_totals,
    window_rate,
    worker_idle,
    worker_stage_sources,
)
from streams.audit.reading import stage_group
from streams.settings import Settings
from streams.topics import Catalogue
from tests.data import SEED_PATH, SEED_PLAN_PATH, seed_json

STATUS = """Name:\tics2
Umask:\t0022
State:\tS (sleeping)
VmPeak:\t  912340 kB
VmHWM:\t  131072 kB
VmRSS:\t  118784 kB
RssAnon:\t   90112 kB
Threads:\t4
"""


class TestStatusKib:
    def test_reads_vmrss_in_kib(self):
        """VmRSS is read from the status text as KiB, not confused with VmHWM or RssAnon."""
        assert status_kib(STATUS) == 118784

    def test_reads_another_field_by_name(self):
        """The peak (VmHWM) is read when asked for by name."""
        assert status_kib(STATUS, "VmHWM") == 131072

    def test_absent_field_is_none(self):
        """A kernel thread's status has no VmRSS: None, not zero."""
        assert status_kib("Name:\tkthreadd\nState:\tS (sleeping)\n") is None

    def test_malformed_value_is_none(self):
        """A value that is not a number gives None instead of raising."""
        assert status_kib("VmRSS:\tlots kB\n") is None


class TestCpuTicks:
    def test_sums_utime_and_stime(self):
        """utime (field 14) and stime (field 15) are added."""
        stat = "4242 (ics2) S 1 4242 4242 0 -1 4194560 9000 0 0 0 1500 250 0 0 20 0 4 0 100 0 0"
        assert cpu_ticks(stat) == 1750

    def test_command_with_spaces_and_parentheses(self):
        """A command name holding spaces and ')' does not shift the fields."""
        stat = "7 (faust (worker) x) R 1 7 7 0 -1 0 0 0 0 0 321 79 0 0 20 0 1 0 5 0 0"
        assert cpu_ticks(stat) == 400

    def test_truncated_line_is_none(self):
        """A line cut short gives None."""
        assert cpu_ticks("7 (ics2) S 1 7") is None

    def test_percent_of_one_core(self):
        """200 ticks at 100 Hz over 4 s is half a core."""
        assert cpu_percent(1000, 1200, 4.0, hz=100) == pytest.approx(50.0)

    def test_percent_unknown_without_readings(self):
        """A process that vanished between readings has no CPU share."""
        assert cpu_percent(None, 1200, 4.0, hz=100) is None
        assert cpu_percent(1000, 1200, 0.0, hz=100) is None


class TestGroupLag:
    def test_lag_is_end_minus_committed_summed_per_topic(self):
        """Each partition's end minus its committed offset, added up per topic."""
        ends = {("p.bookings", 0): 100, ("p.bookings", 1): 50, ("p.inbound", 0): 7}
        committed = {("p.bookings", 0): 90, ("p.bookings", 1): 50, ("p.inbound", 0): 3}
        assert group_lag(ends, committed, ["p.bookings", "p.inbound"]) == {"p.bookings": 10, "p.inbound": 4}

    def test_uncommitted_partition_counts_from_zero(self):
        """A partition the group never committed on lags by its whole end offset."""
        assert group_lag({("t", 0): 12, ("t", 1): 5}, {("t", 0): 12}, ["t"]) == {"t": 5}

    def test_other_topics_and_stale_commits(self):
        """Unwatched topics are left out; a commit beyond a stale end offset is no negative lag; -1 means none."""
        ends = {("t", 0): 10, ("t", 1): 4, ("other", 0): 99}
        committed = {("t", 0): 11, ("t", 1): -1}
        assert group_lag(ends, committed, ["t"]) == {"t": 4}

    @settings(max_examples=150, deadline=None)
    @given(st.dictionaries(st.integers(0, 15), st.tuples(st.integers(0, 10_000), st.integers(0, 10_000)), max_size=16))
    def test_lag_is_never_negative_and_bounded_by_the_ends(self, partitions):
        """Total lag lies between 0 and the sum of end offsets, whatever the commits."""
        ends = {("t", p): end for p, (end, _) in partitions.items()}
        committed = {("t", p): done for p, (_, done) in partitions.items()}
        lag = group_lag(ends, committed, ["t"])["t"]
        assert 0 <= lag <= sum(ends.values())
        assert lag == sum(max(0, end - done) for end, done in partitions.values())

    def test_topic_totals_strip_the_prefix(self):
        """End offsets are added per topic and named without the run's prefix."""
        totals = topic_totals({("x.a", 0): 3, ("x.a", 1): 4, ("x.b", 0): 1}, "x.")
        assert totals == {"a": 7, "b": 1}


class TestWindowRate:
    def test_rate_between_first_and_last_sample_inside(self):
        """Samples outside the window are ignored; the rate is count difference over time difference."""
        points = [(0.0, 0), (5.0, 10), (10.0, 60), (20.0, 160), (25.0, 400)]
        assert window_rate(points, 4.0, 21.0) == pytest.approx((160 - 10) / (20.0 - 5.0))

    def test_too_few_samples_is_none(self):
        """One sample in the window gives no rate."""
        assert window_rate([(0.0, 0), (10.0, 5)], 1.0, 12.0) is None

    @settings(max_examples=150, deadline=None)
    @given(
        st.floats(0.1, 100.0),
        st.floats(0.5, 10.0),
        st.integers(3, 60),
        st.floats(0.0, 0.4),
    )
    def test_steady_counter_gives_its_rate(self, rate, interval, count, start_share):
        """A counter growing at a constant rate reads back as that rate, whatever the window inside the samples."""
        points = [(i * interval, rate * i * interval) for i in range(count)]
        end = (count - 1) * interval
        start = end * start_share
        result = window_rate(points, start, end)
        assert result is not None and result == pytest.approx(rate, rel=1e-9)

    def test_steady_window_skips_the_warm_up(self):
        """The window starts a tenth of the sending time in and ends with the last booking."""
        assert steady_window(0.0, 400.0) == (40.0, 400.0)
        assert steady_window(10.0, 110.0, warmup=0.5) == (60.0, 110.0)

    def test_steady_window_rejects_nonsense(self):
        """Sending that ends before it starts, or a warm-up of the whole run, is an error."""
        with pytest.raises(ValueError):
            steady_window(10.0, 5.0)
        with pytest.raises(ValueError):
            steady_window(0.0, 5.0, warmup=1.0)


class TestRssGrowth:
    def test_growth_from_quarter_to_end(self):
        """RSS at the first sample from 25 % of the span, at the end, and the peak in between."""
        points = [(0.0, 100), (10.0, 150), (25.0, 200), (50.0, 400), (80.0, 260), (100.0, 300)]
        growth = rss_growth(points)
        assert growth == RssGrowth(at_25_kib=200, at_50_kib=400, at_100_kib=300, peak_kib=400)
        assert growth.growth_kib == 100
        assert growth.growth_pct == pytest.approx(50.0)

    def test_missing_readings_are_skipped(self):
        """Samples without an RSS (process gone) do not count; none at all gives None."""
        assert rss_growth([(0.0, None), (4.0, 80), (8.0, None), (12.0, 120)]) == RssGrowth(120, 120, 120, 120)
        assert rss_growth([(0.0, None)]) is None

    def test_flat_memory_has_no_growth(self):
        """Memory that levels off shows zero growth."""
        growth = rss_growth([(float(t), 500) for t in range(20)])
        assert growth is not None and growth.growth_kib == 0 and growth.growth_pct == 0.0

    def test_level_off_is_told_from_a_leak(self):
        """State that settles grows no more in the second half; a leak keeps growing there."""
        settled = rss_growth([(float(t), min(100 + 5 * t, 300)) for t in range(101)])
        leaking = rss_growth([(float(t), 100 + 2 * t) for t in range(101)])
        assert settled is not None and settled.growth_kib > 0 and settled.late_growth_kib == 0
        assert leaking is not None and leaking.late_growth_kib == 100


def sample(t: float, sent: int, bookings_end: int, bookings_lag: int, filings: int, rss: int, ticks: int) -> Sample:
    return Sample(
        t=t,
        sent=sent,
        ends={"bookings": bookings_end, "filings": filings, "dead": 0, "ics2.alerts": filings // 2},
        worker_lag={"bookings": bookings_lag, "inbound": 1},
        gateway_lag={"filings": 2},
        rss_kib={"worker": rss},
        cpu_ticks={"worker": ticks},
        stage_lag={"plan-bookings": bookings_lag, "parse-notifications": 1},
    )


class TestSummarise:
    def test_figures_of_a_run(self):
        """Held rates over the steady window, lag maxima, memory growth and CPU come from the samples."""
        samples = [
            sample(0.0, 0, 0, 0, 0, 1000, 0),
            sample(10.0, 50, 50, 10, 160, 1100, 500),
            sample(50.0, 250, 250, 30, 880, 1400, 2500),
            sample(100.0, 500, 500, 0, 2000, 1500, 5000),
            sample(110.0, 500, 500, 0, 2000, 1450, 5100),
        ]
        figures = summarise(
            samples,
            sending_started=0.0,
            sending_ended=100.0,
            bookings_topic="bookings",
            filings_topic="filings",
            dead_letters_topic="dead",
        )
        assert figures["steady_window_s"] == [10.0, 100.0]
        assert figures["throughput"]["offered_bookings_per_s"] == pytest.approx(450 / 90)
        assert figures["throughput"]["bookings_per_s"] == pytest.approx((500 - 40) / 90)
        assert figures["throughput"]["filings_per_s"] == pytest.approx((2000 - 160) / 90)
        assert figures["throughput"]["alerts_per_s"] == pytest.approx((1000 - 80) / 90)
        assert figures["lag"]["max_total"] == 31 and figures["lag"]["final_total"] == 1
        assert figures["lag"]["growth_per_s"] == pytest.approx((1 - 11) / 90)
        assert figures["lag"]["gateway_max_total"] == 2
        assert figures["lag"]["max_by_stage"] == {"plan-bookings": 30, "parse-notifications": 1}
        assert figures["memory"]["worker"]["at_25_kib"] == 1400
        assert figures["memory"]["worker"]["growth_kib"] == 50
        assert figures["memory"]["worker"]["late_growth_kib"] == -50
        assert figures["cpu_percent_steady"]["worker"] == pytest.approx(4500 / CLOCK_TICKS / 90 * 100, abs=0.05)
        assert figures["dead_letters"] == 0

    def test_no_samples_is_an_error(self):
        """A run that sampled nothing cannot be summarised."""
        with pytest.raises(ValueError):
            summarise([], sending_started=0, sending_ended=1, bookings_topic="b", filings_topic="f",
                      dead_letters_topic="d")  # fmt: skip


class TestSoakBookings:
    def test_every_booking_is_a_distinct_consolidation(self):
        """MBLs, house B/Ls and event ids differ between bookings; parents follow their renamed houses."""
        books = list(soak_bookings(3, SEED_PATH))
        mbls = {b["master"]["mbl_number"] for b in books}
        hbls = [h["hbl_number"] for b in books for h in b["house_bills"]]
        assert len(mbls) == 3 and len(set(hbls)) == len(hbls) == 3 * len(books[0]["house_bills"])
        assert len({b["event_id"] for b in books}) == 3
        for book in books:
            numbers = {h["hbl_number"] for h in book["house_bills"]}
            assert all(h["parent"] in numbers for h in book["house_bills"] if h.get("parent"))
            assert all(len(n) <= 70 for n in numbers | {book["master"]["mbl_number"]})

    def test_filings_per_booking_follows_the_plan(self):
        """The count checked against comes from the domain plan of the seed (the expected plan's filings of ours)."""
        expected = json.loads(SEED_PLAN_PATH.read_text(encoding="utf-8"))
        planner = seed_json()["planning_party"]
        ours = [f for f in expected["filings"] if f["filer"] == planner]
        assert filings_per_booking(SEED_PATH) == len(ours) > 0


#: Three stages of a worker and what each reads: two on one topic.
SOURCES = {
    "plan-bookings": ("p.bookings",),
    "audit-collect-bookings": ("p.bookings",),
    "deliver-alerts": ("p.alerts",),
}


class TestStageLags:
    """The worker's lag across its stage groups (``<app id>.<stage>``), each on the topics it reads."""

    def test_each_group_lags_on_its_own_topics(self):
        """Two stages reading one topic lag each by their own commits; the per-topic lag is the slowest's."""
        ends = {("p.bookings", 0): 10, ("p.bookings", 1): 6, ("p.alerts", 0): 0}
        commits = {
            "plan-bookings": {("p.bookings", 0): 10, ("p.bookings", 1): 6},
            "audit-collect-bookings": {("p.bookings", 0): 7, ("p.bookings", 1): 6},
        }
        lags = stage_lags(ends, commits, SOURCES)
        assert lags == {
            "audit-collect-bookings": {"p.bookings": 3},
            "deliver-alerts": {"p.alerts": 0},
            "plan-bookings": {"p.bookings": 0},
        }
        assert topic_lag(lags) == {"p.bookings": 3, "p.alerts": 0}
        assert not worker_idle(lags)

    def test_a_group_that_committed_nothing_on_records_is_lag_not_idle(self):
        """A stage with no commit at all (its group not even listed yet) lags by every record of its source."""
        ends = {("p.bookings", 0): 4, ("p.alerts", 0): 5, ("p.alerts", 1): 2}
        commits = {name: {("p.bookings", 0): 4} for name in ("plan-bookings", "audit-collect-bookings")}
        lags = stage_lags(ends, commits, SOURCES)
        assert lags["deliver-alerts"] == {"p.alerts": 7}
        assert not worker_idle(lags)

    def test_idle_when_every_group_has_committed_what_exists(self):
        """Empty sources need no commit; every group at the end of each of its topics is idle."""
        ends = {("p.bookings", 0): 4, ("p.alerts", 0): 0}
        commits = {name: {("p.bookings", 0): 4} for name in ("plan-bookings", "audit-collect-bookings")}
        assert worker_idle(stage_lags(ends, commits, SOURCES))

    def test_listed_groups_and_committed_topics_the_bench_does_not_know_are_counted(self):
        """A stage group found on the broker but not among the known stages, and a topic a group committed on
        beside its known source, are both watched."""
        ends = {("p.bookings", 0): 4, ("p.extra", 0): 9, ("p.new", 0): 3}
        commits = {
            "plan-bookings": {("p.bookings", 0): 4, ("p.extra", 0): 8},
            "audit-collect-bookings": {("p.bookings", 0): 4},
            "new-stage": {("p.new", 0): 1},
        }
        lags = stage_lags(ends, commits, {k: v for k, v in SOURCES.items() if k != "deliver-alerts"})
        assert lags["plan-bookings"] == {"p.bookings": 0, "p.extra": 1}
        assert lags["new-stage"] == {"p.new": 2}

    def test_known_stages_are_the_pipelines(self, tmp_path):
        """The bench's stage -> source map is the one ``build_pipeline`` wires, and each stage's group is named as
        ``stage_group`` names it."""
        from streams.pipeline.app import build_pipeline

        settings = Settings(topic_prefix="x.", app_id="x.app", state_dir=tmp_path)
        pipeline = build_pipeline(settings)
        processors = pipeline.engine.processors
        assert worker_stage_sources(Catalogue.for_prefix("x.")) == {
            name: tuple(p.stage.sources) for name, p in processors.items()
        }
        assert all(p.group_id == stage_group(settings, name) for name, p in processors.items())

    def test_scaling_waits_for_every_stage_group(self):
        """A group missing, rebalancing or short of a member is named with what it is instead."""
        described = {"a.x": ("Stable", 2), "a.y": ("PreparingRebalance", 2), "a.z": ("Stable", 1)}
        assert unsettled_groups(described, ["a.x", "a.y", "a.z", "a.w"], 2) == {
            "a.y": "PreparingRebalance with 2 of 2 members",
            "a.z": "Stable with 1 of 2 members",
            "a.w": "missing with 0 of 2 members",
        }
        assert unsettled_groups(described, ["a.x"], 2) == {}


class TestScalingVerdict:
    def test_ratio_and_verdict(self):
        """Two workers at 1.8x one worker scale; at 1.05x they do not, and the note says why."""
        good = scaling_verdict(10.0, 18.0, cpu_count=8)
        assert good["ratio"] == pytest.approx(1.8) and good["scaled"] is True
        flat = scaling_verdict(10.0, 10.5, cpu_count=2)
        assert flat["ratio"] == pytest.approx(1.05) and flat["scaled"] is False
        assert "2 cores" in flat["explanation"] and "overhead" not in flat["explanation"]
        slower = scaling_verdict(10.0, 7.8, cpu_count=2)
        assert slower["scaled"] is False and "overhead" in slower["explanation"]

    def test_missing_measure_has_no_ratio(self):
        """Without a one-worker rate there is no ratio."""
        assert scaling_verdict(None, 10.0, cpu_count=2)["ratio"] is None
