"""A booking's version 2 through the stage handlers and the customs simulator: amendments by MRN, invalidations,
invalidate-then-refile, and the parties told what happened."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta

from streams.domain.model import Consolidation
from streams.domain.planning import FilingDraft, FilingType, PlannedFiling
from streams.messages import NS
from streams.messages.render import render_filing
from streams.messages.safe import read_xml
from streams.pipeline.stage import Emit
from streams.pipeline.stages import changes
from streams.simulator import CustomsSimulator, RiskScript, ScriptedRejection
from tests.data import seed_json_with_carrier_contact
from tests.unit.test_handlers import NOW, Pump

MBL = "OCLU26TYO7781234"
AMENDED_HBL, MOVED_HBL, REMOVED_HBL = "SKC26TYO0001", "CHY26YOK0501", "SKC26TYO0003"


def version_2(data: dict) -> dict:
    """One gross mass changed, CHY26YOK0501 asked as F15 (not F14 + F16), SKC26TYO0003 dropped."""
    v2 = json.loads(json.dumps(data))
    v2["version"] = 2
    house = {h["hbl_number"]: h for h in v2["house_bills"]}
    house[AMENDED_HBL]["goods"][0]["gross_mass_kg"] = 845.0
    house[MOVED_HBL]["f15_requested"] = True
    v2["house_bills"] = [h for h in v2["house_bills"] if h["hbl_number"] != REMOVED_HBL]
    return v2


def outbound(pump: Pump, start: int = 0) -> list[dict]:
    emits = pump.topics[pump.catalogue.filings_outbound.name][start:]
    return [pump.schemas.decode(e.value, reader="Filing").record for e in emits]


def carrier_files_f12(pump: Pump) -> None:
    """The carrier's own F12, so that customs can assess the house consignments."""
    consolidation = Consolidation.from_json(seed_json_with_carrier_contact())
    planned = PlannedFiling(FilingType.F12, None, "CARRIER-A")
    xml = render_filing(FilingDraft(consolidation, planned, "CARRIER-F12-1", NOW))
    for answer in pump.simulator.submit(xml, NOW):
        pump.answer(answer)


def booked_twice(pump: Pump, between: Callable[[Pump, str], list] | None = None) -> int:
    """The seed booked (and registered), ``between(pump, carrier EORI)``'s customs messages, then version 2; the
    outbound count before version 2."""
    data = seed_json_with_carrier_contact()
    pump.book(data)
    pump.run()
    if between is not None:
        carrier = next(p["eori"] for p in data["parties"] if p["id"] == "CARRIER-A")
        for answer in between(pump, carrier):
            pump.answer(answer)
        pump.run()
    first = len(pump.topics[pump.catalogue.filings_outbound.name])
    pump.book(version_2(data))
    pump.run()
    return first


def arrived(pump: Pump, carrier: str) -> list:
    return pump.simulator.arrive(MBL, carrier, NOW)


