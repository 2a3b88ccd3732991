"""``ics2 topics``: make the cluster's topics match the catalogue, and list them.

Exit codes (``streams.errors.ExitCode``): 0 on success, 4 when the broker cannot be reached, 8 when it refuses a
change.
"""

from __future__ import annotations

import asyncio
import json
import time

import click
from rich.table import Table

from streams.admin import apply_topics, describe_topics, list_topics
from streams.cli.options import connection_options, json_option, settings_from
from streams.cli.output import console as make_console
from streams.cli.output import quiet_kafka_client
from streams.logs import configure_logging
from streams.topics import Catalogue


@click.group()
def topics() -> None:
    """Create and inspect the topics of the catalogue."""
    # Warnings only, on standard error: standard output is the report (or, with --json, the JSON alone).
    configure_logging("auto", level="WARNING")
    quiet_kafka_client()


@topics.command()
@connection_options
@click.option("--party", "parties", multiple=True, help="Also create this party's queue (repeatable).")
@click.option(
    "--replication-factor",
    type=click.IntRange(min=1),
    default=None,
    help="Replicas of new topics. Default: the broker count, at most 3.",
)
@click.option(
    "--min-insync-replicas",
    type=click.IntRange(min=1),
    default=None,
    help="Replicas that must have a record before an acks=all write succeeds. Default: the replication factor, "
    "at most 2.",
)
@json_option
def apply(
    bootstrap_servers: str | None,
    topic_prefix: str | None,
    parties: tuple[str, ...],
    replication_factor: int | None,
    min_insync_replicas: int | None,
    as_json: bool,
) -> None:
    """Create missing topics, correct drifted configs, raise low partition counts; safe to run again.

    Replication follows the cluster unless given: min(3, brokers) replicas and min.insync.replicas
    min(2, replicas).
    """
    console = make_console()
    settings = settings_from(bootstrap_servers, topic_prefix)
    started = time.monotonic()
    try:
        catalogue = Catalogue.for_prefix(settings.topic_prefix)
        for party in parties:
            catalogue.party_queue(party)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--party") from exc
    if replication_factor is not None and min_insync_replicas is not None and min_insync_replicas > replication_factor:
        raise click.BadParameter(
            f"{min_insync_replicas} is above the replication factor {replication_factor}: every acks=all write "
            "would be refused",
            param_hint="--min-insync-replicas",
        )
    report = asyncio.run(
        apply_topics(
            settings,
            catalogue,
            parties,
            replication_factor=replication_factor,
            min_insync_replicas=min_insync_replicas,
        )
    )
    elapsed = time.monotonic() - started
    if as_json:
        changes = [{"topic": c.topic, "changes": list(c.changes)} for c in report.updated]
        done = {"created": list(report.created), "updated": changes, "unchanged": list(report.unchanged)}
        click.echo(json.dumps({**done, "warnings": list(report.warnings)}))
        return
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
@connection_options
@click.option("--all", "include_internal", is_flag=True, help="Include Kafka's internal topics.")
@json_option
def list_(bootstrap_servers: str | None, topic_prefix: str | None, include_internal: bool, as_json: bool) -> None:
    """List the cluster's topics with partitions, cleanup policy and retention."""
    settings = settings_from(bootstrap_servers, topic_prefix)

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

    rows = asyncio.run(gather())
    if as_json:
        keys = ("topic", "partitions", "cleanup.policy", "retention.ms")
        click.echo(json.dumps([dict(zip(keys, row, strict=True)) for row in rows]))
        return
    table = Table(title=f"Topics on {settings.bootstrap_servers}", title_justify="left")
    for column in ("Topic", "Partitions", "cleanup.policy", "retention.ms"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    make_console().print(table)
