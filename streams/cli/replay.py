"""``ics2 replay``: rebuild history from the audit trail (Kafka or archives), verify it, write JSON and HTML.

The reading and the replay itself are ``streams.audit.reading``; this module holds the command's options and output.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from streams.audit.completeness import Reach
from streams.audit.reading import replay, trusted_keys, write_outputs
from streams.audit.replay import ReplayFilter, report_json
from streams.cli.options import connection_options, json_option, settings_from
from streams.cli.output import quiet_kafka_client
from streams.errors import ExitCode, InputError
from streams.logs import configure_logging


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
@click.option(
    "--workers",
    type=click.IntRange(1, 256),
    help="Decode (from Kafka), verify and rebuild the chains in this many processes (default: one per CPU; 1: all in "
    "this process)",
)
@click.option(
    "--completeness",
    "reach",
    type=click.Choice([r.value for r in Reach]),
    help="Check that every record of every audited topic is chained once and that every entry matches its record, "
    "up to the worker's committed positions (committed), to the topics' ends (end, for a stopped worker), or not "
    "(off). Default: committed from Kafka, off with --archive",
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
    workers: int | None,
    reach: str | None,
    as_json: bool,
    bootstrap_servers: str | None,
    topic_prefix: str | None,
) -> None:
    """Rebuild the filings' history from the audit trail and verify it; exit 1 when the trail is broken.

    Every record must be signed by a trusted key: a record signed by no such key, or not signed, is named as a
    break, and a replay without any public key is not intact. Records stored twice byte for byte (chained again
    after a crash) are duplicates, counted and shown once. Every record of the audited topics must be chained
    exactly once, each entry with its record's SHA-256: gaps (topic, partition, offsets), records chained twice and
    entries for records that do not exist or differ are named.

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
    result = replay(
        settings,
        filters,
        archives,
        progress=True,
        keys=keys,
        accept_unsigned=accept_unsigned,
        workers=workers,
        reach=None if reach is None else Reach(reach),
    )
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
    completeness = integrity["completeness"]
    for lack in completeness.get("lacks", []):
        err.print(f"[red]incomplete[/] {lack_text(lack)}", highlight=False)
    for waiting in completeness.get("pending", []):
        err.print(f"[yellow]pending[/] {where_text(waiting)}: entries not chained yet", highlight=False)
    for part in completeness.get("uncommitted", []):
        err.print(
            f"[yellow]unchecked[/] {part['topic']} partition {part['partition']}: its collector's consumer group has "
            "committed no position (--completeness end checks it to its end)",
            highlight=False,
        )
    verdict = "intact" if result.intact else "BROKEN"
    signatures = integrity["signatures"]
    signed = f"signed by {', '.join(signatures['trusted_keys'])}" if signatures["checked"] else "signatures unchecked"
    err.print(
        f"{integrity['records']} records ({len(integrity['duplicates'])} duplicates), {integrity['chains']} chains, "
        f"{len(result.report['consolidations'])} consolidations, {signed}, {complete_text(completeness)}: "
        f"trail {verdict}",
        highlight=False,
    )
    for path in (json_path, html_path):
        if path is not None:
            err.print(f"wrote {path}", highlight=False)
    if not result.intact:
        sys.exit(ExitCode.FINDINGS)


def where_text(item: dict[str, Any]) -> str:
    """``topic partition P offsets A..B (N records)``, or one offset."""
    if item.get("topic") is None:
        return "no source"
    span = f"offset {item['first']}" if item["first"] == item["last"] else f"offsets {item['first']}..{item['last']}"
    count = f" ({item['records']} records)" if item.get("records", 1) > 1 else ""
    return f"{item['topic']} partition {item['partition']} {span}{count}"


def lack_text(lack: dict[str, Any]) -> str:
    """One completeness finding on one line: its kind, where, the chained records concerned, what is wrong."""
    entries = ", ".join(f"MBL {e['mbl']} sequence {e['sequence']}" for e in lack["entries"])
    return f"{lack['kind']}: {where_text(lack)}{f' ({entries})' if entries else ''}: {lack['detail']}"


def complete_text(completeness: dict[str, Any]) -> str:
    if not completeness.get("checked"):
        return "completeness unchecked"
    to = "the worker's committed positions" if completeness["to"] == Reach.COMMITTED else "the topics' ends"
    pending = f", {sum(p['records'] for p in completeness['pending'])} pending" if completeness["pending"] else ""
    return f"{completeness['records_checked']} source records checked to {to}{pending}"
