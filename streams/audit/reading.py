"""Reading the audit trail back: from the Kafka audit topic or from archives, into a verified replay report.

The Kafka reader has no consumer group: it assigns the audit topic's partitions itself, reads from the start to the
end offsets it saw when it began, and stops. It commits nothing, so the live consumers never notice it, and two
replays of the same records give the same report byte for byte. ``ics2 replay``, ``ics2 archive`` and the demo
all read through here.

A replay that checks completeness (``streams.audit.completeness``) also reads the recorded topics (each record's
offset and value digest, ``read_sources``), the positions the worker's group committed on them and on
``audit-entries`` (``committed_positions``), and the entries still waiting there. The order is what keeps a replay of
a running worker free of false findings: the positions first, then the trail's ends, then the topics' ends, so that
every record below a position was chained before the trail's end or waits on ``audit-entries``, and every source a
chained record names was written before the topics' ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from streams.admin import admin_client
from streams.audit.archive import read_archives
from streams.audit.completeness import Reach, SourcePartition, Sources, Where
from streams.audit.decoding import BatchDecoder
from streams.audit.entries import CHAIN_STAGE, EntryDeriver, collector_stages, split_source
from streams.audit.parallel import worth_forking
from streams.audit.raw import (
    Key,
    SharedReplay,
    ShareReplay,
    collection_paused,
    not_an_audit_record,
    report_of,
)
from streams.audit.replay import ReplayFilter, build_report, comparable_state, report_json
from streams.audit.report import render_html
from streams.audit.signing import Keyring, key_path, load_public_key
from streams.client import start_client, stop_consumer
from streams.contracts.avro import SchemaCatalogue
from streams.errors import BrokerUnavailable, DecodeError, NotFound, PlatformError
from streams.settings import Settings
from streams.topics import Catalogue

log = structlog.get_logger(__name__)

Progressed = Callable[[int, int], None]
"""Called with (records read so far, records to read)."""


#: Bytes a fetch may bring per partition (aiokafka's default is 1 MiB): fewer, larger fetches for a whole trail.
FETCH_BYTES_PER_PARTITION = 8 * 1024 * 1024


@dataclass(repr=False)
class TrailRead:
    """The audit records read, in stored order, with the offsets they cover and what could not be decoded."""

    topic: str
    records: list[dict[str, Any]] = field(default_factory=list)
    offsets: dict[int, tuple[int, int]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        """Short: ``asyncio.run`` formats its main task, result included, when it puts back the SIGINT handler
        (Python 3.11), and the dataclass repr of a whole trail took seconds."""
        return f"TrailRead({self.topic!r}, {len(self.records)} records, {len(self.problems)} problems)"


Messages = list[tuple[int, bytes]]
"""One partition's messages as read: (offset, value)."""


def decode_messages(
    topic: str, partition: int, messages: Messages, decoder: BatchDecoder, schemas: SchemaCatalogue
) -> tuple[list[dict[str, Any]], list[str]]:
    """The records of one partition's messages in one container pass, else one by one (each bad one a problem)."""
    records = decoder.decode([value for _, value in messages])
    if records is not None:
        return records, []
    records, problems = [], []
    for offset, value in messages:
        try:
            records.append(schemas.decode(value, reader="AuditRecord").record)
        except DecodeError as exc:
            problems.append(not_an_audit_record(topic, (partition, offset), exc))
    return records, problems


async def read_trail(
    settings: Settings,
    start: Mapping[int, int] | None = None,
    progressed: Progressed | None = None,
    schemas: SchemaCatalogue | None = None,
) -> TrailRead:
    """Every ``AuditRecord`` of the audit topic from ``start`` (default: the beginning) up to the current end."""
    schemas = schemas or SchemaCatalogue.load()
    decoder = BatchDecoder(schemas)
    read = TrailRead(Catalogue.for_prefix(settings.topic_prefix).audit.name)
    by_partition: dict[int, list[dict[str, Any]]] = {}

    def decoded(partition: int, messages: Messages) -> None:
        records, problems = decode_messages(read.topic, partition, messages, decoder, schemas)
        by_partition.setdefault(partition, []).extend(records)
        read.problems.extend(problems)

    read.offsets = await fetch_trail(settings, decoded, start, progressed)
    read.records = [r for p in sorted(read.offsets) for r in by_partition.get(p, [])]
    return read


