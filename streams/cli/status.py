"""``ics2 status MBL``: the ENS lifecycle of one consolidation, as the workers hold it."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request

import click
from rich.console import Console
from rich.table import Table


@click.command()
@click.argument("mbl")
@click.option(
    "--worker",
    "workers",
    multiple=True,
    default=("http://127.0.0.1:6066",),
    show_default=True,
    help="Worker web address; repeat for every worker (each holds the ENS of its partitions)",
)
@click.option("--json", "as_json", is_flag=True, help="Print the state as JSON")
def status(mbl: str, workers: tuple[str, ...], as_json: bool) -> None:
    """Show the filings, HBL states and history of the ENS of MBL."""
    state = None
    for worker in workers:
        try:
            with urllib.request.urlopen(f"{worker.rstrip('/')}/ens/{mbl}", timeout=5) as response:
                state = json.loads(response.read())
                break
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                click.echo(f"error: {worker} answered {exc.code}", err=True)
        except (urllib.error.URLError, OSError) as exc:
            click.echo(f"error: cannot reach {worker}: {exc}", err=True)
    if state is None:
        click.echo(f"no worker knows an ENS for {mbl}", err=True)
        sys.exit(3)
    if as_json:
        click.echo(json.dumps(state, indent=2))
        return
    console = Console()
    table = Table(title=f"ENS {mbl}: {state['state']} (deadline {state['deadline']})", title_justify="left")
    for column in ("filing", "HBL", "filer", "ours", "state", "LRN", "MRN"):
        table.add_column(column)
    for f in state["filings"]:
        table.add_row(
            f["filing"],
            f["hbl"] or "-",
            f["filer"],
            "yes" if f["ours"] else "",
            f["state"],
            f["lrn"] or "",
            f["mrn"] or "",
        )
    console.print(table)
    houses = Table("HBL", "state", "chain", "open referrals", title="House consignments", title_justify="left")
    for h in state["houses"]:
        chain = " > ".join(f"{hbl} ({issuer})" for hbl, issuer in h["chain"])
        houses.add_row(h["hbl"], h["state"], chain, ", ".join(h["open_referrals"]) or "")
    console.print(houses)
    for at, text in state["history"][-10:]:
        console.print(f"  [dim]{at}[/] {text}")