class TestVersionTwo:
    def test_amend_invalidate_and_refile_in_order(self):
        """v2 sends IE3A15 for the changed mass, IE3Q04 then IE3F15 for the moved HBL, IE3Q04 for the dropped one."""
        pump = Pump()
        sent = [(f["message_type"], f["hbl"]) for f in outbound(pump, booked_twice(pump))]
        assert sorted(sent) == sorted(
            [("IE3A15", AMENDED_HBL), ("IE3Q04", MOVED_HBL), ("IE3F15", MOVED_HBL), ("IE3Q04", REMOVED_HBL)]
        )
        assert sent.index(("IE3Q04", MOVED_HBL)) < sent.index(("IE3F15", MOVED_HBL)), "withdraw first, then re-file"
        status = {(f["filing"], f["hbl"]): f for f in pump.ens(MBL)["filings"] if f["filer"] == "ML-TYO"}
        f14, f15 = status[("F14", MOVED_HBL)], status[("F15", MOVED_HBL)]
        parsed = [pump.schemas.decode(e.value).record for e in pump.topics[pump.catalogue.notifications_parsed.name]]
        notes = [(r.get("message_type"), r.get("mrn"), r.get("lrn")) for r in parsed]
        accepted = next(i for i, (t, m, _) in enumerate(notes) if t == "IE3R07" and m == f14["mrn"])
        registered = next(i for i, (t, _, lrn) in enumerate(notes) if t == "IE3R01" and lrn == f15["lrn"])
        assert accepted < registered, "the F15 is filed once customs accepted the F14's invalidation"
        answers = [pump.schemas.decode(e.value).record for e in pump.topics[pump.catalogue.notifications_parsed.name]]
        types = {a["message_type"] for a in answers if "message_type" in a}
        assert {"IE3N10", "IE3R07"} <= types and not {"IE3N01", "IE3N99"} & types

    def test_every_filing_ends_registered_amended_or_invalidated(self):
        pump = Pump()
        booked_twice(pump)
        states = {(f["filing"], f["hbl"], f["filer"]): f["state"] for f in pump.ens(MBL)["filings"]}
        assert states[("F15", AMENDED_HBL, "ML-TYO")] == "amended"
        assert states[("F14", MOVED_HBL, "ML-TYO")] == "invalidated"
        assert states[("F15", MOVED_HBL, "ML-TYO")] == "registered"
        assert states[("F16", MOVED_HBL, "COLOADER-C")] == "withdrawn"
        assert states[("F15", REMOVED_HBL, "ML-TYO")] == "invalidated"
        ours = [s for (_, _, filer), s in states.items() if filer == "ML-TYO"]
        assert set(ours) <= {"registered", "amended", "invalidated"}
        houses = {h["hbl"]: h["state"] for h in pump.ens(MBL)["houses"]}
        assert houses[REMOVED_HBL] == "withdrawn"
        assert not [k for k in pump.tables["parked"] if k.startswith(("changes|", "rejected|"))], "nothing left waiting"

    def test_parties_are_told(self):
        pump = Pump()
        booked_twice(pump)
        withdraw = [a for a in pump.alerts("COLOADER-C") if a["title"].startswith("Withdraw your F16")]
        assert [a["hbl"] for a in withdraw] == [MOVED_HBL]
        titles = [a["title"] for a in pump.alerts("ML-TYO")]
        assert any(t.startswith(f"F15 for {AMENDED_HBL}: amend requested") for t in titles)
        assert any(t.startswith(f"F14 for {MOVED_HBL}: replace requested") for t in titles)
        assert any(t.startswith(f"F15 for {REMOVED_HBL}: invalidate requested") for t in titles)

    def test_redelivered_version_two_sends_the_same_requests(self):
        """A replay of v2 (a crash before its offset was committed) repeats the same message ids only."""
        pump = Pump()
        first = booked_twice(pump)
        ids = {f["message_id"] for f in outbound(pump, first)}
        again = len(pump.topics[pump.catalogue.filings_outbound.name])
        for handler in pump.handlers.values():
            handler.clock = lambda: NOW + timedelta(hours=1)
        pump.book(version_2(seed_json_with_carrier_contact()))
        pump.run()
        resent = [(f["message_type"], f["hbl"], f["message_id"]) for f in outbound(pump, again)]
        assert {i for _, _, i in resent} <= ids
        assert ("IE3F15", MOVED_HBL) in [(t, h) for t, h, _ in resent], "the invalidation was accepted already"
        assert not [k for k in pump.tables["parked"] if k.startswith("changes|")], "nothing waits to expire"


