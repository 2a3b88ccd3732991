"""``ics2 replay``: rebuild history from the audit trail (Kafka or archives), verify it, write JSON and HTML.

The Kafka reader has no consumer group: it assigns the audit topic's partitions itself, reads from the start to the
end offsets it saw when it began, and stops. It commits nothing, so the live consumers never notice it, and two
replays of the same records give the same report byte for byte.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from streams.audit.archive import read_archives
from streams.audit.replay import ReplayFilter, build_report, comparable_state, report_json
from streams.audit.report import render_html
from streams.audit.signing import Keyring, key_path, load_public_key
from streams.audit.trail import ChainHead
from streams.cli.options import connection_options, json_option, settings_from
from streams.cli.output import quiet_kafka_client
from streams.client import start_client, stop_consumer
from streams.contracts.avro import SchemaCatalogue
from streams.errors import DecodeError, InputError, NotFound
from streams.logs import configure_logging
from streams.settings import Settings
from streams.topics import Catalogue

log = structlog.get_logger(__name__)

Progressed = Callable[[int, int], None]
"""Called with (records read so far, records to read)."""


@dataclass
class TrailRead:
    """The audit records read, in stored order, with the offsets they cover and what could not be decoded."""

    topic: str
    records: list[dict[str, Any]] = field(default_factory=list)
    offsets: dict[int, tuple[int, int]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


async def read_trail(
    settings: Settings,
    start: Mapping[int, int] | None = None,
    progressed: Progressed | None = None,
    schemas: SchemaCatalogue | None = None,
) -> TrailRead:
    """Every ``AuditRecord`` of the audit topic from ``start`` (default: the beginning) up to the current end."""
    schemas = schemas or SchemaCatalogue.load()
    topic = Catalogue.for_prefix(settings.topic_prefix).audit.name
    consumer = AIOKafkaConsumer(topic, enable_auto_commit=False, group_id=None, **settings.kafka_client_kwargs())
    await start_client(consumer, settings)
    read = TrailRead(topic)
    try:
        tps = sorted(await _assignment(consumer), key=lambda tp: tp.partition)
        if not tps:
            raise NotFound(
                f"topic {topic} does not exist on {settings.bootstrap_servers}",
                hint="check --topic-prefix, or create the topics with ics2 topics apply",
            )
        partitions = [tp.partition for tp in tps]
        beginnings = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        firsts = {tp: max(beginnings[tp], (start or {}).get(tp.partition, 0)) for tp in tps}
        total = sum(max(ends[tp] - firsts[tp], 0) for tp in tps)
        by_partition: dict[int, list[dict[str, Any]]] = {tp.partition: [] for tp in tps}
        for tp in tps:
            read.offsets[tp.partition] = (firsts[tp], max(ends[tp], firsts[tp]))
            consumer.seek(tp, firsts[tp])
        done = 0
        pending = {tp for tp in tps if firsts[tp] < ends[tp]}
        while pending:
            batch = await consumer.getmany(*pending, timeout_ms=500)
            for tp, messages in batch.items():
                for message in messages:
                    if message.offset >= ends[tp]:
                        continue
                    done += 1
                    try:
                        by_partition[tp.partition].append(schemas.decode(message.value, reader="AuditRecord").record)
                    except DecodeError as exc:
                        read.problems.append(f"{topic}:{tp.partition}:{message.offset}: not an AuditRecord: {exc}")
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
            if progressed is not None:
                progressed(done, total)
        read.records = [r for p in partitions for r in by_partition[p]]
    finally:
        await stop_consumer(consumer)
    return read


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
) -> Replay:
    """Replay from archives when given, else from the Kafka audit topic; the demo and the tests call this too.

    Without ``keys`` signatures cannot be checked, which is a problem of the replay: it is not intact.
    """
    heads: dict[str, ChainHead] = {}
    if archives:
        content = read_archives(archives)
        records, heads, problems = content.records, content.heads, content.problems
    else:
        console = Console(stderr=True)
        if progress and console.is_terminal:
            with _progress_bar(console) as bar:
                task = bar.add_task("replay", total=None)
                read = asyncio.run(read_trail(settings, progressed=lambda n, t: bar.update(task, completed=n, total=t)))
        else:
            read = asyncio.run(read_trail(settings))
        records, problems = read.records, read.problems
    if keys is None:
        problems = [*problems, "no public key to verify the records' signatures with: give --public-key"]
    report = build_report(records, filters, heads, keys, accept_unsigned)
    log.info("replayed", records=len(records), consolidations=len(report["consolidations"]), problems=len(problems))
    return Replay(report, problems)


def write_outputs(report: Mapping[str, Any], json_path: Path | None, html_path: Path | None) -> None:
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(report_json(report), encoding="utf-8")
    if html_path is not None:
        html_path.parent.mkdir(parents=True, exist_ok=True)
        html_path.write_text(render_html(report), encoding="utf-8")


def _when(value: str | None) -> datetime | None:
    """An ISO 8601 time; one without a zone is taken as UTC."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 time like 2026-11-20T09:00:00Z") from exc
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


