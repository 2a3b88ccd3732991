"""The pure parts of ``make bench``: percentiles, rates, ratios, the result document and its table."""

from __future__ import annotations

import json
import statistics
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from bench.harness import Parameters, bookings, mbl_number
from bench.passthrough import CommitPolicy
from bench.processes import peak_rss_kib
from bench.report import LATEST, RESULT_FORMAT, result_document, result_name, results_table, write_results
from bench.stats import (
    LatencySummary,
    PathResult,
    Throughput,
    completion_rate,
    completion_times,
    percentile,
    ratio,
    ratios,
)
from streams.contracts.avro import SchemaCatalogue
from tests.data import SEED_PATH, seed_json

samples = st.lists(st.floats(min_value=0.0, max_value=1e6, allow_nan=False), min_size=1, max_size=300)


def path_result(name: str, per_s: float, p50: float, p99: float, rss: int | None, hops: int = 1) -> PathResult:
    latencies = (p50, p50, p99)
    return PathResult(
        name=name,
        hops=hops,
        throughput=Throughput(
            items=100, outputs=400 if hops > 1 else 100, items_per_s=per_s, span_s=2.5, startup_s=1.0
        ),
        latency=LatencySummary(count=3, p50_ms=p50, p95_ms=p99, p99_ms=p99, max_ms=p99, mean_ms=sum(latencies) / 3),
        peak_rss_kib=rss,
        latencies_ms=latencies,
    )


def document() -> dict:
    return result_document(
        started_at=datetime(2026, 11, 20, 9, 0, 1, tzinfo=UTC),
        finished_at=datetime(2026, 11, 20, 9, 3, 0, tzinfo=UTC),
        parameters={"bookings": 100, "notifications": 3, "interval_ms": 50.0, "partitions": 4},
        environment={"cpu_count": 2, "python": "3.11.9", "kafka_version": "4.1.0"},
        pipeline=path_result("pipeline", per_s=20.0, p50=120.0, p99=300.0, rss=80 * 1024, hops=4),
        passthrough=path_result("passthrough", per_s=400.0, p50=10.0, p99=20.0, rss=32 * 1024),
    )


class TestPercentile:
    def test_median_of_an_even_count_is_the_mean_of_the_middle_pair(self):
        """p50 of 1, 2, 3, 4 lies halfway between 2 and 3."""
        assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5

    def test_interpolates_between_closest_ranks(self):
        """p99 of 0..100 in steps of 1 is 99, and p95 of 0..9 lies 55% of the way from 8 to 9."""
        assert percentile([float(i) for i in range(101)], 99) == pytest.approx(99.0)
        assert percentile([float(i) for i in range(10)], 95) == pytest.approx(8.55)

    @settings(max_examples=150, deadline=None)
    @given(samples)
    def test_extremes_are_min_and_max(self, values):
        """p0 is the smallest sample and p100 the largest."""
        assert percentile(values, 0) == min(values)
        assert percentile(values, 100) == max(values)

    @settings(max_examples=150, deadline=None)
    @given(st.lists(st.floats(min_value=0.0, max_value=1e6, allow_nan=False), min_size=2, max_size=300))
    def test_agrees_with_the_standard_library_inclusive_quantiles(self, values):
        """Every whole percentile equals statistics.quantiles(method='inclusive') on the same samples."""
        expected = statistics.quantiles(values, n=100, method="inclusive")
        for q in (1, 25, 50, 95, 99):
            assert percentile(values, q) == pytest.approx(expected[q - 1], rel=1e-9, abs=1e-9)

    @settings(max_examples=150, deadline=None)
    @given(samples, st.floats(min_value=0, max_value=100), st.floats(min_value=0, max_value=100))
    def test_never_decreases_with_q(self, values, q1, q2):
        """A higher percentile is never below a lower one."""
        low, high = sorted((q1, q2))
        assert percentile(values, low) <= percentile(values, high) + 1e-9

    def test_no_samples_or_q_outside_0_100_are_refused(self):
        """An empty sample and a q of 101 or -1 raise ValueError."""
        with pytest.raises(ValueError):
            percentile([], 50)
        for q in (101, -1):
            with pytest.raises(ValueError):
                percentile([1.0], q)


