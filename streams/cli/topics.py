"""``ics2 topics``: make the cluster's topics match the catalogue, and list them.

Exit codes: 0 on success, 1 when the broker cannot be reached or refuses a change.
"""

from __future__ import annotations

import asyncio
import sys
import time

import click
from rich.console import Console
from rich.table import Table

from streams.admin import apply_topics, describe_topics, list_topics
from streams.errors import ICS2StreamsError
from streams.settings import Settings
from streams.topics import Catalogue

EXIT_OK = 0
EXIT_FAILED = 1

_prefix = click.option("--prefix", default=None, help="Topic name prefix (default: ICS2_TOPIC_PREFIX).")


def _fail(console: Console, exc: Exception) -> None:
    console.print(f"[red]error[/red] {exc}", markup=True, highlight=False)
    sys.exit(EXIT_FAILED)


@click.group()
def topics() -> None:
    """Create and inspect the topics of the catalogue."""


@topics.command()
@_prefix
@click.option("--party", "parties", multiple=True, help="Also create this party's queue (repeatable).")
@click.option("--replication-factor", type=int, default=None, help="Default: the broker count, at most 3.")
def apply(prefix: str | None, parties: tuple[str, ...], replication_factor: int | None) -> None:
    """Create missing topics, correct drifted configs, raise low partition counts; safe to run again."""
    console = Console()
    settings = Settings.from_env(topic_prefix=prefix)
    started = time.monotonic()
    try:
        catalogue = Catalogue.for_prefix(settings.topic_prefix)
        report = asyncio.run(apply_topics(settings, catalogue, parties, replication_factor=replication_factor))
    except (ICS2StreamsError, ValueError) as exc:
        _fail(console, exc)
        return
    elapsed = time.monotonic() - started
    for name in report.created:
        console.print(f"[green]created[/green]   {name}", markup=True, highlight=False)
    for change in report.updated:
        console.print(f"[yellow]updated[/yellow]   {change.topic}: {'; '.join(change.changes)}", highlight=False)
    for name in report.unchanged:
        console.print(f"unchanged {name}", highlight=False)
    for warning in report.warnings:
        console.print(f"[yellow]warning[/yellow]   {warning}", markup=True, highlight=False)
    console.print(
        f"{len(report.created)} created, {len(report.updated)} updated, {len(report.unchanged)} unchanged "
        f"on {settings.bootstrap_servers} in {elapsed:.2f}s",
        highlight=False,
    )


@topics.command(name="list")
@_prefix
@click.option("--all", "include_internal", is_flag=True, help="Include Kafka's internal topics.")
def list_(prefix: str | None, include_internal: bool) -> None:
    """List the cluster's topics with partitions, cleanup policy and retention."""
    console = Console()
    settings = Settings.from_env(topic_prefix=prefix)

    async def gather() -> list[tuple[str, str, str, str]]:
        names = await list_topics(settings, settings.topic_prefix, include_internal=include_internal)
        states = await describe_topics(settings, names)
        rows = []
        for name in names:
            state = states.get(name)
            if state is None:
                rows.append((name, "?", "?", "?"))
                continue
            config = state.config
            rows.append(
                (name, str(state.partitions), config.get("cleanup.policy", "?"), config.get("retention.ms", "?"))
            )
        return rows

    try:
        rows = asyncio.run(gather())
    except ICS2StreamsError as exc:
        _fail(console, exc)
        return
    table = Table(title=f"Topics on {settings.bootstrap_servers}")
    for column in ("Topic", "Partitions", "cleanup.policy", "retention.ms"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    console.print(table)
