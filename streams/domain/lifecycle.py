"""The ENS lifecycle of one consolidation, per MBL and per HBL, as a pure state machine.

``apply(state, event, now)`` returns the new state and the alerts the event calls for; the pipeline keeps the state
in a Faust table and emits the alerts. The state of an HBL is derived from the facts recorded about it (filings and
their answers, holds, referrals), never stored beside them, so it cannot drift from them.
Events are the typed values of ``streams.domain.events``: ``Planned``, ``FilingSent``, ``FilingBlocked``,
``NotificationReceived``, ``Tick``, ``Ack``, ``AnswerSent``, ``ChangeSent``.

A Do Not Load, RFI or RFS alert stays open, and is escalated by the watchdog's ticks as its deadline nears, until the
party it was sent to acknowledges it (``ack``) or customs lifts the condition (assessment complete). An ack is an
event of the MBL's state rather than a side table so that every worker replaying the changelog agrees on it.
Escalation waits for the first margin crossed *after* the alert was raised: the alert itself already told its
party the deadline, so an RFI due in 24 h is not "unacknowledged" seconds after it arrived.

Alerts follow the state: an alert whose subject has changed since is closed by a record to the same party
(``streams.domain.routing.closing_alert``). A missing-filing alert is resolved once the filing is registered (or
leaves the plan) and superseded by the next margin's; a "Filing blocked" alert once the fixed version is filed; a
rejection once the filing is registered; a DNL/RFI/RFS alert once customs lifts its condition. A filing customs
registered stays lodged whatever later message of it customs refuses (a duplicate, an amendment, an answer).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, assert_never

from streams.domain.dates import format_datetime, parse_datetime
from streams.domain.deadlines import DEFAULT_RESPONSE_TIMES, AnswerDeadline, answer_deadline
from streams.domain.events import (
    Ack,
    AnswerSent,
    ChangeSent,
    FilingBlocked,
    FilingSent,
    LifecycleEvent,
    NotificationReceived,
    Planned,
    Tick,
)
from streams.domain.ledger import FilingRecord
from streams.domain.notifications import REFERRAL_ANSWERS, Action, Notification, NotificationKind, Urgency
from streams.domain.routing import (
    FAULT_KINDS,
    REFUSAL_KINDS,
    PartyAlert,
    acknowledgement_alert,
    alert_id,
    alerts_for,
    closing_alert,
)

#: How many notification ids a state remembers to suppress duplicates (customs re-sends, replays).
SEEN_LIMIT = 2000
HISTORY_LIMIT = 200
#: How many acknowledgements a state remembers (alert id -> who and when) for the operator views.
ACK_LIMIT = 500
#: Default escalation margins before the lodging deadline, widest first.
DEFAULT_MARGINS: tuple[timedelta, ...] = (timedelta(hours=48), timedelta(hours=24), timedelta(hours=6), timedelta(0))


class FilingState(StrEnum):
    EXPECTED = "expected"
    PLANNED = "planned"
    BLOCKED = "blocked"
    SENT = "sent"
    REGISTERED = "registered"
    REJECTED = "rejected"
    AMENDED = "amended"
    """Registered, and customs accepted an amendment (IE3N10)."""
    INVALIDATION_REQUESTED = "invalidation_requested"
    """Registered, and we asked customs to withdraw it (IE3Q04); no longer part of the plan."""
    INVALIDATED = "invalidated"
    WITHDRAWN = "withdrawn"
    """No longer planned, and customs never registered it: nothing to invalidate (or another party's to withdraw)."""


#: Filings customs does not hold: a plan that drops one has nothing to invalidate.
UNREGISTERED = frozenset({FilingState.EXPECTED, FilingState.PLANNED, FilingState.BLOCKED, FilingState.REJECTED})
#: Registered states; another party's filing in one of them, dropped from the plan, is that party's to withdraw
#: (ours are invalidated by an IE3Q04 instead).
LODGED = frozenset({FilingState.REGISTERED, FilingState.AMENDED})

#: Filings that no longer count towards the ENS.
INACTIVE = frozenset({FilingState.INVALIDATION_REQUESTED, FilingState.INVALIDATED, FilingState.WITHDRAWN})


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
    WITHDRAWN = "withdrawn"
    """Every filing of the house consignment was invalidated or withdrawn: it left the ENS."""


@dataclass(slots=True)
class FilingStatus:
    filing: str
    hbl: str | None
    filer: str
    ours: bool
    state: FilingState
    lrn: str | None = None
    mrn: str | None = None
    planned_by: list[str] = field(default_factory=list)
    """Planning parties whose latest plan holds this filing; empty once every one of them dropped it."""
    dropped: bool = False
    """True once no plan holds the filing any more: nobody is chased for it."""

    @property
    def key(self) -> str:
        return filing_key(self.filing, self.hbl, self.filer)

    @property
    def lodged(self) -> bool:
        """Registered with customs and still live: it has an MRN (whatever later message of it customs refused)."""
        if self.state in INACTIVE:
            return False
        return self.state in (FilingState.REGISTERED, FilingState.AMENDED) or self.mrn is not None

    @property
    def active(self) -> bool:
        return self.state not in INACTIVE


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


class NaggingKind(StrEnum):
    """Customs answers that keep nagging their recipient until acknowledged: each can stop or delay the cargo."""

    DO_NOT_LOAD = "dnl"
    RFI = "rfi"
    RFS = "rfs"


NAGGING: Mapping[NotificationKind, NaggingKind] = {
    NotificationKind.DO_NOT_LOAD: NaggingKind.DO_NOT_LOAD,
    NotificationKind.RFI: NaggingKind.RFI,
    NotificationKind.RFS: NaggingKind.RFS,
}

NAGGING_ACTIONS: Mapping[NaggingKind, Action] = {
    NaggingKind.DO_NOT_LOAD: Action.STOP_LOADING,
    NaggingKind.RFI: Action.ANSWER_RFI,
    NaggingKind.RFS: Action.ANSWER_RFS,
}


@dataclass(slots=True)
class OpenAlert:
    """A DNL, RFI or RFS alert sent to one party, remembered so that its escalation stops once acknowledged."""

    alert_id: str
    kind: NaggingKind
    party: str
    hbl: str | None
    referral_reference: str | None
    deadline: str | None
    """The answer deadline customs gave (RFI/RFS); None for a DNL, which is due by the ENS lodging deadline."""
    raised_at: str
    title: str
    acknowledged_by: str | None = None
    acknowledged_at: str | None = None
    escalation_level: int = 0
    escalations: list[str] = field(default_factory=list)
    """Ids of the escalation alerts raised for it; acknowledging any of them acknowledges this alert."""
    closed: bool = False
    """True once customs lifted its condition and the party was told (a ``RESOLVED`` record)."""

    @property
    def acknowledged(self) -> bool:
        return self.acknowledged_by is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "alert_id": self.alert_id,
            "kind": self.kind.value,
            "party": self.party,
            "hbl": self.hbl,
            "referral_reference": self.referral_reference,
            "deadline": self.deadline,
            "raised_at": self.raised_at,
            "title": self.title,
            "acknowledged_by": self.acknowledged_by,
            "acknowledged_at": self.acknowledged_at,
            "escalation_level": self.escalation_level,
            "escalations": list(self.escalations),
            "closed": self.closed,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> OpenAlert:
        return cls(
            alert_id=data["alert_id"],
            kind=NaggingKind(data["kind"]),
            party=data["party"],
            hbl=data.get("hbl"),
            referral_reference=data.get("referral_reference"),
            deadline=data.get("deadline"),
            raised_at=data["raised_at"],
            title=data.get("title", ""),
            acknowledged_by=data.get("acknowledged_by"),
            acknowledged_at=data.get("acknowledged_at"),
            escalation_level=int(data.get("escalation_level", 0)),
            escalations=list(data.get("escalations", [])),
            closed=bool(data.get("closed", False)),
        )


class StandingKind(StrEnum):
    """Alerts about a filing's state, closed once that state changes."""

    MISSING = "missing"
    BLOCKED = "blocked"
    REJECTED = "rejected"


@dataclass(slots=True)
class StandingAlert:
    """An alert about filings (``subjects``, filing keys) that stands until their state changes."""

    alert_id: str
    kind: StandingKind
    party: str
    subjects: list[str]
    title: str
    hbl: str | None = None
    planning_party: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "alert_id": self.alert_id,
            "kind": self.kind.value,
            "party": self.party,
            "subjects": list(self.subjects),
            "title": self.title,
            "hbl": self.hbl,
            "planning_party": self.planning_party,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StandingAlert:
        return cls(
            alert_id=data["alert_id"],
            kind=StandingKind(data["kind"]),
            party=data["party"],
            subjects=list(data.get("subjects", [])),
            title=data.get("title", ""),
            hbl=data.get("hbl"),
            planning_party=data.get("planning_party"),
        )


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
    open_alerts: dict[str, OpenAlert] = field(default_factory=dict)
    acks: dict[str, list[str]] = field(default_factory=dict)
    """Alert id -> [acknowledged by, at] of every acknowledged alert of this MBL, the latest ``ACK_LIMIT``."""
    standing: dict[str, StandingAlert] = field(default_factory=dict)
    """Alert id -> the alerts about filings' states that still stand (closed ones are dropped)."""

    def house_state(self, hbl: str) -> HouseState:
        """Derived from the recorded facts, worst condition first."""
        house = self.houses[hbl]
        every = [f for f in self.filings.values() if f.hbl == hbl]
        filings = [f for f in every if f.active]
        if every and not filings:
            return HouseState.WITHDRAWN
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
        """Filings the ENS still lacks (not registered, still in a plan), ours and others'."""
        return [f for f in self.filings.values() if not f.lodged and f.active and not f.dropped]

    def condition_holds(self, alert: OpenAlert) -> bool:
        """Whether customs' condition behind the alert still stands: the HBL still held, the referral still open."""
        house = self.houses.get(alert.hbl or "")
        if house is None:
            return False
        if alert.kind is NaggingKind.DO_NOT_LOAD:
            return house.do_not_load
        return alert.referral_reference in house.open_referrals

    def alert_deadline(self, alert: OpenAlert) -> datetime | None:
        """Customs' answer deadline, else the ENS lodging deadline (the cargo must be cleared before loading)."""
        deadline = alert.deadline or self.deadline
        return None if deadline is None else parse_datetime(deadline)

    def nagging(self) -> list[OpenAlert]:
        """Open alerts nobody acknowledged whose condition still stands: the ones the watchdog escalates."""
        return [a for a in self.open_alerts.values() if not a.acknowledged and self.condition_holds(a)]

    def acknowledgement(self, alert_id: str) -> tuple[str, str] | None:
        """Who acknowledged the alert and when, also for an escalation whose original alert was acknowledged."""
        ack = self.acks.get(alert_id)
        if ack is not None:
            return ack[0], ack[1]
        owner = self.owner_of(alert_id)
        if owner is not None and owner.acknowledged_by is not None:
            return owner.acknowledged_by, owner.acknowledged_at or ""
        return None

    def owner_of(self, alert_id: str) -> OpenAlert | None:
        """The open alert ``alert_id`` is, or escalated."""
        if alert_id in self.open_alerts:
            return self.open_alerts[alert_id]
        return next((a for a in self.open_alerts.values() if alert_id in a.escalations), None)

    def needs_tick(self, now: datetime, widest_margin: timedelta) -> bool:
        """Whether the watchdog should tick this ENS: missing filings or unacknowledged alerts near their deadline."""
        due = self.tick_due_at(widest_margin)
        return due is not None and now >= due

    def tick_due_at(self, widest_margin: timedelta) -> datetime | None:
        """From when on the watchdog should tick this ENS as it stands (``None``: never): the earliest deadline of
        its missing filings and unacknowledged alerts, less the widest margin. Only a new state can change it, so
        the worker keeps it per ENS instead of decoding every state at each watchdog tick."""
        deadlines: list[datetime] = []
        if self.deadline and self.missing_filings():
            deadlines.append(parse_datetime(self.deadline))
        for alert in self.nagging():
            deadline = self.alert_deadline(alert)
            if deadline is not None:
                deadlines.append(deadline)
        return min(deadlines) - widest_margin if deadlines else None

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
                    "planned_by": f.planned_by,
                    "dropped": f.dropped,
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
            "open_alerts": [a.to_json() for a in self.open_alerts.values()],
            "acks": self.acks,
            "standing": [a.to_json() for a in self.standing.values()],
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
            acks={k: list(v) for k, v in data.get("acks", {}).items()},
        )
        for a in data.get("open_alerts", []):
            alert = OpenAlert.from_json(a)
            state.open_alerts[alert.alert_id] = alert
        for f in data.get("filings", []):
            status = FilingStatus(
                f["filing"], f.get("hbl"), f["filer"], f["ours"], FilingState(f["state"]), f.get("lrn"), f.get("mrn")
            )
            status.planned_by = list(f.get("planned_by", []))
            status.dropped = bool(f.get("dropped", False))
            state.filings[status.key] = status
        for a in data.get("standing", []):
            standing = StandingAlert.from_json(a)
            state.standing[standing.alert_id] = standing
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
    state: EnsState | None,
    event: LifecycleEvent,
    now: datetime,
    margins: Sequence[timedelta] = DEFAULT_MARGINS,
    response_times: Mapping[str, timedelta] = DEFAULT_RESPONSE_TIMES,
) -> Transition:
    """The state after ``event`` and the alerts it calls for, closing records of alerts it made obsolete included.

    ``response_times`` (request type -> time) give an RFI's or RFS's deadline when customs sends none.
    """
    state = state or EnsState(mbl=event.mbl)
    match event:
        case Planned():
            transition = Transition(_planned(state, event, now))
        case FilingSent():
            transition = _filing_sent(state, event, now)
        case FilingBlocked():
            transition = _filing_blocked(state, event, now)
        case NotificationReceived():
            transition = _notification(state, event, now, margins, response_times)
        case Tick():
            transition = _tick(state, now, margins)
        case Ack():
            return _ack(state, event, now)
        case AnswerSent():
            return _answer_sent(state, event, now)
        case ChangeSent():
            transition = Transition(_change_sent(state, event, now))
        case _:
            assert_never(event)
    if transition.duplicate:
        return transition
    return replace(transition, alerts=(*transition.alerts, *_settle(state, now)))


