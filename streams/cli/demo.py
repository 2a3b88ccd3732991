"""``ics2 demo``: start the local stack, run the bundled scenario end to end, show every party's queue."""

from __future__ import annotations

import click


@click.command()
@click.option("--keep", is_flag=True, help="Keep the demo's topics (prefixed demo<id>.) for inspection")
@click.option("--timeout", type=float, default=90.0, show_default=True, help="Seconds to wait for customs' answers")
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    help="Client port of the embedded broker (the controller takes the next one) "
    "[default: the port of ICS2_BOOTSTRAP_SERVERS, 19092]",
)
def demo(keep: bool, timeout: float, port: int | None) -> None:
    """Book two consolidations, file through the customs simulator, print party queues and ENS states."""
    from streams.cli.output import console
    from streams.demo import run
    from streams.logs import configure_logging

    configure_logging("console", level="WARNING")
    run(console(), keep=keep, timeout=timeout, port=port)
