"""Answering customs' referrals through the correlate stage: AnswerRequest -> IE3R02/IE3R03 on the outbound topic.

The stage handlers run in process with plain dicts as tables, and the customs simulator answers what goes out, so
the whole round trip (RFI, answer, referral cleared) is exercised without a broker.
"""

from __future__ import annotations

import json
from collections import defaultdict, deque
from datetime import UTC, datetime
from typing import Any

import pytest
from lxml import etree

from streams.cli.answer_checks import answer_request, check_answer
from streams.contracts.avro import SchemaCatalogue
from streams.contracts.records import ledger_record
from streams.domain.answers import AnswerRejected
from streams.domain.ledger import FilingRecord, referral_key
from streams.domain.planning import FilingType
from streams.pipeline.stage import Emit, Incoming
from streams.pipeline.stages.answers import parked_key
from streams.pipeline.stages.booking import BookingStage
from streams.pipeline.stages.correlate import Correlator
from streams.pipeline.stages.lifecycle import LifecycleTracker
from streams.pipeline.stages.parse import NotificationParser
from streams.simulator import CustomsSimulator, Outcome, RiskRule, RiskScript
from streams.topics import Catalogue
from tests.data import seed_json_with_carrier_contact

NOW = datetime(2027, 6, 1, 9, 0, tzinfo=UTC)
NS = {"i": "urn:wco:datamodel:eu:ics2:2"}
MBL = "OCLU26TYO7781234"
RFI_HBL = "SKC26TYO0003"
RFI_FILE = {"texts": [{"text": "Office laptops, invoice INV-4711 attached"}]}
RFS_FILE = {"results": [{"result": "1", "methods": ["XRY", "EDD"], "texts": [{"text": "screened at origin"}]}]}


class Pump:
    """Routes emitted records to the handler of their topic, in order; the simulator answers outbound filings."""

    def __init__(self, script: RiskScript) -> None:
        self.schemas = SchemaCatalogue.load()
        self.catalogue = c = Catalogue.for_prefix("")
        clock = lambda: NOW  # noqa: E731
        self.ledger: dict[str, bytes] = {}
        self.parked: dict[str, bytes] = {}
        self.states: dict[str, bytes] = {}
        self.handlers = {
            c.bookings.name: BookingStage(self.schemas, c, clock, {}),
            c.notifications_inbound.name: NotificationParser(self.schemas, c, clock),
            c.notifications_parsed.name: Correlator(self.schemas, c, clock, self.ledger, self.parked),
            c.ens_events.name: LifecycleTracker(self.schemas, c, clock, self.states),
        }
        self.simulator = CustomsSimulator(script, seed=7)
        self.topics: dict[str, list[Emit]] = defaultdict(list)
        self.queue: deque[Emit] = deque()

    def run(self) -> None:
        while self.queue:
            emit = self.queue.popleft()
            offset = len(self.topics[emit.topic])
            self.topics[emit.topic].append(emit)
            if emit.topic == self.catalogue.filings_outbound.name:
                filing = self.schemas.decode(emit.value, reader="Filing").record
                for answer in self.simulator.submit(filing["xml"], NOW):
                    self.queue.append(
                        Emit(self.catalogue.notifications_inbound.name, answer.addressee.encode(), answer.xml)
                    )
                continue
            handler = self.handlers.get(emit.topic)
            if handler is not None:
                self.queue.extend(handler(Incoming(emit.topic, 0, offset, emit.key, emit.value, emit.headers)))

    def book(self, data: dict[str, Any]) -> None:
        value = self.schemas.encode("BookingEvent", data)
        self.queue.append(Emit(self.catalogue.bookings.name, data["master"]["mbl_number"].encode(), value))
        self.run()

    def answer(self, request: dict[str, Any]) -> None:
        key = referral_key(request["referral_reference"]).encode()
        value = self.schemas.encode("AnswerRequest", request)
        self.queue.append(
            Emit(self.catalogue.notifications_parsed.name, key, value, (("ics2-record", b"AnswerRequest"),))
        )
        self.run()

    def records(self, topic: str, reader: str) -> list[dict[str, Any]]:
        return [self.schemas.decode(e.value, reader=reader).record for e in self.topics[topic]]

    def alerts(self, party: str) -> list[dict[str, Any]]:
        return [a for a in self.records(self.catalogue.alerts.name, "PartyAlert") if a["party_id"] == party]

    def outbound(self, message_type: str) -> list[dict[str, Any]]:
        records = self.records(self.catalogue.filings_outbound.name, "Filing")
        return [f for f in records if f["message_type"] == message_type]

    def house(self, hbl: str) -> dict[str, Any]:
        return next(h for h in json.loads(self.states[MBL])["houses"] if h["hbl"] == hbl)


