"""The alert contract is what is on the wire: every emitter of ``PartyAlert`` records, driven through the pure stages
as the other unit tests drive them, writes exactly the headers docs/alerts.md documents for it.

``EXPECTED`` mirrors the doc's "Headers by emitter" table; one test compares them, so doc and code cannot drift.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from streams.contracts.events import ack_record, lifecycle_event
from streams.contracts.records import ens_event
from streams.domain.dates import parse_datetime
from streams.pipeline.dead_letters import rejection_alert, rejection_emits
from streams.pipeline.stage import Emit, Incoming
from streams.pipeline.stages import changes
from streams.pipeline.stages.delivery import KnownQueues, QueueDelivery
from streams.pipeline.tables import StateTable
from streams.settings import Settings
from streams.simulator import Outcome, RiskRule, RiskScript
from tests.data import seed_json_with_carrier_contact as seed_json
from tests.unit.test_answers_pipeline import RFI_FILE, ledger_with_referral, request
from tests.unit.test_answers_pipeline import incoming as answer_incoming
from tests.unit.test_changes_pipeline import arrived, booked_twice
from tests.unit.test_cli_output import markdown_table
from tests.unit.test_handlers import NOW, Pump

DOC = (Path(__file__).resolve().parents[2] / "docs" / "alerts.md").read_text(encoding="utf-8")
MBL = "OCLU26TYO7781234"
DNL_HBL = "CHY26YOK0501"

_EVERY = frozenset({"ics2-record", "ics2-party", "ics2-urgency", "ics2-alert-id"})
#: Emitter -> the headers of every PartyAlert record it writes: the "Headers by emitter" table of docs/alerts.md.
EXPECTED: dict[str, frozenset[str]] = {
    "booking": _EVERY | {"ics2-source"},
    "lifecycle-notification": _EVERY | {"ics2-source", "ics2-notification-id"},
    "lifecycle-filing": _EVERY | {"ics2-source"},
    "watchdog": _EVERY | {"ics2-source"},
    "ack": _EVERY | {"ics2-source"},
    "answers": _EVERY | {"ics2-source"},
    "changes": _EVERY | {"ics2-source"},
    "dead-letter": _EVERY | {"ics2-rejected"},
}
#: Which emitter wrote a record the correlate stage emitted, by the ``ics2-record`` of its input.
CORRELATE_INPUTS = {"AnswerRequest": "answers", "FilingChange": "changes"}


@dataclass(frozen=True)
class OnTheWire:
    """A PartyAlert record as a stage emitted it, with the emitter that wrote it."""

    emitter: str
    emit: Emit
    record: dict[str, Any]

    @property
    def headers(self) -> dict[str, bytes]:
        return dict(self.emit.headers)


class Tap:
    """Wraps a pump's stages and keeps every PartyAlert record they emit, named by its emitter."""

    def __init__(self, pump: Pump) -> None:
        self.pump = pump
        self.seen: list[OnTheWire] = []
        c = pump.catalogue
        self._wrap(c.bookings.name, lambda incoming: "booking")
        self._wrap(c.ens_events.name, self._lifecycle_emitter)
        self._wrap(c.notifications_parsed.name, self._correlate_emitter)

    def _wrap(self, topic: str, emitter_of: Callable[[Incoming], str]) -> None:
        stage = self.pump.handlers[topic]

        def tapped(incoming: Incoming) -> list[Emit]:
            emits = stage(incoming)
            self.take(emitter_of(incoming), emits)
            return emits

        self.pump.handlers[topic] = tapped

    def take(self, emitter: str, emits: list[Emit]) -> None:
        for emit in emits:
            if dict(emit.headers).get("ics2-record") == b"PartyAlert":
                record = self.pump.schemas.decode(emit.value, reader="PartyAlert").record
                self.seen.append(OnTheWire(emitter, emit, record))

    def _lifecycle_emitter(self, incoming: Incoming) -> str:
        event = self.pump.schemas.decode(incoming.value, reader="EnsEvent").record
        kind = lifecycle_event(event["type"], event["mbl"], json.loads(event["payload"]))["type"]
        return {"notification": "lifecycle-notification", "tick": "watchdog", "ack": "ack"}.get(
            kind, "lifecycle-filing"
        )

    def _correlate_emitter(self, incoming: Incoming) -> str:
        record_type = (incoming.header("ics2-record") or b"").decode()
        return CORRELATE_INPUTS.get(record_type, f"correlate:{record_type}")


