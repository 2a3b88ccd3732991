"""The stage handlers chained in process: booking -> filings -> simulator answers -> party alerts.

The handlers are pure functions of a record and their tables (plain dicts here), so the whole routing logic is
exercised without a broker; the same chain on the real broker is in tests/integration/test_pipeline.py.
"""

from __future__ import annotations

import json
from collections import defaultdict, deque
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from streams.contracts.avro import SchemaCatalogue
from streams.domain.model import Consolidation
from streams.domain.notifications import NotificationError
from streams.messages import build
from streams.pipeline.stage import Emit, Incoming, StageFailure
from streams.pipeline.stages.booking import BookingStage
from streams.pipeline.stages.correlate import Correlator
from streams.pipeline.stages.lifecycle import LifecycleTracker
from streams.pipeline.stages.parse import NotificationParser
from streams.simulator import CustomsSimulator, Outcome, RiskRule, RiskScript
from streams.simulator.customs import Outbound
from streams.topics import Catalogue
from tests.data import seed_json_with_carrier_contact

NOW = datetime(2027, 6, 1, 9, 0, tzinfo=UTC)


class Pump:
    """Routes emitted records to the handler of their topic, as the broker and Faust would, in order."""

    def __init__(self, script: RiskScript | None = None) -> None:
        self.schemas = SchemaCatalogue.load()
        self.catalogue = Catalogue.for_prefix("")
        clock = lambda: NOW  # noqa: E731
        self.tables: dict[str, dict] = {"plans": {}, "ledger": {}, "parked": {}, "ens": {}}
        c = self.catalogue
        self.handlers = {
            c.bookings.name: BookingStage(self.schemas, c, clock, self.tables["plans"]),
            c.notifications_inbound.name: NotificationParser(self.schemas, c, clock),
            c.notifications_parsed.name: Correlator(
                self.schemas, c, clock, self.tables["ledger"], self.tables["parked"]
            ),
            c.ens_events.name: LifecycleTracker(self.schemas, c, clock, self.tables["ens"]),
        }
        self.simulator = CustomsSimulator(script or RiskScript(), seed=7)
        self.topics: dict[str, list[Emit]] = defaultdict(list)
        self.queue: deque[Emit] = deque()
        self.offsets: dict[str, int] = defaultdict(int)

    def publish(self, emit: Emit) -> None:
        self.queue.append(emit)

    def book(self, data: dict) -> None:
        self.publish(
            Emit(
                self.catalogue.bookings.name,
                data["master"]["mbl_number"].encode(),
                self.schemas.encode("BookingEvent", data),
            )
        )

    def run(self) -> None:
        while self.queue:
            emit = self.queue.popleft()
            self.topics[emit.topic].append(emit)
            offset = self.offsets[emit.topic]
            self.offsets[emit.topic] += 1
            if emit.topic == self.catalogue.filings_outbound.name:
                filing = self.schemas.decode(emit.value, reader="Filing").record
                for answer in self.simulator.submit(filing["xml"], NOW):
                    self.answer(answer)
                continue
            handler = self.handlers.get(emit.topic)
            if handler is not None:
                incoming = Incoming(emit.topic, 0, offset, emit.key, emit.value, emit.headers)
                for out in handler(incoming):
                    self.publish(out)

    def answer(self, answer) -> None:
        self.publish(Emit(self.catalogue.notifications_inbound.name, answer.addressee.encode(), answer.xml))

    def advance(self, when: datetime) -> None:
        for answer in self.simulator.advance(when):
            self.answer(answer)
        self.run()

    def alerts(self, party: str | None = None) -> list[dict]:
        name = self.catalogue.alerts.name
        records = [self.schemas.decode(e.value, reader="PartyAlert").record for e in self.topics[name]]
        return [r for r in records if party is None or r["party_id"] == party]

    def ens(self, mbl: str) -> dict:
        return json.loads(self.tables["ens"][mbl])