async def fetch_trail(
    settings: Settings,
    fetched: Callable[[int, Messages], None],
    start: Mapping[int, int] | None = None,
    progressed: Progressed | None = None,
    begun: Callable[[int], None] | None = None,
) -> dict[int, tuple[int, int]]:
    """Hands each fetch of the audit topic from ``start`` (default: the beginning) up to the current end to
    ``fetched`` (partition, messages in offset order); returns the offsets read per partition. ``begun`` is told
    how many messages there are to read before the first fetch."""
    topic = Catalogue.for_prefix(settings.topic_prefix).audit.name
    consumer = AIOKafkaConsumer(
        topic,
        enable_auto_commit=False,
        group_id=None,
        max_partition_fetch_bytes=FETCH_BYTES_PER_PARTITION,
        **settings.kafka_client_kwargs(),
    )
    await start_client(consumer, settings)
    offsets: dict[int, tuple[int, int]] = {}
    try:
        tps = sorted(await _assignment(consumer), key=lambda tp: tp.partition)
        if not tps:
            raise NotFound(
                f"topic {topic} does not exist on {settings.bootstrap_servers}",
                hint="check --topic-prefix, or create the topics with ics2 topics apply",
            )
        beginnings = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        firsts = {tp: max(beginnings[tp], (start or {}).get(tp.partition, 0)) for tp in tps}
        total = sum(max(ends[tp] - firsts[tp], 0) for tp in tps)
        for tp in tps:
            offsets[tp.partition] = (firsts[tp], max(ends[tp], firsts[tp]))
            consumer.seek(tp, firsts[tp])
        if begun is not None:
            begun(total)
        done = 0
        pending = {tp for tp in tps if firsts[tp] < ends[tp]}
        while pending:
            batch = await consumer.getmany(*pending, timeout_ms=500)
            for tp, messages in batch.items():
                end = ends[tp]
                wanted = [(m.offset, m.value) for m in messages if m.offset < end]
                done += len(wanted)
                fetched(tp.partition, wanted)
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
            if progressed is not None:
                progressed(done, total)
    finally:
        await stop_consumer(consumer)
    return offsets


async def _assignment(consumer: AIOKafkaConsumer, timeout: float = 15.0) -> set[TopicPartition]:
    """Without a group the consumer assigns itself every partition of its topic once it has the metadata."""
    deadline = time.monotonic() + timeout
    while not consumer.assignment() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return set(consumer.assignment())


def stage_group(settings: Settings, stage: str) -> str:
    """The consumer group of a worker's stage: each stage has its own (``streams.pipeline.engine``)."""
    return f"{settings.app_id}.{stage}"


def collector_group(settings: Settings, topic: str) -> str:
    """The consumer group whose position committed on ``topic`` says how far its audit collector has taken it."""
    catalogue = Catalogue.for_prefix(settings.topic_prefix)
    stage = next(name for name, spec in collector_stages(catalogue).items() if spec.name == topic)
    return stage_group(settings, stage)


def chain_group(settings: Settings) -> str:
    """The consumer group whose position committed on ``audit-entries`` says how far the chain stage has chained."""
    return stage_group(settings, CHAIN_STAGE)


COORDINATOR_ATTEMPTS = 20
"""Tries at the group's offsets while the coordinator is not ready (a broker that has just started), 0.5 s apart."""


async def _group_offsets(admin: AIOKafkaAdminClient, settings: Settings, group_id: str) -> dict[TopicPartition, int]:
    for attempt in range(COORDINATOR_ATTEMPTS):
        try:
            offsets = await admin.list_consumer_group_offsets(group_id)
            return {tp: meta.offset for tp, meta in offsets.items()}
        except KafkaError as exc:
            if not exc.retriable:
                raise PlatformError(
                    f"cannot read the positions committed by consumer group {group_id}: {exc}",
                    hint="check the group's DESCRIBE permission, or give --completeness end (to the topics' ends)",
                ) from exc
            if attempt == COORDINATOR_ATTEMPTS - 1:
                raise BrokerUnavailable(f"{settings.bootstrap_servers}: no coordinator for group {group_id}") from exc
            await asyncio.sleep(0.5)
    raise AssertionError("unreachable")