class TestNotRegistered:
    def test_rejected_filing_is_filed_anew_not_amended(self):
        """A filing customs rejected has no MRN: the new content goes out as a new F14 and registers."""
        pump = Pump(RiskScript(rejections=(ScriptedRejection(MOVED_HBL),)))
        data = seed_json_with_carrier_contact()
        pump.book(data)
        pump.run()
        first = len(pump.topics[pump.catalogue.filings_outbound.name])
        v2 = json.loads(json.dumps(data))
        v2["version"] = 2
        house = next(h for h in v2["house_bills"] if h["hbl_number"] == MOVED_HBL)
        house["goods"][0]["description"] = "Coated kraft paper in rolls, 80 g/m2, for packaging"
        pump.book(v2)
        pump.run()
        assert [(f["message_type"], f["hbl"]) for f in outbound(pump, first)] == [("IE3F14", MOVED_HBL)]
        status = next(
            f for f in pump.ens(MBL)["filings"] if f["hbl"] == MOVED_HBL and f["filing"] == FilingType.F14.value
        )
        assert status["state"] == "registered"
        assert not [k for k in pump.tables["parked"] if k.startswith(("rejected|", "changes|"))], "nothing waits"
        rejected = [json.loads(v) for v in pump.tables["ledger"].values() if json.loads(v).get("rejected_at")]
        assert [(r["hbl"], r["filing"]) for r in rejected] == [(MOVED_HBL, "F14")]

    def test_an_older_workers_rejected_marker_is_honoured_and_moved_to_the_ledger(self):
        pump = Pump(RiskScript(rejections=(ScriptedRejection(MOVED_HBL),)))
        data = seed_json_with_carrier_contact()
        pump.book(data)
        pump.run()
        key, raw = next((k, v) for k, v in pump.tables["ledger"].items() if json.loads(v).get("rejected_at"))
        pump.tables["ledger"][key] = json.dumps({**json.loads(raw), "rejected_at": None}).encode()
        pump.tables["parked"][changes.rejected_key(key)] = b"1"
        first = len(pump.topics[pump.catalogue.filings_outbound.name])
        house = next(h for h in data["house_bills"] if h["hbl_number"] == MOVED_HBL)
        data["version"], house["goods"][0]["description"] = 2, "Coated kraft paper in rolls, 80 g/m2, for packaging"
        pump.book(data)
        pump.run()
        assert [(f["message_type"], f["hbl"]) for f in outbound(pump, first)] == [("IE3F14", MOVED_HBL)]
        assert changes.rejected_key(key) not in pump.tables["parked"]
        assert json.loads(pump.tables["ledger"][key])["rejected_at"]


class TestNeverAnswered:
    """A request whose filing customs never answers is expired after ``change_wait``: dead letter with its own source
    and bytes, filer told; never parked for ever, never dropped."""

    WAIT = timedelta(hours=2)

    def pump_losing_the_moved_f14(self) -> Pump:
        pump = Pump()
        submit = pump.simulator.submit

        def losing(xml: bytes, now):
            lost = b"<IE3F14" in xml[:200] and MOVED_HBL.encode() in xml
            return [] if lost else submit(xml, now)

        pump.simulator.submit = losing  # type: ignore[method-assign]
        return pump

    def expire(self, pump: Pump, at) -> int:
        topic = pump.catalogue.notifications_parsed.name
        emits = changes.expired(pump.tables["parked"].items(), at, self.WAIT, pump.schemas, topic)
        for emit in emits:
            pump.publish(emit)
        pump.run()
        return len(emits)

    def dead_letters(self, pump: Pump) -> list[dict]:
        name = pump.catalogue.dead_letters.name
        return [pump.schemas.decode(e.value, reader="DeadLetter").record for e in pump.topics[name]]

    def test_waits_until_the_bound_then_dead_letter_and_alert(self):
        pump = self.pump_losing_the_moved_f14()
        first = booked_twice(pump)
        assert ("IE3F15", MOVED_HBL) not in [(f["message_type"], f["hbl"]) for f in outbound(pump, first)]
        assert any(k.startswith("changes|") for k in pump.tables["parked"])
        assert self.expire(pump, NOW + self.WAIT - timedelta(minutes=1)) == 0, "not before the bound"
        assert self.expire(pump, NOW + self.WAIT) == 1
        [dead] = self.dead_letters(pump)
        assert dead["stage"] == "correlate/expire" and dead["responsible_party"] == "ML-TYO"
        request = pump.schemas.decode(dead["original_value"], reader="FilingChange").record
        assert (request["kind"], request["hbl"]) == ("replace", MOVED_HBL)
        parsed = pump.catalogue.notifications_parsed.name
        sources = [
            (e.topic, i)
            for i, e in enumerate(pump.topics[parsed])
            if dict(e.headers).get("ics2-record") == b"FilingChange" and dict(e.headers).get("ics2-expiry") is None
            and pump.schemas.decode(e.value, reader="FilingChange").record["hbl"] == MOVED_HBL
        ]  # fmt: skip
        assert (dead["source_topic"], dead["source_offset"]) == sources[0], "the dead letter names the request itself"
        assert not any(k.startswith("changes|") for k in pump.tables["parked"])
        [alert] = [a for a in pump.alerts("ML-TYO") if "customs never answered" in a["title"]]
        assert alert["hbl"] == MOVED_HBL and "ics2 consult" in alert["message"]
        assert self.expire(pump, NOW + 2 * self.WAIT) == 0 and len(self.dead_letters(pump)) == 1

    def test_an_answer_before_the_expiry_record_sends_the_request(self):
        """The timer saw the request waiting, the IE3R01 came first: sent once, nothing expired."""
        pump = self.pump_losing_the_moved_f14()
        first = booked_twice(pump)
        topic = pump.catalogue.notifications_parsed.name
        late = changes.expired(pump.tables["parked"].items(), NOW + self.WAIT, self.WAIT, pump.schemas, topic)
        assert len(late) == 1
        lost = next(f for f in outbound(pump, 0) if (f["message_type"], f["hbl"]) == ("IE3F14", MOVED_HBL))
        for answer in CustomsSimulator.submit(pump.simulator, lost["xml"], NOW):
            pump.answer(answer)
        pump.run()
        for emit in late:
            pump.publish(emit)
        pump.run()
        sent = [(f["message_type"], f["hbl"]) for f in outbound(pump, first)]
        assert sent.count(("IE3Q04", MOVED_HBL)) == 1 and sent.count(("IE3F15", MOVED_HBL)) == 1
        assert not self.dead_letters(pump)