class TestBookingToAlerts:
    def test_seed_files_our_filings_and_registers_them(self):
        """The master loader's F15s and F14s go out, customs registers them, the ENS state follows."""
        pump = Pump()
        pump.book(seed_json_with_carrier_contact())
        pump.run()
        outbound = [pump.schemas.decode(e.value).record for e in pump.topics[pump.catalogue.filings_outbound.name]]
        assert sorted((f["message_type"], f["hbl"]) for f in outbound) == [
            ("IE3F14", "AOB26OSA1001"),
            ("IE3F14", "CHY26YOK0501"),
            ("IE3F15", "SKC26TYO0001"),
            ("IE3F15", "SKC26TYO0003"),
        ]
        state = pump.ens("OCLU26TYO7781234")
        ours = [f for f in state["filings"] if f["ours"]]
        assert ours and all(f["state"] == "registered" and f["mrn"] for f in ours)
        expected = {(f["filing"], f["filer"]) for f in state["filings"] if not f["ours"]}
        assert expected == {
            ("F12", "CARRIER-A"),
            ("F14", "COLOADER-A"),
            ("F16", "COLOADER-A"),
            ("F16", "COLOADER-C"),
            ("F16", "COLOADER-D"),
        }

    def test_missing_f16_chases_the_coloader(self):
        """After the grace period customs says the ENS is incomplete; the co-loader whose F16 is missing hears it."""
        pump = Pump()
        pump.book(seed_json_with_carrier_contact())
        pump.run()
        pump.advance(NOW + timedelta(hours=3))
        pending = [a for a in pump.alerts() if a["notification_message_type"] == "IE3N11"]
        assert {a["party_id"] for a in pending} >= {"COLOADER-A", "COLOADER-C"}
        chase = [a for a in pump.alerts("ML-TYO") if a["notification_message_type"] == "IE3N02"]
        assert chase and all(a["action"] == "chase_missing_filer" for a in chase)

    def test_do_not_load_reaches_filer_carrier_and_hbl_issuer(self):
        """A scripted DNL on COLOADER-C's HBL goes to ML-TYO (filer), CARRIER-A and COLOADER-C, critical."""
        script = RiskScript(rules=(RiskRule(Outcome.DO_NOT_LOAD, hbl="CHY26YOK0501"),))
        pump = Pump(script)
        data = seed_json_with_carrier_contact()
        pump.book(data)
        coloader = dict(data, planning_party="COLOADER-C", event_id="e-c")
        pump.book(coloader)
        carrier = dict(data, planning_party="CARRIER-A", event_id="e-carrier")
        pump.book(carrier)
        pump.run()
        dnl = [a for a in pump.alerts() if a["notification_message_type"] == "IE3Q01"]
        assert {a["party_id"] for a in dnl} == {"ML-TYO", "CARRIER-A", "COLOADER-C"}
        assert all(a["urgency"] == "critical" and a["hbl"] == "CHY26YOK0501" for a in dnl)
        house = next(h for h in pump.ens("OCLU26TYO7781234")["houses"] if h["hbl"] == "CHY26YOK0501")
        assert house["state"] == "held_dnl"

    def test_duplicate_notification_gives_one_alert(self):
        """The same raw notification delivered twice yields its alerts once."""
        script = RiskScript(rules=(RiskRule(Outcome.RFI, hbl="SKC26TYO0001"),))
        pump = Pump(script)
        data = seed_json_with_carrier_contact()
        pump.book(data)
        pump.book(dict(data, planning_party="CARRIER-A", event_id="e-carrier"))
        pump.run()
        rfi = [e for e in pump.topics[pump.catalogue.notifications_inbound.name] if b"IE3Q02" in e.value[:200]]
        assert rfi
        before = len(pump.alerts())
        pump.publish(Emit(pump.catalogue.notifications_inbound.name, rfi[0].key, rfi[0].value))
        pump.run()
        assert len(pump.alerts()) == before

    def test_notification_before_its_filing_is_parked_then_correlated(self):
        """An IE3R01 arriving before the ledger entry of its LRN waits, then is correlated when the entry arrives."""
        pump = Pump()
        pump.book(seed_json_with_carrier_contact())
        # Hold back the ledger entries: run the booking stage alone.
        booking = pump.queue.popleft()
        emits = pump.handlers[booking.topic](Incoming(booking.topic, 0, 0, booking.key, booking.value))
        ledger = [e for e in emits if e.topic == pump.catalogue.notifications_parsed.name]
        others = [e for e in emits if e.topic != pump.catalogue.notifications_parsed.name]
        for e in others:
            pump.publish(e)
        pump.run()
        assert pump.tables["parked"], "registrations should wait for their ledger entries"
        for e in ledger:
            pump.publish(e)
        pump.run()
        assert not any(json.loads(v) for v in pump.tables["parked"].values())
        ours = [f for f in pump.ens("OCLU26TYO7781234")["filings"] if f["ours"]]
        assert all(f["state"] == "registered" for f in ours)

    def test_blocked_draft_alerts_the_party_that_must_fix_it(self):
        """A bad HS code on COLOADER-A's lowest HBL blocks its F14 and tells COLOADER-A what to fix."""
        pump = Pump()
        data = seed_json_with_carrier_contact()
        data["house_bills"][4]["goods"][0]["hs_code"] = "52"
        pump.book(data)
        pump.run()
        outbound = [
            pump.schemas.decode(e.value).record["hbl"] for e in pump.topics[pump.catalogue.filings_outbound.name]
        ]
        assert "AOB26OSA1001" not in outbound
        blocked = [a for a in pump.alerts() if a["title"].startswith("Filing blocked")]
        assert blocked and blocked[0]["party_id"] == "COLOADER-A"
        assert "hs_code" in blocked[0]["message"]

    def test_new_booking_version_resends_only_what_changed(self):
        """Version 2 with one changed description re-files that HBL only and tells the planner what changed."""
        pump = Pump()
        data = seed_json_with_carrier_contact()
        pump.book(data)
        pump.run()
        first = len(pump.topics[pump.catalogue.filings_outbound.name])
        v2 = json.loads(json.dumps(data))
        v2["version"] = 2
        v2["house_bills"][0]["goods"][0]["description"] = "Notebook computers"
        pump.book(v2)
        pump.run()
        sent = [pump.schemas.decode(e.value).record for e in pump.topics[pump.catalogue.filings_outbound.name][first:]]
        assert [(f["hbl"], f["booking_version"]) for f in sent] == [("SKC26TYO0001", 2)]
        pump.book(data)  # version 1 again: stale
        pump.run()
        assert any(a["title"].startswith("Booking version 1") for a in pump.alerts("ML-TYO"))


