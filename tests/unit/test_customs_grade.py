"""Customs-grade data: the rules that mirror what the renderer, our XSDs and customs refuse, and the property that
whatever validates clean renders and passes our XSDs."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.domain.model import Address, Consolidation, Contact, Representative
from streams.domain.planning import FilingDraft, FilingType, PlannedFiling, plan
from streams.domain.validation import ValidationReport, validate
from streams.errors import RenderError
from streams.messages.render import render_filing
from streams.simulator.checks import customs_grade_errors
from tests.data import seed_consolidation

SEED = seed_consolidation()
AGENT = Representative(
    "Rotterdam Filing Services B.V.",
    "NL009988776",
    "2",
    Address("Wilhelminakade", "Rotterdam", "3072AP", "NL", number="909"),
    Contact(email="ics2@rfs.example"),
)


def with_party(consolidation: Consolidation, party_id: str, **changes: Any) -> Consolidation:
    parties = dict(consolidation.parties)
    parties[party_id] = dataclasses.replace(parties[party_id], **changes)
    return dataclasses.replace(consolidation, parties=parties)


def with_address(consolidation: Consolidation, party_id: str, **changes: Any) -> Consolidation:
    party = consolidation.parties[party_id]
    return with_party(consolidation, party_id, address=dataclasses.replace(party.address, **changes))


def with_hbl(consolidation: Consolidation, number: str, **changes: Any) -> Consolidation:
    bills = tuple(dataclasses.replace(h, **changes) if h.hbl_number == number else h for h in consolidation.house_bills)
    return dataclasses.replace(consolidation, house_bills=bills)


def found(report: ValidationReport, rule_id: str) -> list[tuple[str, str | None, str | None, str | None]]:
    """(path, party, hbl, filing) of every finding of one rule."""
    return [(f.path, f.party, f.hbl, f.filing and f.filing.value) for f in report.by_rule(rule_id)]


class TestAddressR3002:
    def test_street_without_house_number_is_found_for_the_party_that_fixes_it(self):
        """A consignee's address without number is for the shipper's forwarder (the HBL issuer) to fix."""
        report = validate(with_address(SEED, "CONSIGNEE-2", number=None))
        assert found(report, "ENS-ADDRESS-R3002") == [("$.parties[11].address", "COLOADER-A", None, None)]
        assert "house number" in report.by_rule("ENS-ADDRESS-R3002")[0].message
        assert report.by_rule("ENS-ADDRESS-R3002")[0].error_code == 13

    def test_po_box_alone_is_enough(self):
        """A P.O. box without street and number satisfies R3002."""
        report = validate(with_address(SEED, "SHIPPER-1", street="", number=None, po_box="PO Box 77"))
        assert report.by_rule("ENS-ADDRESS-R3002") == ()
        assert report.ok

    def test_filer_address_is_for_the_filer(self):
        """A master loader's own address without number is ML-TYO's to fix."""
        report = validate(with_address(SEED, "ML-TYO", number=None))
        assert [f.party for f in report.by_rule("ENS-ADDRESS-R3002")] == ["ML-TYO"]

    def test_address_parts_have_their_hti_lengths(self):
        """A house number longer than an..35 is refused before the XSD would refuse it."""
        report = validate(with_address(SEED, "SHIPPER-2", number="1" * 36))
        assert found(report, "ENS-TEXT") == [("$.parties[6].address.number", "COLOADER-A", None, None)]


class TestFilerEori:
    @pytest.mark.parametrize("eori", ["GB123456789000", "JP1234567890123"])
    def test_non_eu_filer_eori_is_refused_for_each_of_its_filings(self, eori):
        """A GB or JP EORI cannot file: every filing of ML-TYO gets a finding, so that each waits."""
        report = validate(with_party(SEED, "ML-TYO", eori=eori))
        findings = report.by_rule("ENS-FILER-EU-EORI")
        filed = {(f.filing.value, f.hbl) for f in findings if f.filing}
        assert filed == {(f.filing.value, f.hbl) for f in plan(SEED).filings if f.filer == "ML-TYO"}
        assert {f.party for f in findings} == {"ML-TYO"}
        assert not report.ok

    def test_xi_eori_files(self):
        """Northern Ireland's XI EORIs are EU EORIs for ICS2."""
        report = validate(with_party(SEED, "ML-TYO", eori="XI812345678000"))
        assert report.by_rule("ENS-FILER-EU-EORI") == ()
        assert report.ok

    def test_non_eu_supplementary_declarant_blocks_the_f14_naming_it(self):
        """COLOADER-C with a JP EORI: its F16 and the F14 that names it are refused."""
        report = validate(with_party(SEED, "COLOADER-C", eori="JP9876543210"))
        assert ("$.parties[3].eori", "COLOADER-C", "CHY26YOK0501", "F16") in found(report, "ENS-FILER-EU-EORI")
        assert ("$.parties[3].eori", "COLOADER-C", "CHY26YOK0501", "F14") in found(report, "ENS-F14-SUPP-DECL")

    def test_representative_without_contact_blocks_the_filings_it_files(self):
        """A representative needs an e-mail or phone: each filing of the party it files for gets a finding."""
        agent = dataclasses.replace(AGENT, contact=None)
        report = validate(with_party(SEED, "ML-TYO", representative=agent))
        findings = report.by_rule("ENS-FILER-CONTACT")
        assert {f.path for f in findings} == {"$.parties[0].representative.contact"}
        assert len(findings) == len([f for f in plan(SEED).filings if f.filer == "ML-TYO"])
        assert findings[0].message.startswith("the representative of ML-TYO files the F15")

    def test_non_eu_representative_is_refused(self):
        """A service provider filing with a GB EORI is refused for the filings it files, and only those: COLOADER-A's
        representative holds up COLOADER-A's F16 and F14; no finding holds up a filing of ML-TYO."""
        agent = dataclasses.replace(AGENT, eori="GB123456789000")
        report = validate(with_party(SEED, "COLOADER-A", representative=agent))
        assert {(f.path, f.filing.value, f.hbl) for f in report.by_rule("ENS-FILER-EU-EORI")} == {
            ("$.parties[2].representative.eori", "F16", "AOB26OSA1001"),
            ("$.parties[2].representative.eori", "F14", "DAI26NGO0077"),
        }
        assert all(f.hbl is not None for f in report.errors)


