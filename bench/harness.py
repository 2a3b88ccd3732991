"""One benchmark run: a broker, the raw passthrough, then the pipeline worker, on the same inputs.

Order of a run (each path measured alone, so the two never share the CPU):

1. Broker: the one at ``ICS2_BOOTSTRAP_SERVERS`` when it is set and answers (its topics are left as found: the
   run's own prefix is deleted at the end), else a LocalBroker on free loopback ports in a temporary folder.
2. The same N Avro bookings (distinct MBLs) are pre-loaded into the pipeline's bookings topic and into the
   passthrough's input topic, both with the same partition count.
3. Passthrough subprocess: drains its input (throughput), then M probes sent one at a time (latency).
4. ``ics2 worker`` subprocess: drains the bookings (4 outbound filings each); M IE3R01 register an F15 of M of
   those bookings; then M DNLs (IE3Q01) are sent one at a time and each is timed until its alert reaches
   ``ML-TYO``'s party queue.
5. Peak RSS (VmHWM) of each subprocess is read just before it is stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from aiokafka import ConsumerRecord
from aiokafka.admin import NewTopic

from bench.audit_replay import load_trail, replay_from_archive, replay_from_kafka, signed_verify, summary
from bench.probes import Arrivals, Probe, latencies_ms
from bench.processes import BenchError, Child
from bench.producer_perf import producer_performance
from bench.report import environment, result_document
from bench.stats import LatencySummary, PathResult, Throughput, completion_rate, completion_times, ratio
from streams.admin import admin_client, apply_topics, delete_topics, list_topics
from streams.broker import BrokerConfig, LocalBroker, free_tcp_port, kafka_version
from streams.client import produce, read_topic
from streams.contracts.avro import SchemaCatalogue
from streams.contracts.records import sha256
from streams.domain.drafts import make_lrn
from streams.domain.notifications import mrn_check_character
from streams.errors import BrokerUnavailable, PlatformError
from streams.messages.build import build_ie3q01, build_ie3r01
from streams.pipeline.stage import Incoming
from streams.pipeline.stages.booking import BookingStage
from streams.scenarios import SEED_COLOAD
from streams.settings import Settings
from streams.topics import Catalogue

log = structlog.get_logger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
SEED = SEED_COLOAD
ICS2 = str(Path(sys.executable).with_name("ics2"))
FILER = "ML-TYO"
CARRIER = "CARRIER-A"
#: The seed's first house bill, filed by ML-TYO as an F15: the filing the notifications answer.
HOUSE = "SKC26TYO0001"
ADDRESSEE = b"NL812345678000"
REGISTERED_AT = datetime(2026, 11, 20, 9, 5, tzinfo=UTC)
BROKER_START_TIMEOUT_S = 120.0
#: Open-loop latency is also taken at this share of the measured notification rate, for this long: the latency of
#: a worker under load that it keeps up with (the issue's fixed 1,000/s may be more than it can take).
STEADY_SHARE = 0.5
STEADY_S = 5.0
#: How the numbers were taken, written into every result so that a reader need not open this file.
METHOD = {
    "throughput": (
        "inputs pre-loaded before the process starts; broker CreateTime of the outputs; an item is complete at its"
        " last output (a booking at its 4th outbound filing); rate = (items - 1) / (last - first completion)"
    ),
    "latency": (
        "one probe at a time, acks=all, one every interval_ms; time from just before the produce to the first fetch"
        " of its answer, both on the bench process's monotonic clock; pipeline: DNL (IE3Q01) on"
        " notifications.inbound to its alert on ML-TYO's party queue; passthrough: the same XML in to its copy out"
    ),
    "memory": "VmHWM of the subprocess read from /proc just before it is stopped",
}


@dataclass(frozen=True, slots=True)
class Parameters:
    """How much load a run applies; ``quick`` is the smoke-run preset."""

    bookings: int = 400
    notifications: int = 100
    interval_ms: float = 100.0
    partitions: int = 4
    phase_timeout_s: float = 180.0
    quick: bool = False
    #: Records each passthrough copies for its throughput (the per-poll one is fast: it needs more to be timed).
    per_record_records: int = 2000
    per_poll_records: int = 20000
    #: DNLs pre-loaded at once for the notification -> party queue throughput.
    burst: int = 3000
    #: DNLs sent open loop at ``offered_rate`` per second for the latency under load.
    open_loop: int = 3000
    offered_rate: float = 1000.0
    audit_records: int = 100_000
    producer_perf_records: int = 100_000
    record_bytes: int = 1500

    @classmethod
    def preset(cls, quick: bool) -> Parameters:
        if not quick:
            return cls()
        return cls(
            bookings=40, notifications=30, phase_timeout_s=60.0, quick=True, per_record_records=200,
            per_poll_records=2000, burst=300, open_loop=300, audit_records=10_000, producer_perf_records=10_000,
        )  # fmt: skip

    def __post_init__(self) -> None:
        if self.bookings < 2 or self.notifications < 2:
            raise ValueError("a run needs at least 2 bookings and 2 notifications")
        if self.notifications > self.bookings:
            raise ValueError("each notification answers a filing of its own booking: notifications <= bookings")


def mbl_number(index: int) -> str:
    return f"OCLU26TYO{index:07d}"


def mrn_number(index: int) -> str:
    body = f"27NL{index:013d}"
    return body + mrn_check_character(body)


def bookings(count: int, seed_path: Path = SEED) -> list[dict[str, Any]]:
    """``count`` copies of the seed consolidation, each under its own MBL."""
    seed = json.loads(seed_path.read_text(encoding="utf-8"))
    result = []
    for index in range(count):
        booking = json.loads(json.dumps(seed))
        booking["master"]["mbl_number"] = mbl_number(index)
        booking["event_id"] = str(uuid.UUID(int=index + 1))
        result.append(booking)
    return result


# -- broker -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BrokerSession:
    bootstrap_servers: str
    kafka_version: str
    external: bool


def _answers(bootstrap_servers: str) -> bool:
    async def probe() -> bool:
        try:
            async with admin_client(Settings(bootstrap_servers=bootstrap_servers), request_timeout=5.0) as admin:
                await admin.list_topics()
        except (BrokerUnavailable, OSError, TimeoutError):
            return False
        return True

    return asyncio.run(probe())


@contextlib.contextmanager
def broker_session(workdir: Path) -> Iterator[BrokerSession]:
    """An external broker from ``ICS2_BOOTSTRAP_SERVERS`` if it answers, else our own, stopped on the way out."""
    external = os.environ.get("ICS2_BOOTSTRAP_SERVERS", "").strip()
    if external:
        if _answers(external):
            log.info("bench_broker_external", bootstrap=external)
            yield BrokerSession(external, "unknown (external broker)", external=True)
            return
        log.warning("bench_broker_external_unreachable", bootstrap=external)
    port = free_tcp_port()
    controller_port = free_tcp_port()
    while controller_port == port:
        controller_port = free_tcp_port()
    broker = LocalBroker(BrokerConfig(state_dir=workdir / "kafka", port=port, controller_port=controller_port))
    try:
        broker.start(timeout=BROKER_START_TIMEOUT_S)
        yield BrokerSession(broker.config.bootstrap_servers, kafka_version(), external=False)
    finally:
        broker.stop()


# -- the two paths ------------------------------------------------------------------------------------------


async def _create_topics(settings: Settings, names: Sequence[str], partitions: int) -> None:
    async with admin_client(settings) as admin:
        await admin.create_topics([NewTopic(name, partitions, 1) for name in names])
    deadline = time.monotonic() + 30.0
    while not set(names) <= set(await list_topics(settings, settings.topic_prefix)):
        if time.monotonic() >= deadline:
            raise BenchError(f"topics {names} not listed 30 s after creation")
        await asyncio.sleep(0.1)


async def _drain(
    settings: Settings, topic: str, expected: int, child: Child, timeout: float
) -> tuple[list[tuple[str, int]], int]:
    """Wait until ``expected`` records are on ``topic``; returns (key, broker timestamp) pairs and their count."""
    deadline = time.monotonic() + timeout
    records: list = []
    while time.monotonic() < deadline:
        child.require_alive()
        records = await read_topic(
            settings, topic, until=lambda rs: len(rs) >= expected, timeout=min(20.0, deadline - time.monotonic())
        )
        if len(records) >= expected:
            return [((r.key or b"").decode(), r.timestamp_ms) for r in records], len(records)
    raise BenchError(f"{topic}: {len(records)} of {expected} records after {timeout:.0f}s\n{child.tail()}")


def _throughput(items: int, outputs: list[tuple[str, int]], child: Child) -> Throughput:
    done = completion_times(outputs)
    if len(done) != items:
        raise BenchError(f"{len(done)} distinct keys completed, {items} expected")
    per_s, span_s = completion_rate(done.values())
    startup_s = min(done.values()) / 1000.0 - child.started_wall
    return Throughput(items=items, outputs=len(outputs), items_per_s=per_s, span_s=span_s, startup_s=startup_s)


async def _probe_latencies(
    settings: Settings,
    params: Parameters,
    send_topic: str,
    arrivals: Arrivals,
    probes: Sequence[Probe],
    child: Child,
    rate_per_s: float | None = None,
) -> list[float]:
    """Send the probes to ``send_topic`` (one at a time, or open loop at ``rate_per_s``) and time each until
    ``arrivals`` sees it."""
    try:
        await arrivals.start()
        return await latencies_ms(
            settings,
            send_topic=send_topic,
            arrivals=arrivals,
            probes=probes,
            interval_s=params.interval_ms / 1000.0,
            timeout=params.phase_timeout_s,
            watched=child,
            rate_per_s=rate_per_s,
        )
    finally:
        await arrivals.stop()


def cycled(records: Sequence[tuple[bytes, bytes]], count: int) -> list[tuple[bytes, bytes]]:
    """``count`` records taken round from ``records``, each keyed by its own index (so every one completes)."""
    return [(f"r{i:07d}".encode(), records[i % len(records)][1]) for i in range(count)]


async def measure_passthrough(
    settings: Settings,
    params: Parameters,
    booking_records: Sequence[tuple[bytes, bytes]],
    workdir: Path,
    mode: str = "per-record",
) -> PathResult:
    """A raw aiokafka copy: drain pre-loaded bookings, then time probes through it (per-record: one at a time every
    ``interval_ms``; per-poll: open loop at the offered rate)."""
    per_poll = mode == "per-poll"
    records = cycled(booking_records, params.per_poll_records if per_poll else params.per_record_records)
    source = f"{settings.topic_prefix}bench.passthrough-{mode}.in"
    target = f"{settings.topic_prefix}bench.passthrough-{mode}.out"
    await _create_topics(settings, [source, target], params.partitions)
    await produce(settings, source, records, headers=[("ics2-record", b"BookingEvent")])
    command = [
        sys.executable, "-m", "bench.passthrough", "--bootstrap-servers", settings.bootstrap_servers,
        "--source", source, "--target", target, "--group", f"{settings.topic_prefix}passthrough-{mode}", "--mode", mode,
    ]  # fmt: skip
    child = Child(f"passthrough-{mode}", command, dict(os.environ), workdir / f"{mode}.log", cwd=REPO_ROOT).start()
    try:
        outputs, _ = await _drain(settings, target, len(records), child, params.phase_timeout_s)
        throughput = _throughput(len(records), outputs, child)
        log.info("bench_passthrough_drained", mode=mode, per_s=round(throughput.items_per_s, 1))
        dnl = build_ie3q01(mrn=mrn_number(0), issued_at=REGISTERED_AT, member_state="NL", hbl=HOUSE, mbl=mbl_number(0))
        count = params.open_loop if per_poll else params.notifications
        probes = [Probe(f"probe-{i:05d}", f"probe-{i:05d}".encode(), dnl) for i in range(count)]
        arrivals = Arrivals(settings, target, lambda m: (m.key or b"").decode() or None)
        rate = params.offered_rate if per_poll else None
        cpu_before = child.cpu_seconds()
        samples = await _probe_latencies(settings, params, source, arrivals, probes, child, rate_per_s=rate)
        cpu_ms = _cpu_ms_per_item(cpu_before, child.cpu_seconds(), len(probes))
        peak = child.peak_rss_kib()
    finally:
        child.stop()
    log.info("bench_passthrough_probed", mode=mode, cpu_ms_per_record=cpu_ms)
    return PathResult(f"passthrough-{mode}", 1, throughput, LatencySummary.of(samples), peak, tuple(samples), cpu_ms)


def _alert_matcher(schemas: SchemaCatalogue, message_type: str) -> Any:
    def match(message: ConsumerRecord) -> str | None:
        alert = schemas.decode(message.value, reader="PartyAlert").record
        if alert["notification_message_type"] == message_type and alert["mrn"]:
            return str(alert["mrn"])
        return None

    return match


async def measure_pipeline(
    settings: Settings,
    params: Parameters,
    booking_records: Sequence[tuple[bytes, bytes]],
    workdir: Path,
    schemas: SchemaCatalogue,
) -> PipelineResult:
    """The ``ics2 worker``: drain the pre-loaded bookings, register M filings, time M DNLs to the alert one at a
    time, then DNLs pre-loaded at once (throughput) and sent open loop at the offered rate (latency under load)."""
    catalogue = Catalogue.for_prefix(settings.topic_prefix)
    await apply_topics(settings, catalogue, [FILER, CARRIER])
    await produce(settings, catalogue.bookings.name, booking_records, headers=[("ics2-record", b"BookingEvent")])
    web_port = free_tcp_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("ICS2_")}
    env.update(
        ICS2_BOOTSTRAP_SERVERS=settings.bootstrap_servers,
        ICS2_TOPIC_PREFIX=settings.topic_prefix,
        ICS2_APP_ID=settings.app_id,
        ICS2_STATE_DIR=str(settings.state_dir),
        ICS2_LOG_FORMAT="json",
        ICS2_DEFAULT_PARTITIONS=str(params.partitions),
        ICS2_WEB_PORT=str(web_port),
    )
    written_before = await records_written(settings)
    child = Child("worker", [ICS2, "worker", "--no-apply-topics"], env, workdir / "worker.log", cwd=REPO_ROOT).start()
    filings_per_booking = 4
    try:
        expected = len(booking_records) * filings_per_booking
        outputs, _ = await _drain(settings, catalogue.filings_outbound.name, expected, child, params.phase_timeout_s)
        throughput = _throughput(len(booking_records), outputs, child)
        log.info("bench_pipeline_drained", per_s=round(throughput.items_per_s, 1))
        await wait_idle(settings, child, params.phase_timeout_s)
        per_booking = written_per_item(written_before, await records_written(settings), len(booking_records))
        queue = catalogue.party_queue(FILER).name
        mrns = [mrn_number(i) for i in range(params.notifications)]
        registrations = Arrivals(settings, queue, _alert_matcher(schemas, "IE3R01"))
        try:
            await registrations.start()
            r01s = [
                (ADDRESSEE, build_ie3r01(
                    lrn=make_lrn(mbl_number(i), HOUSE, "F15", FILER, 1), mrn=mrn, registered_at=REGISTERED_AT,
                    circumstance="F15",
                ))
                for i, mrn in enumerate(mrns)
            ]  # fmt: skip
            await produce(settings, catalogue.notifications_inbound.name, r01s)
            await registrations.wait_for(set(mrns), params.phase_timeout_s, child)
        finally:
            await registrations.stop()
        log.info("bench_pipeline_registered", filings=len(mrns))
        probes = [
            Probe(mrn, ADDRESSEE, build_ie3q01(mrn=mrn, issued_at=REGISTERED_AT, member_state="NL", hbl=HOUSE,
                                               mbl=mbl_number(i)))
            for i, mrn in enumerate(mrns)
        ]  # fmt: skip
        arrivals = Arrivals(settings, queue, _alert_matcher(schemas, "IE3Q01"))
        await wait_idle(settings, child, params.phase_timeout_s)
        samples = await _probe_latencies(
            settings, params, catalogue.notifications_inbound.name, arrivals, probes, child
        )
        await wait_idle(settings, child, params.phase_timeout_s)
        burst_written = await records_written(settings)
        cpu_before, burst_started = child.cpu_seconds(), time.perf_counter()
        notifications = await _notification_rate(settings, params, catalogue, mrns, child)
        await wait_idle(settings, child, params.phase_timeout_s)
        sustained = params.burst / (time.perf_counter() - burst_started)
        cpu_ms = _cpu_ms_per_item(cpu_before, child.cpu_seconds(), params.burst)
        per_notification = written_per_item(burst_written, await records_written(settings), params.burst)
        log.info(
            "bench_pipeline_notifications",
            per_s=round(notifications, 1),
            sustained_per_s=round(sustained, 1),
            cpu_ms_per_notification=cpu_ms,
            records_per_notification=round(sum(per_notification.values()), 1),
            records_per_booking=round(sum(per_booking.values()), 1),
        )
        steady_rate = max(1.0, round(sustained * STEADY_SHARE))
        arrivals = Arrivals(settings, queue, _notification_matcher)
        steady = await _probe_latencies(
            settings, params, catalogue.notifications_inbound.name, arrivals,
            dnl_probes(mrns, max(2, int(steady_rate * STEADY_S)), first=params.burst + params.open_loop), child,
            rate_per_s=steady_rate,
        )  # fmt: skip
        await wait_idle(settings, child, params.phase_timeout_s)
        arrivals = Arrivals(settings, queue, _notification_matcher)
        loaded = await _probe_latencies(
            settings, params, catalogue.notifications_inbound.name, arrivals,
            dnl_probes(mrns, params.open_loop, first=params.burst), child, rate_per_s=params.offered_rate,
        )  # fmt: skip
        peak = child.peak_rss_kib()
    finally:
        child.stop()
    result = PathResult("pipeline", 4, throughput, LatencySummary.of(samples), peak, tuple(samples))
    return PipelineResult(
        result, notifications, LatencySummary.of(loaded), tuple(loaded), cpu_ms, steady_rate, LatencySummary.of(steady),
        sustained, per_booking, per_notification,
    )  # fmt: skip


async def records_written(settings: Settings) -> dict[str, int]:
    """Every record on the run's topics (inputs, outputs, table changelogs, the audit trail, Faust's own), per topic
    named without the run's prefix."""
    from bench.soak import OffsetProbe, topic_totals  # bench.soak builds on this module

    probe = OffsetProbe(settings)
    await probe.start()
    try:
        return topic_totals(await probe.end_offsets(), settings.topic_prefix)
    finally:
        await probe.stop()