class TestAlertsFollowTheState:
    def test_fixed_version_resolves_the_blocked_alert(self):
        """Version 1 blocked on a bad HS code; version 2 fixes it and files: COLOADER-A's alert is resolved."""
        pump = Pump()
        data = seed_json_with_carrier_contact()
        data["house_bills"][4]["goods"][0]["hs_code"] = "52"
        pump.book(data)
        pump.run()
        (blocked,) = [a for a in pump.alerts("COLOADER-A") if a["title"].startswith("Filing blocked")]
        fixed = seed_json_with_carrier_contact()
        fixed["version"] = 2
        pump.book(fixed)
        pump.run()
        resolved = [a for a in pump.alerts("COLOADER-A") if a["closes_alert_id"] == blocked["alert_id"]]
        assert [a["notification_message_type"] for a in resolved] == ["RESOLVED"]
        assert "fixed version was filed" in resolved[0]["message"]
        assert pump.tables["ens"] and all(
            f["state"] != "blocked" for f in pump.ens("OCLU26TYO7781234")["filings"] if f["hbl"] == "AOB26OSA1001"
        )

    def test_refused_resend_keeps_the_filing_registered(self):
        """Customs answers "already filed" (IE3N01) to a re-send of a registered F15: the F15 stays registered, and
        a changed version 2 is then filed as an amendment that customs accepts."""
        pump = Pump()
        data = seed_json_with_carrier_contact()
        pump.book(data)
        pump.run()
        (f15,) = [f for f in pump.ens("OCLU26TYO7781234")["filings"] if f["hbl"] == "SKC26TYO0001"]
        error = NotificationError("26", "/IE3F15/LRN", "LRN already registered")
        xml = build.build_ie3n01(
            errors=[error], notified_at=NOW, declarant="NL812345678000", lrn=f15["lrn"], mbl="OCLU26TYO7781234"
        )
        pump.answer(Outbound("NL812345678000", "IE3N01", xml))
        pump.run()
        assert any(a["notification_message_type"] == "IE3N01" for a in pump.alerts("ML-TYO"))
        (f15,) = [f for f in pump.ens("OCLU26TYO7781234")["filings"] if f["hbl"] == "SKC26TYO0001"]
        assert (f15["state"], bool(f15["mrn"])) == ("registered", True)
        v2 = json.loads(json.dumps(data))
        v2["version"] = 2
        v2["house_bills"][0]["goods"][0]["description"] = "Notebook computers"
        pump.book(v2)
        pump.run()
        (f15,) = [f for f in pump.ens("OCLU26TYO7781234")["filings"] if f["hbl"] == "SKC26TYO0001"]
        assert (f15["state"], bool(f15["mrn"])) == ("amended", True)

    def test_dnl_of_a_container_reaches_every_hbl_in_it(self):
        """A DNL naming only the seed's container is fanned out to its five HBLs, each issuer told."""
        pump = Pump()
        pump.book(seed_json_with_carrier_contact())
        pump.run()
        (f15,) = [f for f in pump.ens("OCLU26TYO7781234")["filings"] if f["hbl"] == "SKC26TYO0001"]
        xml = build.build_ie3q01(
            mrn=f15["mrn"], issued_at=NOW, member_state="NL", mbl="OCLU26TYO7781234", containers=["TCNU1234565"]
        )
        pump.answer(Outbound("NL812345678000", "IE3Q01", xml))
        pump.run()
        houses = {h["hbl"]: h for h in pump.ens("OCLU26TYO7781234")["houses"]}
        assert all(h["do_not_load"] for h in houses.values()) and len(houses) == 5
        dnl = [a for a in pump.alerts() if a["notification_message_type"] == "IE3Q01"]
        assert {(a["hbl"], a["party_at_fault"]) for a in dnl} == {
            ("SKC26TYO0001", "ML-TYO"),
            ("SKC26TYO0003", "ML-TYO"),
            ("AOB26OSA1001", "COLOADER-A"),
            ("CHY26YOK0501", "COLOADER-C"),
            ("DAI26NGO0077", "COLOADER-D"),
        }