def referred(outcome: Outcome) -> tuple[Pump, str]:
    """The seed booked with customs scripted to refer ML-TYO's F15 for SKC26TYO0003; the referral's reference."""
    pump = Pump(RiskScript(rules=(RiskRule(outcome, hbl=RFI_HBL),)))
    pump.book(seed_json_with_carrier_contact())
    pump.book(dict(seed_json_with_carrier_contact(), planning_party="CARRIER-A", event_id="e-carrier"))
    message_type = "IE3Q02" if outcome is Outcome.RFI else "IE3Q03"
    alert = next(a for a in pump.alerts("ML-TYO") if a["notification_message_type"] == message_type)
    return pump, alert["referral_reference"]


def request(kind: str, reference: str, answer: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    return answer_request(kind, reference, answer, requested_at=NOW, **kwargs)


def xml_text(xml: bytes, path: str) -> list[str]:
    return [e.text for e in etree.fromstring(xml).xpath(path, namespaces=NS)]


class TestAnswerRoundTrip:
    def test_rfi_answer_goes_out_as_ie3r02_and_clears_the_referral(self):
        """An RFI answer becomes an IE3R02 quoting MRN, reference, HBL and the filer's EORI; customs clears the HBL."""
        pump, reference = referred(Outcome.RFI)
        assert pump.house(RFI_HBL)["state"] == "referral_open"
        pump.answer(request("rfi", reference, RFI_FILE, requested_by="ML-TYO", request_id="req-1"))
        (sent,) = pump.outbound("IE3R02")
        f15 = next(f for f in pump.outbound("IE3F15") if f["hbl"] == RFI_HBL)
        assert (sent["mbl"], sent["hbl"], sent["filer_party_id"], sent["lrn"]) == (MBL, RFI_HBL, "ML-TYO", f15["lrn"])
        assert xml_text(sent["xml"], "//i:referralRequestReference") == [reference]
        assert xml_text(sent["xml"], "/i:IE3R02/i:declarant/i:identificationNumber") == [sent["filer_eori"]]
        mrn = xml_text(sent["xml"], "/i:IE3R02/i:MRN")[0]
        assert len(mrn) == 18 and xml_text(sent["xml"], "//i:responsibleMemberState/i:country") == [mrn[2:4]]
        assert pump.house(RFI_HBL)["state"] == "assessed"
        assert not pump.house(RFI_HBL)["open_referrals"]

    def test_rfs_answer_goes_out_as_ie3r03_for_the_referred_hbl(self):
        """RFS screening results become an IE3R03 whose result names the referred HBL; customs clears it."""
        pump, reference = referred(Outcome.RFS)
        pump.answer(request("rfs", reference, RFS_FILE, requested_by="ML-TYO"))
        (sent,) = pump.outbound("IE3R03")
        path = "//i:hrcmScreeningResults/i:transportDocumentHouseLevel/i:documentNumber"
        assert xml_text(sent["xml"], path) == [RFI_HBL]
        assert xml_text(sent["xml"], "//i:hrcmScreeningResults/i:referralRequestReference") == [reference]
        assert pump.house(RFI_HBL)["state"] == "assessed"

    def test_answering_party_is_told_the_answer_went_out(self):
        """The filer's queue gets an info alert naming the message and the referral."""
        pump, reference = referred(Outcome.RFI)
        pump.answer(request("rfi", reference, RFI_FILE))
        sent = [a for a in pump.alerts("ML-TYO") if a["notification_message_type"] == "IE3R02"]
        assert len(sent) == 1 and sent[0]["referral_reference"] == reference and sent[0]["urgency"] == "info"

    def test_outbound_headers_match_other_filings(self):
        """The IE3R02 record carries the MBL, HBL, LRN, message type and filer headers the gateway and audit use."""
        pump, reference = referred(Outcome.RFI)
        pump.answer(request("rfi", reference, RFI_FILE))
        emit = next(
            e
            for e in pump.topics[pump.catalogue.filings_outbound.name]
            if b"IE3R02" in dict(e.headers).get("ics2-message-type", b"")
        )
        headers = dict(emit.headers)
        assert emit.key == MBL.encode()
        assert (headers["ics2-mbl"], headers["ics2-hbl"], headers["ics2-filer"]) == (
            MBL.encode(),
            RFI_HBL.encode(),
            b"ML-TYO",
        )
        assert headers["ics2-record"] == b"Filing" and headers["ics2-lrn"]

    def test_lifecycle_event_records_the_answer_sent(self):
        """An ENS event for the MBL carries answer_sent with the referral and message id; the tracker takes it."""
        pump, reference = referred(Outcome.RFI)
        pump.answer(request("rfi", reference, RFI_FILE, request_id="req-9"))
        events = pump.records(pump.catalogue.ens_events.name, "EnsEvent")
        answered = [json.loads(e["payload"])["answer_sent"] for e in events if "answer_sent" in e["payload"]]
        (sent,) = pump.outbound("IE3R02")
        assert [(a["referral_reference"], a["message_id"], a["request_id"]) for a in answered] == [
            (reference, sent["message_id"], "req-9")
        ]
        assert all(e["mbl"] == MBL for e in events if "answer_sent" in e["payload"])

    def test_replayed_request_renders_the_same_message(self):
        """The same request twice gives the same message id, so the gateway sends the answer once."""
        pump, reference = referred(Outcome.RFI)
        again = request("rfi", reference, RFI_FILE, request_id="req-7")
        pump.answer(again)
        pump.answer(again)
        ids = {f["message_id"] for f in pump.outbound("IE3R02")}
        assert len(pump.outbound("IE3R02")) == 2 and len(ids) == 1


def ledger_with_referral(reference: str) -> tuple[Correlator, dict[str, bytes], dict[str, bytes]]:
    """A correlate stage whose ledger knows ``reference`` as a referral on ML-TYO's F15."""
    record = FilingRecord(
        mbl=MBL, hbl=RFI_HBL, filing=FilingType.F15, filer="ML-TYO", planning_party="ML-TYO", carrier="CARRIER-A",
        lrn="LRN-1", mrn="27NLQ8E4F0A1B2C3D4", hbl_chain=(("SKC26TYO0003", "ML-TYO"),),
        eoris={"NL812345678000": "ML-TYO"},
    )  # fmt: skip
    ledger: dict[str, bytes] = {}
    parked: dict[str, bytes] = {}
    stage = Correlator(SchemaCatalogue.load(), Catalogue.for_prefix(""), lambda: NOW, ledger, parked)
    key = referral_key(reference)
    ledger[key] = json.dumps(ledger_record(key, record)).encode()
    return stage, ledger, parked


def incoming(stage: Correlator, record: dict[str, Any], key: str | None = None) -> Incoming:
    key = key or referral_key(record["referral_reference"])
    value = stage.schemas.encode("AnswerRequest", record)
    return Incoming("ics2.notifications.parsed", 0, 5, key.encode(), value, (("ics2-record", b"AnswerRequest"),))


def split(stage: Correlator, emits: list[Emit]) -> dict[str, list[dict[str, Any]]]:
    """Emits decoded per topic."""
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for emit in emits:
        out[emit.topic].append(stage.schemas.decode(emit.value).record)
    return out


class TestRefusals:
    @pytest.mark.parametrize(
        ("change", "reason"),
        [
            ({"requested_by": "COLOADER-A"}, "only ML-TYO"),
            ({"mbl": "OTHER26MBL0000001"}, "not OTHER26MBL0000001"),
            ({"answer": json.dumps({"texts": []})}, "at least one text"),
            ({"answer": json.dumps({"texts": [{"txt": "typo"}]})}, "unknown fields"),
            ({"answer": "not json"}, "not JSON"),
        ],
        ids=["not the filer", "wrong MBL", "empty answer", "unknown field", "not JSON"],
    )
    def test_refused_answer_goes_to_dead_letters_and_tells_the_party(self, change: dict[str, Any], reason: str):
        """A known referral with an answer that cannot go: a dead letter and a high alert saying why; nothing sent."""
        stage, _, _ = ledger_with_referral("RFI27A")
        record = {**request("rfi", "RFI27A", RFI_FILE, requested_by="ML-TYO"), **change}
        out = split(stage, stage(incoming(stage, record)))
        assert "ics2.filings.outbound" not in out
        (dead,) = out["ics2.dead-letters"]
        assert reason in dead["reason"] and dead["stage"].startswith("correlate")
        party = record["requested_by"]
        (alert,) = [a for a in out["ics2.alerts"] if a["party_id"] == party]
        assert reason in alert["message"] and alert["urgency"] == "high" and alert["referral_reference"] == "RFI27A"

    def test_malformed_reference_is_refused_without_parking(self):
        """A reference that is not an..17 can never match a referral: dead letter and alert, nothing parked."""
        stage, _, parked = ledger_with_referral("RFI27A")
        record = {**request("rfi", "RFI27A", RFI_FILE, requested_by="ML-TYO"), "referral_reference": "has space"}
        out = split(stage, stage(incoming(stage, record, key="ref:has space")))
        assert out["ics2.dead-letters"] and out["ics2.alerts"][0]["party_id"] == "ML-TYO"
        assert parked == {}

    def test_request_keyed_by_another_reference_is_refused(self):
        """A request must be keyed by its own referral, or it would meet another referral's ledger entry."""
        stage, _, _ = ledger_with_referral("RFI27A")
        record = request("rfi", "RFI27B", RFI_FILE, requested_by="ML-TYO")
        out = split(stage, stage(incoming(stage, record, key=referral_key("RFI27A"))))
        assert "keyed" in out["ics2.dead-letters"][0]["reason"] and "ics2.filings.outbound" not in out

    def test_party_id_that_names_no_queue_gets_only_a_dead_letter(self):
        """An answering party whose id cannot name a queue is not alerted, but the dead letter still goes."""
        stage, _, _ = ledger_with_referral("RFI27A")
        record = request("rfi", "RFI27A", RFI_FILE, requested_by="no such/party")
        out = split(stage, stage(incoming(stage, record)))
        assert out["ics2.dead-letters"] and "ics2.alerts" not in out


class TestParking:
    def test_answer_before_its_referral_waits_and_goes_when_the_referral_is_known(self):
        """An early answer is parked, not refused; the referral's ledger entry releases it as IE3R02."""
        stage, ledger, parked = ledger_with_referral("RFI27A")
        entry = ledger.pop(referral_key("RFI27A"))
        record = request("rfi", "RFI27A", RFI_FILE, requested_by="ML-TYO")
        waiting = split(stage, stage(incoming(stage, record)))
        assert set(waiting) == {"ics2.alerts"}
        assert "waits" in waiting["ics2.alerts"][0]["title"] and waiting["ics2.alerts"][0]["urgency"] == "normal"
        assert parked_key(referral_key("RFI27A")) in parked
        ledger_entry = stage.schemas.encode("LedgerEntry", json.loads(entry))
        emits = stage(Incoming("ics2.notifications.parsed", 0, 9, b"ref:RFI27A", ledger_entry))
        out = split(stage, emits)
        assert [f["message_type"] for f in out["ics2.filings.outbound"]] == ["IE3R02"]
        assert parked == {}

    def test_same_request_parked_twice_is_kept_once(self):
        """A redelivered early request does not make two answers when released."""
        stage, ledger, _ = ledger_with_referral("RFI27A")
        entry = ledger.pop(referral_key("RFI27A"))
        record = request("rfi", "RFI27A", RFI_FILE, requested_by="ML-TYO")
        stage(incoming(stage, record))
        stage(incoming(stage, record))
        ledger_entry = stage.schemas.encode("LedgerEntry", json.loads(entry))
        out = split(stage, stage(Incoming("ics2.notifications.parsed", 0, 9, b"ref:RFI27A", ledger_entry)))
        assert len(out["ics2.filings.outbound"]) == 1

    def test_released_answer_that_fails_dead_letters_the_request_itself(self):
        """A parked answer refused on release dead-letters the request's bytes, not the ledger entry's."""
        stage, ledger, _ = ledger_with_referral("RFI27A")
        entry = ledger.pop(referral_key("RFI27A"))
        record = request("rfi", "RFI27A", RFI_FILE, requested_by="COLOADER-A")
        stage(incoming(stage, record))
        ledger_entry = stage.schemas.encode("LedgerEntry", json.loads(entry))
        out = split(stage, stage(Incoming("ics2.notifications.parsed", 0, 9, b"ref:RFI27A", ledger_entry)))
        (dead,) = out["ics2.dead-letters"]
        assert stage.schemas.decode(dead["original_value"]).record["request_id"] == record["request_id"]


class TestCheckAnswer:
    def test_good_files_pass(self):
        """The example RFI and RFS files render against the XSD with stand-in MRN and filer."""
        assert check_answer("rfi", "RFI27A", RFI_FILE).texts[0].text.startswith("Office")
        assert check_answer("rfs", "RFS27A", RFS_FILE).results[0].methods == ("XRY", "EDD")

    @pytest.mark.parametrize(
        ("kind", "answer", "match"),
        [
            ("rfs", {"results": [{"result": "1", "methods": ["XRY"]}]}, "refuse"),
            ("rfs", {"results": []}, "at least one"),
            ("rfs", {"results": [{"methods": ["XRY", "EDD"]}]}, "not usable"),
            ("rfi", {"texts": [{}]}, "text or code"),
            ("rfi", {"texts": "free text"}, "must be a list"),
            ("rfi", ["not", "an", "object"], "JSON object"),
            ("rfx", RFI_FILE, "kind"),
        ],
        ids=["one method only", "no results", "no result code", "empty text", "texts not a list", "list", "kind"],
    )
    def test_bad_files_are_refused(self, kind: str, answer: Any, match: str):
        """Files customs would refuse, or that do not fit the answer's shape, raise AnswerRejected."""
        with pytest.raises(AnswerRejected, match=match):
            check_answer(kind, "RFI27A", answer)

    def test_request_record_encodes_with_its_schema(self):
        """answer_request gives a record of the AnswerRequest contract, answer kept as JSON."""
        record = request("rfi", "RFI27A", RFI_FILE, mbl=MBL)
        schemas = SchemaCatalogue.load()
        decoded = schemas.decode(schemas.encode("AnswerRequest", record)).record
        assert decoded["kind"] == "rfi" and json.loads(decoded["answer"]) == RFI_FILE and decoded["mbl"] == MBL
