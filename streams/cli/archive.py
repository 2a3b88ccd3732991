"""``ics2 archive``: export the audit trail to Avro container files, for retention beyond Kafka's."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click
from rich.console import Console

from streams.audit.archive import next_offsets, write_archive
from streams.cli.replay import read_trail
from streams.contracts.avro import SchemaCatalogue
from streams.logs import configure_logging
from streams.settings import Settings
from streams.topics import Catalogue


@click.command()
@click.option(
    "--out",
    "directory",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Archive folder; each run adds audit-<run>.avro and its manifest, starting where the last run stopped",
)
def archive(directory: Path) -> None:
    """Write the audit records not archived yet to one Avro container file (deflate) with a manifest of offsets."""
    configure_logging("auto", level="WARNING")
    settings = Settings.from_env()
    topic = Catalogue.for_prefix(settings.topic_prefix).audit.name
    start = next_offsets(directory, topic) if directory.exists() else {}
    read = asyncio.run(read_trail(settings, start))
    err = Console(stderr=True)
    for problem in read.problems:
        err.print(f"[red]problem[/] {problem}", highlight=False)
    if not read.records:
        err.print(f"nothing new to archive from {topic}", highlight=False)
        return
    manifest = write_archive(directory, topic, read.records, read.offsets, SchemaCatalogue.load())
    click.echo(str(directory / manifest.file))
    err.print(f"archived {manifest.records} audit records of {topic} (run {manifest.run})", highlight=False)