class TestRatio:
    def test_divides(self):
        """The ratio is the numerator over the denominator."""
        assert ratio(30.0, 120.0) == 0.25

    def test_missing_or_zero_denominator_gives_none(self):
        """No ratio when a side was not measured or the denominator is zero."""
        assert ratio(1.0, 0.0) is None
        assert ratio(None, 2.0) is None
        assert ratio(2.0, None) is None

    def test_ratios_put_the_pipeline_over_the_passthrough(self):
        """Throughput, p50, p99 and peak RSS ratios are pipeline ÷ passthrough."""
        result = ratios(
            path_result("pipeline", per_s=20.0, p50=120.0, p99=300.0, rss=80, hops=4),
            path_result("passthrough", per_s=400.0, p50=10.0, p99=20.0, rss=32),
        )
        assert result == {"throughput": 0.05, "latency_p50": 12.0, "latency_p99": 15.0, "peak_rss": 2.5}


class TestCompletionRate:
    def test_counts_items_after_the_first_over_the_span(self):
        """Five items complete within 2 s of the first: (5 - 1) / 2 = 2 per second."""
        assert completion_rate([1_000, 1_500, 2_000, 2_500, 3_000]) == (2.0, 2.0)

    def test_order_of_the_timestamps_does_not_matter(self):
        """Unsorted completion times give the same rate as sorted ones."""
        assert completion_rate([3_000, 1_000, 2_000]) == completion_rate([1_000, 2_000, 3_000])

    def test_a_span_below_the_timestamp_resolution_counts_as_one_millisecond(self):
        """Two items in the same millisecond give 1 per 1 ms, not a division by zero."""
        assert completion_rate([5, 5]) == (1000.0, 0.001)

    def test_one_item_has_no_rate(self):
        """A single completion cannot define a rate."""
        with pytest.raises(ValueError):
            completion_rate([1_000])

    def test_an_item_is_complete_at_its_latest_output(self):
        """A booking with filings at 10, 30 and 20 ms is complete at 30 ms; each key counts once."""
        done = completion_times([("MBL1", 10), ("MBL2", 15), ("MBL1", 30), ("MBL1", 20)])
        assert done == {"MBL1": 30, "MBL2": 15}

    def test_throughput_outputs_per_second_follow_items_per_second(self):
        """Four filings per booking at 20 bookings/s are 80 filings/s."""
        throughput = Throughput(items=100, outputs=400, items_per_s=20.0, span_s=4.95, startup_s=2.0)
        assert throughput.outputs_per_item == 4.0
        assert throughput.outputs_per_s == 80.0


class TestLatencySummary:
    def test_summarises_the_samples(self):
        """Count, percentiles, max and mean come from the samples."""
        summary = LatencySummary.of([float(i) for i in range(1, 101)])
        assert summary.count == 100
        assert summary.p50_ms == pytest.approx(50.5)
        assert summary.p99_ms == pytest.approx(99.01)
        assert summary.max_ms == 100.0
        assert summary.mean_ms == pytest.approx(50.5)


class TestResultDocument:
    def test_has_the_sections_the_issue_asks_for(self):
        """Environment, parameters, both paths, ratios and raw samples; it survives a JSON round trip."""
        doc = document()
        assert json.loads(json.dumps(doc)) == doc
        assert doc["format"] == RESULT_FORMAT
        assert set(doc) >= {"environment", "parameters", "pipeline", "passthrough", "ratios", "raw"}
        for side in ("pipeline", "passthrough"):
            assert set(doc[side]) == {"name", "hops", "throughput", "latency_ms", "peak_rss_kib", "cpu_ms_per_item"}
            assert set(doc[side]["latency_ms"]) == {"count", "p50_ms", "p95_ms", "p99_ms", "max_ms", "mean_ms"}
        assert doc["pipeline"]["hops"] == 4
        assert doc["pipeline"]["throughput"]["outputs_per_s"] == 80.0

    def test_ratios_are_computed_from_the_paths(self):
        """The document's ratios are pipeline ÷ passthrough, rounded to 3 digits."""
        assert document()["ratios"] == {"throughput": 0.05, "latency_p50": 12.0, "latency_p99": 15.0, "peak_rss": 2.5}

    def test_raw_samples_are_kept(self):
        """Every latency sample of both paths is in the raw section."""
        raw = document()["raw"]
        assert raw["pipeline_latencies_ms"] == [120.0, 120.0, 300.0]
        assert raw["passthrough_latencies_ms"] == [10.0, 10.0, 20.0]

    def test_is_written_under_its_utc_timestamp_and_as_latest(self, tmp_path):
        """The timestamped file and latest.json hold the same document."""
        started = datetime(2026, 11, 20, 9, 0, 1, tzinfo=UTC)
        path = write_results(document(), started, tmp_path / "results")
        assert path.name == "20261120T090001Z.json" == result_name(started)
        assert json.loads(path.read_text()) == json.loads((path.parent / LATEST).read_text()) == document()


