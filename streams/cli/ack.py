"""``ics2 ack ALERT_ID --mbl MBL``: acknowledge an alert from a terminal, as the dashboard's button does."""

from __future__ import annotations

import asyncio
import getpass
import sys
from datetime import UTC, datetime

import click

from streams.settings import Settings


@click.command()
@click.argument("alert_id")
@click.option("--mbl", required=True, help="MBL number of the alert's consolidation (the ack is keyed by it)")
@click.option("--by", "by", default=None, help="Who acknowledges (default: the login name)")
@click.option("--bootstrap-servers", envvar="ICS2_BOOTSTRAP_SERVERS", help="Kafka bootstrap servers (host:port,...)")
@click.option("--topic-prefix", envvar="ICS2_TOPIC_PREFIX", help="Prefix of every topic name")
def ack(alert_id: str, mbl: str, by: str | None, bootstrap_servers: str | None, topic_prefix: str | None) -> None:
    """Acknowledge ALERT_ID: an open DNL, RFI or RFS stops escalating once the worker has recorded it."""
    from streams.pipeline.acks import publish_ack

    settings = Settings.from_env(bootstrap_servers=bootstrap_servers, topic_prefix=topic_prefix)
    name = by or getpass.getuser()
    try:
        asyncio.run(asyncio.wait_for(publish_ack(settings, mbl, alert_id, name, datetime.now(UTC)), timeout=30))
    except Exception as exc:  # ours, time-outs and aiokafka's connection errors alike: the ack is not recorded
        click.echo(f"error: the acknowledgement was not published: {exc!r}", err=True)
        sys.exit(2)
    click.echo(f"acknowledged {alert_id} of {mbl} as {name}")