class TestF12HouseFilers:
    def test_carrier_without_contact_is_a_finding_on_the_f12(self):
        """The F12 cannot be written without the carrier's e-mail or phone: a finding, not a render error."""
        report = validate(with_party(SEED, "CARRIER-A", contact=None))
        assert found(report, "ENS-FILER-CONTACT") == [("$.parties[1].contact", "CARRIER-A", None, "F12")]

    def test_house_filer_without_eori_cannot_be_named_on_the_f12(self):
        """COLOADER-A files the F14 of DAI26NGO0077: the F12 must name it by its EORI."""
        report = validate(with_party(SEED, "COLOADER-A", eori=None))
        assert ("$.parties[2].eori", "COLOADER-A", None, "F12") in found(report, "ENS-F12-HOUSE-FILERS")

    def test_plan_without_house_filers_leaves_the_f12_nothing_to_name(self):
        """With no HBL there is no F15 or F14, so the F12 cannot name a house filer: a finding on the F12."""
        report = validate(dataclasses.replace(SEED, house_bills=()))
        assert found(report, "ENS-F12-HOUSE-FILERS") == [("$.house_bills", "ML-TYO", None, "F12")]

    def test_seed_f12_names_every_house_filer(self):
        """The seed validates clean and its F12 renders."""
        assert validate(SEED).ok
        draft = FilingDraft(SEED, PlannedFiling(FilingType.F12, None, "CARRIER-A"), "F12TEST", SEED.occurred_at)
        assert b"supplementaryDeclarant" in render_filing(draft)


class TestCodeLists:
    def test_missing_freight_payment_is_found(self):
        """An HBL without a CL116 method of payment is the HBL issuer's to fix."""
        report = validate(with_hbl(SEED, "CHY26YOK0501", freight_payment=None))
        assert found(report, "ENS-FREIGHT-PAYMENT") == [
            ("$.house_bills[6].freight_payment", "COLOADER-C", "CHY26YOK0501", None)
        ]

    @pytest.mark.parametrize(
        ("change", "path"),
        [
            (lambda c: with_hbl(c, "SKC26TYO0001", freight_payment="X"), "$.house_bills[0].freight_payment"),
            (lambda c: with_party(c, "SHIPPER-1", type_of_person=7), "$.parties[5].type_of_person"),
            (
                lambda c: with_party(c, "ML-TYO", representative=dataclasses.replace(AGENT, status="1")),
                "$.parties[0].representative.status",
            ),
        ],
    )
    def test_unknown_code_list_value_is_found(self, change, path):
        """Payment method (CL116), type of person (CL729), representative status (CL094) come from their lists."""
        report = validate(change(SEED))
        assert path in [f.path for f in report.by_rule("ENS-CODE-LIST")]
        assert not report.ok


