"""Requests about registered filings: IE3A1x / IE3Q04 / IE3Q05 rendered valid, and the simulator answering them as
the STI would (IE3N10, IE3R07, IE3R08, or a refusal)."""

from __future__ import annotations

import pytest
from lxml import etree

from streams.domain.notifications import NotificationKind
from streams.domain.planning import FilingDraft, FilingType, PlannedFiling
from streams.errors import InputError, RenderError
from streams.messages import NS
from streams.messages.parse import parse_notification
from streams.messages.render import render_filing
from streams.messages.render_requests import (
    Consultation,
    Invalidation,
    amendment_xml,
    invalidation_reference,
    render_consultation,
    render_invalidation,
)
from streams.messages.safe import read_xml
from streams.simulator import CustomsSimulator, Outcome, RiskRule, RiskScript, amendments
from tests.unit.test_simulator import (
    CARRIER_A,
    COLOADED_HBL,
    MBL,
    ML_TYO,
    NOW,
    OWN_HBL,
    consolidation,
    filings,
    kinds,
)

__all__ = ["consolidation", "filings"]
LATER = NOW.replace(hour=10)


def mrn_of(out, lrn: str) -> str:
    registered = [parse_notification(o.xml) for o in out if o.message_type == "IE3R01"]
    return next(n.mrn for n in registered if n.lrn == lrn)


def registered(sim: CustomsSimulator, filings) -> dict[str, str]:
    """F12, F15 (own HBL) and F14 + F16 (co-loaded HBL) registered; their MRNs by name."""
    mrns = {}
    for name, lrn in (("F12", "CARRIER-F12-1"), ("F15", "ML-F15-1"), ("F14", "ML-F14-1"), ("F16", "CLA-F16-1")):
        mrns[name] = mrn_of(sim.submit(filings[name], NOW), lrn)
    return mrns


def render_f15(consolidation, lrn: str, mass: float | None = None) -> bytes:
    data = consolidation
    if mass is not None:
        hbl = consolidation.house_bill(OWN_HBL)
        goods = (type(hbl.goods[0])(**{**_fields(hbl.goods[0]), "gross_mass_kg": mass}), *hbl.goods[1:])
        changed = type(hbl)(**{**_fields(hbl), "goods": goods})
        houses = tuple(changed if h.hbl_number == OWN_HBL else h for h in consolidation.house_bills)
        data = type(consolidation)(**{**_fields(consolidation), "house_bills": houses})
    return render_filing(FilingDraft(data, PlannedFiling(FilingType.F15, OWN_HBL, "ML-TYO"), lrn, LATER))


def _fields(obj) -> dict:
    return {name: getattr(obj, name) for name in obj.__dataclass_fields__}


class TestRendering:
    def test_amendment_is_the_filing_under_its_own_lrn_naming_the_mrn(self, consolidation):
        xml = amendment_xml(render_f15(consolidation, "ML-F15-1", mass=999.5), "ML-F15-2", "27NLA1B2C3D4E5F6G7")
        root = read_xml(xml)
        names = [etree.QName(c).localname for c in root][:3]
        assert (etree.QName(root).localname, names) == ("IE3A15", ["LRN", "MRN", "documentIssueDate"])
        assert root.findtext(f"{{{NS}}}LRN") == "ML-F15-2"
        assert "999.5" in [e.text for e in root.iter(f"{{{NS}}}grossMass")]

    @pytest.mark.parametrize(("name", "amendment"), [("F12", "IE3A12"), ("F14", "IE3A14"), ("F16", "IE3A16")])
    def test_every_filing_type_has_its_amendment(self, filings, name, amendment):
        xml = amendment_xml(filings[name], "AMEND-1", "27NLA1B2C3D4E5F6G7")
        assert etree.QName(read_xml(xml)).localname == amendment

    def test_only_filings_have_amendments(self):
        with pytest.raises(RenderError, match="no amendment"):
            amendment_xml(render_invalidation(Invalidation("Q04X", "27NLA1B2C3D4E5F6G7", ML_TYO, NOW, "x")), "L", "M")

    def test_consultation_needs_an_mrn_or_a_document(self):
        with pytest.raises(RenderError, match="R3028"):
            render_consultation(Consultation("Q05X", ML_TYO))
        xml = render_consultation(Consultation("Q05X", ML_TYO, mbl=MBL))
        assert read_xml(xml).findtext(f"{{{NS}}}dataRequest") == "1"