def fixed(data: dict) -> dict:
    """Version 2 of a booking with the bad HS code of ``blocked`` put right."""
    v2 = json.loads(json.dumps(data))
    v2["version"] = 2
    v2["house_bills"][4]["goods"][0]["hs_code"] = seed_json()["house_bills"][4]["goods"][0]["hs_code"]
    return v2


def publish_event(pump: Pump, record: dict[str, Any]) -> None:
    value = pump.schemas.encode("EnsEvent", record)
    pump.publish(Emit(pump.catalogue.ens_events.name, MBL.encode(), value, (("ics2-record", b"EnsEvent"),)))
    pump.run()


def story() -> list[OnTheWire]:
    """A blocked booking fixed in version 2 (the co-loader and the carrier file theirs), so the ENS completes and
    customs answers a DNL; the DNL acknowledged; the watchdog 30 h and 1 h before
    the lodging deadline (the second margin supersedes the first's alerts)."""
    pump = Pump(RiskScript(rules=(RiskRule(Outcome.DO_NOT_LOAD, hbl=DNL_HBL),)))
    tracker = pump.handlers[pump.catalogue.ens_events.name]
    tap = Tap(pump)
    data = seed_json()
    data["house_bills"][4]["goods"][0]["hs_code"] = "52"
    pump.book(data)
    pump.book(dict(seed_json(), planning_party="COLOADER-C", event_id="e-c"))
    pump.book(dict(seed_json(), planning_party="CARRIER-A", event_id="e-carrier"))
    pump.run()
    pump.book(fixed(data))
    pump.run()
    dnl = next(w.record for w in tap.seen if w.record["notification_message_type"] == "IE3Q01")
    publish_event(pump, ack_record(MBL, dnl["alert_id"], "ops-anna", NOW))
    deadline = parse_datetime(pump.ens(MBL)["deadline"])
    for before in (timedelta(hours=30), timedelta(hours=1)):
        tracker.clock = lambda at=deadline - before: at
        publish_event(pump, ens_event(MBL, "tick", deadline - before, {}, f"watchdog:{deadline - before}"))
    return tap.seen


def expired_change() -> list[OnTheWire]:
    """A replacement F15 that waited in vain for customs to accept the F14's invalidation: its filer is told."""
    pump = Pump()
    tap = Tap(pump)
    booked_twice(pump, arrived)
    topic = pump.catalogue.notifications_parsed.name
    parked = pump.tables["parked"].items()
    for emit in changes.expired(parked, NOW + timedelta(hours=2), timedelta(hours=2), pump.schemas, topic):
        pump.publish(emit)
    pump.run()
    return [w for w in tap.seen if w.emitter == "changes"]


def refused_answer() -> list[OnTheWire]:
    """An answer to a referral by a party that did not file it: refused, the party told why."""
    stage, _, _ = ledger_with_referral("RFI27A")
    emits = stage(answer_incoming(stage, request("rfi", "RFI27A", RFI_FILE, requested_by="COLOADER-C")))
    tap = Tap(Pump())
    tap.take("answers", emits)
    return tap.seen


def dead_letter() -> list[OnTheWire]:
    """An input a stage could not process: its sender is told, the input named in ``ics2-rejected``."""
    pump = Pump()
    incoming = Incoming(pump.catalogue.bookings.name, 1, 42, MBL.encode(), b"not avro")
    alert = rejection_alert("ML-TYO", stage="plan-bookings", reason="not Avro", incoming=incoming, now=NOW)
    tap = Tap(pump)
    tap.take("dead-letter", rejection_emits(alert, pump.catalogue, pump.schemas, incoming))
    return tap.seen


@pytest.fixture(scope="module")
def wire() -> list[OnTheWire]:
    return [*story(), *expired_change(), *refused_answer(), *dead_letter()]


