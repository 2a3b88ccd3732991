"""``ics2 book FILE.json ...``: publish booking events to the bookings topic, as a booking system would."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import click

from streams.cli.options import connection_options, json_option, read_json, settings_from


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--as", "party", help="Book as this planning party (each forwarder books its own view)")
@connection_options
@json_option
def book(
    files: tuple[Path, ...], party: str | None, bootstrap_servers: str | None, topic_prefix: str | None, as_json: bool
) -> None:
    """Publish each FILE (the JSON form of a BookingEvent) to the bookings topic, keyed by its MBL."""
    from streams.client import publish_bookings
    from streams.contracts.avro import SchemaCatalogue
    from streams.errors import InputError
    from streams.topics import Catalogue

    settings = settings_from(bootstrap_servers, topic_prefix)
    bookings = []
    schemas = SchemaCatalogue.load()
    for file in files:
        data = read_json(file)
        try:
            if party:
                data["planning_party"] = party
            schemas.encode("BookingEvent", data)
        except (TypeError, ValueError, InputError) as exc:
            raise InputError(f"{file} is not a booking event: {exc}", hint="fix the booking file") from exc
        bookings.append(data)
    count = asyncio.run(publish_bookings(settings, bookings))
    topic = Catalogue.for_prefix(settings.topic_prefix).bookings.name
    if as_json:
        mbls = [b["master"]["mbl_number"] for b in bookings]
        click.echo(json.dumps({"published": count, "topic": topic, "mbls": mbls}))
    else:
        click.echo(f"published {count} booking(s) to {topic} on {settings.bootstrap_servers}")