class TestRefiled:
    def test_version_three_amends_the_refiled_filing_by_its_mrn(self):
        """v1's F14 rejected, v2 re-files it under a new LRN (registered), v3 amends that one: IE3A14, not a 3rd F14."""
        pump = Pump(RiskScript(rejections=(ScriptedRejection(MOVED_HBL),)))
        data = seed_json_with_carrier_contact()
        pump.book(data)
        pump.run()
        first = len(pump.topics[pump.catalogue.filings_outbound.name])
        house = next(h for h in data["house_bills"] if h["hbl_number"] == MOVED_HBL)
        data["version"], house["goods"][0]["description"] = 2, "Coated kraft paper in rolls, 80 g/m2, for packaging"
        pump.book(data)
        pump.run()
        [refiled] = outbound(pump, first)
        status = next(f for f in pump.ens(MBL)["filings"] if (f["filing"], f["hbl"]) == ("F14", MOVED_HBL))
        assert (refiled["message_type"], status["state"], status["lrn"]) == ("IE3F14", "registered", refiled["lrn"])
        second = len(pump.topics[pump.catalogue.filings_outbound.name])
        answered = len(pump.topics[pump.catalogue.notifications_parsed.name])
        data["version"], house["goods"][0]["gross_mass_kg"] = 3, house["goods"][0]["gross_mass_kg"] + 10
        pump.book(data)
        pump.run()
        [amendment] = outbound(pump, second)
        assert (amendment["message_type"], amendment["hbl"]) == ("IE3A14", MOVED_HBL)
        assert read_xml(amendment["xml"]).findtext(f"{{{NS}}}MRN") == status["mrn"]
        parsed = pump.topics[pump.catalogue.notifications_parsed.name][answered:]
        types = {r.get("message_type") for r in (pump.schemas.decode(e.value).record for e in parsed)}
        assert "IE3N10" in types and not {"IE3N01", "IE3N99"} & types
        status = next(f for f in pump.ens(MBL)["filings"] if (f["filing"], f["hbl"]) == ("F14", MOVED_HBL))
        assert status["state"] == "amended"

    def test_a_ledger_entry_sent_again_without_mrn_keeps_the_mrn(self):
        """A redelivered booking re-sends its ledger entries: the MRN customs gave stays known to later requests."""
        pump = Pump()
        pump.book(seed_json_with_carrier_contact())
        pump.run()
        key, raw = next((k, v) for k, v in pump.tables["ledger"].items() if k.startswith("lrn:"))
        registered = json.loads(raw)
        assert registered["mrn"]
        again = pump.schemas.encode("LedgerEntry", {**registered, "mrn": None})
        pump.publish(Emit(pump.catalogue.notifications_parsed.name, key.encode(), again, ()))
        pump.run()
        assert json.loads(pump.tables["ledger"][key])["mrn"] == registered["mrn"]


