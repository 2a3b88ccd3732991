"""``ics2 status MBL``: the ENS lifecycle of one consolidation, as the workers hold it.

Exit codes: 0 shown, 5 when no worker answers at the addresses given, 7 when the workers answer but none holds the
MBL (``streams.errors.ExitCode``).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import click
from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from streams.cli.options import json_option
from streams.cli.output import console, plain
from streams.domain.labels import (
    MESSAGE_LABELS,
    OURS_NOTE,
    coded,
    deadline_label,
    filing_state_label,
    house_state_label,
)
from streams.errors import ICS2StreamsError, NotFound, WorkerUnavailable
from streams.settings import Settings


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


def ens_tables(state: Mapping[str, Any], now: datetime) -> list[RenderableType]:
    """The ENS's filings and its house consignments, in words (codes in brackets); shared with ``ics2 demo``."""
    overall = coded(house_state_label(state.get("state", "unknown")), state.get("state", "unknown"))
    deadline = deadline_label(state.get("deadline"), now) or "none"
    filings = Table(title=Text(f"ENS {state.get('mbl')}: {overall}; lodging deadline {deadline}"), title_justify="left")
    for column in ("filing", "what it is", "HBL", "filer", "ours", "state", "LRN", "MRN"):
        filings.add_column(column, no_wrap=column in ("HBL", "LRN", "MRN"))
    for f in state.get("filings", []):
        message = f"IE3{f['filing']}"
        filings.add_row(
            *plain(
                f["filing"],
                MESSAGE_LABELS.get(message, ""),
                f["hbl"] or "-",
                f["filer"],
                "yes" if f["ours"] else "",
                coded(filing_state_label(f["state"]), f["state"]),
                f.get("lrn") or "",
                f.get("mrn") or "",
            )
        )
    houses = Table("HBL", "state", "chain (issuer)", "open referrals", title="House consignments", title_justify="left")
    for h in state.get("houses", []):
        chain = " > ".join(f"{hbl} ({issuer})" for hbl, issuer in h["chain"])
        label = coded(house_state_label(h["state"]), h["state"])
        houses.add_row(*plain(h["hbl"], label, chain, ", ".join(h["open_referrals"])))
    return [filings, Text(OURS_NOTE), houses]


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