def written_per_item(before: Mapping[str, int], after: Mapping[str, int], items: int) -> dict[str, float]:
    """Records each item added to each topic, largest first; topics it added nothing to are left out."""
    added = {topic: (end - before.get(topic, 0)) / items for topic, end in after.items()}
    return dict(sorted(((t, n) for t, n in added.items() if n > 0), key=lambda item: (-item[1], item[0])))


def _floor(records: float | None, cpu_ms_per_record: float | None) -> float | None:
    """What the records alone would cost at the raw passthrough's CPU per consumed-and-produced record."""
    return None if records is None or cpu_ms_per_record is None else records * cpu_ms_per_record


def _cpu_ms_per_item(before: float | None, after: float | None, items: int) -> float | None:
    return None if before is None or after is None else (after - before) * 1000.0 / items


async def wait_idle(settings: Settings, child: Child, timeout: float) -> bool:
    """Until every stage group of the worker (``<app id>.<stage>``, audit included) has committed every record of
    the topics it reads, so that a phase is not timed against the previous phase's backlog; False (and a warning
    naming the stages still behind) when ``timeout`` passes first."""
    from bench.soak import OffsetProbe, worker_idle  # bench.soak builds on this module

    probe = OffsetProbe(settings)
    await probe.start()
    deadline = time.monotonic() + timeout
    lags: dict[str, dict[str, int]] = {}
    try:
        while time.monotonic() < deadline:
            child.require_alive()
            _, lags = await probe.worker_lags(settings.app_id)
            if worker_idle(lags):
                return True
            await asyncio.sleep(0.5)
    finally:
        await probe.stop()
    behind = {stage: sum(per_topic.values()) for stage, per_topic in lags.items() if any(per_topic.values())}
    log.warning("bench_worker_not_idle", timeout_s=timeout, behind=behind)
    return False


