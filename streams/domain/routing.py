"""Who must act on a customs answer, how urgently, and what to tell them.

The facts per message (kind, action, urgency, actors) are the ``MESSAGE_SPECS`` table of
``streams.domain.notifications``; this module turns actors into parties of the consolidation, adds the party
whose HBL is at fault for co-loaded cargo, and words the alert. Alert ids are derived from the notification's
identity and the recipient, so a redelivered notification yields the same alert id and can be deduplicated.

An alert whose subject has since changed is closed by a further record to the same party (``closing_alert``):
``RESOLVED`` when the cause is gone, ``SUPERSEDED`` when a newer alert replaces it. Its id follows the same scheme
(derived from the closed alert's id), and ``closes_alert_id`` names the alert it closes.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from streams.domain.dates import format_datetime
from streams.domain.deadlines import AnswerDeadline
from streams.domain.ledger import FilingRecord
from streams.domain.model import Consolidation
from streams.domain.notifications import Action, Actor, Notification, NotificationKind, Urgency
from streams.domain.outbound import BookingOutcome, PlanMemory
from streams.domain.validation import Finding

#: Kinds whose cause lies in the data of one HBL: its issuer is told too, not only the filer.
FAULT_KINDS = frozenset(
    {
        NotificationKind.REJECTED,
        NotificationKind.LIFECYCLE_ERROR,
        NotificationKind.DO_NOT_LOAD,
        NotificationKind.RFI,
        NotificationKind.RFS,
        NotificationKind.CONTROL,
        NotificationKind.CONTROL_AEO,
        NotificationKind.ARRIVAL_REJECTED,
    }
)

#: Kinds that refuse a message: a refused answer or amendment leaves the filing as it was.
REFUSAL_KINDS = frozenset({NotificationKind.REJECTED, NotificationKind.LIFECYCLE_ERROR})

#: Title per kind; ``{filing}``, ``{hbl}`` and ``{mbl}`` are filled in.
TITLES: Mapping[NotificationKind, str] = MappingProxyType(
    {
        NotificationKind.REGISTERED: "{filing} for {hbl} registered",
        NotificationKind.REJECTED: "{filing} for {hbl} rejected: fix and re-file",
        NotificationKind.LIFECYCLE_ERROR: "{filing} for {hbl} refused in its lifecycle: fix and re-file",
        NotificationKind.NOT_COMPLETE: "ENS for {hbl} not complete: chase the missing filer",
        NotificationKind.PENDING: "ENS for {hbl} pending: your filing is missing",
        NotificationKind.ASSESSMENT_COMPLETE: "Risk assessment complete for {hbl}",
        NotificationKind.DO_NOT_LOAD: "DO NOT LOAD {hbl}: stop loading now",
        NotificationKind.RFI: "Request for information on {hbl}: answer before the deadline",
        NotificationKind.RFI_NOTICE_TO_CARRIER: "Customs asked for information on {hbl}",
        NotificationKind.RFS: "Request for screening of {hbl}: screen and answer",
        NotificationKind.RFS_NOTICE_TO_CARRIER: "Customs asked for high-risk screening of {hbl}",
        NotificationKind.CONTROL: "Control: present the goods of {hbl}",
        NotificationKind.CONTROL_AEO: "Control (AEO): present the goods of {hbl}",
        NotificationKind.AMENDMENT_ACCEPTED: "Amendment of {filing} for {hbl} accepted",
        NotificationKind.ARRIVAL_REGISTERED: "Arrival registered for {mbl}",
        NotificationKind.ARRIVAL_REJECTED: "Arrival notification for {mbl} refused",
        NotificationKind.INVALIDATION_ACCEPTED: "Invalidation of {filing} for {hbl} accepted",
    }
)


@dataclass(frozen=True, slots=True)
class PartyAlert:
    """What one party must know or do about one customs answer (the ``PartyAlert`` Avro contract)."""

    alert_id: str
    party: str
    urgency: Urgency
    action: Action
    title: str
    message: str
    mbl: str | None
    hbl: str | None
    hbl_chain: tuple[tuple[str, str], ...]
    party_at_fault: str | None
    lrn: str | None
    mrn: str | None
    referral_reference: str | None
    deadline: datetime | None
    message_type: str
    created_at: datetime
    closes_alert_id: str | None = None
    """On a ``RESOLVED`` or ``SUPERSEDED`` record: the id of the alert it closes."""
    acknowledged: bool = False
    """True on the record that publishes an operator's acknowledgement of the alert ``alert_id``."""

    def to_record(self) -> dict[str, Any]:
        """The Avro record (``schemas/avro/PartyAlert.avsc``)."""
        return {
            "alert_id": self.alert_id,
            "party_id": self.party,
            "urgency": self.urgency.value,
            "action": self.action.value,
            "title": self.title,
            "message": self.message,
            "mbl": self.mbl or "",
            "hbl": self.hbl,
            "hbl_chain": [{"hbl": h, "issuer": i} for h, i in self.hbl_chain],
            "party_at_fault": self.party_at_fault,
            "lrn": self.lrn,
            "mrn": self.mrn,
            "referral_reference": self.referral_reference,
            "deadline": None if self.deadline is None else format_datetime(self.deadline),
            "notification_message_type": self.message_type,
            "created_at": format_datetime(self.created_at),
            "acknowledged": self.acknowledged,
            "closes_alert_id": self.closes_alert_id,
        }


