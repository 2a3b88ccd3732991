"""The ENS lifecycle of one consolidation, per MBL and per HBL, as a pure state machine.

``apply(state, event, now)`` returns the new state and the alerts the event calls for; the pipeline keeps the state
in a Faust table and emits the alerts. The state of an HBL is derived from the facts recorded about it (filings and
their answers, holds, referrals), never stored beside them, so it cannot drift from them.
Events are JSON objects with a ``type``: ``planned``, ``filing_sent``, ``filing_blocked``, ``notification``, ``tick``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from streams.domain.ledger import FilingRecord
from streams.domain.model import format_datetime, parse_datetime
from streams.domain.routing import PartyAlert, alert_id, alerts_for
from streams.messages.notifications import Action, Notification, NotificationKind, Urgency

#: How many notification ids a state remembers to suppress duplicates (customs re-sends, replays).
SEEN_LIMIT = 2000
HISTORY_LIMIT = 200
#: Default escalation margins before the lodging deadline, widest first.
DEFAULT_MARGINS: tuple[timedelta, ...] = (timedelta(hours=48), timedelta(hours=24), timedelta(hours=6), timedelta(0))


class FilingState(StrEnum):
    EXPECTED = "expected"
    PLANNED = "planned"
    BLOCKED = "blocked"
    SENT = "sent"
    REGISTERED = "registered"
    REJECTED = "rejected"
    INVALIDATED = "invalidated"


class HouseState(StrEnum):
    """Worst first: the state of an MBL is the worst of its HBLs'."""

    HELD_DNL = "held_dnl"
    CONTROLLED = "controlled"
    REFERRAL_OPEN = "referral_open"
    REJECTED = "rejected"
    BLOCKED = "blocked"
    INCOMPLETE = "incomplete"
    PLANNED = "planned"
    FILED = "filed"
    REGISTERED = "registered"
    ASSESSED = "assessed"


@dataclass(slots=True)
class FilingStatus:
    filing: str
    hbl: str | None
    filer: str
    ours: bool
    state: FilingState
    lrn: str | None = None
    mrn: str | None = None

    @property
    def key(self) -> str:
        return filing_key(self.filing, self.hbl, self.filer)

    @property
    def lodged(self) -> bool:
        return self.state is FilingState.REGISTERED


@dataclass(slots=True)
class HouseStatus:
    hbl: str
    chain: list[tuple[str, str]] = field(default_factory=list)
    assessed: bool = False
    do_not_load: bool = False
    controlled: bool = False
    incomplete: bool = False
    open_referrals: dict[str, str | None] = field(default_factory=dict)
    """Referral reference -> answer deadline (ISO) of open RFIs and RFSs."""