@dataclass(frozen=True, slots=True)
class PipelineResult:
    """The worker's path result plus what only the pipeline has: the notification rate and latency under load."""

    path: PathResult
    notifications_per_s: float
    loaded_latency: LatencySummary
    loaded_latencies_ms: tuple[float, ...]
    cpu_ms_per_notification: float | None = None
    steady_rate: float | None = None
    """Half the sustained rate (``STEADY_SHARE``), offered open loop for ``STEADY_S``."""
    steady_latency: LatencySummary | None = None
    sustained_per_s: float | None = None
    """The burst's notifications over the time until the worker was idle again: the audit trail's work included."""
    booking_records_by_topic: Mapping[str, float] | None = None
    """Records written per booking to each topic of the run, until the worker was idle again."""
    notification_records_by_topic: Mapping[str, float] | None = None
    """The same per notification of the burst: what each one costs in Kafka records, audit and changelogs included."""

    @property
    def records_per_booking(self) -> float | None:
        return None if self.booking_records_by_topic is None else sum(self.booking_records_by_topic.values())

    @property
    def records_per_notification(self) -> float | None:
        return None if self.notification_records_by_topic is None else sum(self.notification_records_by_topic.values())


def dnl_probes(mrns: Sequence[str], count: int, first: int = 0) -> list[Probe]:
    """``count`` distinct DNLs over the registered MRNs (issued a second apart), each its own notification id."""
    probes = []
    for n in range(first, first + count):
        index = n % len(mrns)
        issued = REGISTERED_AT + timedelta(seconds=n + 1)
        xml = build_ie3q01(mrn=mrns[index], issued_at=issued, member_state="NL", hbl=HOUSE, mbl=mbl_number(index))
        probes.append(Probe(sha256(xml), ADDRESSEE, xml))
    return probes