async def committed_positions(
    settings: Settings, group_id: str, topics: Iterable[str], admin: AIOKafkaAdminClient | None = None
) -> dict[Where, int]:
    """The positions ``group_id`` committed on the partitions of ``topics`` (a partition without one is absent),
    asked with ``admin`` when given."""
    if admin is None:
        async with admin_client(settings) as started:
            return await committed_positions(settings, group_id, topics, started)
    wanted = set(topics)
    offsets = await _group_offsets(admin, settings, group_id)
    return {(tp.topic, tp.partition): offset for tp, offset in offsets.items() if tp.topic in wanted and offset >= 0}


@dataclass(frozen=True)
class Positions:
    """Taken before the trail is read: the partitions of the recorded topics and of ``audit-entries``, and the
    positions the worker's group committed on them (the collectors' and the chain stage's)."""

    partitions: dict[str, list[int]]
    collected: dict[Where, int]
    chained: dict[Where, int]
    group: str


async def worker_positions(settings: Settings) -> Positions:
    """The worker's committed positions on the recorded topics and on ``audit-entries``, and their partitions."""
    catalogue = Catalogue.for_prefix(settings.topic_prefix)
    recorded = EntryDeriver(SchemaCatalogue.load(), catalogue).recorded_topics
    entries = catalogue.audit_entries.name
    collected: dict[Where, int] = {}
    async with admin_client(settings) as admin:
        for topic in recorded:
            collected.update(await committed_positions(settings, collector_group(settings, topic), [topic], admin))
        chained = await committed_positions(settings, chain_group(settings), [entries], admin)
        described = await admin.describe_topics(None)  # every topic: naming some could create them
    wanted = {*recorded, entries}
    partitions = {
        t["topic"]: sorted(p["partition"] for p in t["partitions"])
        for t in described
        if t["topic"] in wanted and t["error_code"] == 0
    }
    named = ", ".join(sorted({collector_group(settings, t) for t in recorded}))
    return Positions(partitions, collected, chained, named)


async def _read_partitions(
    settings: Settings,
    partitions: Mapping[str, Sequence[int]],
    fetched: Callable[[TopicPartition, list[Any]], None],
    starts: Mapping[Where, int] | None = None,
) -> dict[Where, tuple[int, int]]:
    """Hands every record of ``partitions`` from ``starts`` (default: each partition's start) to its end as read
    now, partition by partition in offset order, to ``fetched``; returns each partition's (start, end)."""
    tps = [TopicPartition(t, p) for t in sorted(partitions) for p in partitions[t]]
    if not tps:
        return {}
    consumer = AIOKafkaConsumer(
        enable_auto_commit=False,
        group_id=None,
        isolation_level="read_uncommitted",  # as the stages read: a record of an aborted transaction is chained too
        max_partition_fetch_bytes=FETCH_BYTES_PER_PARTITION,
        **settings.kafka_client_kwargs(),
    )
    await start_client(consumer, settings)
    try:
        consumer.assign(tps)
        beginnings = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            consumer.seek(tp, max(beginnings[tp], (starts or {}).get((tp.topic, tp.partition), 0)))
        pending = {tp for tp in tps if await consumer.position(tp) < ends[tp]}
        while pending:
            batch = await consumer.getmany(*pending, timeout_ms=500)
            for tp, messages in batch.items():
                end = ends[tp]
                fetched(tp, [m for m in messages if m.offset < end])
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
    finally:
        await stop_consumer(consumer)
    return {(tp.topic, tp.partition): (beginnings[tp], ends[tp]) for tp in tps}