class TestSimulatorAmendment:
    def test_content_change_is_registered_and_answered_ie3n10(self, consolidation, filings):
        sim = CustomsSimulator(RiskScript(), seed=1)
        mrns = registered(sim, filings)
        amendment = amendment_xml(render_f15(consolidation, "x", mass=1234.0), "ML-F15-2", mrns["F15"])
        out = sim.submit(amendment, LATER)
        assert kinds(out) == [(ML_TYO, "IE3N10")]
        note = parse_notification(out[0].xml)
        assert (note.kind, note.mrn) == (NotificationKind.AMENDMENT_ACCEPTED, mrns["F15"])

    def test_unknown_mrn_and_foreign_filing_are_refused(self, consolidation, filings):
        sim = CustomsSimulator(RiskScript(), seed=1)
        mrns = registered(sim, filings)
        unknown = sim.submit(amendment_xml(render_f15(consolidation, "x"), "ML-F15-2", "27NL00000000000001"), LATER)
        assert kinds(unknown) == [(ML_TYO, "IE3N01")]
        wrong_type = sim.submit(amendment_xml(render_f15(consolidation, "x"), "ML-F15-3", mrns["F14"]), LATER)
        assert "cannot amend an IE3F14" in parse_notification(wrong_type[0].xml).errors[0].description

    def test_non_amendable_house_document_is_refused(self, consolidation, filings):
        sim = CustomsSimulator(RiskScript(), seed=1)
        mrns = registered(sim, filings)
        xml = amendment_xml(render_f15(consolidation, "x"), "ML-F15-2", mrns["F15"]).replace(
            OWN_HBL.encode(), b"SKC26TYO9999"
        )
        out = sim.submit(xml, LATER)
        error = parse_notification(out[0].xml).errors[0]
        assert (out[0].message_type, error.code) == ("IE3N01", "12")
        assert "house transport document cannot be amended" in error.description

    def test_amendment_after_a_do_not_load_is_refused(self, consolidation, filings):
        sim = CustomsSimulator(RiskScript(rules=(RiskRule(Outcome.DO_NOT_LOAD, hbl=OWN_HBL),)), seed=1)
        mrns = registered(sim, filings)
        out = sim.submit(amendment_xml(render_f15(consolidation, "x"), "ML-F15-2", mrns["F15"]), LATER)
        error = parse_notification(out[0].xml).errors[0]
        assert (out[0].message_type, error.code) == ("IE3N01", "92")
        assert "Do Not Load" in error.description


class TestSimulatorInvalidation:
    def invalidation(self, mrn: str, lrn: str = "ML-F14-1", declarant: str = ML_TYO) -> bytes:
        reference = invalidation_reference(lrn)
        return render_invalidation(Invalidation(reference, mrn, declarant, LATER, "not needed", MBL, COLOADED_HBL))

    def test_accepted_with_ie3r07_then_the_house_can_be_filed_as_f15(self, consolidation, filings):
        sim = CustomsSimulator(RiskScript(), seed=1)
        mrns = registered(sim, filings)
        out = sim.submit(self.invalidation(mrns["F14"]), LATER)
        assert kinds(out) == [(ML_TYO, "IE3R07")]
        assert parse_notification(out[0].xml).kind is NotificationKind.INVALIDATION_ACCEPTED
        planned = PlannedFiling(FilingType.F15, COLOADED_HBL, "ML-TYO")
        f15 = render_filing(FilingDraft(consolidation, planned, "ML-F15-CO", LATER))
        assert "IE3R01" in [t for _, t in kinds(sim.submit(f15, LATER))]

    def test_twice_or_by_another_declarant_is_refused_with_ie3n99(self, filings):
        sim = CustomsSimulator(RiskScript(), seed=1)
        mrns = registered(sim, filings)
        foreign = sim.submit(self.invalidation(mrns["F14"], declarant="DE993311220000"), LATER)
        assert kinds(foreign) == [("DE993311220000", "IE3N99")]
        sim.submit(self.invalidation(mrns["F14"]), LATER)
        again = sim.submit(self.invalidation(mrns["F14"]), LATER)
        note = parse_notification(again[0].xml)
        assert (again[0].message_type, note.errors[0].code) == ("IE3N99", "92")
        assert note.lrn == invalidation_reference("ML-F14-1")

    def test_state_survives_json(self, filings):
        sim = CustomsSimulator(RiskScript(), seed=1)
        mrns = registered(sim, filings)
        sim.submit(self.invalidation(mrns["F14"]), LATER)
        again = CustomsSimulator.from_json(sim.to_json()).submit(self.invalidation(mrns["F14"]), LATER)
        assert kinds(again) == [(ML_TYO, "IE3N99")]


