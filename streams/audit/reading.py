"""Reading the audit trail back: from the Kafka audit topic or from archives, into a verified replay report.

The Kafka reader has no consumer group: it assigns the audit topic's partitions itself, reads from the start to the
end offsets it saw when it began, and stops. It commits nothing, so the live consumers never notice it, and two
replays of the same records give the same report byte for byte. ``ics2 replay``, ``ics2 archive`` and the demo
all read through here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from streams.audit.archive import read_archives
from streams.audit.decoding import BatchDecoder
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
from streams.errors import DecodeError, NotFound
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
) -> tuple[dict[str, Any], list[str]]:
    """``replay_raw`` of the audit topic, the messages shared out as they are fetched (``SharedReplay``): the
    workers, forked before the first fetch, decode while the reader waits for the next one."""
    filters = filters or ReplayFilter()
    parts, problems = await share_trail(settings, filters, keys, accept_unsigned, workers, progressed)
    return report_of(parts, problems, filters, keys)


async def share_trail(
    settings: Settings,
    filters: ReplayFilter | None,
    keys: Keyring | None = None,
    accept_unsigned: bool = False,
    workers: int | None = None,
    progressed: Progressed | None = None,
    schemas: SchemaCatalogue | None = None,
) -> tuple[list[ShareReplay], list[tuple[Key, str]]]:
    """Each share's part of ``replay_trail`` and the problems found while sharing out (``filters`` None: the chains
    verified, no histories built)."""
    schemas = schemas or SchemaCatalogue.load()
    topic = Catalogue.for_prefix(settings.topic_prefix).audit.name
    shared: list[SharedReplay] = []

    def begun(total: int) -> None:
        shared.append(SharedReplay(topic, schemas, keys, accept_unsigned, filters, worth_forking(total, workers)))

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
) -> tuple[dict[str, Any], list[str]]:
    """``replay_trail``, with a progress bar when asked and on a terminal."""
    console = Console(stderr=True)
    if not (progress and console.is_terminal):
        return asyncio.run(replay_trail(settings, filters, keys, accept_unsigned, workers))
    with _progress_bar(console) as bar:
        task = bar.add_task("replay", total=None)

        def progressed(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        return asyncio.run(replay_trail(settings, filters, keys, accept_unsigned, workers, progressed))


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
) -> Replay:
    """Replay from archives when given, else from the Kafka audit topic; the demo and the tests call this too.

    Without ``keys`` signatures cannot be checked, which is a problem of the replay: it is not intact. The chains
    are verified in ``workers`` processes (default: one per CPU); from Kafka, they decode the messages too.
    """
    if archives:
        with collection_paused():
            content = read_archives(archives)
            report = build_report(content.records, filters, content.heads, keys, accept_unsigned, workers)
        problems = content.problems
    else:
        report, problems = _replay_trail(settings, progress, filters, keys, accept_unsigned, workers)
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
    """Replay once the trail has caught up with the live ENS states (or at ``timeout``), write HTML and JSON beside.

    The demo calls this while its worker still runs, so the report shows the story up to its last answer.
    """
    deadline = time.monotonic() + timeout
    keys = trusted_keys(settings)
    while True:
        result = replay(settings, keys=keys)
        rebuilt = {c["mbl"]: comparable_state(c["ens_state"]) for c in result.report["consolidations"]}
        if all(rebuilt.get(m) == comparable_state(s) for m, s in live.items()) or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    write_outputs(result.report, html_path.with_suffix(".json"), html_path)
    return result
