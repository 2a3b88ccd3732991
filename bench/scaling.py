"""``make scaling`` / ``python -m bench.scaling``: the same booking load through one worker, then through two.

Each phase runs on fresh topics (a new prefix) with 4 partitions, so the two workers of the second phase can each
own two partitions of every input. The workers share the app id (so each stage's consumer group, ``<app id>.<stage>``,
has both) and differ in web port and state folder, as two replicas of a deployment would. Before the measured load
the run waits until every stage group is stable with every worker in it, sends a few warm-up bookings through and
checks the groups again, so no rebalance falls inside the measurement. Then N bookings are produced at once and the
rate is taken as in ``make bench``: the broker timestamp at which each booking's last outbound filing landed,
``(N - 1) / (last - first)``.

The customs simulator is not running: the measure is booking -> filings.outbound, the CPU-heavy half (planning,
XML building, XSD validation). Scaling needs spare cores: each worker is one Python process, so at best one core
each, and on a 2-core machine the broker and the bench share those cores with them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import structlog
from aiokafka.errors import GroupCoordinatorNotAvailableError
from rich.console import Console
from rich.table import Table

from bench.harness import BrokerSession
from bench.processes import BenchError, Child
from bench.report import RESULTS_DIR, environment
from bench.soak import (
    PARTIES,
    cpu_percent,
    filings_per_booking,
    read_proc,
    soak_bookings,
    soak_broker,
    start_worker,
    wait_healthy,
    worker_stage_sources,
)
from bench.stats import completion_rate, completion_times
from streams.admin import admin_client, apply_topics, delete_topics, list_topics
from streams.audit.reading import stage_group
from streams.client import produce, read_topic
from streams.contracts.avro import SchemaCatalogue
from streams.errors import ICS2StreamsError
from streams.logs import configure_logging
from streams.settings import Settings
from streams.topics import Catalogue

log = structlog.get_logger(__name__)

SCALING_FORMAT = "ics2-scaling/1"
#: Below this ratio, a second worker is not called scaling (noise on a busy machine is easily 10-20 %).
SCALED_RATIO = 1.3
WARMUP_BOOKINGS = 8


def machine_busy_ticks(stat_text: str) -> tuple[int, int] | None:
    """(busy, total) CPU ticks of the whole machine from the ``cpu`` line of ``/proc/stat``."""
    for line in stat_text.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu" and all(f.isdigit() for f in fields[1:]) and len(fields) >= 5:
            values = [int(f) for f in fields[1:]]
            idle = values[3] + (values[4] if len(values) > 4 else 0)
            return sum(values) - idle, sum(values)
    return None


def scaling_verdict(one_worker: float | None, two_workers: float | None, cpu_count: int | None) -> dict[str, Any]:
    """The ratio of two workers to one, whether that is scaling, and why it may not be."""
    ratio = None if not one_worker or two_workers is None else two_workers / one_worker
    scaled = ratio is not None and ratio >= SCALED_RATIO
    cores = cpu_count or 0
    if ratio is None:
        explanation = "one of the phases gave no rate"
    elif scaled:
        explanation = (
            f"two workers drained {ratio:.2f}x as fast as one: with {cores} cores there was a spare core for the"
            " second worker; beyond that, partitions (4 here) bound how many workers can share the load"
        )
    else:
        explanation = (
            f"two workers drained {ratio:.2f}x as fast as one: on {cores} cores shared by the broker and both workers,"
            " the work (planning, XML building, XSD validation, Avro) is CPU-bound and a Python worker uses at most one"
            " core, so a second worker adds no CPU to use"
            + (
                " and costs its own overhead (its Kafka clients, standby table replicas, a rebalance), hence below 1"
                if ratio < 1
                else ""
            )
            + "; on a cluster with a core per worker, throughput grows with workers up to the number of partitions"
        )
    return {"ratio": ratio, "scaled": scaled, "threshold": SCALED_RATIO, "explanation": explanation}


@dataclass(frozen=True, slots=True)
class ScalingParameters:
    bookings: int = 400
    partitions: int = 4
    phase_timeout_s: float = 300.0


@dataclass(frozen=True, slots=True)
class Phase:
    """What one phase measured."""

    workers: int
    bookings: int
    bookings_per_s: float
    filings_per_s: float
    span_s: float
    worker_cpu_percent: tuple[float | None, ...]
    machine_busy_percent: float | None


def _machine() -> tuple[int, int] | None:
    try:
        return machine_busy_ticks(Path("/proc/stat").read_text(encoding="ascii"))
    except OSError:
        return None


def unsettled_groups(described: Mapping[str, tuple[str, int]], groups: Sequence[str], members: int) -> dict[str, str]:
    """The groups among ``groups`` that are not Stable with ``members`` members, each with what it is instead
    (``described``: group -> (state, members) as the broker describes it; a group it does not know is missing)."""
    unsettled = {}
    for group in groups:
        state, seen = described.get(group, ("missing", 0))
        if state != "Stable" or seen != members:
            unsettled[group] = f"{state or 'unknown'} with {seen} of {members} members"
    return unsettled


async def _group_stable(settings: Settings, members: int, timeout: float, workers: Sequence[Child]) -> None:
    """Until every stage group of the workers (``<app id>.<stage>``: each stage is a group of its own) is Stable
    with ``members`` members, so that no rebalance falls into the measurement.

    All the stage groups, not only ``plan-bookings`` (the measured path): a rebalance of any of them (the audit
    collectors of bookings, drafts and filings run during the measure) would stall or reload that stage mid-run and
    cost the measured worker CPU."""
    stages = worker_stage_sources(Catalogue.for_prefix(settings.topic_prefix))
    groups = [stage_group(settings, stage) for stage in stages]
    deadline = time.monotonic() + timeout
    unsettled: dict[str, str] = {}
    while time.monotonic() < deadline:
        for worker in workers:
            worker.require_alive()
        described: dict[str, tuple[str, int]] = {}
        try:
            async with admin_client(settings) as admin:
                for group_id in groups:
                    # One group per request: aiokafka 0.14 misreads a DescribeGroups answer of several groups
                    # (the second comes out blank, or the read underruns and the connection is dropped).
                    for response in await admin.describe_consumer_groups([group_id]):
                        for group in response.groups:
                            described[str(group[1])] = (str(group[2]), len(group[5]))
        except GroupCoordinatorNotAvailableError:
            pass  # a fresh broker creates __consumer_offsets on first use
        unsettled = unsettled_groups(described, groups, members)
        if not unsettled:
            return
        await asyncio.sleep(1.0)
    shown = "; ".join(f"{group}: {what}" for group, what in sorted(unsettled.items()))
    raise BenchError(f"stage groups not stable after {timeout:.0f}s: {shown}")


async def _drain(settings: Settings, topic: str, expected: int, workers: Sequence[Child], timeout: float) -> list:
    deadline = time.monotonic() + timeout
    records: list = []
    while time.monotonic() < deadline:
        for worker in workers:
            worker.require_alive()
        records = await read_topic(
            settings, topic, until=lambda rs: len(rs) >= expected, timeout=min(30.0, deadline - time.monotonic())
        )
        if len(records) >= expected:
            return records
    tails = "\n".join(worker.tail(10) for worker in workers)
    raise BenchError(f"{topic}: {len(records)} of {expected} records after {timeout:.0f}s\n{tails}")


async def measure_phase(
    session: BrokerSession, params: ScalingParameters, workers: int, workdir: Path, schemas: SchemaCatalogue
) -> Phase:
    """``workers`` workers of one group on fresh topics: warm up, wait for a stable group, drain N bookings."""
    prefix = f"scale{workers}w{uuid.uuid4().hex[:6]}."
    settings = Settings(
        bootstrap_servers=session.bootstrap_servers,
        topic_prefix=prefix,
        app_id=f"{prefix}app",
        state_dir=workdir / prefix,
        default_partitions=params.partitions,
    )
    catalogue = Catalogue.for_prefix(prefix)
    per_booking = filings_per_booking()
    books = list(soak_bookings(WARMUP_BOOKINGS + params.bookings))
    records = [(b["master"]["mbl_number"].encode(), schemas.encode("BookingEvent", b)) for b in books]
    warmup, measured = records[:WARMUP_BOOKINGS], records[WARMUP_BOOKINGS:]
    await apply_topics(settings, catalogue, PARTIES)
    phase_dir = workdir / prefix
    phase_dir.mkdir(parents=True)
    children: list[Child] = []
    try:
        for index in range(workers):
            child, port = start_worker(settings, phase_dir, name=f"worker{index + 1}")
            children.append(child)
            await wait_healthy(child, port)
        # Join first, then load: faust-streaming 0.15 can stall in wait_empty when a rebalance lands mid-batch.
        await _group_stable(settings, workers, 180.0, children)
        topic = catalogue.filings_outbound.name
        headers = [("ics2-record", b"BookingEvent")]
        await produce(settings, catalogue.bookings.name, warmup, headers=headers)
        await _drain(settings, topic, len(warmup) * per_booking, children, params.phase_timeout_s)
        await _group_stable(settings, workers, 120.0, children)
        log.info("scaling_measuring", workers=workers, bookings=len(measured))
        ticks_before = [read_proc(child)[1] for child in children]
        machine_before, wall_before = _machine(), time.monotonic()
        await produce(settings, catalogue.bookings.name, measured, headers=headers)
        outputs = await _drain(settings, topic, len(records) * per_booking, children, params.phase_timeout_s)
        ticks_after = [read_proc(child)[1] for child in children]
        machine_after, elapsed = _machine(), time.monotonic() - wall_before
    finally:
        for child in children:
            child.stop()
        if session.external:
            await delete_topics(settings, await list_topics(settings, prefix), wait=False)
    keys = {key.decode() for key, _ in measured}
    done = completion_times(
        ((r.key or b"").decode(), r.timestamp_ms) for r in outputs if (r.key or b"").decode() in keys
    )
    if len(done) != len(measured):
        raise BenchError(f"{len(done)} of {len(measured)} bookings completed with {workers} worker(s)")
    per_s, span_s = completion_rate(done.values())
    busy = None
    if machine_before and machine_after and machine_after[1] > machine_before[1]:
        busy = (machine_after[0] - machine_before[0]) / (machine_after[1] - machine_before[1]) * 100.0
    cpu = tuple(cpu_percent(b, a, elapsed) for b, a in zip(ticks_before, ticks_after, strict=True))
    phase = Phase(workers, len(measured), per_s, per_s * per_booking, span_s, cpu, busy)
    log.info("scaling_phase", workers=workers, bookings_per_s=round(per_s, 2), machine_busy_pct=busy)
    return phase


async def measure(session: BrokerSession, params: ScalingParameters, workdir: Path) -> dict[str, Any]:
    started_at = datetime.now(UTC)
    load_at_start = os.getloadavg()[0]
    schemas = SchemaCatalogue.load()
    one = await measure_phase(session, params, 1, workdir, schemas)
    two = await measure_phase(session, params, 2, workdir, schemas)
    return {
        "format": SCALING_FORMAT,
        "started_at": started_at.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "parameters": {**asdict(params), "warmup_bookings": WARMUP_BOOKINGS, "simulator": "not running"},
        "method": (
            "per phase: fresh topics, N bookings produced at once after a warm-up and a stable group; a booking is"
            " complete at its last outbound filing (broker CreateTime); rate = (N - 1) / (last - first completion)"
        ),
        "environment": environment(
            session.kafka_version, "external" if session.external else "local (LocalBroker)", load_at_start
        ),
        "phases": [asdict(one), asdict(two)],
        "verdict": scaling_verdict(one.bookings_per_s, two.bookings_per_s, os.cpu_count()),
    }


def scaling_table(document: dict[str, Any]) -> Table:
    params = document["parameters"]
    table = Table(
        title="ICS2 scaling: booking -> filings.outbound, one worker vs two (same stage groups)",
        caption=f"{params['bookings']} bookings per phase, {params['partitions']} partitions, fresh topics each phase",
    )
    for column in ("workers", "bookings/s", "filings/s", "drain span (s)", "worker CPU (% of a core)", "machine busy"):
        table.add_column(column, justify="right")
    for phase in document["phases"]:
        cpu = " + ".join("-" if value is None else f"{value:.0f}" for value in phase["worker_cpu_percent"])
        busy = phase["machine_busy_percent"]
        table.add_row(
            str(phase["workers"]),
            f"{phase['bookings_per_s']:.2f}",
            f"{phase['filings_per_s']:.2f}",
            f"{phase['span_s']:.1f}",
            cpu,
            "-" if busy is None else f"{busy:.0f}%",
        )
    return table


@click.command()
@click.option("--bookings", type=click.IntRange(10, 20_000), default=400, show_default=True)
@click.option("--partitions", type=click.IntRange(2, 64), default=4, show_default=True)
@click.option("--bootstrap-servers", help="Use this broker (topics deleted afterwards) instead of starting one.")
@click.option("--results-dir", type=click.Path(file_okay=False, path_type=Path), default=RESULTS_DIR, show_default=True)
def main(bookings: int, partitions: int, bootstrap_servers: str | None, results_dir: Path) -> None:
    """One worker, then two in the same stage groups, on the same booking load: does throughput scale here?"""
    configure_logging("auto", level="INFO")
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    params = ScalingParameters(bookings=bookings, partitions=partitions)
    try:
        with (
            tempfile.TemporaryDirectory(prefix="ics2-scaling-") as tmp,
            soak_broker(Path(tmp), bootstrap_servers) as session,
        ):
            document = asyncio.run(measure(session, params, Path(tmp)))
    except ICS2StreamsError as exc:
        raise click.ClickException(str(exc)) from exc
    results_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.fromisoformat(document["started_at"]).strftime("%Y%m%dT%H%M%SZ")
    path = results_dir / f"scaling-{stamp}.json"
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    console = Console()
    console.print(scaling_table(document))
    verdict = document["verdict"]
    ratio = verdict["ratio"]
    console.print(f"2 workers / 1 worker: {'-' if ratio is None else f'{ratio:.2f}x'}. {verdict['explanation']}")
    console.print(f"results: {path}")


if __name__ == "__main__":
    main()
