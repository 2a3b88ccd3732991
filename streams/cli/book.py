"""``ics2 book FILE.json ...``: publish booking events to the bookings topic, as a booking system would."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import click

from streams.settings import Settings


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--as", "party", help="Book as this planning party (each forwarder books its own view)")
@click.option("--bootstrap-servers", envvar="ICS2_BOOTSTRAP_SERVERS", help="Kafka bootstrap servers")
@click.option("--topic-prefix", envvar="ICS2_TOPIC_PREFIX", help="Prefix of every topic name")
def book(files: tuple[Path, ...], party: str | None, bootstrap_servers: str | None, topic_prefix: str | None) -> None:
    """Publish each FILE (the JSON form of a BookingEvent) to the bookings topic, keyed by its MBL."""
    from streams.client import publish_bookings
    from streams.contracts.avro import SchemaCatalogue
    from streams.errors import InputError

    settings = Settings.from_env(bootstrap_servers=bootstrap_servers, topic_prefix=topic_prefix)
    bookings = []
    schemas = SchemaCatalogue.load()
    for file in files:
        try:
            data = json.loads(file.read_text())
            if party:
                data["planning_party"] = party
            schemas.encode("BookingEvent", data)
        except (ValueError, InputError) as exc:
            click.echo(f"error: {file} is not a booking event: {exc}", err=True)
            sys.exit(2)
        bookings.append(data)
    count = asyncio.run(publish_bookings(settings, bookings))
    click.echo(f"published {count} booking(s) to {settings.topic_prefix}ics2.bookings on {settings.bootstrap_servers}")
