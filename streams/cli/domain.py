"""Domain commands of the ``ics2`` CLI: plan, validate and render a booking file, parse a notification; no broker.

Exit codes (``streams.errors.ExitCode``): 0 when there is nothing blocking (warnings alone exit 0, since they are
advice a forwarder may accept), 1 when the plan or the validation has errors, 3 when the input cannot be used at
all (missing or unreadable file, bad JSON, a booking ``Consolidation.from_json`` refuses), with the reason on
stderr.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from streams.cli.options import json_option, read_json
from streams.cli.output import console as make_console
from streams.domain.dates import parse_datetime
from streams.domain.labels import MESSAGE_LABELS, OURS_NOTE, message_label
from streams.domain.model import Consolidation
from streams.domain.planning import FilingPlan
from streams.domain.planning import plan as make_plan
from streams.domain.validation import ValidationReport
from streams.domain.validation import validate as validate_booking
from streams.errors import BookingError, ExitCode
from streams.tables import plain


def _load_booking(path: Path) -> Consolidation:
    """Read a booking file; ``InputError`` (exit 3) when it is missing, not JSON or not a booking."""
    data = read_json(path)
    try:
        return Consolidation.from_json(data)
    except BookingError as exc:
        raise BookingError(f"{path} is not a usable booking: {exc}", hint="fix the booking file") from exc


def _print_plan(plan: FilingPlan) -> None:
    console = make_console()
    table = Table(
        title=f"Filing plan for MBL {plan.mbl} (version {plan.version}, planned by {plan.planning_party})",
        title_justify="left",
    )
    for column in ("Filing", "What it is", "HBL", "Filer", "Supplementary declarant", "Ours"):
        table.add_column(column, no_wrap=True)
    table.add_column("Reason")
    for f in plan.filings:
        table.add_row(
            *plain(
                f.filing.value,
                MESSAGE_LABELS.get(f.filing.message_type, f.filing.message_type),
                f.hbl or "-",
                f.filer,
                f.supplementary_declarant or "-",
                "yes" if f.ours else "",
                f.reason,
            )
        )
    console.print(table)
    console.print(OURS_NOTE, markup=False, highlight=False)
    expected = ", ".join(f.value for f in plan.expected_from_carrier) or "nothing"
    console.print(f"Expected from the carrier: {expected}")
    for w in plan.warnings:
        text = escape(f"{w.code} {w.hbl or ''}: {w.message}")
        console.print(f"[yellow]warning[/yellow] {text}", highlight=False)
    for e in plan.errors:
        party = f" (to fix: {e.party})" if e.party else ""
        text = escape(f"{e.code} {e.hbl or ''}: {e.message}{party}")
        console.print(f"[red]error[/red] {text}", highlight=False)


def _print_report(report: ValidationReport) -> None:
    console = make_console()
    if not report.findings:
        console.print("No findings: the booking is ready to file.")
        return
    table = Table(title=f"{len(report.errors)} error(s), {len(report.warnings)} warning(s)", title_justify="left")
    for column in ("Severity", "Rule", "Party to fix", "HBL", "Path"):
        table.add_column(column, no_wrap=True)
    table.add_column("Message")
    for f in report.findings:
        table.add_row(*plain(f.severity.value, f.rule_id, f.party or "-", f.hbl or "-", f.path, f.message))
    console.print(table)


@click.command()
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@json_option
def plan(file: Path, as_json: bool) -> None:
    """Print who must file what for the booking in FILE (--json: FilingPlan.to_json)."""
    filing_plan = make_plan(_load_booking(file))
    if as_json:
        click.echo(json.dumps(filing_plan.to_json(), indent=2, ensure_ascii=False))
    else:
        _print_plan(filing_plan)
    sys.exit(ExitCode.OK if filing_plan.ok else ExitCode.FINDINGS)


def _parse_now(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_datetime(value, "--now")
    except BookingError as exc:
        raise click.BadParameter(str(exc)) from exc


@click.command()
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@json_option
@click.option(
    "--now",
    callback=_parse_now,
    metavar="ISO",
    help="Check the lodging deadline against this time (UTC, like 2027-06-14T08:00:00Z) instead of the clock.",
)
def validate(file: Path, as_json: bool, now: datetime | None) -> None:
    """Check the booking in FILE against the ENS rules; exit 1 when it has errors."""
    consolidation = _load_booking(file)
    report = validate_booking(consolidation, now=now or datetime.now(UTC))
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
    else:
        _print_report(report)
    sys.exit(ExitCode.OK if report.ok else ExitCode.FINDINGS)


@click.command()
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), default=Path("."), show_default=True, help="Folder"
)
@json_option
def render(file: Path, out: Path, as_json: bool) -> None:
    """Write the ICS2 XML of every filing of ours in the booking to OUT (one file per filing); exit 1 if one fails."""
    from streams.domain.drafts import drafts_for
    from streams.errors import RenderError
    from streams.messages.render import render_filing

    consolidation = _load_booking(file)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, str | None]] = []
    for draft in drafts_for(consolidation, make_plan(consolidation), consolidation.occurred_at):
        message = draft.planned.filing.message_type
        name = f"{message}_{draft.lrn}.xml"
        row: dict[str, str | None] = {
            "filing": draft.planned.filing.value,
            "message": message,
            "hbl": draft.planned.hbl,
            "lrn": draft.lrn,
            "file": str(out / name),
            "error": None,
        }
        try:
            (out / name).write_bytes(render_filing(draft))
        except RenderError as exc:
            row.update(file=None, error=str(exc))
        rows.append(row)
    if as_json:
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
    else:
        table = Table("filing", "message", "HBL", "LRN", "file", title=f"ICS2 XML of MBL {consolidation.mbl}")
        for r in rows:
            written = r["file"] or f"not rendered: {r['error']}"
            table.add_row(*plain(r["filing"], message_label(str(r["message"])), r["hbl"] or "-", r["lrn"], written))
        make_console().print(table, highlight=False)
    sys.exit(ExitCode.FINDINGS if any(r["error"] for r in rows) else ExitCode.OK)


@click.command()
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
def parse(file: Path) -> None:
    """Parse a customs notification (IE3R01, IE3N99, IE3Q01, ...) and print what it means, as JSON."""
    from streams.cli.options import read_bytes
    from streams.contracts.records import notification_record
    from streams.errors import XMLRejected
    from streams.messages.parse import parse_notification

    data = read_bytes(file)
    try:
        notification = parse_notification(data)
    except XMLRejected as exc:
        raise XMLRejected(f"{file}: {exc}", hint="only ICS2 notifications without DTDs or entities are read") from exc
    record = notification_record(notification, data)
    record["actors"] = [a.value for a in notification.actors]
    click.echo(json.dumps(record, indent=2))