def _notification_matcher(message: ConsumerRecord) -> str | None:
    """The alert's notification id (``ics2-notification-id``): which DNL it answers."""
    found = next((v for k, v in message.headers or () if k == "ics2-notification-id"), None)
    return found.decode() if found else None


async def _notification_rate(
    settings: Settings, params: Parameters, catalogue: Catalogue, mrns: Sequence[str], child: Child
) -> float:
    """DNLs pre-loaded at once; their alerts' arrival rate on the filer's party queue (first to last)."""
    probes = dnl_probes(mrns, params.burst)
    arrivals = Arrivals(settings, catalogue.party_queue(FILER).name, _notification_matcher)
    try:
        await arrivals.start()
        await produce(settings, catalogue.notifications_inbound.name, [(p.key, p.value) for p in probes])
        arrived = await arrivals.wait_for({p.probe_id for p in probes}, params.phase_timeout_s, child)
    finally:
        await arrivals.stop()
    span = max(arrived.values()) - min(arrived.values())
    return (len(arrived) - 1) / span if span > 0 else 0.0


def in_process_rate(records: Sequence[tuple[bytes, bytes]], schemas: SchemaCatalogue, topic: str) -> float:
    """Bookings/s of the booking stage called in process (decode, plan, validate, render, XSD-check, encode)."""
    stage = BookingStage(schemas, Catalogue.for_prefix("inprocess."), lambda: REGISTERED_AT, {})
    started = time.perf_counter()
    for offset, (key, value) in enumerate(records):
        stage(Incoming(topic, 0, offset, key, value))
    return len(records) / (time.perf_counter() - started)