def alert_id(source_id: str, party: str) -> str:
    """Deterministic: the same source event and recipient always give the same id."""
    return hashlib.sha256(f"{source_id}|{party}".encode()).hexdigest()[:24]


def recipients(notification: Notification, record: FilingRecord) -> tuple[str, ...]:
    """The parties that must hear of this notification, in order, without repeats."""
    parties: list[str] = []
    for actor in notification.actors:
        if actor is Actor.FILER:
            parties.append(record.filer)
        elif actor is Actor.CARRIER:
            parties.append(record.carrier)
        elif actor is Actor.SUPPLEMENTARY_DECLARANT:
            missing = [record.party_for_eori(e) for e in (notification.addressee, *notification.missing_filers)]
            parties.extend(p for p in missing if p)
            if not any(missing) and record.supplementary_declarant:
                parties.append(record.supplementary_declarant)
    if notification.kind in FAULT_KINDS and record.hbl_chain:
        parties.append(record.party_at_fault)
    if not parties:
        parties.append(record.planning_party)
    return tuple(dict.fromkeys(parties))


def describe(notification: Notification, record: FilingRecord, deadline: AnswerDeadline | None = None) -> str:
    """The alert's text: what happened, where in the HBL chain, and what to do."""
    parts: list[str] = []
    if notification.rejected_message and not notification.refuses_a_filing:
        parts.append(f"Customs refused the {notification.rejected_message} sent; the filing itself stands.")
    if record.hbl_chain:
        chain = " > ".join(f"{h} ({issuer})" for h, issuer in record.hbl_chain)
        parts.append(f"HBL chain: {chain}; the data at fault is on the HBL of {record.party_at_fault}.")
    if notification.errors:
        errors = "; ".join(
            f"code {e.code}"
            + (f" at {e.pointer}" if e.pointer else "")
            + (f": {e.description}" if e.description else "")
            for e in notification.errors
        )
        parts.append(f"Customs errors: {errors}.")
    missing = [record.party_for_eori(e) or e for e in notification.missing_filers]
    if missing:
        parts.append(f"Not filed yet by: {', '.join(missing)}.")
    if notification.containers:
        parts.append(f"Containers named by customs: {', '.join(notification.containers)}.")
    if deadline is not None:
        note = f" ({deadline.note})" if deadline.note else ""
        parts.append(f"Answer due by {format_datetime(deadline.latest)}{note}.")
    if notification.kind is NotificationKind.DO_NOT_LOAD:
        parts.append(
            "The goods must not be loaded. Contact the customs office of first entry; no reply message exists."
        )
    if notification.mrn:
        parts.append(f"MRN {notification.mrn}.")
    return " ".join(parts)


def _error_text(code: str, pointer: str | None, description: str | None) -> str:
    return f"code {code}" + (f" at {pointer}" if pointer else "") + (f": {description}" if description else "")


def alerts_for(
    notification: Notification,
    record: FilingRecord,
    notification_id: str,
    now: datetime,
    deadline: AnswerDeadline | None = None,
) -> tuple[PartyAlert, ...]:
    """One alert per recipient for a correlated notification; ``deadline`` is when an answer is due, if asked."""
    hbl = notification.hbl or record.hbl
    title = TITLES[notification.kind].format(
        filing=record.filing.value, hbl=hbl or record.mbl, mbl=notification.mbl or record.mbl
    )
    if notification.kind in REFUSAL_KINDS and not notification.refuses_a_filing:
        title = f"{notification.rejected_message} for {hbl or record.mbl} refused by customs: fix and send again"
    message = describe(notification, record, deadline)
    at_fault = record.party_at_fault if notification.kind in FAULT_KINDS else None
    return tuple(
        PartyAlert(
            alert_id=alert_id(notification_id, party),
            party=party,
            urgency=notification.urgency,
            action=notification.action,
            title=title,
            message=message,
            mbl=record.mbl,
            hbl=hbl,
            hbl_chain=record.hbl_chain,
            party_at_fault=at_fault,
            lrn=notification.lrn or record.lrn,
            mrn=notification.mrn or record.mrn,
            referral_reference=notification.referral_reference,
            deadline=None if deadline is None else deadline.latest,
            message_type=notification.message_type,
            created_at=now,
        )
        for party in recipients(notification, record)
    )