@click.command()
@click.option("--mbl", help="Only this consolidation")
@click.option("--hbl", help="Only consolidations holding this house bill, and what concerns it")
@click.option("--party", help="Only what concerns this party (planner, filer, alert recipient)")
@click.option("--since", help="Only entries that occurred at or after this UTC time (ISO 8601)")
@click.option("--until", help="Only entries that occurred at or before this time; the ENS state as of then")
@click.option(
    "--archive",
    "archives",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Read this archive folder or .avro file instead of Kafka; repeat for several",
)
@click.option(
    "--out",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the JSON report to this file",
)
@click.option("--html", "html_path", type=click.Path(dir_okay=False, path_type=Path), help="Write the HTML report")
@click.option(
    "--public-key",
    "public_keys",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Verify signatures with this Ed25519 public key (PEM, from ics2 audit public-key); repeat for a rotated "
    "key. Default: the public half of this installation's signing key (ICS2_AUDIT_KEY or the state folder)",
)
@click.option("--key-id", "key_ids", multiple=True, help="Trust only the key with this id (ed25519:...); repeatable")
@click.option(
    "--accept-unsigned",
    is_flag=True,
    help="Accept unsigned records at the start of a chain (trails written before signing existed); counted",
)
@json_option
@connection_options
def replay_command(
    mbl: str | None,
    hbl: str | None,
    party: str | None,
    since: str | None,
    until: str | None,
    archives: tuple[Path, ...],
    json_path: Path | None,
    html_path: Path | None,
    public_keys: tuple[Path, ...],
    key_ids: tuple[str, ...],
    accept_unsigned: bool,
    as_json: bool,
    bootstrap_servers: str | None,
    topic_prefix: str | None,
) -> None:
    """Rebuild the filings' history from the audit trail and verify it; exit 1 when the trail is broken.

    Every record must be signed by a trusted key: a record signed by no such key, or not signed, is named as a
    break, and a replay without any public key is not intact. Records stored twice byte for byte (chained again
    after a crash) are duplicates, counted and shown once.

    The JSON report goes to standard output with --json, or when neither --out nor --html is given.
    """
    configure_logging("auto", level="WARNING")
    quiet_kafka_client()
    for path in archives:
        if not path.exists():
            raise InputError(f"{path} does not exist", hint="give an archive folder or .avro file of ics2 archive")
    filters = ReplayFilter(mbl=mbl, hbl=hbl, party=party, since=_when(since), until=_when(until))
    settings = settings_from(bootstrap_servers, topic_prefix)
    keys = trusted_keys(settings, public_keys, key_ids)
    result = replay(settings, filters, archives, progress=True, keys=keys, accept_unsigned=accept_unsigned)
    if as_json or (json_path is None and html_path is None):
        click.echo(report_json(result.report), nl=False)
    write_outputs(result.report, json_path, html_path)
    integrity = result.report["integrity"]
    err = Console(stderr=True)
    for problem in result.problems:
        err.print(f"[red]problem[/] {problem}", markup=True, highlight=False)
    for b in integrity["breaks"]:
        err.print(
            f"[red]break[/] MBL {b['mbl']} sequence {b['sequence']} (record {b['position']} of its chain): "
            f"{b['kind']}: {b['detail']}",
            highlight=False,
        )
    verdict = "intact" if result.intact else "BROKEN"
    signatures = integrity["signatures"]
    signed = f"signed by {', '.join(signatures['trusted_keys'])}" if signatures["checked"] else "signatures unchecked"
    err.print(
        f"{integrity['records']} records ({len(integrity['duplicates'])} duplicates), {integrity['chains']} chains, "
        f"{len(result.report['consolidations'])} consolidations, {signed}: trail {verdict}",
        highlight=False,
    )
    for path in (json_path, html_path):
        if path is not None:
            err.print(f"wrote {path}", highlight=False)
    if not result.intact:
        sys.exit(1)


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