class TestRefused:
    def test_invalidation_refused_after_a_do_not_load_keeps_the_filing_registered(self):
        """Customs refuses to withdraw a filing under a DNL (IE3N99): it stays registered, the filer is told."""
        from streams.simulator import Outcome, RiskRule

        pump = Pump(RiskScript(rules=(RiskRule(Outcome.DO_NOT_LOAD, hbl=REMOVED_HBL),)))
        carrier_files_f12(pump)
        booked_twice(pump)
        states = {(f["filing"], f["hbl"]): f["state"] for f in pump.ens(MBL)["filings"]}
        assert states[("F15", REMOVED_HBL)] == "registered"
        refused = [a for a in pump.alerts("ML-TYO") if a["notification_message_type"] == "IE3N99"]
        assert [a["hbl"] for a in refused] == [REMOVED_HBL]
        assert "Do Not Load" in refused[0]["message"]

    def test_amendment_refused_under_an_announced_control_keeps_the_filing_registered(self):
        """IE3N08 on a house consignment, then v2 changes its content: IE3N01, the F15 stays registered, ML-TYO knows
        why."""
        pump = Pump()
        booked_twice(pump, lambda pump, carrier: pump.simulator.control(MBL, carrier, AMENDED_HBL, NOW))
        states = {(f["filing"], f["hbl"]): f["state"] for f in pump.ens(MBL)["filings"]}
        assert states[("F15", AMENDED_HBL)] == "registered"
        assert states[("F15", REMOVED_HBL)] == "invalidated", "the other house consignments are not frozen"
        refused = [a for a in pump.alerts("ML-TYO") if a["notification_message_type"] == "IE3N01"]
        assert [a["hbl"] for a in refused] == [AMENDED_HBL]
        assert "announced a control" in refused[0]["message"]

    def test_requests_after_arrival_are_refused_and_the_filings_stay_registered(self):
        """The goods arrived (IE3R04): v2's amendment (IE3N01) and invalidation (IE3N99) are refused, nothing is
        marked rejected, the filer is told each time."""
        pump = Pump()
        booked_twice(pump, arrived)
        states = {(f["filing"], f["hbl"]): f["state"] for f in pump.ens(MBL)["filings"]}
        assert states[("F15", AMENDED_HBL)] == states[("F15", REMOVED_HBL)] == "registered"
        refusals = {
            (a["notification_message_type"], a["hbl"])
            for a in pump.alerts("ML-TYO")
            if a["notification_message_type"] in ("IE3N01", "IE3N99") and "arrived" in a["message"]
        }
        assert {("IE3N01", AMENDED_HBL), ("IE3N99", REMOVED_HBL), ("IE3N99", MOVED_HBL)} <= refusals

    def test_replacement_waits_for_the_ie3r07_and_expires_when_refused(self):
        """After arrival the F14's invalidation is refused: the F15 replacing it is never filed (customs would refuse
        a second filing of the house consignment), the F14 stays registered, and after the wait ML-TYO is told."""
        pump = Pump()
        first = booked_twice(pump, arrived)
        assert ("IE3F15", MOVED_HBL) not in [(f["message_type"], f["hbl"]) for f in outbound(pump, first)]
        states = {(f["filing"], f["hbl"]): f["state"] for f in pump.ens(MBL)["filings"] if f["filer"] == "ML-TYO"}
        assert states[("F14", MOVED_HBL)] == "registered" and states[("F15", MOVED_HBL)] != "rejected"
        held = [k for k in pump.tables["parked"] if k.startswith("changes|mrn:")]
        assert len(held) == 1
        topic = pump.catalogue.notifications_parsed.name
        emits = changes.expired(
            pump.tables["parked"].items(), NOW + timedelta(hours=2), timedelta(hours=2), pump.schemas, topic
        )
        for emit in emits:
            pump.publish(emit)
        pump.run()
        letters = [
            pump.schemas.decode(e.value, reader="DeadLetter").record
            for e in pump.topics[pump.catalogue.dead_letters.name]
        ]
        assert [(d["stage"], d["responsible_party"]) for d in letters] == [("correlate/expire", "ML-TYO")]
        source = pump.topics[topic][letters[0]["source_offset"]]
        assert (source.key.decode(), dict(source.headers).get(changes.AFTER_INVALIDATION) is not None) == (
            held[0].removeprefix("changes|"),
            True,
        ), "the dead letter names the held request itself"
        [alert] = [a for a in pump.alerts("ML-TYO") if "replacement not filed" in a["title"]]
        assert alert["hbl"] == MOVED_HBL and not [k for k in pump.tables["parked"] if k.startswith("changes|")]