class TestFrozenByControlOrArrival:
    """UCC art. 129: no amendment once a control is announced or the goods arrived; no invalidation of goods brought
    in (arrival) or under an announced control. The filing stays as it was."""

    def amend_f15(self, sim, consolidation, mrns) -> list:
        return sim.submit(amendment_xml(render_f15(consolidation, "x", mass=999.5), "ML-F15-2", mrns["F15"]), LATER)

    def invalidate(self, sim, mrn: str, lrn: str, hbl: str | None) -> list:
        reference = invalidation_reference(lrn)
        return sim.submit(
            render_invalidation(Invalidation(reference, mrn, ML_TYO, LATER, "not needed", MBL, hbl)), LATER
        )

    @pytest.mark.parametrize("aeo, message_type", [(False, "IE3N08"), (True, "IE3N09")])
    def test_control_goes_to_filer_and_carrier(self, filings, aeo, message_type):
        sim = CustomsSimulator(RiskScript(), seed=1)
        mrns = registered(sim, filings)
        out = sim.control(MBL, CARRIER_A, OWN_HBL, LATER, aeo=aeo)
        assert kinds(out) == [(ML_TYO, message_type), (CARRIER_A, message_type)]
        notice = parse_notification(out[0].xml)
        assert (notice.mrn, notice.hbls) == (mrns["F15"], (OWN_HBL,))

    @pytest.mark.parametrize("aeo", [False, True])
    def test_amendment_after_an_announced_control_is_refused(self, consolidation, filings, aeo):
        sim = CustomsSimulator(RiskScript(), seed=1)
        mrns = registered(sim, filings)
        sim.control(MBL, CARRIER_A, OWN_HBL, LATER, aeo=aeo)
        out = self.amend_f15(sim, consolidation, mrns)
        error = parse_notification(out[0].xml).errors[0]
        assert (out[0].message_type, error.code) == ("IE3N01", "92")
        assert f"announced a control of house consignment {OWN_HBL}" in error.description

    def test_a_control_freezes_its_house_consignment_only(self, consolidation, filings):
        sim = CustomsSimulator(RiskScript(), seed=1)
        mrns = registered(sim, filings)
        sim.control(MBL, CARRIER_A, COLOADED_HBL, LATER)
        assert kinds(self.amend_f15(sim, consolidation, mrns)) == [(ML_TYO, "IE3N10")]
        refused = self.invalidate(sim, mrns["F14"], "ML-F14-1", COLOADED_HBL)
        error = parse_notification(refused[0].xml).errors[0]
        assert (refused[0].message_type, error.code) == ("IE3N99", "92")
        assert "control" in error.description

    def test_arrival_is_answered_ie3r04_to_the_carrier(self, filings):
        sim = CustomsSimulator(RiskScript(), seed=1)
        mrns = registered(sim, filings)
        out = sim.arrive(MBL, CARRIER_A, LATER)
        assert {o.addressee for o in out} == {CARRIER_A} and {o.message_type for o in out} == {"IE3R04"}
        notices = [parse_notification(o.xml) for o in out]
        assert {n.mrn for n in notices} == {mrns["F12"], mrns["F15"], mrns["F14"]}
        assert {n.kind for n in notices} == {NotificationKind.ARRIVAL_REGISTERED}

    def test_amendment_after_arrival_is_refused_the_f12_too(self, consolidation, filings):
        sim = CustomsSimulator(RiskScript(), seed=1)
        mrns = registered(sim, filings)
        sim.arrive(MBL, CARRIER_A, LATER)
        out = self.amend_f15(sim, consolidation, mrns)
        error = parse_notification(out[0].xml).errors[0]
        assert (out[0].message_type, error.code) == ("IE3N01", "92")
        assert f"the goods of master B/L {MBL} arrived" in error.description
        f12 = render_filing(FilingDraft(consolidation, PlannedFiling(FilingType.F12, None, "CARRIER-A"), "x", LATER))
        master = sim.submit(amendment_xml(f12, "CARRIER-F12-2", mrns["F12"]), LATER)
        assert [(o.message_type, parse_notification(o.xml).errors[0].code) for o in master] == [("IE3N01", "92")]

    def test_invalidation_after_arrival_is_refused_and_the_filing_stays(self, filings):
        sim = CustomsSimulator(RiskScript(), seed=1)
        mrns = registered(sim, filings)
        sim.arrive(MBL, CARRIER_A, LATER)
        restored = CustomsSimulator.from_json(sim.to_json())
        out = self.invalidate(restored, mrns["F14"], "ML-F14-1", COLOADED_HBL)
        note = parse_notification(out[0].xml)
        assert (out[0].message_type, note.errors[0].code) == ("IE3N99", "92")
        assert "arrived" in note.errors[0].description
        assert note.lrn == invalidation_reference("ML-F14-1"), "the refusal quotes the request, not the filing"
        consulted = amendments.find(restored, mrns["F14"])
        assert consulted is not None and consulted.record.status == "registered"

    def test_unknown_linking_key_or_house_is_an_input_error(self, filings):
        sim = CustomsSimulator(RiskScript(), seed=1)
        registered(sim, filings)
        with pytest.raises(InputError, match="nothing is filed"):
            sim.arrive("NOSUCHMBL", CARRIER_A, LATER)
        with pytest.raises(InputError, match="no house consignment"):
            sim.control(MBL, CARRIER_A, "NOSUCHHBL", LATER)


