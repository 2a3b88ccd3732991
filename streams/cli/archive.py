"""``ics2 archive``: export the audit trail to Avro container files, for retention beyond Kafka's."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import click
from rich.console import Console

from streams.audit.archive import next_offsets, write_archive
from streams.audit.reading import read_trail
from streams.cli.options import connection_options, json_option, settings_from
from streams.cli.output import quiet_kafka_client
from streams.contracts.avro import SchemaCatalogue
from streams.logs import configure_logging
from streams.topics import Catalogue


@click.command()
@click.option(
    "--out",
    "directory",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Archive folder; each run adds audit-<run>.avro and its manifest, starting where the last run stopped",
)
@connection_options
@json_option
def archive(directory: Path, bootstrap_servers: str | None, topic_prefix: str | None, as_json: bool) -> None:
    """Write the audit records not archived yet to one Avro container file (deflate) with a manifest of offsets.

    Prints the file written (--json: file, records and run), nothing when there was nothing new.
    """
    configure_logging("auto", level="WARNING")
    quiet_kafka_client()
    settings = settings_from(bootstrap_servers, topic_prefix)
    topic = Catalogue.for_prefix(settings.topic_prefix).audit.name
    start = next_offsets(directory, topic) if directory.exists() else {}
    read = asyncio.run(read_trail(settings, start))
    err = Console(stderr=True)
    for problem in read.problems:
        err.print(f"[red]problem[/] {problem}", highlight=False)
    if not read.records:
        err.print(f"nothing new to archive from {topic}", highlight=False)
        if as_json:
            click.echo(json.dumps({"file": None, "records": 0, "run": None}))
        return
    manifest = write_archive(directory, topic, read.records, read.offsets, SchemaCatalogue.load())
    if as_json:
        written = {"file": str(directory / manifest.file), "records": manifest.records, "run": manifest.run}
        click.echo(json.dumps(written))
    else:
        click.echo(str(directory / manifest.file))
    err.print(f"archived {manifest.records} audit records of {topic} (run {manifest.run})", highlight=False)
