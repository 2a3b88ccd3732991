"""``ics2 book FILE.json ...``: publish booking events to the bookings topic, as a booking system would."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import click

from streams.cli.options import connection_options, json_option, read_json, settings_from
from streams.settings import Settings
from streams.topics import Catalogue


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
    catalogue = Catalogue.for_prefix(settings.topic_prefix)
    topic = catalogue.bookings.name
    for missing in asyncio.run(parties_without_queue(settings, catalogue, bookings)):
        click.echo(
            f"warning: {missing} has no queue yet: its alerts are kept and delivered once it is onboarded"
            f" (ics2 topics apply --party {missing})",
            err=True,
        )
    if as_json:
        mbls = [b["master"]["mbl_number"] for b in bookings]
        click.echo(json.dumps({"published": count, "topic": topic, "mbls": mbls}))
    else:
        click.echo(f"published {count} booking(s) to {topic} on {settings.bootstrap_servers}")


async def parties_without_queue(settings: Settings, catalogue: Catalogue, bookings: list[dict[str, Any]]) -> list[str]:
    """The parties the bookings name (planning party and every party listed) that have no queue on the cluster."""
    from streams.admin import list_topics

    named = set()
    for booking in bookings:
        named |= {p["id"] for p in booking.get("parties") or () if isinstance(p, dict) and p.get("id")}
        if booking.get("planning_party"):
            named.add(booking["planning_party"])
    queued = set(await list_topics(settings, catalogue.party_queue("x").name.removesuffix("x.queue")))
    return sorted(p for p in named if catalogue.names_a_queue(p) and catalogue.party_queue(p).name not in queued)