class TestSimulatorConsultation:
    def test_ie3r08_lists_the_requesters_filings_with_their_state(self, filings):
        sim = CustomsSimulator(RiskScript(), seed=1)
        mrns = registered(sim, filings)
        reference = invalidation_reference("ML-F14-1")
        sim.submit(render_invalidation(Invalidation(reference, mrns["F14"], ML_TYO, LATER, "not needed")), LATER)
        out = sim.submit(render_consultation(Consultation("Q05-1", ML_TYO, mbl=MBL)), LATER)
        assert kinds(out) == [(ML_TYO, "IE3R08")]
        root = read_xml(out[0].xml)
        states = {e.findtext(f"{{{NS}}}MRN"): e.findtext(f"{{{NS}}}status") for e in root.iter(f"{{{NS}}}filingState")}
        assert states == {mrns["F15"]: "registered", mrns["F14"]: "invalidated"}

    def test_by_mrn_gives_that_filing_only(self, filings):
        sim = CustomsSimulator(RiskScript(), seed=1)
        mrns = registered(sim, filings)
        out = sim.submit(render_consultation(Consultation("Q05-2", ML_TYO, mrn=mrns["F15"])), LATER)
        found = [e.text for e in read_xml(out[0].xml).iter(f"{{{NS}}}MRN")]
        assert found == [mrns["F15"]]


class TestConsultThroughTheGateway:
    def test_request_record_and_results_round_trip(self, filings):
        """``ics2 consult``'s Filing record reaches the simulator as an IE3Q05; its IE3R08 reads back per filing."""
        from streams.gateway.base import OutboundFiling
        from streams.gateway.consult import consultation_request, read_results

        sim = CustomsSimulator(RiskScript(), seed=1)
        mrns = registered(sim, filings)
        reference, record = consultation_request(mrns["F14"], ML_TYO, LATER, party="ML-TYO")
        filing = OutboundFiling.from_record(record)
        assert (filing.message_type, filing.lrn) == ("IE3Q05", reference)
        [answer] = sim.submit(filing.xml, LATER)
        results = read_results(answer.xml)
        assert results.reference == reference
        assert [(f.mrn, f.filing, f.status, f.hbl) for f in results.filings] == [
            (mrns["F14"], "F14", "registered", COLOADED_HBL)
        ]

    def test_an_mbl_target_is_sent_as_the_master_document(self):
        from streams.gateway.consult import consultation_request

        _, record = consultation_request(MBL, ML_TYO, LATER)
        root = read_xml(record["xml"])
        assert root.find(f"{{{NS}}}MRN") is None
        assert root.findtext(f"{{{NS}}}transportDocument/{{{NS}}}documentNumber") == MBL


def test_the_carrier_consults_every_filing_of_its_mbl_invalidated_ones_too(filings):
    sim = CustomsSimulator(RiskScript(), seed=1)
    mrns = registered(sim, filings)
    sim.submit(render_invalidation(Invalidation("Q04X", mrns["F16"], "DE993311220000", LATER, "not needed")), LATER)
    out = sim.submit(render_consultation(Consultation("Q05-3", "NL860123456", mbl=MBL)), LATER)
    root = read_xml(out[0].xml)
    found = {e.findtext(f"{{{NS}}}MRN"): e.findtext(f"{{{NS}}}status") for e in root.iter(f"{{{NS}}}filingState")}
    assert found == {**dict.fromkeys(mrns.values(), "registered"), mrns["F16"]: "invalidated"}
