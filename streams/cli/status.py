"""``ics2 status MBL``: the ENS lifecycle of one consolidation, as the workers hold it.

Exit codes: 0 shown, 5 when no worker answers at the addresses given, 7 when the workers answer but none holds the
MBL (``streams.errors.ExitCode``).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import click

from streams.cli.options import json_option
from streams.cli.output import console
from streams.errors import ICS2StreamsError, NotFound, WorkerUnavailable
from streams.settings import Settings
from streams.tables import ens_tables


def fetch_state(mbl: str, workers: Sequence[str]) -> dict[str, Any]:
    """The ENS of ``mbl`` from the first worker that holds it; which error when none does."""
    unreachable: list[str] = []
    for worker in workers:
        try:
            with urllib.request.urlopen(f"{worker.rstrip('/')}/ens/{mbl}", timeout=5) as response:
                return dict(json.loads(response.read()))
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise ICS2StreamsError(f"the worker at {worker} answered HTTP {exc.code} for {mbl}") from exc
        except (urllib.error.URLError, OSError, ValueError):
            unreachable.append(worker)
    if len(unreachable) == len(workers):
        raise WorkerUnavailable(f"no worker answers at {', '.join(workers)}")
    asked = ", ".join(w for w in workers if w not in unreachable)
    also = f" ({', '.join(unreachable)} did not answer)" if unreachable else ""
    raise NotFound(
        f"no worker at {asked} holds an ENS for {mbl}{also}",
        hint="check the MBL, and give every worker with --worker (each holds the ENS of its partitions)",
    )


@click.command()
@click.argument("mbl")
@click.option(
    "--worker",
    "workers",
    multiple=True,
    help="Worker web address; repeat for every worker (each holds the ENS of its partitions) "
    "[default: http://ICS2_WEB_HOST:ICS2_WEB_PORT, http://127.0.0.1:6066]",
)
@json_option
def status(mbl: str, workers: tuple[str, ...], as_json: bool) -> None:
    """Show the filings, HBL states and history of the ENS of MBL."""
    if not workers:
        settings = Settings.from_env()
        workers = (f"http://{settings.web_host}:{settings.web_port}",)
    state = fetch_state(mbl, workers)
    if as_json:
        click.echo(json.dumps(state, indent=2))
        return
    out = console()
    for table in ens_tables(state, datetime.now(UTC)):
        out.print(table)
    out.print("Latest events:")
    for at, text in state.get("history", [])[-10:]:
        out.print(f"  {at} {text}", markup=False)
