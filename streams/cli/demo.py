"""``ics2 demo``: start the local stack, run the bundled scenario end to end, show every party's queue."""

from __future__ import annotations

import json

import click

from streams.cli.options import json_option


@click.command()
@click.option("--keep", is_flag=True, help="Keep the demo's topics (prefixed demo<id>.) for inspection")
@click.option("--timeout", type=float, default=90.0, show_default=True, help="Seconds to wait for customs' answers")
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    help="Client port of the embedded broker (the controller takes the next one) "
    "[default: the port of ICS2_BOOTSTRAP_SERVERS, 19092]",
)
@json_option
def demo(keep: bool, timeout: float, port: int | None, as_json: bool) -> None:
    """Book two consolidations, file through the customs simulator, print party queues and ENS states.

    With --json the story goes to standard error and standard output gets the alerts and ENS states as JSON.
    """
    from streams.cli.output import console
    from streams.demo import run
    from streams.logs import configure_logging

    configure_logging("console", level="WARNING")
    result = run(console(stderr=as_json), keep=keep, timeout=timeout, port=port)
    if as_json:
        summary = {"prefix": result.prefix, "seconds": round(result.seconds, 1), "workdir": str(result.workdir)}
        report = {"audit_report": str(result.audit_report) if result.audit_report else None}
        click.echo(json.dumps({**summary, **report, "alerts": result.alerts, "states": result.states}))
