"""``ics2 gateway``: run the customs gateway connector (simulator or file drop) until stopped."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from streams.cli.options import connection_options
from streams.settings import Settings


@click.command()
@click.option(
    "--connector",
    type=click.Choice(["simulator", "files"]),
    default="simulator",
    show_default=True,
    help="Which gateway answers the filings",
)
@click.option("--outbox", type=click.Path(file_okay=False, path_type=Path), help="files: folder filings are written to")
@click.option("--inbox", type=click.Path(file_okay=False, path_type=Path), help="files: folder answers are read from")
@click.option(
    "--script",
    type=click.Path(dir_okay=False, path_type=Path),
    help="simulator: risk script (JSON); the built-in default otherwise",
)
@click.option("--seed", type=int, default=0, show_default=True, help="simulator: seed of MRNs and seeded outcomes")
@click.option(
    "--poll-interval",
    type=click.FloatRange(min=0.05),
    default=5.0,
    show_default=True,
    help="Seconds between polls for time-driven or dropped answers",
)
@connection_options
@click.option("--app-id", envvar="ICS2_APP_ID", help="Application id; the connector's group is <app-id>-gateway")
@click.option("--loglevel", default="info", show_default=True)
def gateway(
    connector: str,
    outbox: Path | None,
    inbox: Path | None,
    script: Path | None,
    seed: int,
    poll_interval: float,
    bootstrap_servers: str | None,
    topic_prefix: str | None,
    app_id: str | None,
    loglevel: str,
) -> None:
    """Send outbound filings to customs and produce customs' answers, until SIGTERM or Ctrl-C."""
    from streams.client import reach_broker
    from streams.gateway.base import Gateway
    from streams.gateway.connector import GatewayConnector
    from streams.logs import configure_logging
    from streams.topics import Catalogue

    if connector == "files" and (outbox is None or inbox is None):
        raise click.UsageError("the files connector needs --outbox and --inbox")
    from streams.gateway.simulator import load_script

    risks = load_script(script)
    settings = Settings.from_env(bootstrap_servers=bootstrap_servers, topic_prefix=topic_prefix, app_id=app_id)
    asyncio.run(reach_broker(settings))
    configure_logging(settings.log_format, level=loglevel.upper())
    catalogue = Catalogue.for_prefix(settings.topic_prefix)
    chosen: Gateway
    if connector == "files":
        assert outbox is not None and inbox is not None
        from streams.gateway.files import FileDropGateway

        chosen = FileDropGateway(outbox, inbox)
    else:
        from streams.gateway.simulator import KafkaSnapshotStore, SimulatorGateway, simulator_state_topic

        store = KafkaSnapshotStore(settings, simulator_state_topic(catalogue), key=settings.app_id)
        chosen = SimulatorGateway(store, risks, seed)
    runner = GatewayConnector(chosen, settings, catalogue, poll_interval=poll_interval)
    asyncio.run(runner.run(handle_signals=True))
