"""The lifecycle's typed events: their JSON form, and the ``EnsEvent`` wire forms they are read from."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from streams.contracts.events import ANSWER_SENT, CHANGE_SENT, ack_record, decode_lifecycle_event
from streams.contracts.records import notification_record
from streams.domain.events import (
    Ack,
    AnswerSent,
    BlockedAlert,
    ChangeSent,
    EventType,
    FilingBlocked,
    FilingSent,
    LifecycleEvent,
    NotificationReceived,
    PlanEntry,
    Planned,
    Tick,
    event_from_json,
)
from streams.domain.ledger import FilingRecord
from streams.domain.notifications import Notification
from streams.domain.planning import FilingType

NOW = datetime(2027, 6, 10, 8, 0, tzinfo=UTC)
RECORD = FilingRecord(
    mbl="MBL1",
    hbl="HBL1",
    filing=FilingType.F15,
    filer="FWD",
    planning_party="FWD",
    carrier="CARRIER",
    lrn="LRN1",
    hbl_chain=(("HBL1", "FWD"),),
    eoris={"NL123456789": "FWD"},
)
OTHERS = FilingRecord(mbl="MBL1", hbl="HBL1", filing=FilingType.F16, filer="OTHER", planning_party="FWD", carrier="C")

EVENTS: list[LifecycleEvent] = [
    Planned("MBL1", "FWD", (PlanEntry(RECORD, True), PlanEntry(OTHERS, False)), "2027-06-14T12:00:00Z", 2, (OTHERS,)),
    FilingSent("MBL1", RECORD),
    FilingBlocked("MBL1", RECORD, (BlockedAlert("a1", "FWD", "Filing blocked"),)),
    Tick("MBL1"),
    Ack("MBL1", "a1", "ops", "2027-06-10T08:00:00Z"),
    Ack("MBL1", "a2"),
    AnswerSent("MBL1", "R1", filer="FWD", message_type="IE3R02", kind="rfi", hbl="HBL1", mrn="27NL00000000000017"),
    ChangeSent("MBL1", "invalidate", "F15", "FWD", "LRN1", hbl="HBL1", registered=True, message_type="IE3A04"),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_json_form_round_trips(event: LifecycleEvent) -> None:
    """What ``to_json`` writes, ``event_from_json`` reads back as the same event, through real JSON."""
    data = json.loads(json.dumps(event.to_json()))
    assert data["type"] == event.type.value
    assert event_from_json(data) == event


def test_notification_event_takes_its_parsed_notification() -> None:
    """The notification's JSON form is its contract's: the domain reads the rest and takes the parsed one."""
    notification = Notification(message_type="IE3Q01", notification_date=NOW, mbl="MBL1", hbl="HBL1")
    event = NotificationReceived("MBL1", "n-1", RECORD, notification)
    assert event_from_json(json.loads(json.dumps(event.to_json())), notification) == event
    with pytest.raises(ValueError, match="needs its parsed notification"):
        event_from_json(event.to_json())


def test_unknown_type_is_refused() -> None:
    with pytest.raises(ValueError):
        event_from_json({"type": "teleported", "mbl": "MBL1"})


def test_malformed_event_raises_a_data_error() -> None:
    """A missing field is a KeyError, which the tracker's and the replay's callers already treat as bad data."""
    with pytest.raises(KeyError):
        event_from_json({"type": "ack", "mbl": "MBL1"})


class TestWireForms:
    """The ``EnsEvent`` payloads the stages write (unchanged) decode to the typed events."""

    def test_ack_rides_on_a_tick(self) -> None:
        record = ack_record("MBL1", "a1", "ops", NOW)
        event = decode_lifecycle_event(record["type"], record["mbl"], json.loads(record["payload"]))
        assert event == Ack("MBL1", "a1", "ops", "2027-06-10T08:00:00Z")

    def test_plain_tick(self) -> None:
        assert decode_lifecycle_event("tick", "MBL1", {}) == Tick("MBL1")

    def test_answer_sent_rides_on_a_tick(self) -> None:
        payload = {ANSWER_SENT: {"referral_reference": "R1", "filer": "FWD", "message_type": "IE3R02"}}
        event = decode_lifecycle_event("tick", "MBL1", payload)
        assert event == AnswerSent("MBL1", "R1", filer="FWD", message_type="IE3R02")

    def test_change_sent_rides_on_a_tick(self) -> None:
        change = {"kind": "amend", "change_id": "c1", "filing": "F15", "hbl": "HBL1", "filer": "FWD", "lrn": "L2"}
        event = decode_lifecycle_event("tick", "MBL1", {CHANGE_SENT: {**change, "mrn": None, "registered": False}})
        assert event == ChangeSent("MBL1", "amend", "F15", "FWD", "L2", hbl="HBL1", change_id="c1")

    def test_planned_payload(self) -> None:
        payload = {
            "planning_party": "FWD",
            "version": 3,
            "deadline": "2027-06-14T12:00:00Z",
            "filings": [{"ours": True, "record": RECORD.to_json()}],
            "withdrawn": [],
        }
        event = decode_lifecycle_event("planned", "MBL1", payload)
        assert event == Planned("MBL1", "FWD", (PlanEntry(RECORD, True),), "2027-06-14T12:00:00Z", 3)

    def test_filing_blocked_payload(self) -> None:
        payload = {"record": RECORD.to_json(), "alerts": [["a1", "FWD", "Filing blocked"]]}
        event = decode_lifecycle_event("filing_blocked", "MBL1", payload)
        assert event == FilingBlocked("MBL1", RECORD, (BlockedAlert("a1", "FWD", "Filing blocked"),))

    def test_notification_payload_decodes_its_contract(self) -> None:
        notification = Notification(message_type="IE3R01", notification_date=NOW, mbl="MBL1", hbl="HBL1", mrn="27X")
        payload = {
            "notification_id": "n-1",
            "notification": notification_record(notification, b"<x/>"),
            "record": RECORD.to_json(),
        }
        event = decode_lifecycle_event("notification", "MBL1", payload)
        assert isinstance(event, NotificationReceived)
        assert event.type is EventType.NOTIFICATION
        assert (event.notification_id, event.record, event.notification.mrn) == ("n-1", RECORD, "27X")
