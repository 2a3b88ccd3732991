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

from streams.domain.dates import parse_datetime
from streams.domain.labels import action_label, deadline_label, message_label

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


#: The inbox's columns, in order: enough to act (the alert id and MBL ``ics2 ack`` takes) without a second look.
COLUMNS: tuple[str, ...] = (
    "alert id",
    "urgency",
    "raised",
    "what",
    "deadline",
    "MBL",
    "HBL chain",
    "at fault",
    "what to do",
    "references",
)
#: Columns holding identifiers: never wrapped, so an id is never cut in two.
ID_COLUMNS = frozenset({"alert id", "raised", "MBL"})


def row(alert: Alert, now: datetime) -> tuple[Text, ...]:
    """The cells of one alert, in the order of ``COLUMNS``."""
    style = URGENCY_STYLES.get(alert["urgency"], "")
    references = ", ".join(
        f"{label} {alert[name]}"
        for label, name in (("ref", "referral_reference"), ("MRN", "mrn"), ("LRN", "lrn"))
        if alert.get(name)
    )
    what = Text(alert["title"], style="bold" if alert["urgency"] in ("critical", "high") else "")
    if alert.get("notification_message_type"):
        what.append(f" [{message_label(alert['notification_message_type'])}]", style="dim")
    if alert.get("acknowledged"):
        what.append(" (acknowledged)", style="dim")
    return (
        Text(alert["alert_id"]),
        Text(alert["urgency"], style=style),
        Text(alert["created_at"]),
        what,
        Text(deadline_label(alert.get("deadline"), now), style=deadline_style(alert, now)),
        Text(alert.get("mbl") or ""),
        Text(chain_text(alert) or alert.get("hbl") or ""),
        Text(alert.get("party_at_fault") or ""),
        Text(action_label(alert["action"])),
        Text(references),
    )


def table(
    party: str, alerts: Iterable[Alert], now: datetime, *, total: int | None = None, title: str | None = None
) -> Table:
    """The inbox of ``party`` as a rich table; ``total`` is how many alerts there are before the limit."""
    shown = list(alerts)
    if title is None:
        title = f"Inbox of {party}: {len(shown)} alert(s)"
        if total is not None and total > len(shown):
            title += f" of {total}"
    result = Table(
        title=title,
        title_justify="left",
        expand=False,
        caption="acknowledge one with: ics2 ack ALERT_ID",
        caption_justify="left",
    )
    for column in COLUMNS:
        result.add_column(column, no_wrap=column in ID_COLUMNS)
    for alert in shown:
        result.add_row(*row(alert, now))
    return result


def json_line(alert: Alert) -> str:
    """One alert as one line of JSON: the PartyAlert record with the schema's field names."""
    return json.dumps(dict(alert), sort_keys=False, separators=(",", ":"), ensure_ascii=False)
