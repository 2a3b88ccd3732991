"""Plain words for codes: what a forwarder reads in the demo, the inbox, the dashboard and the audit report.

One place for the meaning of every state, message type and action, keyed by the values on the wire (strings), so
that every view words them alike and the README's glossary can be checked against this table.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from streams.domain.dates import parse_datetime

#: An HBL's (and so an MBL's) ENS state -> what it means for the cargo.
HOUSE_STATE_LABELS: Mapping[str, str] = {
    "held_dnl": "do not load: customs holds the cargo",
    "controlled": "customs control announced",
    "referral_open": "customs asked for information or screening",
    "rejected": "filing rejected by customs",
    "blocked": "filing blocked: booking data to fix",
    "incomplete": "ENS incomplete: a filing is missing",
    "planned": "filing planned, not yet sent",
    "filed": "filed, waiting for customs",
    "registered": "registered by customs (MRN)",
    "assessed": "risk assessment complete: may load",
    "withdrawn": "left the ENS: every filing of it withdrawn",
}

#: A filing's state -> what it means.
FILING_STATE_LABELS: Mapping[str, str] = {
    "expected": "expected from another party",
    "planned": "planned, not yet sent",
    "blocked": "blocked: booking data to fix",
    "sent": "sent, waiting for customs",
    "registered": "registered by customs (MRN)",
    "rejected": "rejected by customs",
    "amended": "registered, amendment accepted by customs",
    "invalidation_requested": "withdrawal asked of customs (IE3Q04 sent)",
    "invalidated": "withdrawn (invalidated)",
    "withdrawn": "no longer needed, never registered: nothing to invalidate",
}

#: ICS2 message code -> its meaning, for traders (filings, requests, customs' answers); the last four are not
#: customs messages but the product's own sources of an alert.
MESSAGE_LABELS: Mapping[str, str] = {
    "IE3F12": "carrier's master-level filing (F12)",
    "IE3F14": "house filing without goods details (F14)",
    "IE3F15": "house filing with goods details (F15)",
    "IE3F16": "supplementary declarant's goods filing (F16)",
    "IE3A12": "amendment of an F12",
    "IE3A14": "amendment of an F14",
    "IE3A15": "amendment of an F15",
    "IE3A16": "amendment of an F16",
    "IE3Q04": "invalidation request (withdraw a filing)",
    "IE3Q05": "ENS consultation request",
    "IE3R01": "registration: customs gave an MRN",
    "IE3R02": "answer to a request for information",
    "IE3R03": "answer to a screening request",
    "IE3R07": "invalidation accepted",
    "IE3R08": "ENS consultation result",
    "IE3N01": "lifecycle error (e.g. already filed)",
    "IE3N02": "ENS not complete: a filing is missing",
    "IE3N03": "risk assessment complete",
    "IE3N04": "carrier told of a request for information",
    "IE3N05": "carrier told of a screening request",
    "IE3N07": "ENS in an incorrect state for arrival",
    "IE3N08": "customs control",
    "IE3N09": "customs control of an AEO",
    "IE3N10": "amendment registered",
    "IE3N11": "ENS pending: a supplementary filing is awaited",
    "IE3N99": "rejection: errors in the filing",
    "IE3Q01": "Do Not Load request",
    "IE3Q02": "request for information (RFI)",
    "IE3Q03": "request for high-risk cargo screening (RFS)",
    "DEADLINE": "deadline watchdog: a filing or an answer is still missing as its deadline nears",
    "ESCALATION": "escalation: an alert nobody acknowledged, raised again as its deadline nears",
    "BOOKING": "the booking itself: data to fix before the filings can go",
    "DEAD_LETTER": "input that could not be processed, kept on the dead-letter topic",
    "ACKNOWLEDGED": "an operator acknowledged the alert with this id",
}


#: What a party must do about an alert (``Action`` values) -> in words.
ACTION_LABELS: Mapping[str, str] = {
    "stop_loading": "stop loading: keep the container off the vessel",
    "answer_rfi": "answer the RFI (ics2 answer rfi)",
    "answer_rfs": "screen the cargo and send the results (ics2 answer rfs)",
    "fix_and_refile": "fix the booking data and file again",
    "file_missing_filing": "file the missing filing",
    "chase_missing_filer": "chase the party whose filing is missing",
    "present_goods": "present the goods for customs control",
    "info": "nothing to do: for information",
    "none": "nothing to do",
}

#: What the "ours" column of a plan or an ENS means.
OURS_NOTE = (
    "ours = yes: filed by this system for a party that booked here (the planning party); "
    "blank: expected from the filer named, who files it with its own system"
)


def message_label(code: str) -> str:
    """``IE3Q01 (Do Not Load request)``; an unknown code stays as it is."""
    meaning = MESSAGE_LABELS.get(code)
    return f"{code} ({meaning})" if meaning else code


def house_state_label(state: str) -> str:
    """The plain words of an HBL's state; an unknown state stays as it is."""
    return HOUSE_STATE_LABELS.get(state, state)


def filing_state_label(state: str) -> str:
    """The plain words of a filing's state; an unknown state stays as it is."""
    return FILING_STATE_LABELS.get(state, state)


def action_label(action: str) -> str:
    """What to do about an alert, in words; an unknown action stays as it is."""
    return ACTION_LABELS.get(action, action)


def coded(label: str, code: str) -> str:
    """``registered by customs (MRN) [registered]``: the words first, the code a script or the README glossary uses."""
    return label if label == code else f"{label} [{code}]"


def span(delta: timedelta) -> str:
    """A duration as a person reads it on a deadline: minutes under an hour, hours under two days, then days."""
    minutes = int(delta.total_seconds() // 60)
    hours, rest = divmod(minutes, 60)
    if hours == 0:
        return f"{max(rest, 1)} min"
    if hours < 48:
        return f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def relative_deadline(deadline: str | None, now: datetime) -> str:
    """``in 5 h`` or ``overdue by 2 h``; empty when there is no deadline."""
    if not deadline:
        return ""
    left = parse_datetime(deadline) - now
    return f"in {span(left)}" if left > timedelta(0) else f"overdue by {span(-left)}"


def deadline_label(deadline: str | None, now: datetime) -> str:
    """``in 5 h (2027-06-01 14:00 UTC)``: relative to now and absolute; empty when there is no deadline."""
    if not deadline:
        return ""
    return f"{relative_deadline(deadline, now)} ({parse_datetime(deadline).strftime('%Y-%m-%d %H:%M UTC')})"