class Closing(StrEnum):
    """Why an alert no longer stands: the record's ``notification_message_type``."""

    RESOLVED = "RESOLVED"
    SUPERSEDED = "SUPERSEDED"


#: ``notification_message_type`` of the record that publishes an acknowledgement.
ACKNOWLEDGED = "ACKNOWLEDGED"


def closing_alert(
    closed_id: str,
    party: str,
    title: str,
    reason: str,
    now: datetime,
    *,
    mbl: str,
    hbl: str | None = None,
    superseded_by: str | None = None,
) -> PartyAlert:
    """The record that tells ``party`` its alert ``closed_id`` no longer stands, and why.

    Its id derives from the closed alert's (and, when superseded, the newer alert's) id, so a replay gives the
    same record.
    """
    closing = Closing.RESOLVED if superseded_by is None else Closing.SUPERSEDED
    source = f"{closing.value.lower()}|{closed_id}" + (f"|{superseded_by}" if superseded_by else "")
    newer = f" Superseded by alert {superseded_by}." if superseded_by else ""
    return _notice(
        alert_id(source, party),
        party,
        f"{closing.value.capitalize()}: {title}",
        f"Alert {closed_id} no longer stands: {reason}.{newer}",
        mbl=mbl,
        hbl=hbl,
        message_type=closing.value,
        created_at=now,
        closes_alert_id=closed_id,
    )


#: How the title of a "Filing blocked" alert begins.
BLOCKED_TITLE = "Filing blocked for"


def booking_alerts(outcome: BookingOutcome, now: datetime) -> list[PartyAlert]:
    """Blocked drafts go to the parties that must fix their data; plan errors and changes to the planner."""
    c = outcome.consolidation
    by_party: dict[str, list[Finding]] = defaultdict(list)
    for d in outcome.drafts:
        for finding in d.blocking:
            by_party[finding.party or c.planning_party].append(finding)
    alerts: list[PartyAlert] = []
    for party, findings in by_party.items():
        unique = list(dict.fromkeys(findings))
        text = "; ".join(f"[{f.rule_id}] {f.path}: {f.message}" for f in unique)
        hbls = sorted({f.hbl for f in unique if f.hbl})
        alerts.append(
            _booking_alert(
                c,
                party,
                Urgency.HIGH,
                Action.FIX_AND_REFILE,
                f"{BLOCKED_TITLE} {', '.join(hbls) or c.mbl}: fix the booking data",
                f"Not sent to customs until fixed (booking version {c.version}): {text}",
                now,
                hbl=hbls[0] if len(hbls) == 1 else None,
            )
        )
    for error in outcome.plan.errors:
        alerts.append(
            _booking_alert(
                c,
                error.party or c.planning_party,
                Urgency.HIGH,
                Action.FIX_AND_REFILE,
                f"Cannot plan filings for {error.hbl or c.mbl}",
                f"[{error.code}] {error.message}",
                now,
                hbl=error.hbl,
            )
        )
    for gone in outcome.withdrawn:
        where = f"house B/L {gone.hbl}" if gone.hbl else f"master B/L {c.mbl}"
        alerts.append(
            _booking_alert(
                c,
                gone.filer,
                Urgency.HIGH,
                Action.INFO,
                f"Withdraw your {gone.filing.value} for {gone.hbl or c.mbl}: no longer needed",
                f"With booking version {c.version}, {c.planning_party} no longer plans a {gone.filing.value} by "
                f"you for {where}. If you filed it, invalidate it (IE3Q04) so that customs does not hold it "
                "against the consignment.",
                now,
                hbl=gone.hbl,
            )
        )
    if outcome.diff is not None and not outcome.diff.empty:
        lines = [f"+{f.filing.value} {f.hbl} by {f.filer}" for f in outcome.diff.added]
        lines += [f"-{f.filing.value} {f.hbl} by {f.filer}" for f in outcome.diff.removed]
        lines += [f"~{ch.new.filing.value} {ch.new.hbl} by {ch.new.filer}" for ch in outcome.diff.changed]
        alerts.append(
            _booking_alert(
                c,
                c.planning_party,
                Urgency.NORMAL,
                Action.INFO,
                f"Plan changed with booking version {c.version}",
                "; ".join(lines),
                now,
            )
        )
    return alerts


def stale_alert(c: Consolidation, previous: PlanMemory | None, now: datetime) -> PartyAlert:
    """A booking version at or below the last one processed changes nothing: its planner is told so."""
    last = previous.version if previous else c.version
    return _booking_alert(
        c,
        c.planning_party,
        Urgency.NORMAL,
        Action.INFO,
        f"Booking version {c.version} of {c.mbl} ignored",
        f"Version {last} was already processed; an older or repeated version changes nothing.",
        now,
    )


