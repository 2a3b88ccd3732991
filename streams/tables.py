"""Terminal tables shared by the commands and the demo: the ENS's filings and house consignments, in words.

Below the CLI and the demo, so that both draw the same tables without the demo importing a command.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from streams.domain.labels import (
    MESSAGE_LABELS,
    OURS_NOTE,
    coded,
    deadline_label,
    filing_state_label,
    house_state_label,
)


def plain(*values: object) -> list[Text]:
    """Table cells taken as they are: a state like ``[registered]`` in data is not rich markup."""
    return [Text(str(v)) for v in values]


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