@dataclass(slots=True)
class EnsState:
    """Everything known of one MBL's ENS."""

    mbl: str
    deadline: str | None = None
    planning_parties: list[str] = field(default_factory=list)
    filings: dict[str, FilingStatus] = field(default_factory=dict)
    houses: dict[str, HouseStatus] = field(default_factory=dict)
    seen: list[str] = field(default_factory=list)
    escalation_level: int = 0
    history: list[list[str]] = field(default_factory=list)

    def house_state(self, hbl: str) -> HouseState:
        """Derived from the recorded facts, worst condition first."""
        house = self.houses[hbl]
        filings = [f for f in self.filings.values() if f.hbl == hbl]
        if house.do_not_load:
            return HouseState.HELD_DNL
        if house.controlled:
            return HouseState.CONTROLLED
        if house.open_referrals:
            return HouseState.REFERRAL_OPEN
        if any(f.state is FilingState.REJECTED for f in filings):
            return HouseState.REJECTED
        if any(f.state is FilingState.BLOCKED for f in filings):
            return HouseState.BLOCKED
        if house.assessed:
            return HouseState.ASSESSED
        if house.incomplete:
            return HouseState.INCOMPLETE
        if filings and all(f.lodged for f in filings):
            return HouseState.REGISTERED
        if any(f.state in (FilingState.SENT, FilingState.REGISTERED) for f in filings):
            return HouseState.FILED
        return HouseState.PLANNED

    @property
    def state(self) -> str:
        states = [self.house_state(h) for h in self.houses]
        order = list(HouseState)
        return min(states, key=order.index).value if states else HouseState.PLANNED.value

    def missing_filings(self) -> list[FilingStatus]:
        """Filings the ENS still lacks (not registered), ours and others'."""
        return [f for f in self.filings.values() if not f.lodged and f.state is not FilingState.INVALIDATED]

    def to_json(self) -> dict[str, Any]:
        return {
            "mbl": self.mbl,
            "state": self.state,
            "deadline": self.deadline,
            "planning_parties": self.planning_parties,
            "filings": [
                {
                    "filing": f.filing,
                    "hbl": f.hbl,
                    "filer": f.filer,
                    "ours": f.ours,
                    "state": f.state.value,
                    "lrn": f.lrn,
                    "mrn": f.mrn,
                }
                for f in self.filings.values()
            ],
            "houses": [
                {
                    "hbl": h.hbl,
                    "state": self.house_state(h.hbl).value,
                    "chain": [list(c) for c in h.chain],
                    "assessed": h.assessed,
                    "do_not_load": h.do_not_load,
                    "controlled": h.controlled,
                    "incomplete": h.incomplete,
                    "open_referrals": h.open_referrals,
                }
                for h in self.houses.values()
            ],
            "seen": self.seen,
            "escalation_level": self.escalation_level,
            "history": self.history,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EnsState:
        state = cls(
            mbl=data["mbl"],
            deadline=data.get("deadline"),
            planning_parties=list(data.get("planning_parties", [])),
            seen=list(data.get("seen", [])),
            escalation_level=int(data.get("escalation_level", 0)),
            history=[list(h) for h in data.get("history", [])],
        )
        for f in data.get("filings", []):
            status = FilingStatus(
                f["filing"], f.get("hbl"), f["filer"], f["ours"], FilingState(f["state"]), f.get("lrn"), f.get("mrn")
            )
            state.filings[status.key] = status
        for h in data.get("houses", []):
            state.houses[h["hbl"]] = HouseStatus(
                hbl=h["hbl"],
                chain=[(a, b) for a, b in h.get("chain", [])],
                assessed=h.get("assessed", False),
                do_not_load=h.get("do_not_load", False),
                controlled=h.get("controlled", False),
                incomplete=h.get("incomplete", False),
                open_referrals=dict(h.get("open_referrals", {})),
            )
        return state


def filing_key(filing: str, hbl: str | None, filer: str) -> str:
    return f"{filing}|{hbl or '-'}|{filer}"


@dataclass(frozen=True, slots=True)
class Transition:
    state: EnsState
    alerts: tuple[PartyAlert, ...] = ()
    duplicate: bool = False


def apply(
    state: EnsState | None, event: Mapping[str, Any], now: datetime, margins: Sequence[timedelta] = DEFAULT_MARGINS
) -> Transition:
    """The state after ``event`` and the alerts it calls for."""
    kind = event["type"]
    state = state or EnsState(mbl=event["mbl"])
    if kind == "planned":
        return Transition(_planned(state, event, now))
    if kind in ("filing_sent", "filing_blocked"):
        return Transition(_filing_progress(state, event, now))
    if kind == "notification":
        return _notification(state, event, now)
    if kind == "tick":
        return _tick(state, now, margins)
    raise ValueError(f"unknown lifecycle event type {kind!r}")


def _log(state: EnsState, now: datetime, text: str) -> None:
    state.history.append([format_datetime(now), text])
    del state.history[:-HISTORY_LIMIT]


def _planned(state: EnsState, event: Mapping[str, Any], now: datetime) -> EnsState:
    party = event["planning_party"]
    if party not in state.planning_parties:
        state.planning_parties.append(party)
    state.deadline = event.get("deadline") or state.deadline
    for item in event["filings"]:
        record = FilingRecord.from_json(item["record"])
        key = filing_key(record.filing.value, record.hbl, record.filer)
        existing = state.filings.get(key)
        ours = bool(item["ours"])
        if existing is None:
            state.filings[key] = FilingStatus(
                record.filing.value,
                record.hbl,
                record.filer,
                ours,
                FilingState.PLANNED if ours else FilingState.EXPECTED,
                record.lrn if ours else None,
            )
        elif ours and not existing.ours:
            existing.ours, existing.lrn = True, record.lrn
            if existing.state is FilingState.EXPECTED:
                existing.state = FilingState.PLANNED
        if record.hbl is not None and record.hbl not in state.houses:
            state.houses[record.hbl] = HouseStatus(record.hbl, list(record.hbl_chain))
    _log(state, now, f"plan of {party} (version {event.get('version', 1)}): {len(event['filings'])} filings")
    return state


def _filing_progress(state: EnsState, event: Mapping[str, Any], now: datetime) -> EnsState:
    record = FilingRecord.from_json(event["record"])
    key = filing_key(record.filing.value, record.hbl, record.filer)
    status = state.filings.setdefault(
        key, FilingStatus(record.filing.value, record.hbl, record.filer, True, FilingState.PLANNED)
    )
    status.lrn = record.lrn or status.lrn
    if event["type"] == "filing_sent":
        if status.state in (FilingState.PLANNED, FilingState.EXPECTED, FilingState.BLOCKED, FilingState.REJECTED):
            status.state = FilingState.SENT
        _log(state, now, f"{record.filing.value} for {record.hbl or record.mbl} sent by {record.filer} as {record.lrn}")
    else:
        status.state = FilingState.BLOCKED
        _log(state, now, f"{record.filing.value} for {record.hbl or record.mbl} blocked by validation")
    return state


def _notification(state: EnsState, event: Mapping[str, Any], now: datetime) -> Transition:
    notification_id = event["notification_id"]
    if notification_id in state.seen:
        return Transition(state, duplicate=True)
    state.seen.append(notification_id)
    del state.seen[:-SEEN_LIMIT]
    record = FilingRecord.from_json(event["record"])
    notification: Notification = event["notification"]
    key = filing_key(record.filing.value, record.hbl, record.filer)
    status = state.filings.get(key)
    hbls = notification.hbls or ((record.hbl,) if record.hbl else ())
    houses = [state.houses.setdefault(h, HouseStatus(h, list(record.hbl_chain))) for h in hbls]
    kind = notification.kind
    if status is not None:
        if kind is NotificationKind.REGISTERED:
            status.state, status.mrn = FilingState.REGISTERED, notification.mrn or status.mrn
        elif kind in (NotificationKind.REJECTED, NotificationKind.LIFECYCLE_ERROR):
            status.state = FilingState.REJECTED
        elif kind is NotificationKind.INVALIDATION_ACCEPTED:
            status.state = FilingState.INVALIDATED
    for house in houses:
        if kind in (NotificationKind.NOT_COMPLETE, NotificationKind.PENDING):
            house.incomplete = True
        elif kind is NotificationKind.ASSESSMENT_COMPLETE:
            house.assessed, house.do_not_load, house.incomplete = True, False, False
            house.open_referrals.clear()
        elif kind is NotificationKind.DO_NOT_LOAD:
            house.do_not_load = True
        elif kind in (NotificationKind.RFI, NotificationKind.RFS) and notification.referral_reference:
            deadline = notification.deadline
            house.open_referrals[notification.referral_reference] = deadline and format_datetime(deadline)
        elif kind in (NotificationKind.CONTROL, NotificationKind.CONTROL_AEO):
            house.controlled = True
    _log(state, now, f"{notification.message_type} ({kind.value}) for {record.hbl or record.mbl}")
    return Transition(state, alerts_for(notification, record, notification_id, now))


def _tick(state: EnsState, now: datetime, margins: Sequence[timedelta]) -> Transition:
    """Escalate missing filings as the lodging deadline nears: one alert per margin crossed, never twice."""
    if state.deadline is None:
        return Transition(state)
    missing = state.missing_filings()
    deadline = parse_datetime(state.deadline)
    level = sum(1 for m in margins if now >= deadline - m)
    if not missing or level <= state.escalation_level:
        return Transition(state)
    state.escalation_level = level
    urgency = Urgency.CRITICAL if now >= deadline - margins[-1] or level >= len(margins) - 1 else Urgency.HIGH
    alerts: list[PartyAlert] = []
    for status in missing:
        recipients = [status.filer] if status.ours else [status.filer, *state.planning_parties]
        for party in dict.fromkeys(recipients):
            source = f"deadline|{state.mbl}|{status.key}|{level}"
            left = deadline - now
            when = "passed" if left <= timedelta(0) else f"in {_hours(left)}"
            alerts.append(
                PartyAlert(
                    alert_id=alert_id(source, party),
                    party=party,
                    urgency=urgency,
                    action=Action.FILE_MISSING_FILING if party == status.filer else Action.CHASE_MISSING_FILER,
                    title=f"{status.filing} for {status.hbl or state.mbl} not lodged: deadline {when}",
                    message=(
                        f"{status.filer} has not lodged {status.filing} for {status.hbl or state.mbl} "
                        f"(state {status.state.value}); the ENS must be complete by {state.deadline}."
                    ),
                    mbl=state.mbl,
                    hbl=status.hbl,
                    hbl_chain=tuple(state.houses[status.hbl].chain) if status.hbl in state.houses else (),
                    party_at_fault=status.filer,
                    lrn=status.lrn,
                    mrn=status.mrn,
                    referral_reference=None,
                    deadline=deadline,
                    message_type="DEADLINE",
                    created_at=now,
                )
            )
    _log(state, now, f"deadline escalation level {level}: {len(missing)} filings missing")
    return Transition(state, tuple(alerts))


def _hours(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:.0f} h" if hours >= 1 else f"{delta.total_seconds() / 60:.0f} min"
