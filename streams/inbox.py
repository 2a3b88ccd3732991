"""A party's inbox: its queue's alerts deduplicated, newest first, worded for a terminal or a script.

Pure functions of decoded ``PartyAlert`` records and a clock, so that what ``ics2 inbox`` shows is tested without a
broker. The alert stream is at-least-once and an acknowledgement is a new record with the same ``alert_id``, so the
inbox keeps the latest record per id.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from rich.table import Table
from rich.text import Text

from streams.domain.labels import relative_deadline
from streams.domain.model import parse_datetime

Alert = Mapping[str, Any]

#: Urgency -> rich style; the order is the order of importance.
URGENCY_STYLES: Mapping[str, str] = {
    "critical": "bold white on red",
    "high": "bold yellow",
    "normal": "cyan",
    "info": "dim",
}
#: Deadlines this close are shown in the critical style whatever the alert's urgency.
DUE_SOON = timedelta(hours=2)


def latest_per_alert(alerts: Iterable[Alert]) -> list[Alert]:
    """One record per ``alert_id``, the last one read (an acknowledgement replaces the alert it acknowledges)."""
    return list({a["alert_id"]: a for a in alerts}.values())


def newest_first(alerts: Iterable[Alert]) -> list[Alert]:
    """By ``created_at``, newest first; alerts raised in the same second keep the order they were read in, reversed."""
    indexed = list(enumerate(alerts))
    indexed.sort(key=lambda pair: (parse_datetime(pair[1]["created_at"]), pair[0]), reverse=True)
    return [a for _, a in indexed]


def select(alerts: Iterable[Alert], urgencies: Collection[str] = (), limit: int | None = None) -> list[Alert]:
    """The inbox: deduplicated, filtered by urgency (none given: all), newest first, at most ``limit``."""
    kept = [a for a in latest_per_alert(alerts) if not urgencies or a["urgency"] in urgencies]
    ordered = newest_first(kept)
    return ordered if limit is None else ordered[:limit]


def deadline_style(alert: Alert, now: datetime) -> str:
    """Overdue or due within ``DUE_SOON`` shows as critical; otherwise the alert's own urgency style."""
    deadline = alert.get("deadline")
    if deadline and parse_datetime(deadline) - now <= DUE_SOON:
        return URGENCY_STYLES["critical"]
    return URGENCY_STYLES.get(alert["urgency"], "")


def chain_text(alert: Alert) -> str:
    """``HBL (issuer) > HBL (issuer)`` from the master loader's HBL down to the lowest one."""
    return " > ".join(f"{link['hbl']} ({link['issuer']})" for link in alert.get("hbl_chain") or ())


def row(alert: Alert, now: datetime) -> tuple[Text, ...]:
    """The cells of one alert: urgency, when, what, deadline, HBL chain, party at fault, action, references."""
    style = URGENCY_STYLES.get(alert["urgency"], "")
    references = ", ".join(
        f"{label} {alert[name]}"
        for label, name in (("ref", "referral_reference"), ("MRN", "mrn"), ("LRN", "lrn"))
        if alert.get(name)
    )
    deadline = relative_deadline(alert.get("deadline"), now)
    what = Text(alert["title"], style="bold" if alert["urgency"] in ("critical", "high") else "")
    if alert.get("acknowledged"):
        what.append(" (acknowledged)", style="dim")
    return (
        Text(alert["urgency"], style=style),
        Text(alert["created_at"]),
        what,
        Text(f"{deadline}\n{alert['deadline']}" if deadline else "", style=deadline_style(alert, now)),
        Text(chain_text(alert) or alert.get("hbl") or alert.get("mbl") or ""),
        Text(alert.get("party_at_fault") or ""),
        Text(alert["action"]),
        Text(references),
    )


def table(party: str, alerts: Iterable[Alert], now: datetime, *, total: int | None = None) -> Table:
    """The inbox of ``party`` as a rich table; ``total`` is how many alerts there are before the limit."""
    shown = list(alerts)
    title = f"Inbox of {party}: {len(shown)} alert(s)"
    if total is not None and total > len(shown):
        title += f" of {total}"
    result = Table(title=title, title_justify="left", expand=False)
    for column in ("urgency", "raised", "what", "deadline", "HBL chain", "at fault", "action", "references"):
        result.add_column(column, overflow="fold")
    for alert in shown:
        result.add_row(*row(alert, now))
    return result


def json_line(alert: Alert) -> str:
    """One alert as one line of JSON: the PartyAlert record with the schema's field names."""
    return json.dumps(dict(alert), sort_keys=False, separators=(",", ":"), ensure_ascii=False)