def _log(state: EnsState, now: datetime, text: str) -> None:
    state.history.append([format_datetime(now), text])
    del state.history[:-HISTORY_LIMIT]


def _planned(state: EnsState, event: Planned, now: datetime) -> EnsState:
    party = event.planning_party
    if party not in state.planning_parties:
        state.planning_parties.append(party)
    state.deadline = event.deadline or state.deadline
    in_plan: set[str] = set()
    for item in event.filings:
        record = item.record
        key = filing_key(record.filing.value, record.hbl, record.filer)
        in_plan.add(key)
        existing = state.filings.get(key)
        ours = item.ours
        if existing is None:
            existing = state.filings[key] = FilingStatus(
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
        if party not in existing.planned_by:
            existing.planned_by.append(party)
        existing.dropped = False
        if record.hbl is not None and record.hbl not in state.houses:
            state.houses[record.hbl] = HouseStatus(record.hbl, list(record.hbl_chain))
    for record in event.withdrawn:
        status = state.filings.get(filing_key(record.filing.value, record.hbl, record.filer))
        if status is not None and (status.state in UNREGISTERED or (not status.ours and status.state in LODGED)):
            status.state = FilingState.WITHDRAWN
    for status in state.filings.values():
        if status.key not in in_plan and party in status.planned_by:
            status.planned_by.remove(party)
            if not status.planned_by and not status.dropped:
                status.dropped = True
                _log(state, now, f"{status.filing} for {status.hbl or state.mbl} by {status.filer} left the plans")
    _log(state, now, f"plan of {party} (version {event.version}): {len(event.filings)} filings")
    return state


def _change_sent(state: EnsState, event: ChangeSent, now: datetime) -> EnsState:
    """An amendment or invalidation request went to customs (or, the filing being unregistered, was not needed)."""
    status = state.filings.get(filing_key(event.filing, event.hbl, event.filer))
    what = f"{event.filing} for {event.hbl or state.mbl} ({event.lrn})"
    if status is not None and event.kind != "amend":
        status.state = FilingState.INVALIDATION_REQUESTED if event.registered else FilingState.WITHDRAWN
    _log(state, now, f"{event.kind} of {what}: {event.message_type or 'nothing sent, not registered'}")
    return state


def _progress(state: EnsState, record: FilingRecord) -> tuple[str, FilingStatus]:
    """The key and status of a filing that went out or was blocked (ours, planned if the plan did not hold it)."""
    key = filing_key(record.filing.value, record.hbl, record.filer)
    status = state.filings.setdefault(
        key, FilingStatus(record.filing.value, record.hbl, record.filer, True, FilingState.PLANNED)
    )
    status.lrn = record.lrn or status.lrn
    return key, status


def _filing_sent(state: EnsState, event: FilingSent, now: datetime) -> Transition:
    record = event.record
    key, status = _progress(state, record)
    if status.state in (FilingState.PLANNED, FilingState.EXPECTED, FilingState.BLOCKED, FilingState.REJECTED):
        status.state = FilingState.SENT
    _log(state, now, f"{record.filing.value} for {record.hbl or record.mbl} sent by {record.filer} as {record.lrn}")
    return Transition(state, tuple(_unblock(state, key, record.lrn, now)))


def _filing_blocked(state: EnsState, event: FilingBlocked, now: datetime) -> Transition:
    record = event.record
    key, status = _progress(state, record)
    if not status.lodged:
        status.state = FilingState.BLOCKED
    _log(state, now, f"{record.filing.value} for {record.hbl or record.mbl} blocked by validation")
    closing: list[PartyAlert] = []
    for blocked in event.alerts:
        closing += _stand(
            state,
            StandingAlert(
                blocked.alert_id,
                StandingKind.BLOCKED,
                blocked.party,
                [key],
                blocked.title,
                record.hbl,
                record.planning_party,
            ),
            now,
        )
    return Transition(state, tuple(closing))


def _unblock(state: EnsState, key: str, lrn: str | None, now: datetime) -> list[PartyAlert]:
    """A version of a blocked filing was filed: "Filing blocked" alerts about nothing else are resolved."""
    closing: list[PartyAlert] = []
    for alert in list(state.standing.values()):
        if alert.kind is not StandingKind.BLOCKED or key not in alert.subjects:
            continue
        alert.subjects.remove(key)
        if not any(k in state.filings and not state.filings[k].dropped for k in alert.subjects):
            del state.standing[alert.alert_id]
            reason = "the fixed version was filed" + (f" as {lrn}" if lrn else "")
            closing.append(
                closing_alert(alert.alert_id, alert.party, alert.title, reason, now, mbl=state.mbl, hbl=alert.hbl)
            )
    return closing


def _stand(state: EnsState, alert: StandingAlert, now: datetime) -> list[PartyAlert]:
    """Remember an alert about filings; an older one of its kind to the same party about them is superseded."""
    existing = state.standing.get(alert.alert_id)
    if existing is not None:
        existing.subjects.extend(s for s in alert.subjects if s not in existing.subjects)
        return []
    closing: list[PartyAlert] = []
    for old in list(state.standing.values()):
        if old.kind is alert.kind and old.party == alert.party and set(old.subjects) & set(alert.subjects):
            del state.standing[old.alert_id]
            closing.append(
                closing_alert(
                    old.alert_id,
                    old.party,
                    old.title,
                    f"a newer alert replaces it ({alert.title})",
                    now,
                    mbl=state.mbl,
                    hbl=old.hbl,
                    superseded_by=alert.alert_id,
                )
            )
    state.standing[alert.alert_id] = alert
    return closing


def _standing_reason(state: EnsState, alert: StandingAlert) -> str | None:
    """Why a standing alert no longer stands, or None while it does."""
    subjects = [state.filings.get(key) for key in alert.subjects]
    if all(s is None or s.dropped for s in subjects):
        return "the filing is no longer in the plan"
    live = [s for s in subjects if s is not None and not s.dropped]
    if all(s.state is FilingState.INVALIDATED for s in live):
        return "the filing was invalidated"
    if alert.kind is StandingKind.BLOCKED:
        return None  # closed by the filing of a fixed version (``_filing_progress``), registered or not
    if all(s.lodged for s in live):
        return "customs registered the filing" + (f" (MRN {live[0].mrn})" if len(live) == 1 and live[0].mrn else "")
    return None


def _settle(state: EnsState, now: datetime) -> list[PartyAlert]:
    """Close every alert whose subject changed: a ``RESOLVED`` record to its party, once."""
    closing: list[PartyAlert] = []
    for alert in list(state.standing.values()):
        reason = _standing_reason(state, alert)
        if reason is not None:
            del state.standing[alert.alert_id]
            closing.append(
                closing_alert(alert.alert_id, alert.party, alert.title, reason, now, mbl=state.mbl, hbl=alert.hbl)
            )
    for nagging in state.open_alerts.values():
        if nagging.closed or nagging.hbl not in state.houses or state.condition_holds(nagging):
            continue  # an alert about no known HBL has no condition to see lifted
        nagging.closed = True
        lifted = (
            "customs lifted the Do Not Load" if nagging.kind is NaggingKind.DO_NOT_LOAD else "the referral is closed"
        )
        for closed_id in (nagging.alert_id, *nagging.escalations):
            closing.append(
                closing_alert(closed_id, nagging.party, nagging.title, lifted, now, mbl=state.mbl, hbl=nagging.hbl)
            )
    if closing:
        _log(state, now, f"{len(closing)} alerts closed: their subject changed")
    return closing


def _level(now: datetime, deadline: datetime, margins: Sequence[timedelta]) -> int:
    """How many margins before ``deadline`` have been reached at ``now``."""
    return sum(1 for m in margins if now >= deadline - m)


def _notification(
    state: EnsState,
    event: NotificationReceived,
    now: datetime,
    margins: Sequence[timedelta],
    response_times: Mapping[str, timedelta],
) -> Transition:
    notification_id = event.notification_id
    if notification_id in state.seen:
        return Transition(state, duplicate=True)
    state.seen.append(notification_id)
    del state.seen[:-SEEN_LIMIT]
    record = event.record
    notification = event.notification
    key = filing_key(record.filing.value, record.hbl, record.filer)
    status = state.filings.get(key)
    hbls = notification.hbls or ((record.hbl,) if record.hbl else ())
    houses = [state.houses.setdefault(h, HouseStatus(h, list(record.hbl_chain))) for h in hbls]
    kind = notification.kind
    deadline = answer_deadline(notification, now, response_times)
    refused_filing = kind in REFUSAL_KINDS and notification.refuses_a_filing
    if status is not None:
        if kind is NotificationKind.REGISTERED:
            status.state, status.mrn = FilingState.REGISTERED, notification.mrn or status.mrn
        elif kind in REFUSAL_KINDS and _refuses_a_request(notification, record, status):
            status.state = FilingState.REGISTERED if status.state in INACTIVE else status.state
            _log(state, now, f"{notification.message_type} refused a request about {key}: the filing stands")
        elif refused_filing and status.lodged:
            _log(state, now, f"{notification.message_type} for registered {key}: the registration stands")
        elif refused_filing:
            status.state = FilingState.REJECTED
        elif kind is NotificationKind.INVALIDATION_ACCEPTED:
            status.state = FilingState.INVALIDATED
        elif kind is NotificationKind.AMENDMENT_ACCEPTED:
            status.state, status.mrn = FilingState.AMENDED, notification.mrn or status.mrn
    if kind in REFUSAL_KINDS and notification.rejected_message in REFERRAL_ANSWERS:
        _reopen(state, notification, now)
    if kind is NotificationKind.ASSESSMENT_COMPLETE:
        _complete(state, set(hbls), now)
    for house in houses:
        if kind in (NotificationKind.NOT_COMPLETE, NotificationKind.PENDING):
            house.incomplete = True
        elif kind is NotificationKind.ASSESSMENT_COMPLETE:
            house.assessed, house.do_not_load, house.incomplete = True, False, False
            house.open_referrals.clear()
        elif kind is NotificationKind.DO_NOT_LOAD:
            house.do_not_load = True
        elif kind in (NotificationKind.RFI, NotificationKind.RFS) and notification.referral_reference:
            house.open_referrals[notification.referral_reference] = (
                None if deadline is None else format_datetime(deadline.latest)
            )
        elif kind in (NotificationKind.CONTROL, NotificationKind.CONTROL_AEO):
            house.controlled = True
    _log(state, now, f"{notification.message_type} ({kind.value}) for {', '.join(hbls) or record.mbl}")
    alerts = _alerts_per_house(state, notification, record, notification_id, now, deadline)
    closing: list[PartyAlert] = []
    if refused_filing and status is not None and status.state is FilingState.REJECTED:
        for alert in alerts:
            standing = StandingAlert(alert.alert_id, StandingKind.REJECTED, alert.party, [key], alert.title, alert.hbl)
            closing += _stand(state, standing, now)
    nagging = NAGGING.get(kind)
    if nagging is not None:
        for alert in alerts:
            due = alert.deadline or (parse_datetime(state.deadline) if state.deadline else None)
            state.open_alerts.setdefault(
                alert.alert_id,
                OpenAlert(
                    alert_id=alert.alert_id,
                    kind=nagging,
                    party=alert.party,
                    hbl=alert.hbl,
                    referral_reference=alert.referral_reference,
                    deadline=None if alert.deadline is None else format_datetime(alert.deadline),
                    raised_at=format_datetime(now),
                    title=alert.title,
                    escalation_level=0 if due is None else _level(now, due, margins),
                ),
            )
    return Transition(state, (*alerts, *closing))


def _alerts_per_house(
    state: EnsState,
    notification: Notification,
    record: FilingRecord,
    notification_id: str,
    now: datetime,
    deadline: AnswerDeadline | None,
) -> tuple[PartyAlert, ...]:
    """The notification's alerts; one set per HBL when it puts several HBLs at fault (a DNL of a container), each
    routed to the issuer of that HBL, with an id of its own."""
    hbls = notification.hbls
    if notification.kind not in FAULT_KINDS or len(hbls) < 2:
        return alerts_for(notification, record, notification_id, now, deadline)
    alerts: list[PartyAlert] = []
    for hbl in hbls:
        house = state.houses.get(hbl)
        chain = tuple(house.chain) if house is not None else ()
        one = replace(notification, hbl=hbl, hbls=(hbl,))
        alerts += alerts_for(one, replace(record, hbl=hbl, hbl_chain=chain), f"{notification_id}|{hbl}", now, deadline)
    return tuple(alerts)


def _complete(state: EnsState, hbls: set[str], now: datetime) -> None:
    """Customs assesses only a complete ENS: the filings of an assessed HBL and the master level are registered,
    also those of other filers whose IE3R01 went to them, not to us (so the watchdog stops chasing them)."""
    for status in state.filings.values():
        if (status.hbl is None or status.hbl in hbls) and status.state in (FilingState.EXPECTED, FilingState.SENT):
            status.state = FilingState.REGISTERED
            _log(state, now, f"{status.key} registered: customs assessed the complete ENS")


def _reopen(state: EnsState, notification: Notification, now: datetime) -> None:
    """Customs refused the answer to a referral: its alerts, stopped by the answer, escalate again."""
    references = {r for r in (notification.referral_reference, *notification.referral_references) if r}
    if not references:
        return
    for alert in state.open_alerts.values():
        if alert.referral_reference in references and alert.acknowledged:
            alert.acknowledged_by = alert.acknowledged_at = None
    _log(state, now, f"answer to referral {notification.referral_reference} refused: its alerts are open again")


def _refuses_a_request(notification: Notification, record: FilingRecord, status: FilingStatus) -> bool:
    """An error about an amendment or invalidation of a registered filing (it quotes the request's own reference):
    the filing itself stays registered, as it was before the request."""
    return bool(status.mrn and notification.lrn and record.lrn and notification.lrn != record.lrn)


def _ack(state: EnsState, event: Ack, now: datetime) -> Transition:
    """An operator acknowledged an alert: remember who and when; an open DNL/RFI/RFS stops escalating, and its party
    gets the acknowledgement as a record with the alert's id (the lifecycle knows the addressee of these alerts only).
    """
    alert_id_ = event.alert_id
    if state.acknowledgement(alert_id_) is not None:
        return Transition(state, duplicate=True)
    by = event.by or "unknown"
    at = event.at or format_datetime(now)
    state.acks[alert_id_] = [by, at]
    while len(state.acks) > ACK_LIMIT:
        del state.acks[next(iter(state.acks))]
    owner = state.owner_of(alert_id_)
    _log(state, now, f"alert {alert_id_} acknowledged by {by}")
    if owner is None:
        return Transition(state)
    owner.acknowledged_by, owner.acknowledged_at = by, at
    published = acknowledgement_alert(
        alert_id_, owner.party, owner.title, by, parse_datetime(at), mbl=state.mbl, hbl=owner.hbl,
        referral_reference=owner.referral_reference,
    )  # fmt: skip
    return Transition(state, alerts=(published,))


def _answer_sent(state: EnsState, event: AnswerSent, now: datetime) -> Transition:
    """The filer answered a referral (IE3R02/IE3R03): the referral stays open until customs assesses, but its
    alerts stop escalating, since the party did what was asked of it."""
    reference = event.referral_reference
    filer = event.filer or "the filer"
    answered = [a for a in state.open_alerts.values() if a.referral_reference == reference and not a.acknowledged]
    if not answered and any(reference in line[1] and "answered" in line[1] for line in state.history):
        return Transition(state, duplicate=True)
    at = format_datetime(now)
    for alert in answered:
        alert.acknowledged_by, alert.acknowledged_at = filer, at
    _log(state, now, f"{event.message_type or 'answer'} answered referral {reference} ({filer}); awaiting customs")
    return Transition(state)


def _tick(state: EnsState, now: datetime, margins: Sequence[timedelta]) -> Transition:
    """Escalate missing filings and unacknowledged DNL/RFI/RFS alerts as their deadlines near."""
    alerts = (*_escalate_missing(state, now, margins), *_escalate_nagging(state, now, margins))
    return Transition(state, alerts)


def _escalate_nagging(state: EnsState, now: datetime, margins: Sequence[timedelta]) -> list[PartyAlert]:
    """One escalation per margin reached, to the party that has not acknowledged; a catch-up tick skips to the latest.

    The escalation's id derives from the original alert and the margin, so a replayed tick raises the same id.
    """
    alerts: list[PartyAlert] = []
    for alert in state.nagging():
        deadline = state.alert_deadline(alert)
        if deadline is None:
            continue
        level = _level(now, deadline, margins)
        if level <= alert.escalation_level:
            continue
        alert.escalation_level = level
        left = deadline - now
        when = "passed" if left <= timedelta(0) else f"in {_hours(left)}"
        last = alert.kind is NaggingKind.DO_NOT_LOAD or level >= len(margins)
        escalation = PartyAlert(
            alert_id=alert_id(f"escalation|{alert.alert_id}|{level}", alert.party),
            party=alert.party,
            urgency=Urgency.CRITICAL if last else Urgency.HIGH,
            action=NAGGING_ACTIONS[alert.kind],
            title=f"Unacknowledged: {alert.title} (deadline {when})",
            message=(
                f"Alert {alert.alert_id} of {alert.raised_at} to {alert.party} has not been acknowledged; "
                f"it is due by {format_datetime(deadline)}. Acknowledge it once acted upon."
            ),
            mbl=state.mbl,
            hbl=alert.hbl,
            hbl_chain=tuple(state.houses[alert.hbl].chain) if alert.hbl in state.houses else (),
            party_at_fault=None,
            lrn=None,
            mrn=None,
            referral_reference=alert.referral_reference,
            deadline=deadline,
            message_type="ESCALATION",
            created_at=now,
        )
        alert.escalations.append(escalation.alert_id)
        alerts.append(escalation)
        _log(state, now, f"{alert.kind.value} alert {alert.alert_id} to {alert.party} escalated, level {level}")
    return alerts


def _escalate_missing(state: EnsState, now: datetime, margins: Sequence[timedelta]) -> list[PartyAlert]:
    """Escalate missing filings as the lodging deadline nears: one alert per margin crossed, never twice; each
    supersedes the previous margin's alert about the same filing to the same party."""
    if state.deadline is None:
        return []
    missing = state.missing_filings()
    deadline = parse_datetime(state.deadline)
    level = _level(now, deadline, margins)
    if not missing or level <= state.escalation_level:
        return []
    state.escalation_level = level
    urgency = Urgency.CRITICAL if now >= deadline - margins[-1] or level >= len(margins) - 1 else Urgency.HIGH
    alerts: list[PartyAlert] = []
    for status in missing:
        recipients = [status.filer] if status.ours else [status.filer, *state.planning_parties]
        for party in dict.fromkeys(recipients):
            source = f"deadline|{state.mbl}|{status.key}|{level}"
            left = deadline - now
            when = "passed" if left <= timedelta(0) else f"in {_hours(left)}"
            alert = PartyAlert(
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
            alerts.append(alert)
            standing = StandingAlert(alert.alert_id, StandingKind.MISSING, party, [status.key], alert.title, status.hbl)
            alerts += _stand(state, standing, now)
    _log(state, now, f"deadline escalation level {level}: {len(missing)} filings missing")
    return alerts


def _hours(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:.0f} h" if hours >= 1 else f"{delta.total_seconds() / 60:.0f} min"