async def read_sources(
    settings: Settings,
    reach: Reach,
    positions: Positions,
    ready: asyncio.Event | None = None,
    schemas: SchemaCatalogue | None = None,
) -> Sources:
    """The recorded topics of ``settings``' deployment as ``streams.audit.completeness.check`` needs them: every
    record's offset and value digest from each partition's start to its end, each partition's bound (``reach``:
    the committed position, or the end), and the sources of the entries still waiting on ``audit-entries``.

    Waits for ``ready`` (set once the trail's ends are taken) before taking any end, so that a record chained in the
    trail read is never beyond the end read here and an entry chained after ``positions`` is in the trail read.
    """
    schemas = schemas or SchemaCatalogue.load()
    catalogue = Catalogue.for_prefix(settings.topic_prefix)
    recorded = EntryDeriver(schemas, catalogue).recorded_topics
    entries_topic = catalogue.audit_entries.name
    if ready is not None:
        await ready.wait()
    sources = Sources(reach, positions.group if reach is Reach.COMMITTED else None, topics=recorded)
    read: dict[Where, SourcePartition] = {}

    def waiting(tp: TopicPartition, messages: list[Any]) -> None:
        for message in messages:
            with contextlib.suppress(DecodeError, ValueError, KeyError, TypeError):
                topic, partition, offset = split_source(
                    schemas.decode(message.value, reader="AuditEntry").record["source"]
                )
                sources.pending.setdefault((topic, partition), set()).add(offset)

    def recorded_records(tp: TopicPartition, messages: list[Any]) -> None:
        part = read.get((tp.topic, tp.partition))
        if part is None:
            part = read[(tp.topic, tp.partition)] = SourcePartition(tp.topic, tp.partition, 0, 0, 0)
        offsets, digests, sha256 = part.offsets, part.digests, hashlib.sha256
        for message in messages:
            offsets.append(message.offset)
            digests += sha256(message.value or b"").digest()

    if entries_topic in positions.partitions:
        await _read_partitions(
            settings, {entries_topic: positions.partitions[entries_topic]}, waiting, positions.chained
        )
    ranges = await _read_partitions(
        settings, {t: positions.partitions[t] for t in recorded if t in positions.partitions}, recorded_records
    )
    for where, (start, end) in sorted(ranges.items()):
        part = read.get(where) or SourcePartition(where[0], where[1], 0, 0, 0)
        committed = positions.collected.get(where, start) if reach is Reach.COMMITTED else end
        part.start, part.end, part.bound = start, end, max(start, min(committed, end))
        sources.partitions[where] = part
        if reach is Reach.COMMITTED and where not in positions.collected and end > start:
            sources.uncommitted.append(where)
    return sources


