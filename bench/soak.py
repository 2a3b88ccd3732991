"""``make soak`` / ``python -m bench.soak``: a day of a large forwarder's traffic through one worker and the simulator.

Load assumption: a large NVOCC (master loader with co-loaders) books about 2,000 ocean consolidations a day into
the EU. Each booking is the seed co-load under its own MBL and house B/Ls, so each one plans 4 filings of ours,
every filing is answered by the customs simulator (``ics2 gateway``) with an IE3R01, and every answer becomes a
party alert: about 8,000 filings, 8,000 notifications and their alerts a day. The day is compressed in time:
bookings are sent at a steady ``--rate`` per second (default 5/s). The default run is half that day, 1,000
bookings, to keep a run near 10 minutes on a 2-core machine shared with other work (12 with a load average of 6);
``--bookings 2000`` is the whole day (17 minutes there, most of it draining the backlog: see the README).

While the load runs a sampler reads, every ``--sample-interval`` seconds: each topic's end offsets (records in and
out), the committed offsets of the worker's stage groups (one consumer group per stage, ``<app id>.<stage>``: lag
per stage, and per topic that of the slowest stage reading it) and of the gateway's group, and the RSS and CPU time of
the worker and the gateway from ``/proc``. At the end it reports the held throughput over the steady window
(after a warm-up, until the last booking is sent), the maximum and final lag, RSS at 25, 50 and 100 % of the run and
its peak (state held in memory levels off, a leak keeps growing through the second half), checks that every filing of
ours got its IE3R01 alert and that nothing was dead-lettered, writes ``bench/results/soak-<UTC>.json`` and prints a
table. Not part of CI: it takes minutes and needs the whole machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import GroupCoordinatorNotAvailableError
from rich.console import Console
from rich.table import Table

from bench.harness import BrokerSession, broker_session
from bench.processes import BenchError, Child
from bench.report import RESULTS_DIR, environment
from streams.admin import admin_client, apply_topics, delete_topics, list_topics
from streams.audit.entries import CHAIN_STAGE, collector_stages
from streams.broker import free_tcp_port
from streams.client import stop_consumer
from streams.contracts.avro import SchemaCatalogue
from streams.domain.model import Consolidation
from streams.domain.planning import plan
from streams.errors import ICS2StreamsError
from streams.logs import configure_logging
from streams.scenarios import SEED_COLOAD
from streams.settings import Settings
from streams.topics import Catalogue

log = structlog.get_logger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
SEED = SEED_COLOAD
ICS2 = str(Path(sys.executable).with_name("ics2"))
#: Every party of the seed co-load gets its queue, as an onboarded forwarder's partners would.
PARTIES = ("ML-TYO", "CARRIER-A", "COLOADER-A", "COLOADER-C", "COLOADER-D")
#: Share of the sending time left out of the steady window (connections warm, first batches through).
WARMUP_FRACTION = 0.1
SOAK_FORMAT = "ics2-soak/1"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# -- pure maths ---------------------------------------------------------------------------------------------


def status_kib(status_text: str, name: str = "VmRSS") -> int | None:
    """A ``kB`` field (``VmRSS``, ``VmHWM``) from the text of ``/proc/<pid>/status``; None if absent or malformed."""
    for line in status_text.splitlines():
        key, _, value = line.partition(":")
        if key == name:
            parts = value.split()
            return int(parts[0]) if parts and parts[0].isdigit() else None
    return None


def cpu_ticks(stat_text: str) -> int | None:
    """User + system CPU time in clock ticks from ``/proc/<pid>/stat``.

    The command name (field 2) is in parentheses and may hold spaces or parentheses itself, so the fields are
    counted from the last ``)``: utime and stime are fields 14 and 15 of the line.
    """
    _, closing, rest = stat_text.rpartition(")")
    fields = rest.split()
    if not closing or len(fields) < 13:
        return None
    utime, stime = fields[11], fields[12]
    if not (utime.isdigit() and stime.isdigit()):
        return None
    return int(utime) + int(stime)


def cpu_percent(
    ticks_before: int | None, ticks_after: int | None, seconds: float, hz: int = CLOCK_TICKS
) -> float | None:
    """Share of one core used between two readings (100 = one core busy all the time)."""
    if ticks_before is None or ticks_after is None or seconds <= 0:
        return None
    return (ticks_after - ticks_before) / hz / seconds * 100.0


def group_lag(
    end_offsets: Mapping[tuple[str, int], int], committed: Mapping[tuple[str, int], int], topics: Sequence[str]
) -> dict[str, int]:
    """Records not yet committed by a group, per topic: the sum over partitions of end offset minus committed.

    A partition with no commit yet counts from offset 0 (every topic of a soak is new); a committed offset
    beyond the end (read before the end was) counts as no lag, never as negative.
    """
    lag = dict.fromkeys(topics, 0)
    for (topic, partition), end in end_offsets.items():
        if topic in lag:
            lag[topic] += max(0, end - max(0, committed.get((topic, partition), 0)))
    return lag


def worker_stage_sources(catalogue: Catalogue) -> dict[str, tuple[str, ...]]:
    """The worker's stages and the topics each reads, as ``streams.pipeline.app.build_pipeline`` wires them.

    Each stage is a consumer group of its own, ``<app id>.<stage>`` (``streams.audit.reading.stage_group``): the
    bench needs to know what a group reads before it has committed anything, since a group that committed nothing
    on a topic with records lags by all of them (``tests/unit/test_soak.py`` checks this against the pipeline).
    """
    stages = {
        "plan-bookings": catalogue.bookings,
        "parse-notifications": catalogue.notifications_inbound,
        "correlate": catalogue.notifications_parsed,
        "track-ens": catalogue.ens_events,
        "deliver-alerts": catalogue.alerts,
        **collector_stages(catalogue),
        CHAIN_STAGE: catalogue.audit_entries,
    }
    return {name: (spec.name,) for name, spec in stages.items()}


def stage_lags(
    end_offsets: Mapping[tuple[str, int], int],
    commits: Mapping[str, Mapping[tuple[str, int], int]],
    sources: Mapping[str, Sequence[str]],
) -> dict[str, dict[str, int]]:
    """Lag per stage group, per topic the group reads: its known sources and every topic it has committed on.

    ``commits`` maps each stage (its group listed on the broker) to its committed offsets; a stage of ``sources``
    missing there, or with no commit on a partition, counts from offset 0 (``group_lag``): a group that has
    committed nothing on a topic with records is behind by all of them, not idle.
    """
    lags = {}
    for stage in sorted(set(commits) | set(sources)):
        committed = commits.get(stage, {})
        topics = sorted(set(sources.get(stage, ())) | {topic for topic, _ in committed})
        lags[stage] = group_lag(end_offsets, committed, topics)
    return lags


def topic_lag(lags: Mapping[str, Mapping[str, int]]) -> dict[str, int]:
    """Per topic, the lag of the slowest stage that reads it: records not yet taken by every stage of the worker
    (what one consumer group committed per topic when all stages shared it)."""
    worst: dict[str, int] = {}
    for per_topic in lags.values():
        for topic, lag in per_topic.items():
            worst[topic] = max(worst.get(topic, 0), lag)
    return worst


def worker_idle(lags: Mapping[str, Mapping[str, int]]) -> bool:
    """Every stage group has committed every record of every topic it reads."""
    return not any(lag for per_topic in lags.values() for lag in per_topic.values())


def window_rate(points: Sequence[tuple[float, float]], start: float, end: float) -> float | None:
    """Rate of a growing counter over [start, end], from (time, count) samples.

    Uses the first sample at or after ``start`` and the last at or before ``end``: the window never reaches
    outside what was measured. None when fewer than two samples fall in the window.
    """
    inside = sorted((t, count) for t, count in points if start <= t <= end)
    if len(inside) < 2 or inside[-1][0] == inside[0][0]:
        return None
    (t0, c0), (t1, c1) = inside[0], inside[-1]
    return (c1 - c0) / (t1 - t0)


def steady_window(sending_started: float, sending_ended: float, warmup: float = WARMUP_FRACTION) -> tuple[float, float]:
    """The steady part of the run: from ``warmup`` of the sending time after it began until the last booking."""
    if sending_ended < sending_started:
        raise ValueError("sending cannot end before it starts")
    if not 0.0 <= warmup < 1.0:
        raise ValueError(f"warm-up share {warmup!r} is not within [0, 1)")
    return sending_started + (sending_ended - sending_started) * warmup, sending_ended


@dataclass(frozen=True, slots=True)
class RssGrowth:
    """Resident memory at 25 %, 50 % and 100 % of a run; growth that does not level off is a leak.

    With ``--table-store memory`` the worker's tables live in memory, so RSS grows with the consolidations held
    (``rocksdb``, the default, keeps them on disk); the second half's growth
    (``late_growth_kib``) tells a level-off (state settled) from a leak (growth goes on at the same pace).
    """

    at_25_kib: int
    at_50_kib: int
    at_100_kib: int
    peak_kib: int

    @property
    def growth_kib(self) -> int:
        return self.at_100_kib - self.at_25_kib

    @property
    def late_growth_kib(self) -> int:
        return self.at_100_kib - self.at_50_kib

    @property
    def growth_pct(self) -> float:
        return self.growth_kib / self.at_25_kib * 100.0 if self.at_25_kib else 0.0


def memory_figures(growth: RssGrowth) -> dict[str, Any]:
    """The RSS readings with their derived growth, as the result document shows them."""
    return {
        **asdict(growth),
        "growth_kib": growth.growth_kib,
        "late_growth_kib": growth.late_growth_kib,
        "growth_pct": round(growth.growth_pct, 2),
    }


def rss_growth(points: Sequence[tuple[float, int | None]]) -> RssGrowth | None:
    """RSS at the first samples at or after 25 % and 50 % of the sampled time span, at the last sample, and the peak."""
    known = sorted((t, rss) for t, rss in points if rss is not None)
    if not known:
        return None
    first, last = known[0][0], known[-1][0]

    def at(share: float) -> int:
        return next(rss for t, rss in known if t >= first + (last - first) * share)

    return RssGrowth(at_25_kib=at(0.25), at_50_kib=at(0.5), at_100_kib=known[-1][1], peak_kib=max(r for _, r in known))


@dataclass(frozen=True, slots=True)
class Sample:
    """What the sampler saw at ``t`` seconds after sending began."""

    t: float
    sent: int
    ends: dict[str, int]
    """End offset summed over partitions, per topic (short name, without the run's prefix)."""
    worker_lag: dict[str, int]
    """Per topic, the lag of the slowest worker stage reading it (``topic_lag``)."""
    gateway_lag: dict[str, int]
    rss_kib: dict[str, int | None] = field(default_factory=dict)
    cpu_ticks: dict[str, int | None] = field(default_factory=dict)
    stage_lag: dict[str, int] = field(default_factory=dict)
    """Per worker stage (consumer group ``<app id>.<stage>``), its lag summed over the topics it reads."""


def topic_totals(end_offsets: Mapping[tuple[str, int], int], prefix: str) -> dict[str, int]:
    """End offsets summed per topic, named without the run's prefix."""
    totals: dict[str, int] = {}
    for (topic, _), end in end_offsets.items():
        name = topic.removeprefix(prefix)
        totals[name] = totals.get(name, 0) + end
    return totals


def summarise(
    samples: Sequence[Sample],
    *,
    sending_started: float,
    sending_ended: float,
    bookings_topic: str,
    filings_topic: str,
    dead_letters_topic: str,
    alerts_topic: str = "ics2.alerts",
) -> dict[str, Any]:
    """The soak's figures from its samples: held throughput, lag, memory, CPU and dead letters.

    ``lag_growth_per_s`` is the slope of the worker's total lag over the steady window: about zero when every
    stage keeps up with the offered load, positive when some stage falls behind (it then drains after the load).
    """
    if not samples:
        raise ValueError("no samples to summarise")
    start, end = steady_window(sending_started, sending_ended)
    consumed = [(s.t, s.ends.get(bookings_topic, 0) - s.worker_lag.get(bookings_topic, 0)) for s in samples]
    filed = [(s.t, s.ends.get(filings_topic, 0)) for s in samples]
    offered = [(s.t, s.sent) for s in samples]
    total_lag = [sum(s.worker_lag.values()) for s in samples]
    alerted = [(s.t, s.ends.get(alerts_topic, 0)) for s in samples]
    processes = sorted({name for s in samples for name in s.rss_kib})
    memory = {}
    cpu = {}
    for name in processes:
        growth = rss_growth([(s.t, s.rss_kib.get(name)) for s in samples])
        memory[name] = None if growth is None else memory_figures(growth)
        steady = [s for s in samples if start <= s.t <= end]
        cpu[name] = (
            cpu_percent(steady[0].cpu_ticks.get(name), steady[-1].cpu_ticks.get(name), steady[-1].t - steady[0].t)
            if len(steady) >= 2
            else None
        )
    final = samples[-1]
    return {
        "steady_window_s": [round(start, 2), round(end, 2)],
        "throughput": {
            "offered_bookings_per_s": window_rate(offered, start, end),
            "bookings_per_s": window_rate(consumed, start, end),
            "filings_per_s": window_rate(filed, start, end),
            "alerts_per_s": window_rate(alerted, start, end),
        },
        "lag": {
            "max_total": max(total_lag),
            "final_total": total_lag[-1],
            "growth_per_s": window_rate([(s.t, lag) for s, lag in zip(samples, total_lag, strict=True)], start, end),
            "max_by_topic": {t: max(s.worker_lag.get(t, 0) for s in samples) for t in final.worker_lag},
            "max_by_stage": {g: max(s.stage_lag.get(g, 0) for s in samples) for g in final.stage_lag},
            "final_by_topic": dict(final.worker_lag),
            "gateway_max_total": max(sum(s.gateway_lag.values()) for s in samples),
            "gateway_final_total": sum(final.gateway_lag.values()),
        },
        "memory": memory,
        "cpu_percent_steady": {name: None if value is None else round(value, 1) for name, value in cpu.items()},
        "dead_letters": final.ends.get(dead_letters_topic, 0),
        "records_by_topic": dict(sorted(final.ends.items())),
    }


# -- the load -----------------------------------------------------------------------------------------------


def soak_bookings(count: int, seed_path: Path = SEED) -> Iterator[dict[str, Any]]:
    """``count`` copies of the seed co-load, each under its own MBL and house B/L numbers (an..70)."""
    seed = json.loads(seed_path.read_text(encoding="utf-8"))
    for index in range(count):
        booking = json.loads(json.dumps(seed))
        booking["master"]["mbl_number"] = f"OCLU26SOAK{index:07d}"
        booking["event_id"] = str(uuid.UUID(int=index + 1))
        for house in booking["house_bills"]:
            house["hbl_number"] = f"{house['hbl_number']}S{index:07d}"
            if house.get("parent"):
                house["parent"] = f"{house['parent']}S{index:07d}"
        yield booking


def filings_per_booking(seed_path: Path = SEED) -> int:
    """How many filings of ours the domain plans for one seed booking (the count every answer is checked against)."""
    return len(plan(Consolidation.from_json(json.loads(seed_path.read_text(encoding="utf-8")))).ours())


@dataclass(frozen=True, slots=True)
class SoakParameters:
    """How much load a soak applies; the default is half a day of a large forwarder at 5 bookings/s."""

    bookings: int = 1000
    rate: float = 5.0
    sample_interval_s: float = 5.0
    partitions: int = 4
    drain_timeout_s: float = 900.0
    table_store: str = "rocksdb"
    """The worker's ``ICS2_TABLE_STORE``: ``rocksdb`` (tables on disk) or ``memory``, to compare their RSS."""

    def __post_init__(self) -> None:
        if self.bookings < 2 or self.rate <= 0 or self.sample_interval_s <= 0:
            raise ValueError("a soak needs at least 2 bookings, a positive rate and a positive sample interval")


def service_env(settings: Settings, state_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of an ``ics2`` subprocess: the developer's ``ICS2_*`` variables replaced by the run's."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("ICS2_")}
    env.update(
        ICS2_BOOTSTRAP_SERVERS=settings.bootstrap_servers,
        ICS2_TOPIC_PREFIX=settings.topic_prefix,
        ICS2_APP_ID=settings.app_id,
        ICS2_STATE_DIR=str(state_dir),
        ICS2_LOG_FORMAT="json",
        ICS2_DEFAULT_PARTITIONS=str(settings.default_partitions),
    )
    env.update(extra)
    return env


def start_worker(
    settings: Settings, workdir: Path, name: str = "worker", table_store: str = "rocksdb"
) -> tuple[Child, int]:
    """An ``ics2 worker`` on a free web port with its own state folder and log; returns it and the port."""
    port = free_tcp_port()
    env = service_env(settings, workdir / f"state-{name}", ICS2_WEB_PORT=str(port), ICS2_TABLE_STORE=table_store)
    child = Child(name, [ICS2, "worker", "--no-apply-topics"], env, workdir / f"{name}.log", cwd=REPO_ROOT)
    return child.start(), port


def start_gateway(settings: Settings, workdir: Path) -> Child:
    """The customs simulator behind ``ics2 gateway``: it answers every filing (default script: IE3R01)."""
    env = service_env(settings, workdir / "state-gateway")
    command = [ICS2, "gateway", "--poll-interval", "1"]
    return Child("gateway", command, env, workdir / "gateway.log", cwd=REPO_ROOT).start()


async def wait_healthy(child: Child, port: int, timeout: float = 180.0) -> None:
    """Until the worker's ``/health`` answers; generous, since the machine may be busy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        child.require_alive()
        try:
            await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/health")
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            await asyncio.sleep(0.5)
    raise BenchError(f"{child.name} not healthy after {timeout:.0f}s\n{child.tail()}")


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=2) as response:
        return bytes(response.read())


def read_proc(child: Child) -> tuple[int | None, int | None]:
    """(VmRSS KiB, CPU ticks) of a running child, (None, None) once it is gone."""
    if child.proc is None:
        return None, None
    try:
        status = Path(f"/proc/{child.proc.pid}/status").read_text(encoding="ascii", errors="replace")
        stat = Path(f"/proc/{child.proc.pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None, None
    return status_kib(status), cpu_ticks(stat)


class OffsetProbe:
    """End offsets of the run's topics and committed offsets of its consumer groups, read without committing."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._consumer = AIOKafkaConsumer(group_id=None, enable_auto_commit=False, **settings.kafka_client_kwargs())
        self._partitions: list[TopicPartition] = []

    async def start(self) -> None:
        await self._consumer.start()
        await self.refresh()

    async def refresh(self) -> None:
        """Pick up topics created since (Faust's own, party queues); assigned and paused, so nothing is fetched."""
        names = await list_topics(self.settings, self.settings.topic_prefix)
        async with admin_client(self.settings) as admin:
            described = await admin.describe_topics(names)
        partitions = sorted(
            TopicPartition(topic["topic"], p["partition"])
            for topic in described
            if topic["error_code"] == 0
            for p in topic["partitions"]
        )
        if partitions != self._partitions:
            self._consumer.assign(partitions)
            self._consumer.pause(*partitions)
            self._partitions = partitions

    async def end_offsets(self) -> dict[tuple[str, int], int]:
        ends = await self._consumer.end_offsets(self._partitions)
        return {(tp.topic, tp.partition): offset for tp, offset in ends.items()}

    async def committed(self, group: str) -> dict[tuple[str, int], int]:
        async with admin_client(self.settings) as admin:
            offsets = await admin.list_consumer_group_offsets(group)
        return {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items()}

    async def stage_commits(self, app_id: str) -> dict[str, dict[tuple[str, int], int]]:
        """Committed offsets of every consumer group of the worker's stages (``<app_id>.<stage>``), by stage.

        The groups listed on the broker under ``<app_id>.`` plus the stages the bench knows, so that a stage whose
        group is not there yet (nothing committed) is still read, as empty."""
        prefix = f"{app_id}."
        known = worker_stage_sources(Catalogue.for_prefix(self.settings.topic_prefix))
        async with admin_client(self.settings) as admin:
            try:
                listed = {str(group[0]) for group in await admin.list_consumer_groups()}
            except GroupCoordinatorNotAvailableError:
                listed = set()  # a fresh broker creates __consumer_offsets on first use
            stages = sorted({g.removeprefix(prefix) for g in listed if g.startswith(prefix)} | set(known))
            commits = {}
            for stage in stages:
                offsets = await admin.list_consumer_group_offsets(prefix + stage)
                commits[stage] = {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items()}
        return commits

    async def worker_lags(self, app_id: str) -> tuple[dict[tuple[str, int], int], dict[str, dict[str, int]]]:
        """The end offsets and the ``stage_lags`` of the worker's stage groups against them.

        Commits are read before the end offsets: a stage commits its input only after its outputs are written, so
        an output that exists when its input's commit is read is within the ends read after it and counts as the
        next stage's lag (ends read first could miss it and call a worker idle that is not)."""
        commits = await self.stage_commits(app_id)
        ends = await self.end_offsets()
        sources = worker_stage_sources(Catalogue.for_prefix(self.settings.topic_prefix))
        return ends, stage_lags(ends, commits, sources)

    async def stop(self) -> None:
        await stop_consumer(self._consumer)


class AnswerTracker:
    """Reads filings.outbound and alerts from the start: the LRNs filed and the LRNs whose IE3R01 alert arrived."""

    def __init__(self, settings: Settings, catalogue: Catalogue, schemas: SchemaCatalogue) -> None:
        self.settings = settings
        self.catalogue = catalogue
        self.schemas = schemas
        self.filed: set[str] = set()
        self.registered: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            self.catalogue.filings_outbound.name,
            self.catalogue.alerts.name,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **self.settings.kafka_client_kwargs(),
        )
        await self._consumer.start()
        self._task = asyncio.create_task(self._run(), name="soak:answers")

    async def _run(self) -> None:
        assert self._consumer is not None
        outbound, alerts = self.catalogue.filings_outbound.name, self.catalogue.alerts.name
        while True:
            batch = await self._consumer.getmany(timeout_ms=500, max_records=2000)
            for tp, messages in batch.items():
                for message in messages:
                    if tp.topic == outbound:
                        lrn = dict(message.headers or ()).get("ics2-lrn")
                        if lrn:
                            self.filed.add(lrn.decode())
                    elif tp.topic == alerts:
                        alert = self.schemas.decode(message.value, reader="PartyAlert").record
                        if alert["notification_message_type"] == "IE3R01" and alert["lrn"]:
                            self.registered.add(str(alert["lrn"]))

    def check(self) -> None:
        if self._task is not None and self._task.done():
            self._task.result()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await stop_consumer(self._consumer)


async def send_paced(
    settings: Settings, topic: str, records: Sequence[tuple[bytes, bytes]], rate: float, progress: list[int]
) -> None:
    """Send record ``i`` at ``i / rate`` seconds after the start, never ahead of time; ``progress[0]`` counts sent."""
    producer = AIOKafkaProducer(acks="all", enable_idempotence=True, linger_ms=5, **settings.kafka_client_kwargs())
    await producer.start()
    started = time.monotonic()
    pending = []
    try:
        for index, (key, value) in enumerate(records):
            await asyncio.sleep(max(0.0, started + index / rate - time.monotonic()))
            pending.append(await producer.send(topic, value=value, key=key, headers=[("ics2-record", b"BookingEvent")]))
            progress[0] = index + 1
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


@dataclass
class Run:
    """The moving parts of one soak."""

    settings: Settings
    catalogue: Catalogue
    params: SoakParameters
    worker: Child
    gateway: Child
    probe: OffsetProbe
    samples: list[Sample] = field(default_factory=list)
    started: float = 0.0
    progress: list[int] = field(default_factory=lambda: [0])

    async def sample(self) -> Sample:
        if len(self.samples) % 6 == 0:
            await self.probe.refresh()
        prefix = self.settings.topic_prefix
        gateway_commits = await self.probe.committed(f"{self.settings.app_id}-gateway")
        ends, stages = await self.probe.worker_lags(self.settings.app_id)  # commits before ends: see worker_lags
        gateway_topics = [self.catalogue.filings_outbound.name]
        processes = {}
        for child in (self.worker, self.gateway):
            processes[child.name] = read_proc(child)
        sample = Sample(
            t=time.monotonic() - self.started,
            sent=self.progress[0],
            ends=topic_totals(ends, prefix),
            worker_lag={t.removeprefix(prefix): v for t, v in topic_lag(stages).items()},
            gateway_lag={
                t.removeprefix(prefix): v for t, v in group_lag(ends, gateway_commits, gateway_topics).items()
            },
            rss_kib={name: rss for name, (rss, _) in processes.items()},
            cpu_ticks={name: ticks for name, (_, ticks) in processes.items()},
            stage_lag={stage: sum(per_topic.values()) for stage, per_topic in stages.items()},
        )
        self.samples.append(sample)
        log.info(
            "soak_sample",
            t=round(sample.t, 1),
            sent=sample.sent,
            lag=sum(sample.worker_lag.values()),
            rss_mib=round((sample.rss_kib.get("worker") or 0) / 1024, 1),
        )
        return sample

    async def sample_every(self, interval: float) -> None:
        while True:
            await self.sample()
            await asyncio.sleep(interval)


async def soak(session: BrokerSession, params: SoakParameters, workdir: Path) -> dict[str, Any]:
    """One soak on the given broker: topics, processes, paced load, sampling, checks; the result document."""
    started_at = datetime.now(UTC)
    load_at_start = os.getloadavg()[0]
    prefix = f"soak{uuid.uuid4().hex[:8]}."
    settings = Settings(
        bootstrap_servers=session.bootstrap_servers,
        topic_prefix=prefix,
        app_id=f"{prefix}app",
        state_dir=workdir / "state",
        default_partitions=params.partitions,
    )
    catalogue = Catalogue.for_prefix(prefix)
    schemas = SchemaCatalogue.load()
    per_booking = filings_per_booking()
    records = [
        (b["master"]["mbl_number"].encode(), schemas.encode("BookingEvent", b)) for b in soak_bookings(params.bookings)
    ]
    await apply_topics(settings, catalogue, PARTIES)
    gateway = start_gateway(settings, workdir)
    worker, port = start_worker(settings, workdir, table_store=params.table_store)
    probe = OffsetProbe(settings)
    tracker = AnswerTracker(settings, catalogue, schemas)
    run = Run(settings, catalogue, params, worker, gateway, probe)
    sampler: asyncio.Task[None] | None = None
    try:
        await wait_healthy(worker, port)
        await probe.start()
        await tracker.start()
        run.started = time.monotonic()
        sampler = asyncio.create_task(run.sample_every(params.sample_interval_s), name="soak:sampler")
        log.info("soak_sending", bookings=params.bookings, rate=params.rate)
        await send_paced(settings, catalogue.bookings.name, records, params.rate, run.progress)
        sending_ended = time.monotonic() - run.started
        expected = params.bookings * per_booking
        deadline = time.monotonic() + params.drain_timeout_s
        while len(tracker.registered) < expected or len(tracker.filed) < expected:
            tracker.check()
            worker.require_alive()
            gateway.require_alive()
            if sampler.done():
                sampler.result()
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(1.0)
        drained = time.monotonic() - run.started
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
        while True:
            last = await run.sample()
            if not sum(last.worker_lag.values()) + sum(last.gateway_lag.values()) or time.monotonic() >= deadline:
                break
            await asyncio.sleep(params.sample_interval_s)
        settled = time.monotonic() - run.started
        peaks = {child.name: child.peak_rss_kib() for child in (worker, gateway)}
    finally:
        if sampler is not None and not sampler.done():
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
        await tracker.stop()
        await probe.stop()
        worker.stop()
        gateway.stop()
        if session.external:
            await delete_topics(settings, await list_topics(settings, prefix), wait=False)
    figures = summarise(
        run.samples,
        sending_started=0.0,
        sending_ended=sending_ended,
        bookings_topic=catalogue.bookings.name.removeprefix(prefix),
        filings_topic=catalogue.filings_outbound.name.removeprefix(prefix),
        dead_letters_topic=catalogue.dead_letters.name.removeprefix(prefix),
        alerts_topic=catalogue.alerts.name.removeprefix(prefix),
    )
    unanswered = tracker.filed - tracker.registered
    figures["answers"] = {
        "expected_filings": expected,
        "filed": len(tracker.filed),
        "registered": len(tracker.registered & tracker.filed),
        "unanswered": len(unanswered),
        "outbound_records": figures["records_by_topic"].get(catalogue.filings_outbound.name.removeprefix(prefix), 0),
        "duplicate_outbound_records": figures["records_by_topic"].get(
            catalogue.filings_outbound.name.removeprefix(prefix), 0
        )
        - len(tracker.filed),
        "unanswered_examples": sorted(unanswered)[:5],
        "all_registered": len(tracker.filed) == expected and not unanswered,
    }
    figures["sending_s"] = round(sending_ended, 2)
    figures["drained_after_s"] = round(drained, 2)
    figures["settled_after_s"] = round(settled, 2)
    figures["vm_hwm_kib"] = peaks
    return {
        "format": SOAK_FORMAT,
        "started_at": started_at.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "assumption": (
            "a large NVOCC books ~2,000 EU-bound ocean consolidations a day; each is the seed co-load under its own"
            f" MBL and HBLs ({per_booking} filings of ours each, every one answered IE3R01 by the simulator);"
            " the day is compressed to the given rate"
        ),
        "parameters": {**asdict(params), "filings_per_booking": per_booking, "topic_prefix": prefix},
        "environment": environment(
            session.kafka_version, "external" if session.external else "local (LocalBroker)", load_at_start
        ),
        "figures": figures,
        "samples": [asdict(s) for s in run.samples],
    }


@contextlib.contextmanager
def soak_broker(workdir: Path, bootstrap_servers: str | None) -> Iterator[BrokerSession]:
    """The broker at ``--bootstrap-servers`` when given, else the bench's choice (ICS2_BOOTSTRAP_SERVERS or our own)."""
    if bootstrap_servers:
        yield BrokerSession(bootstrap_servers, "unknown (external broker)", external=True)
        return
    with broker_session(workdir) as session:
        yield session


def write_soak(document: Mapping[str, Any], directory: Path = RESULTS_DIR) -> Path:
    """``soak-<UTC>.json`` beside the bench's results (``latest.json`` stays the bench's)."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.fromisoformat(document["started_at"]).strftime("%Y%m%dT%H%M%SZ")
    path = directory / f"soak-{stamp}.json"
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return path


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def soak_table(document: Mapping[str, Any]) -> Table:
    """The soak's figures on one screen."""
    figures, params = document["figures"], document["parameters"]
    table = Table(
        title="ICS2 soak: one worker + customs simulator",
        caption=(
            f"{params['bookings']} bookings at {params['rate']:g}/s, {params['partitions']} partitions, "
            f"steady window {figures['steady_window_s'][0]:.0f}-{figures['steady_window_s'][1]:.0f} s"
        ),
    )
    table.add_column("measure")
    table.add_column("value", justify="right")
    throughput, lag, answers = figures["throughput"], figures["lag"], figures["answers"]
    table.add_row("offered bookings/s", _fmt(throughput["offered_bookings_per_s"], 2))
    table.add_row("held bookings/s (worker commits)", _fmt(throughput["bookings_per_s"], 2))
    table.add_row("held filings/s (filings.outbound)", _fmt(throughput["filings_per_s"], 2))
    table.add_row("held alerts/s (ics2.alerts)", _fmt(throughput["alerts_per_s"], 2))
    table.add_row("worker lag max / final (records)", f"{lag['max_total']:,} / {lag['final_total']:,}")
    table.add_row("worker lag growth, steady window (records/s)", _fmt(lag["growth_per_s"], 2))
    for topic, value in sorted(lag["max_by_topic"].items(), key=lambda item: -item[1])[:3]:
        table.add_row(f"  max lag on {topic}", f"{value:,}")
    table.add_row("gateway lag max / final (records)", f"{lag['gateway_max_total']:,} / {lag['gateway_final_total']:,}")
    for name, memory in figures["memory"].items():
        if memory is None:
            continue
        table.add_row(
            f"{name} RSS 25% / 50% / 100% / peak (MiB)",
            " / ".join(_fmt(memory[key] / 1024) for key in ("at_25_kib", "at_50_kib", "at_100_kib", "peak_kib")),
        )
        table.add_row(f"{name} RSS growth 50%->100% (level-off check)", f"{memory['late_growth_kib'] / 1024:+,.1f} MiB")
        table.add_row(
            f"{name} RSS growth 25%->100%", f"{memory['growth_kib'] / 1024:+,.1f} MiB ({memory['growth_pct']:+.1f}%)"
        )
    for name, value in figures["cpu_percent_steady"].items():
        table.add_row(f"{name} CPU, steady window (% of a core)", _fmt(value))
    table.add_row(
        "filings registered (IE3R01 alert)",
        f"{answers['registered']:,} of {answers['expected_filings']:,}" + ("" if answers["all_registered"] else " !"),
    )
    table.add_row("dead letters", f"{figures['dead_letters']:,}")
    table.add_row(
        "sending / all registered / lag 0 after (s)",
        f"{figures['sending_s']:.0f} / {figures['drained_after_s']:.0f} / {figures['settled_after_s']:.0f}",
    )
    table.add_row("duplicate outbound records", f"{answers['duplicate_outbound_records']:,}")
    return table


def run_soak(params: SoakParameters, bootstrap_servers: str | None) -> dict[str, Any]:
    """Broker, soak, and every process stopped on the way out."""
    with tempfile.TemporaryDirectory(prefix="ics2-soak-") as tmp, soak_broker(Path(tmp), bootstrap_servers) as session:
        return asyncio.run(soak(session, params, Path(tmp)))


@click.command()
@click.option("--bookings", type=click.IntRange(2, 200_000), default=1000, show_default=True,
              help="Consolidations pushed (2,000 = a large forwarder's day).")  # fmt: skip
@click.option("--rate", type=click.FloatRange(0.01, 1000.0), default=5.0, show_default=True,
              help="Bookings per second (the day compressed in time).")  # fmt: skip
@click.option("--sample-interval", type=click.FloatRange(0.5, 60.0), default=5.0, show_default=True)
@click.option("--partitions", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option("--drain-timeout", type=click.FloatRange(10.0, 7200.0), default=900.0, show_default=True,
              help="Seconds to wait, after the last booking, for every answer.")  # fmt: skip
@click.option("--bootstrap-servers", help="Use this broker (topics deleted afterwards) instead of starting one.")
@click.option("--table-store", type=click.Choice(["rocksdb", "memory"]), default="rocksdb", show_default=True,
              help="Where the worker keeps its tables (ICS2_TABLE_STORE), to compare RSS.")  # fmt: skip
@click.option("--results-dir", type=click.Path(file_okay=False, path_type=Path), default=RESULTS_DIR, show_default=True)
def main(
    bookings: int,
    rate: float,
    sample_interval: float,
    partitions: int,
    drain_timeout: float,
    bootstrap_servers: str | None,
    table_store: str,
    results_dir: Path,
) -> None:
    """Push a day of a large forwarder's bookings through a worker and the customs simulator; report what held."""
    configure_logging("auto", level="INFO")
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    try:
        params = SoakParameters(bookings, rate, sample_interval, partitions, drain_timeout, table_store)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    try:
        document = run_soak(params, bootstrap_servers)
    except ICS2StreamsError as exc:
        raise click.ClickException(str(exc)) from exc
    path = write_soak(document, results_dir)
    console = Console()
    console.print(soak_table(document))
    console.print(f"results: {path}")
    figures = document["figures"]
    if not figures["answers"]["all_registered"] or figures["dead_letters"]:
        raise click.ClickException("not every filing was registered, or records were dead-lettered")


if __name__ == "__main__":
    main()