class TestHouseAndMasterData:
    def test_missing_place_of_delivery_is_found(self):
        """The F15/F14 renderer needs a place of delivery: it is a finding first."""
        report = validate(with_hbl(SEED, "SKC26TYO0001", place_of_delivery=None))
        assert found(report, "ENS-HOUSE-DATA") == [
            ("$.house_bills[0].place_of_delivery", "ML-TYO", "SKC26TYO0001", None)
        ]

    def test_container_without_size_type_is_found(self):
        """Every equipment block needs the container's size and type."""
        containers = (dataclasses.replace(SEED.master.containers[0], size_type=None),)
        report = validate(dataclasses.replace(SEED, master=dataclasses.replace(SEED.master, containers=containers)))
        assert [f.path for f in report.by_rule("ENS-MASTER-DATA")] == ["$.master.containers[0].size_type"]


# --- whatever validates clean renders and passes our XSDs ---------------------------------------------------------

_TEXT = st.one_of(
    st.sampled_from(["Hafenstrasse", "12-3", "Ōsaka", "Αθήνα", "Москва", "A" * 35, "A" * 36, "B" * 71, " x", "a\tb"]),
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x17F), min_size=1, max_size=72),
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=80),
)
_CODE = st.one_of(st.none(), st.sampled_from(["A", "Y", "Z", "H", "Q", "", "y"]))
_OPTIONAL = st.one_of(st.none(), _TEXT)


@st.composite
def mutated_seed(draw: st.DrawFn) -> Consolidation:
    """The seed with a few party, address, contact and house B/L fields replaced by arbitrary values."""
    c = SEED
    for _ in range(draw(st.integers(1, 4))):
        party_id = draw(st.sampled_from(sorted(c.parties)))
        field = draw(st.sampled_from(["name", "street", "number", "po_box", "city", "postcode", "sub_division"]))
        if field == "name":
            c = with_party(c, party_id, name=draw(_TEXT))
        elif field in ("street", "city"):
            c = with_address(c, party_id, **{field: draw(_TEXT)})
        else:
            c = with_address(c, party_id, **{field: draw(_OPTIONAL)})
    if draw(st.booleans()):
        party_id = draw(st.sampled_from(sorted(c.parties)))
        contact = Contact(email=draw(_OPTIONAL), phone=draw(_OPTIONAL))
        c = with_party(c, party_id, contact=draw(st.one_of(st.none(), st.just(contact))))
    if draw(st.booleans()):
        party_id = draw(st.sampled_from(sorted(c.parties)))
        c = with_party(c, party_id, eori=draw(st.sampled_from([None, "GB123456789000", "XI1234", "JP12", "DE12"])))
    if draw(st.booleans()):
        party_id = draw(st.sampled_from(sorted(c.parties)))
        status = draw(st.sampled_from(["2", "3", "1", "x"]))
        c = with_party(c, party_id, representative=dataclasses.replace(AGENT, status=status, name=draw(_TEXT)))
    if draw(st.booleans()):
        number = draw(st.sampled_from([h.hbl_number for h in c.lowest_hbls()]))
        c = with_hbl(c, number, freight_payment=draw(_CODE))
    if draw(st.booleans()):
        c = dataclasses.replace(c, planning_party="CARRIER-A")
    return c


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_seed())
def test_what_validates_clean_renders_and_passes_our_xsds(consolidation: Consolidation):
    """A booking without blocking findings renders every filing of its plan and the F12 (each checked against our
    XSD inside render_filing), and the simulator's customs-grade checks accept each: a RenderError or an error
    here would be a rule the validator misses."""
    filing_plan = plan(consolidation)
    report = validate(consolidation, filing_plan)
    if not report.ok:
        return
    planned = [f for f in filing_plan.filings if f.filing is not FilingType.F12]
    planned.append(PlannedFiling(FilingType.F12, None, consolidation.master.carrier))
    for i, filing in enumerate(planned):
        draft = FilingDraft(consolidation, filing, f"PROPERTY{i}", consolidation.occurred_at)
        try:
            xml = render_filing(draft)
        except RenderError as exc:  # pragma: no cover - the failure message is the point
            pytest.fail(f"validated clean but not rendered: {exc}")
        assert customs_grade_errors(xml) == [], f"{filing.filing.value} {filing.hbl}"
