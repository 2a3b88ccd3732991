"""Domain commands of the ``ics2`` CLI: plan and validate a booking file, with no broker involved.

Exit codes (``plan`` and ``validate`` alike): 0 when there is nothing blocking (warnings alone exit 0, since
they are advice a forwarder may accept), 1 when the plan or the validation has errors, 2 when the input cannot be
used at all (unreadable file, bad JSON, a booking ``Consolidation.from_json`` refuses), with the reason on stderr.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from streams.domain.model import Consolidation, parse_datetime
from streams.domain.planning import FilingPlan
from streams.domain.planning import plan as make_plan
from streams.domain.validation import ValidationReport
from streams.domain.validation import validate as validate_booking
from streams.errors import BookingError

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_UNUSABLE = 2


def _load_booking(path: Path) -> Consolidation:
    """Read a booking file, or stop with exit code 2 and the reason on stderr."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Consolidation.from_json(data)
    except (OSError, UnicodeDecodeError) as exc:
        reason = f"cannot read {path}: {exc}"
    except json.JSONDecodeError as exc:
        reason = f"{path} is not valid JSON: {exc}"
    except BookingError as exc:
        reason = f"{path} is not a usable booking: {exc}"
    click.echo(f"error: {reason}", err=True)
    sys.exit(EXIT_UNUSABLE)


def _print_plan(plan: FilingPlan) -> None:
    console = Console()
    table = Table(title=f"Filing plan for MBL {plan.mbl} (version {plan.version}, planned by {plan.planning_party})")
    for column in ("Filing", "HBL", "Filer", "Supplementary declarant", "Ours"):
        table.add_column(column, no_wrap=True)
    table.add_column("Reason")
    for f in plan.filings:
        table.add_row(
            f.filing.value, f.hbl or "-", f.filer, f.supplementary_declarant or "-", "yes" if f.ours else "", f.reason
        )
    console.print(table)
    expected = ", ".join(f.value for f in plan.expected_from_carrier) or "nothing"
    console.print(f"Expected from the carrier: {expected}")
    for w in plan.warnings:
        console.print(f"[yellow]warning[/yellow] {w.code} {w.hbl or ''}: {w.message}", markup=True, highlight=False)
    for e in plan.errors:
        party = f" (to fix: {e.party})" if e.party else ""
        console.print(f"[red]error[/red] {e.code} {e.hbl or ''}: {e.message}{party}", markup=True, highlight=False)


def _print_report(report: ValidationReport) -> None:
    console = Console()
    if not report.findings:
        console.print("No findings: the booking is ready to file.")
        return
    table = Table(title=f"{len(report.errors)} error(s), {len(report.warnings)} warning(s)")
    for column in ("Severity", "Rule", "Party to fix", "HBL", "Path"):
        table.add_column(column, no_wrap=True)
    table.add_column("Message")
    for f in report.findings:
        table.add_row(f.severity.value, f.rule_id, f.party or "-", f.hbl or "-", f.path, f.message)
    console.print(table)


@click.command()
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON (FilingPlan.to_json).")
def plan(file: Path, as_json: bool) -> None:
    """Print who must file what for the booking in FILE."""
    filing_plan = make_plan(_load_booking(file))
    if as_json:
        click.echo(json.dumps(filing_plan.to_json(), indent=2, ensure_ascii=False))
    else:
        _print_plan(filing_plan)
    sys.exit(EXIT_OK if filing_plan.ok else EXIT_FINDINGS)


def _parse_now(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_datetime(value, "--now")
    except BookingError as exc:
        raise click.BadParameter(str(exc)) from exc


@click.command()
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
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
    sys.exit(EXIT_OK if report.ok else EXIT_FINDINGS)


@click.command()
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), default=Path("."), show_default=True, help="Folder"
)
def render(file: Path, out: Path) -> None:
    """Write the ICS2 XML of every filing of ours in the booking to OUT (one file per filing)."""
    from streams.domain.drafts import drafts_for
    from streams.errors import RenderError
    from streams.messages.render import render_filing

    consolidation = _load_booking(file)
    out.mkdir(parents=True, exist_ok=True)
    table = Table("filing", "HBL", "LRN", "file")
    failed = False
    for draft in drafts_for(consolidation, make_plan(consolidation), consolidation.occurred_at):
        name = f"{draft.planned.filing.message_type}_{draft.lrn}.xml"
        try:
            (out / name).write_bytes(render_filing(draft))
        except RenderError as exc:
            failed = True
            name = f"[red]not rendered: {exc}[/]"
        table.add_row(draft.planned.filing.value, draft.planned.hbl or "-", draft.lrn, name)
    Console().print(table)
    sys.exit(1 if failed else 0)


@click.command()
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
def parse(file: Path) -> None:
    """Parse a customs notification (IE3R01, IE3N99, IE3Q01, ...) and print what it means, as JSON."""
    from streams.errors import XMLRejected
    from streams.messages.parse import parse_notification
    from streams.pipeline.records import notification_record

    data = file.read_bytes()
    try:
        notification = parse_notification(data)
    except XMLRejected as exc:
        click.echo(f"error: {file}: {exc}", err=True)
        sys.exit(2)
    record = notification_record(notification, data)
    record["actors"] = [a.value for a in notification.actors]
    click.echo(json.dumps(record, indent=2))