class TestBadInput:
    def test_corrupt_booking_is_a_stage_failure(self):
        """Bytes that are not a booking raise a decode error the runner dead-letters."""
        pump = Pump()
        stage = pump.handlers[pump.catalogue.bookings.name]
        with pytest.raises(Exception) as info:
            stage(Incoming(pump.catalogue.bookings.name, 0, 0, b"k", b"not avro"))
        assert "marker" in str(info.value).lower() or "decode" in type(info.value).__name__.lower()

    def test_unusable_booking_names_the_planning_party(self):
        """A booking whose tree is unusable is refused with the planning party to tell."""
        pump = Pump()
        data = seed_json_with_carrier_contact()
        data["occurred_at"] = "yesterday"
        with pytest.raises(StageFailure) as info:
            pump.handlers[pump.catalogue.bookings.name](
                Incoming(pump.catalogue.bookings.name, 0, 0, b"k", pump.schemas.encode("BookingEvent", data))
            )
        assert info.value.party == "ML-TYO"

    def test_xml_bomb_notification_is_refused(self):
        """A billion-laughs notification is a decode failure, never parsed."""
        bomb = (
            b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaa">]>'
            b'<IE3R01 xmlns="urn:wco:datamodel:eu:ics2:2">&a;</IE3R01>'
        )
        pump = Pump()
        with pytest.raises(StageFailure) as info:
            pump.handlers[pump.catalogue.notifications_inbound.name](
                Incoming(pump.catalogue.notifications_inbound.name, 0, 0, b"k", bomb)
            )
        assert info.value.phase == "decode"


def test_seed_copy_is_not_mutated():
    """The helper that adds the carrier's contact does not touch the shared seed file's parse."""
    assert Consolidation.from_json(seed_json_with_carrier_contact()).mbl == "OCLU26TYO7781234"
    assert replace  # keeps the import used for readers extending these tests


class TestScriptedRejection:
    def test_customs_rejection_reaches_filer_and_hbl_issuer_then_refiling_registers(self):
        """A scripted IE3N99 on COLOADER-C's HBL tells ML-TYO and COLOADER-C; version 2 re-files and registers."""
        from streams.simulator import ScriptedRejection

        pump = Pump(RiskScript(rejections=(ScriptedRejection("CHY26YOK0501"),)))
        data = seed_json_with_carrier_contact()
        pump.book(data)
        pump.run()
        rejected = [a for a in pump.alerts() if a["notification_message_type"] == "IE3N99"]
        assert {a["party_id"] for a in rejected} == {"ML-TYO", "COLOADER-C"}
        assert all(a["party_at_fault"] == "COLOADER-C" and "code 12" in a["message"] for a in rejected)
        house = next(h for h in pump.ens("OCLU26TYO7781234")["houses"] if h["hbl"] == "CHY26YOK0501")
        assert house["state"] == "rejected"
        v2 = json.loads(json.dumps(data))
        v2["version"] = 2
        v2["house_bills"][6]["goods"][0]["description"] = "Coated kraft paper in rolls, 80 g/m2, for packaging"
        pump.book(v2)
        pump.run()
        filing = next(
            f for f in pump.ens("OCLU26TYO7781234")["filings"] if f["hbl"] == "CHY26YOK0501" and f["filing"] == "F14"
        )
        assert filing["state"] == "registered"