def names(cell: str) -> frozenset[str]:
    """The backticked names of a table cell as ``markdown_table`` leaves it: ``a`, `b``."""
    return frozenset(name.strip().strip("`") for name in cell.split(","))


class TestHeadersOnTheWire:
    def test_every_emitter_is_driven(self, wire):
        """The scenarios reach every emitter of the contract, and no stage emits alerts the contract does not know."""
        assert {w.emitter for w in wire} == set(EXPECTED)

    @pytest.mark.parametrize("emitter", sorted(EXPECTED))
    def test_each_record_carries_its_emitters_headers(self, wire, emitter):
        """Every record of the emitter on the alerts topic (copied as it is to the party's queue) has exactly its
        headers."""
        records = [w for w in wire if w.emitter == emitter]
        assert records
        assert {tuple(sorted(w.headers)) for w in records} == {tuple(sorted(EXPECTED[emitter]))}

    def test_headers_say_what_the_record_says(self, wire):
        """Party, urgency and alert id in the headers are the record's."""
        for w in wire:
            h = w.headers
            assert h["ics2-party"].decode() == w.record["party_id"]
            assert h["ics2-urgency"].decode() == w.record["urgency"]
            assert h["ics2-alert-id"].decode() == w.record["alert_id"]

    def test_every_record_goes_to_the_alerts_topic_and_its_partys_queue(self, wire):
        """The stages write each alert once, to the alerts topic; the delivery stage puts the same bytes and headers
        on its party's queue (every party here is onboarded under a queue-able id)."""
        pump = Pump()
        catalogue = pump.catalogue
        queues = KnownQueues(Settings(), catalogue)
        queues.names = {catalogue.party_queue(w.record["party_id"]).name for w in wire}
        waiting = StateTable("waiting", "waiting-changelog", 1)
        delivery = QueueDelivery(pump.schemas, catalogue, waiting, queues)
        for offset, w in enumerate(wire):
            assert w.emit.topic == catalogue.alerts.name
            incoming = Incoming(w.emit.topic, 0, offset, w.emit.key, w.emit.value, w.emit.headers)
            [queued] = delivery(incoming)
            assert queued.topic == catalogue.party_queue(w.record["party_id"]).name
            assert (queued.value, queued.headers) == (w.emit.value, w.emit.headers)


class TestRecordsOfTheContract:
    def test_closing_records_name_the_alert_they_close(self, wire):
        """``RESOLVED`` and ``SUPERSEDED`` records carry ``closes_alert_id`` of an alert on the wire before them."""
        closing = [w.record for w in wire if w.record["notification_message_type"] in ("RESOLVED", "SUPERSEDED")]
        assert {r["notification_message_type"] for r in closing} == {"RESOLVED", "SUPERSEDED"}
        earlier = {w.record["alert_id"] for w in wire}
        assert all(r["closes_alert_id"] in earlier and r["urgency"] == "info" for r in closing)
        assert all(w.record["closes_alert_id"] is None for w in wire if w.record not in closing)

    def test_acknowledgement_is_a_record_with_the_alerts_id(self, wire):
        """An ack is published as the contract says: the acknowledged alert's id, ``acknowledged`` true."""
        acks = [w for w in wire if w.emitter == "ack"]
        dnl = next(w.record for w in wire if w.record["notification_message_type"] == "IE3Q01")
        assert {w.record["alert_id"] for w in acks} == {dnl["alert_id"]}
        assert all(w.record["acknowledged"] and w.record["party_id"] == dnl["party_id"] for w in acks)
        assert not any(w.record["acknowledged"] for w in wire if w.emitter != "ack")


class TestTheDocIsTheTest:
    def test_doc_table_of_emitters_is_the_tests(self):
        """docs/alerts.md's "Headers by emitter" table names the same emitters with the same headers."""
        rows = markdown_table(DOC, "### Headers by emitter")
        documented = {row[0]: names(row[-1]) for row in rows}
        assert documented == EXPECTED

    def test_header_table_lists_every_header_written(self):
        """The contract's header table names every header some emitter writes, and no other."""
        rows = markdown_table(DOC, "\n## Headers\n")
        assert {row[0] for row in rows} == set().union(*EXPECTED.values())
