"""The ENS lifecycle's events (``streams.domain.lifecycle.apply``) as typed values.

Each event has the JSON form the lifecycle has always read: an object with a ``type``, the ``mbl`` and the event's
fields (``to_json``/``event_from_json``). On the ``EnsEvent`` topic the fields are the record's payload, and an
ack, an answer sent and a change sent ride on a ``tick`` (``streams.contracts.events``); that wire form is unchanged.
A notification event carries the parsed ``Notification``, whose JSON form is its contract's
(``streams.contracts.records``): the domain reads and writes every field but that one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

from streams.domain.ledger import FilingRecord
from streams.domain.notifications import Notification


class EventType(StrEnum):
    PLANNED = "planned"
    FILING_SENT = "filing_sent"
    FILING_BLOCKED = "filing_blocked"
    NOTIFICATION = "notification"
    TICK = "tick"
    ACK = "ack"
    ANSWER_SENT = "answer_sent"
    CHANGE_SENT = "change_sent"


def _optional_str(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    return None if value is None else str(value)


@dataclass(frozen=True, slots=True)
class PlanEntry:
    """A filing of a plan: its ledger record, and whether we file it or expect it from another party."""

    record: FilingRecord
    ours: bool

    def to_json(self) -> dict[str, Any]:
        return {"ours": self.ours, "record": self.record.to_json()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PlanEntry:
        return cls(FilingRecord.from_json(data["record"]), bool(data["ours"]))


@dataclass(frozen=True, slots=True)
class Planned:
    """A planning party's (new version of its) filing plan for the MBL."""

    type: ClassVar[EventType] = EventType.PLANNED
    mbl: str
    planning_party: str
    filings: tuple[PlanEntry, ...]
    deadline: str | None = None
    """The ENS lodging deadline (ISO)."""
    version: int = 1
    withdrawn: tuple[FilingRecord, ...] = ()
    """Filings of the previous version that this one no longer holds."""

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type.value,
            "mbl": self.mbl,
            "planning_party": self.planning_party,
            "version": self.version,
            "deadline": self.deadline,
            "filings": [f.to_json() for f in self.filings],
            "withdrawn": [r.to_json() for r in self.withdrawn],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Planned:
        return cls(
            mbl=str(data["mbl"]),
            planning_party=str(data["planning_party"]),
            filings=tuple(PlanEntry.from_json(f) for f in data["filings"]),
            deadline=_optional_str(data, "deadline"),
            version=int(data.get("version", 1)),
            withdrawn=tuple(FilingRecord.from_json(r) for r in data.get("withdrawn", ())),
        )


@dataclass(frozen=True, slots=True)
class FilingSent:
    """A filing (or a new version of it) went to customs."""

    type: ClassVar[EventType] = EventType.FILING_SENT
    mbl: str
    record: FilingRecord

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type.value, "mbl": self.mbl, "record": self.record.to_json()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FilingSent:
        return cls(str(data["mbl"]), FilingRecord.from_json(data["record"]))


@dataclass(frozen=True, slots=True)
class BlockedAlert:
    """A "Filing blocked" alert sent about a filing, closed once a fixed version is filed."""

    alert_id: str
    party: str
    title: str

    def to_json(self) -> list[str]:
        return [self.alert_id, self.party, self.title]

    @classmethod
    def from_json(cls, data: Iterable[object]) -> BlockedAlert:
        alert_id, party, title = data
        return cls(str(alert_id), str(party), str(title))


@dataclass(frozen=True, slots=True)
class FilingBlocked:
    """Validation blocked a filing; ``alerts`` told the parties who must fix it."""

    type: ClassVar[EventType] = EventType.FILING_BLOCKED
    mbl: str
    record: FilingRecord
    alerts: tuple[BlockedAlert, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type.value,
            "mbl": self.mbl,
            "record": self.record.to_json(),
            "alerts": [a.to_json() for a in self.alerts],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FilingBlocked:
        alerts = tuple(BlockedAlert.from_json(a) for a in data.get("alerts", ()))
        return cls(str(data["mbl"]), FilingRecord.from_json(data["record"]), alerts)


@dataclass(frozen=True, slots=True)
class NotificationReceived:
    """A customs notification, correlated to the filing it is about."""

    type: ClassVar[EventType] = EventType.NOTIFICATION
    mbl: str
    notification_id: str
    """Unique per notification: a re-sent or replayed one is recognised and ignored."""
    record: FilingRecord
    notification: Notification

    def to_json(self) -> dict[str, Any]:
        """Without the notification, whose JSON form is its contract's (``notification_record``)."""
        return {
            "type": self.type.value,
            "mbl": self.mbl,
            "notification_id": self.notification_id,
            "record": self.record.to_json(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], notification: Notification) -> NotificationReceived:
        return cls(str(data["mbl"]), str(data["notification_id"]), FilingRecord.from_json(data["record"]), notification)


@dataclass(frozen=True, slots=True)
class Tick:
    """The watchdog's tick: escalate what nears its deadline."""

    type: ClassVar[EventType] = EventType.TICK
    mbl: str

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type.value, "mbl": self.mbl}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Tick:
        return cls(str(data["mbl"]))


