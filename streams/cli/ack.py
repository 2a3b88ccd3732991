"""``ics2 ack ALERT_ID``: acknowledge an alert from a terminal, as the dashboard's button does.

The ack is keyed by the alert's MBL; without ``--mbl`` it is looked up on the alert topic (or, with ``--party``, on
that party's queue, which is all a party's own principal may read).
"""

from __future__ import annotations

import asyncio
import getpass
import json
from datetime import UTC, datetime

import click

from streams.cli.options import json_option, principal_options, settings_from
from streams.errors import BrokerUnavailable, NotFound
from streams.settings import Settings

#: Seconds the broker has to take the acknowledgement.
PUBLISH_TIMEOUT_S = 30.0


async def find_mbl(settings: Settings, alert_id: str, party: str | None) -> str:
    """The MBL of ``alert_id``, read from the alert topic or ``party``'s queue; ``NotFound`` when no record has it."""
    from streams.client import read_topic
    from streams.contracts.avro import SchemaCatalogue
    from streams.errors import DecodeError
    from streams.topics import Catalogue

    catalogue = Catalogue.for_prefix(settings.topic_prefix)
    topic = catalogue.party_queue(party).name if party else catalogue.alerts.name
    schemas = SchemaCatalogue.load()
    for record in reversed(await read_topic(settings, topic, timeout=60.0)):
        try:
            alert = schemas.decode(record.value, reader="PartyAlert").record
        except DecodeError:
            continue
        if alert["alert_id"] == alert_id and alert.get("mbl"):
            return str(alert["mbl"])
    raise NotFound(f"no alert {alert_id} on {topic}", hint="copy the alert id from ics2 inbox, or give --mbl")


@click.command()
@click.argument("alert_id")
@click.option("--mbl", help="MBL of the alert's consolidation (default: looked up from the alert)")
@click.option("--party", help="Look the alert up in this party's queue instead of the alert topic")
@click.option("--by", "by", default=None, help="Who acknowledges (default: the login name)")
@principal_options
@json_option
def ack(
    alert_id: str,
    mbl: str | None,
    party: str | None,
    by: str | None,
    bootstrap_servers: str | None,
    topic_prefix: str | None,
    username: str | None,
    password: str | None,
    as_json: bool,
) -> None:
    """Acknowledge ALERT_ID: an open DNL, RFI or RFS stops escalating once the worker has recorded it."""
    from streams.pipeline.acks import publish_ack

    settings = settings_from(bootstrap_servers, topic_prefix, username, password)
    name = by or getpass.getuser()
    if party is not None:
        from streams.topics import Catalogue

        try:
            Catalogue.for_prefix(settings.topic_prefix).party_queue(party)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--party") from exc
    mbl = mbl or asyncio.run(find_mbl(settings, alert_id, party))
    try:
        asyncio.run(asyncio.wait_for(publish_ack(settings, mbl, alert_id, name, datetime.now(UTC)), PUBLISH_TIMEOUT_S))
    except TimeoutError as exc:
        raise BrokerUnavailable(
            f"the broker at {settings.bootstrap_servers} did not take the acknowledgement within "
            f"{PUBLISH_TIMEOUT_S:.0f}s; it is not recorded"
        ) from exc
    if as_json:
        click.echo(json.dumps({"alert_id": alert_id, "mbl": mbl, "by": name}))
    else:
        click.echo(f"acknowledged {alert_id} of {mbl} as {name}")