def _progress_bar(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]replay[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


async def replay_trail(
    settings: Settings,
    filters: ReplayFilter | None = None,
    keys: Keyring | None = None,
    accept_unsigned: bool = False,
    workers: int | None = None,
    progressed: Progressed | None = None,
    reach: Reach = Reach.OFF,
    sources_of: Settings | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """``replay_raw`` of the audit topic, the messages shared out as they are fetched (``SharedReplay``): the
    workers, forked before the first fetch, decode while the reader waits for the next one.

    Unless ``reach`` is off, completeness is checked against the recorded topics of ``sources_of`` (default: the
    same deployment), read while the trail is: first the worker's positions, then the trail and the topics.
    """
    filters = filters or ReplayFilter()
    if reach is Reach.OFF:
        parts, problems = await share_trail(settings, filters, keys, accept_unsigned, workers, progressed)
        return report_of(parts, problems, filters, keys)
    deployment = sources_of or settings
    positions = await worker_positions(deployment)
    ready = asyncio.Event()
    reading = asyncio.create_task(read_sources(deployment, reach, positions, ready))
    try:
        parts, problems = await share_trail(
            settings, filters, keys, accept_unsigned, workers, progressed, claims=True, ready=ready
        )
        sources = await reading
    finally:
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reading
    return report_of(parts, problems, filters, keys, sources)


async def share_trail(
    settings: Settings,
    filters: ReplayFilter | None,
    keys: Keyring | None = None,
    accept_unsigned: bool = False,
    workers: int | None = None,
    progressed: Progressed | None = None,
    schemas: SchemaCatalogue | None = None,
    claims: bool = False,
    ready: asyncio.Event | None = None,
) -> tuple[list[ShareReplay], list[tuple[Key, str]]]:
    """Each share's part of ``replay_trail`` and the problems found while sharing out (``filters`` None: the chains
    verified, no histories built; ``claims``: the sources the records name collected). ``ready`` is set once the
    trail's ends are taken and the workers forked."""
    schemas = schemas or SchemaCatalogue.load()
    topic = Catalogue.for_prefix(settings.topic_prefix).audit.name
    shared: list[SharedReplay] = []

    def begun(total: int) -> None:
        forks = worth_forking(total, workers)
        shared.append(SharedReplay(topic, schemas, keys, accept_unsigned, filters, forks, claims))
        if ready is not None:
            ready.set()

    with collection_paused():
        try:
            await fetch_trail(settings, lambda p, messages: shared[0].fetched(p, messages), None, progressed, begun)
            return shared[0].finish()
        finally:
            for each in shared:
                each.close()


def _replay_trail(
    settings: Settings,
    progress: bool,
    filters: ReplayFilter | None,
    keys: Keyring | None,
    accept_unsigned: bool,
    workers: int | None,
    reach: Reach,
) -> tuple[dict[str, Any], list[str]]:
    """``replay_trail``, with a progress bar when asked and on a terminal."""
    console = Console(stderr=True)
    if not (progress and console.is_terminal):
        return asyncio.run(replay_trail(settings, filters, keys, accept_unsigned, workers, None, reach))
    with _progress_bar(console) as bar:
        task = bar.add_task("replay", total=None)

        def progressed(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        return asyncio.run(replay_trail(settings, filters, keys, accept_unsigned, workers, progressed, reach))


async def sources_now(settings: Settings, reach: Reach) -> Sources:
    """The recorded topics and the worker's positions as they are now (for a trail read before, e.g. archives)."""
    return await read_sources(settings, reach, await worker_positions(settings))


@dataclass
class Replay:
    """A report and the problems found outside the chains (unreadable records, archive files that changed)."""

    report: dict[str, Any]
    problems: list[str]

    @property
    def intact(self) -> bool:
        return self.report["integrity"]["intact"] and not self.problems


def trusted_keys(settings: Settings, public_keys: Sequence[Path] = (), key_ids: Sequence[str] = ()) -> Keyring | None:
    """The keys a replay verifies signatures with: the public key files given, else the public half of this
    installation's signing key if there is one; ``key_ids`` keeps only those. None when there is no key at all."""
    if public_keys:
        keys = Keyring.of(load_public_key(p) for p in public_keys)
    elif key_path(settings).exists():
        keys = Keyring.of([load_public_key(key_path(settings))])
    else:
        keys = Keyring()
    keys = keys.only(key_ids) if key_ids else keys
    return keys if keys.keys else None


def replay(
    settings: Settings,
    filters: ReplayFilter | None = None,
    archives: Sequence[Path] = (),
    progress: bool = False,
    keys: Keyring | None = None,
    accept_unsigned: bool = False,
    workers: int | None = None,
    reach: Reach | None = None,
) -> Replay:
    """Replay from archives when given, else from the Kafka audit topic; the demo and the tests call this too.

    Without ``keys`` signatures cannot be checked, which is a problem of the replay: it is not intact. The chains
    are verified in ``workers`` processes (default: one per CPU); from Kafka, they decode the messages too.
    Completeness is checked up to ``reach``: by default to the worker's committed positions from Kafka, and not at
    all from archives (whose topics may be long gone; when asked, against the topics of ``settings``).
    """
    if archives:
        reach = reach or Reach.OFF
        with collection_paused():
            content = read_archives(archives)
            sources = None if reach is Reach.OFF else asyncio.run(sources_now(settings, reach))
            report = build_report(content.records, filters, content.heads, keys, accept_unsigned, workers, sources)
        problems = content.problems
    else:
        reach = reach or Reach.COMMITTED
        report, problems = _replay_trail(settings, progress, filters, keys, accept_unsigned, workers, reach)
    if keys is None:
        problems = [*problems, "no public key to verify the records' signatures with: give --public-key"]
    records_read = report["integrity"]["records"]
    log.info("replayed", records=records_read, consolidations=len(report["consolidations"]), problems=len(problems))
    return Replay(report, problems)


def write_outputs(report: Mapping[str, Any], json_path: Path | None, html_path: Path | None) -> None:
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(report_json(report), encoding="utf-8")
    if html_path is not None:
        html_path.parent.mkdir(parents=True, exist_ok=True)
        html_path.write_text(render_html(report), encoding="utf-8")


def report_when_caught_up(
    settings: Settings, live: Mapping[str, Mapping[str, Any]], html_path: Path, timeout: float = 30.0
) -> Replay:
    """Replay once the trail has caught up with the live ENS states and holds every record the worker has taken (or
    at ``timeout``), write HTML and JSON beside.

    The demo calls this while its worker still runs, so the report shows the story up to its last answer.
    """
    deadline = time.monotonic() + timeout
    keys = trusted_keys(settings)
    while True:
        result = replay(settings, keys=keys)
        rebuilt = {c["mbl"]: comparable_state(c["ens_state"]) for c in result.report["consolidations"]}
        caught_up = all(rebuilt.get(m) == comparable_state(s) for m, s in live.items())
        complete = not result.report["integrity"]["completeness"].get("lacks")
        if (caught_up and complete) or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    write_outputs(result.report, html_path.with_suffix(".json"), html_path)
    return result