class TestResultsTable:
    def test_shows_both_paths_the_ratios_and_the_hops(self):
        """The table prints the measured values, the ratios and says the pipeline crosses 4 hops."""
        console = Console(record=True, width=200)
        console.print(results_table(document()))
        text = console.export_text()
        assert "0.05x" in text and "12.00x" in text and "15.00x" in text and "2.50x" in text
        assert "400.0" in text and "120.00" in text
        assert "4 hops" in text


class TestCommitPolicy:
    def test_due_after_every_records(self):
        """With every=3, the third processed record makes a commit due."""
        policy = CommitPolicy(every=3, interval_s=60.0, last_commit=0.0)
        for _ in range(2):
            policy.processed()
            assert not policy.due(1.0)
        policy.processed()
        assert policy.due(1.0)

    def test_due_after_the_interval_only_with_something_pending(self):
        """Time alone commits nothing; a pending offset is committed once the interval has passed."""
        policy = CommitPolicy(every=100, interval_s=1.0, last_commit=10.0)
        assert not policy.due(20.0)
        policy.processed()
        assert not policy.due(10.5)
        assert policy.due(11.0)

    def test_committing_resets(self):
        """After a commit nothing is pending until the next record."""
        policy = CommitPolicy(every=1)
        policy.processed()
        policy.committed(5.0)
        assert policy.pending == 0 and not policy.due(100.0)


class TestPeakRss:
    def test_reads_vmhwm(self):
        """VmHWM's KiB value is taken, not VmRSS."""
        status = "Name:\tpython\nVmPeak:\t  900000 kB\nVmHWM:\t   81234 kB\nVmRSS:\t   70000 kB\n"
        assert peak_rss_kib(status) == 81234

    def test_absent_gives_none(self):
        """A status without VmHWM (a kernel thread, another OS) gives None."""
        assert peak_rss_kib("Name:\tkthreadd\nState:\tS (sleeping)\n") is None


class TestParameters:
    def test_quick_preset_is_small(self):
        """--quick runs fewer bookings and notifications than the full run."""
        quick, full = Parameters.preset(True), Parameters.preset(False)
        assert quick.quick and quick.bookings < full.bookings and quick.notifications < full.notifications

    def test_more_notifications_than_bookings_are_refused(self):
        """Each timed DNL answers a filing of its own booking, so M may not exceed N."""
        with pytest.raises(ValueError):
            Parameters(bookings=10, notifications=11)


class TestBookings:
    def test_copies_of_the_seed_with_distinct_mbls(self):
        """Each booking is the seed under its own MBL and event id; the rest is unchanged."""
        seed = seed_json()
        made = bookings(5, SEED_PATH)
        assert [b["master"]["mbl_number"] for b in made] == [mbl_number(i) for i in range(5)]
        assert len({b["event_id"] for b in made}) == 5
        assert made[3]["house_bills"] == seed["house_bills"]
        assert {k: v for k, v in made[3]["master"].items() if k != "mbl_number"} == {
            k: v for k, v in seed["master"].items() if k != "mbl_number"
        }