async def _producer_perf(settings: Settings, params: Parameters) -> dict[str, Any]:
    """Kafka's ProducerPerformance on a topic of its own; the reason instead when it cannot run (no Java/Maven)."""
    topic = f"{settings.topic_prefix}bench.producer-perf"
    await _create_topics(settings, [topic], params.partitions)
    try:
        perf = await asyncio.to_thread(
            producer_performance, settings.bootstrap_servers, topic, params.producer_perf_records, params.record_bytes
        )
    except PlatformError as exc:
        log.warning("bench_producer_perf_skipped", error=str(exc)[:500])
        return {"error": str(exc)[:2000]}
    log.info("bench_producer_perf", per_s=perf.records_per_s)
    return asdict(perf)


async def _audit_replay(settings: Settings, params: Parameters, schemas: SchemaCatalogue, workdir: Path) -> dict:
    replay_settings = replace(settings, topic_prefix=f"{settings.topic_prefix}replay.")
    records = await load_trail(replay_settings, schemas, params.audit_records, params.partitions)
    kafka = await replay_from_kafka(replay_settings, schemas)
    archive = replay_from_archive(records, workdir / "archive", schemas)
    result = {}
    signed = signed_verify(max(1, params.audit_records // 5))
    for one, parallel in (kafka, archive, signed):
        result[one.source] = summary(one, parallel)
        log.info("bench_audit_replay", **result[one.source])
    return result


def measures(
    producer_perf: Mapping[str, Any],
    per_record: PathResult,
    per_poll: PathResult,
    pipeline: PipelineResult,
    domain_rate: float,
    replay: Mapping[str, Any],
    offered_rate: float,
) -> list[dict[str, Any]]:
    """The rows of issue 12's table: each measure, the baseline it is judged against, their ratio and the target."""
    path, loaded, base = pipeline.path, pipeline.loaded_latency, per_poll.latency
    poll_rate = per_poll.throughput.items_per_s

    def row(measure: str, value: float | None, unit: str, baseline: str = "", against: float | None = None,
            target: str = "") -> dict[str, Any]:  # fmt: skip
        return {
            "measure": measure, "value": value, "unit": unit, "baseline": baseline, "baseline_value": against,
            "ratio": ratio(value, against), "target": target,
        }  # fmt: skip

    return [
        row("Kafka ProducerPerformance, 1.5 KB, acks=all", producer_perf.get("records_per_s"), "records/s"),
        row("aiokafka passthrough, per poll", poll_rate, "records/s", "ProducerPerformance",
            producer_perf.get("records_per_s")),
        row("aiokafka passthrough, per record", per_record.throughput.items_per_s, "records/s", "per poll", poll_rate),
        row("booking stage in process", domain_rate, "bookings/s"),
        row("pipeline: booking -> 4 filings", path.throughput.items_per_s, "bookings/s", "in process", domain_rate,
            ">= 300/s, >= 0.75x in process"),
        row("pipeline: notification -> party queue", pipeline.notifications_per_s, "notifications/s", "per poll",
            poll_rate, ">= 2,000/s, >= 0.13x per poll"),
        row("pipeline: notifications until idle again (audit included)", pipeline.sustained_per_s, "notifications/s",
            "per poll", poll_rate),
        *(
            row(f"latency {label} at {offered_rate:g}/s offered (open loop)", getattr(loaded, key), "ms",
                "per-poll passthrough", getattr(base, key), "p99 <= 50 ms" if label == "p99" else "")
            for label, key in (("p50", "p50_ms"), ("p95", "p95_ms"), ("p99", "p99_ms"), ("max", "max_ms"))
        ),
        *(
            row(f"latency {label} at {pipeline.steady_rate or 0:g}/s offered (half the sustained rate)",
                getattr(pipeline.steady_latency, key, None), "ms")
            for label, key in (("p50", "p50_ms"), ("p99", "p99_ms"), ("max", "max_ms"))
        ),
        row("latency p50, one at a time", path.latency.p50_ms, "ms", "per record", per_record.latency.p50_ms),
        row("latency p99, one at a time", path.latency.p99_ms, "ms", "per record", per_record.latency.p99_ms),
        row("worker CPU per notification (burst)", pipeline.cpu_ms_per_notification, "ms", "per-poll CPU per record",
            per_poll.cpu_ms_per_item),
        row("records written per booking (outputs, changelogs, audit)", pipeline.records_per_booking, "records"),
        row("records written per notification (outputs, changelogs, audit)", pipeline.records_per_notification,
            "records"),
        row("CPU floor per notification: records written x per-poll CPU per record",
            _floor(pipeline.records_per_notification, per_poll.cpu_ms_per_item), "ms", "worker CPU per notification",
            pipeline.cpu_ms_per_notification),
        *(
            row(f"audit replay from {what} (read + verify in {r['workers']} processes)", r["records_per_s"],
                "records/s", "one process", r["one_process_per_s"], ">= 100,000/s")
            for what, r in (("Kafka", replay["kafka"]), ("the Avro archive", replay["archive"]))
        ),
        row(f"audit verify with Ed25519 signatures, in memory ({replay['signed']['workers']} processes)",
            replay["signed"]["records_per_s"], "records/s", "one process", replay["signed"]["one_process_per_s"]),
        *(
            row(f"audit replay CPU per 100k records, {what}", r["cpu_s_per_100k"], "s", "one process",
                r["one_process_cpu_s_per_100k"])
            for what, r in (("Kafka", replay["kafka"]), ("the Avro archive", replay["archive"]),
                            ("signatures verified", replay["signed"]))
        ),
        row("peak RSS of the worker", (path.peak_rss_kib or 0) / 1024, "MiB", "per-poll passthrough",
            (per_poll.peak_rss_kib or 0) / 1024),
    ]  # fmt: skip


async def measure(session: BrokerSession, params: Parameters, workdir: Path) -> dict[str, Any]:
    """Every path on the same broker and inputs, one after the other; the result document."""
    started_at = datetime.now(UTC)
    load_at_start = os.getloadavg()[0]
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    settings = Settings(
        bootstrap_servers=session.bootstrap_servers,
        topic_prefix=prefix,
        app_id=f"{prefix}app",
        state_dir=workdir / "state",
        default_partitions=params.partitions,
    )
    schemas = SchemaCatalogue.load()
    records = [
        (b["master"]["mbl_number"].encode(), schemas.encode("BookingEvent", b)) for b in bookings(params.bookings)
    ]
    try:
        producer_perf = await _producer_perf(settings, params)
        passthrough = await measure_passthrough(settings, params, records, workdir)
        per_poll = await measure_passthrough(settings, params, records, workdir, mode="per-poll")
        pipeline = await measure_pipeline(settings, params, records, workdir, schemas)
        domain_rate = in_process_rate(records[:100], schemas, Catalogue.for_prefix(prefix).bookings.name)
        replay = await _audit_replay(settings, params, schemas, workdir)
    finally:
        if session.external:
            await delete_topics(settings, await list_topics(settings, prefix), wait=False)
    parameters = {
        **asdict(params),
        "booking_avro_bytes": {"min": min(len(v) for _, v in records), "max": max(len(v) for _, v in records)},
        "filings_per_booking": pipeline.path.throughput.outputs_per_item,
        "topic_prefix": prefix,
        "method": METHOD,
    }
    document = result_document(
        started_at=started_at,
        finished_at=datetime.now(UTC),
        parameters=parameters,
        environment=environment(
            session.kafka_version, "external" if session.external else "local (LocalBroker)", load_at_start
        ),
        pipeline=pipeline.path,
        passthrough=passthrough,
    )
    document["per_poll_passthrough"] = per_poll.to_json()
    document["producer_performance"] = producer_perf
    document["pipeline_notifications"] = {
        "per_s": pipeline.notifications_per_s,
        "open_loop_latency_ms": asdict(pipeline.loaded_latency),
        "offered_rate_per_s": params.offered_rate,
        "cpu_ms_per_notification": pipeline.cpu_ms_per_notification,
        "sustained_per_s": pipeline.sustained_per_s,
        "steady_rate_per_s": pipeline.steady_rate,
        "steady_open_loop_latency_ms": None if pipeline.steady_latency is None else asdict(pipeline.steady_latency),
        "records_per_notification": pipeline.records_per_notification,
        "records_per_booking": pipeline.records_per_booking,
        "records_by_topic": {
            "per_booking": dict(pipeline.booking_records_by_topic or {}),
            "per_notification": dict(pipeline.notification_records_by_topic or {}),
        },
    }
    document["audit_replay"] = replay
    document["measures"] = measures(
        producer_perf, passthrough, per_poll, pipeline, domain_rate, replay, params.offered_rate
    )
    document["raw"]["pipeline_open_loop_latencies_ms"] = [round(v, 3) for v in pipeline.loaded_latencies_ms]
    document["raw"]["per_poll_open_loop_latencies_ms"] = [round(v, 3) for v in per_poll.latencies_ms]
    return document


def run(params: Parameters) -> dict[str, Any]:
    """Start (or reuse) the broker, measure, stop everything this run started."""
    with (
        tempfile.TemporaryDirectory(prefix="ics2-bench-") as tmp,
        broker_session(Path(tmp)) as session,
    ):
        return asyncio.run(measure(session, params, Path(tmp)))