@dataclass(frozen=True, slots=True)
class Ack:
    """An operator acknowledged an alert."""

    type: ClassVar[EventType] = EventType.ACK
    mbl: str
    alert_id: str
    by: str | None = None
    at: str | None = None
    """When (ISO); the time the lifecycle applies it when not given."""

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type.value, "mbl": self.mbl, "alert_id": self.alert_id, "by": self.by, "at": self.at}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Ack:
        return cls(str(data["mbl"]), str(data["alert_id"]), _optional_str(data, "by"), _optional_str(data, "at"))


@dataclass(frozen=True, slots=True)
class AnswerSent:
    """The filer answered a referral (IE3R02 to an RFI, IE3R03 to an RFS)."""

    type: ClassVar[EventType] = EventType.ANSWER_SENT
    mbl: str
    referral_reference: str
    filer: str | None = None
    message_type: str | None = None
    kind: str | None = None
    message_id: str | None = None
    request_id: str | None = None
    hbl: str | None = None
    mrn: str | None = None

    _OPTIONAL: ClassVar[tuple[str, ...]] = ("filer", "message_type", "kind", "message_id", "request_id", "hbl", "mrn")

    def to_json(self) -> dict[str, Any]:
        optional = {k: getattr(self, k) for k in self._OPTIONAL}
        return {"type": self.type.value, "mbl": self.mbl, "referral_reference": self.referral_reference, **optional}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AnswerSent:
        optional = {k: _optional_str(data, k) for k in cls._OPTIONAL}
        return cls(str(data["mbl"]), str(data["referral_reference"]), **optional)


@dataclass(frozen=True, slots=True)
class ChangeSent:
    """An amendment or invalidation of a filing went to customs (or, the filing being unregistered, was not
    needed: ``message_type`` None)."""

    type: ClassVar[EventType] = EventType.CHANGE_SENT
    mbl: str
    kind: str
    """``amend``, ``invalidate`` or ``replace``: anything but an amendment withdraws the filing."""
    filing: str
    filer: str
    lrn: str | None
    hbl: str | None = None
    registered: bool = False
    message_type: str | None = None
    change_id: str | None = None
    mrn: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type.value,
            "mbl": self.mbl,
            "kind": self.kind,
            "change_id": self.change_id,
            "filing": self.filing,
            "hbl": self.hbl,
            "filer": self.filer,
            "lrn": self.lrn,
            "mrn": self.mrn,
            "message_type": self.message_type,
            "registered": self.registered,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ChangeSent:
        return cls(
            mbl=str(data["mbl"]),
            kind=str(data["kind"]),
            filing=str(data["filing"]),
            filer=str(data["filer"]),
            lrn=_optional_str(data, "lrn"),
            hbl=_optional_str(data, "hbl"),
            registered=bool(data.get("registered")),
            message_type=_optional_str(data, "message_type"),
            change_id=_optional_str(data, "change_id"),
            mrn=_optional_str(data, "mrn"),
        )


LifecycleEvent = Planned | FilingSent | FilingBlocked | NotificationReceived | Tick | Ack | AnswerSent | ChangeSent

_READERS: Mapping[EventType, type[Planned | FilingSent | FilingBlocked | Tick | Ack | AnswerSent | ChangeSent]] = {
    EventType.PLANNED: Planned,
    EventType.FILING_SENT: FilingSent,
    EventType.FILING_BLOCKED: FilingBlocked,
    EventType.TICK: Tick,
    EventType.ACK: Ack,
    EventType.ANSWER_SENT: AnswerSent,
    EventType.CHANGE_SENT: ChangeSent,
}


def event_from_json(data: Mapping[str, Any], notification: Notification | None = None) -> LifecycleEvent:
    """The event of a JSON object with a ``type``; a notification event needs its parsed ``notification``.

    Raises ``ValueError`` for an unknown type, ``KeyError``/``TypeError``/``ValueError`` for a malformed event.
    """
    kind = EventType(data["type"])
    if kind is EventType.NOTIFICATION:
        if notification is None:
            raise ValueError("a notification event needs its parsed notification")
        return NotificationReceived.from_json(data, notification)
    return _READERS[kind].from_json(data)