class TestBaselinesAndLoad:
    def test_cpu_seconds_reads_utime_and_stime_after_the_command(self):
        """Fields 14 and 15 of /proc/<pid>/stat, counted after the command, whose name may hold spaces."""
        from bench.processes import cpu_seconds

        ticks = __import__("os").sysconf("SC_CLK_TCK")
        stat = f"42 (ics2 worker) S 1 42 42 0 -1 4194560 100 0 0 0 {3 * ticks} {ticks} 0 0 20 0 1 0"
        assert cpu_seconds(stat) == 4.0
        assert cpu_seconds("garbage") is None

    def test_producer_performance_summary_is_the_last_line(self):
        from bench.producer_perf import parse_summary

        output = (
            "50001 records sent, 10000.2 records/sec (14.31 MB/sec), 80.1 ms avg latency, 300.0 ms max latency.\n"
            "100000 records sent, 34012.2 records/sec (48.66 MB/sec), 412.3 ms avg latency, 900.0 ms max latency, "
            "400 ms 50th, 800 ms 95th, 880 ms 99th, 899 ms 99.9th.\n"
        )
        assert parse_summary(output) == (100000, 34012.2, 48.66, 412.3)

    def test_open_loop_probes_are_distinct_notifications_over_few_filings(self):
        """Each DNL is its own notification (its id is the hash of its XML), however often a filing repeats."""
        from bench.harness import dnl_probes, mrn_number

        probes = dnl_probes([mrn_number(0), mrn_number(1)], 6, first=3)
        assert len({p.probe_id for p in probes}) == 6
        assert all(len(p.probe_id) == 64 for p in probes)

    def test_passthrough_records_each_complete_under_their_own_key(self):
        from bench.harness import cycled

        records = cycled([(b"a", b"1"), (b"b", b"2")], 5)
        assert len({k for k, _ in records}) == 5 and [v for _, v in records] == [b"1", b"2", b"1", b"2", b"1"]

    def test_synthetic_audit_trail_is_intact(self):
        """The replay measure reads a trail that verifies, so its rate is that of a full replay."""
        from bench.audit_replay import RECORDS_PER_MBL, synthetic_trail
        from streams.audit.trail import verify

        records = list(synthetic_trail(RECORDS_PER_MBL * 3))
        assert verify(records) == [] and len({r["mbl"] for r in records}) == 3

    def test_replay_rates_keep_the_one_process_baseline_and_the_read(self):
        """Each replay rate counts the read; a trail with a changed payload is not intact in either rate."""
        from bench.audit_replay import RECORDS_PER_MBL, ReadBack, one_and_parallel, summary, synthetic_trail

        records = list(synthetic_trail(RECORDS_PER_MBL * 4))
        one, parallel = one_and_parallel("archive", ReadBack(records, {}, [], 0.5, 0.25), 2)
        assert (one.workers, parallel.workers, one.records) == (1, 1, len(records)), "too few records to fork"
        assert one.intact and parallel.intact and one.seconds > 0.5 and (one.cpu_seconds or 0) >= 0.25
        document = summary(one, parallel)
        assert document["one_process_per_s"] == one.records_per_s
        assert document["records_per_s"] == parallel.records_per_s and document["intact"]
        records[7] = {**records[7], "payload": records[7]["payload"] + " "}
        assert not summary(*one_and_parallel("kafka", ReadBack(records, {}, [], 0.5, 0.25), 2))["intact"]

    def test_markdown_summary_has_a_row_per_measure(self):
        from bench.report import markdown_summary

        doc = document()
        doc["measures"] = [
            {"measure": "pipeline: booking -> 4 filings", "value": 20.0, "unit": "bookings/s", "baseline": "in process",
             "baseline_value": 50.0, "ratio": 0.4, "target": ">= 300/s"},
        ]  # fmt: skip
        text = markdown_summary(doc)
        assert (
            "| pipeline: booking -> 4 filings | 20 bookings/s | in process: 50 bookings/s | 0.40x | >= 300/s |" in text
        )

    def test_records_per_item_are_split_by_topic_largest_first(self):
        from bench.harness import written_per_item
        from bench.report import markdown_summary

        before = {"ics2.bookings": 10, "ics2.audit": 100, "ics2.alerts": 5}
        after = {"ics2.bookings": 14, "ics2.audit": 140, "ics2.alerts": 5, "app-ens-state-changelog": 8}
        per_item = written_per_item(before, after, 4)
        assert list(per_item.items()) == [
            ("ics2.audit", 10.0), ("app-ens-state-changelog", 2.0), ("ics2.bookings", 1.0)
        ]  # fmt: skip
        doc = document()
        doc["pipeline_notifications"] = {"records_by_topic": {"per_booking": per_item, "per_notification": {"x": 0.5}}}
        text = markdown_summary(doc)
        assert "| ics2.audit | 10.00 | 0.00 |" in text and "| x | 0.00 | 0.50 |" in text
        assert "| all | 13.00 | 0.50 |" in text


class TestPayloads:
    def test_the_notification_event_is_measured_against_its_own_typed_records(self):
        """The seed's notification event is made by the real stages, and its content is the typed records timed."""
        from bench.payloads import measure, seed_records

        schemas = SchemaCatalogue.load()
        written = seed_records(schemas)
        events = [schemas.decode(v, reader="EnsEvent").record for v in written["ics2.ens-events"]]
        notification = json.loads(next(e for e in events if e["type"] == "notification")["payload"])
        parsed = [schemas.decode(v).record for v in written["ics2.notifications.parsed"]]
        assert notification["notification"] in parsed, "the payload carries a CustomsNotification as written"
        result = measure(calls=5)
        assert result["payload_json_bytes"] > result["typed_avro_bytes"] > 0
        assert min(result[k] for k in ("json_loads_us", "typed_decode_us", "typed_decode_raw_us")) > 0