def _booking_alert(
    c: Consolidation,
    party: str,
    urgency: Urgency,
    action: Action,
    title: str,
    message: str,
    now: datetime,
    hbl: str | None = None,
) -> PartyAlert:
    return PartyAlert(
        alert_id=alert_id(f"booking|{c.mbl}|{c.planning_party}|{c.version}|{title}|{message}", party),
        party=party, urgency=urgency, action=action, title=title, message=message, mbl=c.mbl, hbl=hbl,
        hbl_chain=(), party_at_fault=party if action is Action.FIX_AND_REFILE else None, lrn=None, mrn=None,
        referral_reference=None, deadline=None, message_type="BOOKING", created_at=now,
    )  # fmt: skip


def blocks(alert: PartyAlert) -> bool:
    """Whether a booking alert is a "Filing blocked" one (``booking_alerts``)."""
    return alert.message_type == "BOOKING" and alert.title.startswith(BLOCKED_TITLE)


def change_sent_alert(
    change: Mapping[str, Any], record: FilingRecord | None, message_type: str | None, note: str, now: datetime
) -> PartyAlert:
    """Tells the filer an amendment or invalidation of its filing (a ``FilingChange`` record) was requested."""
    where = change["hbl"] or change["mbl"]
    return PartyAlert(
        alert_id=alert_id(f"change|{change['change_id']}|sent", change["filer"]),
        party=change["filer"], urgency=Urgency.NORMAL, action=Action.INFO,
        title=f"{change['filing']} for {where}: {change['kind']} requested (booking version {change['version']})",
        message=f"{change['reason']}: {note}.", mbl=change["mbl"], hbl=change["hbl"],
        hbl_chain=record.hbl_chain if record else (), party_at_fault=None, lrn=change["lrn"],
        mrn=record.mrn if record else None, referral_reference=None, deadline=None,
        message_type=message_type or "BOOKING", created_at=now,
    )  # fmt: skip


def change_expired_alert(
    change: Mapping[str, Any],
    record: FilingRecord | None,
    key: str,
    reason: str,
    title: str,
    then: str,
    now: datetime,
) -> PartyAlert:
    """Tells the filer a change waited in vain under ``key``, and how to learn what customs holds."""
    where = change["hbl"] or change["mbl"]
    return PartyAlert(
        alert_id=alert_id(f"change|{change['change_id']}|{key}|expired", change["filer"]),
        party=change["filer"], urgency=Urgency.HIGH, action=Action.FIX_AND_REFILE,
        title=f"{change['filing']} for {where}: {title}",
        message=f"{reason}. Find out what customs holds with 'ics2 consult {change['mbl']}', then {then}.",
        mbl=change["mbl"], hbl=change["hbl"], hbl_chain=record.hbl_chain if record else (),
        party_at_fault=change["filer"], lrn=change["lrn"], mrn=record.mrn if record else None,
        referral_reference=None, deadline=None, message_type="BOOKING", created_at=now,
    )  # fmt: skip


def acknowledgement_alert(
    acked_id: str,
    party: str,
    title: str,
    by: str,
    at: datetime,
    *,
    mbl: str,
    hbl: str | None = None,
    referral_reference: str | None = None,
) -> PartyAlert:
    """The record that publishes an acknowledgement: the acknowledged alert's own id, ``acknowledged`` true.

    Alerting services keep the latest record per id, so this one marks the alert done for every consumer, not only
    for the dashboard that took the ack.
    """
    return _notice(
        acked_id,
        party,
        f"Acknowledged: {title}",
        f"Alert {acked_id} was acknowledged by {by} at {format_datetime(at)}.",
        mbl=mbl,
        hbl=hbl,
        message_type=ACKNOWLEDGED,
        created_at=at,
        referral_reference=referral_reference,
        acknowledged=True,
    )


def _notice(
    alert_id_: str,
    party: str,
    title: str,
    message: str,
    *,
    mbl: str,
    hbl: str | None,
    message_type: str,
    created_at: datetime,
    referral_reference: str | None = None,
    closes_alert_id: str | None = None,
    acknowledged: bool = False,
) -> PartyAlert:
    """A record about another alert (it closed, or was acknowledged): for information, nothing to do."""
    return PartyAlert(
        alert_id=alert_id_,
        party=party,
        urgency=Urgency.INFO,
        action=Action.NONE,
        title=title,
        message=message,
        mbl=mbl,
        hbl=hbl,
        hbl_chain=(),
        party_at_fault=None,
        lrn=None,
        mrn=None,
        referral_reference=referral_reference,
        deadline=None,
        message_type=message_type,
        created_at=created_at,
        closes_alert_id=closes_alert_id,
        acknowledged=acknowledged,
    )
