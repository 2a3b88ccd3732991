"""The simulator's customs-grade checks: it rejects what real customs rejects (IE3N99 with the CL723 code and the
pointer of the element at fault), and every filing the demo and the tests send passes."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from streams.domain.model import Address, Consolidation, Contact, Representative
from streams.domain.planning import FilingDraft, FilingType, PlannedFiling, plan
from streams.messages import NS
from streams.messages.parse import parse_notification
from streams.messages.render import render_filing
from streams.messages.render_requests import amendment_xml
from streams.simulator import CustomsSimulator, RiskScript
from streams.simulator.checks import customs_grade_errors, pointer
from tests.data import SEED_PATH, seed_consolidation

NOW = datetime(2027, 6, 13, 8, tzinfo=UTC)
SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"
SEED = seed_consolidation()
CLEAN_SCENARIOS = ("coloader-a-not-automated", "transhipment-sgsin", "f15-requested", "carrier-plans")
F15 = PlannedFiling(FilingType.F15, "SKC26TYO0001", "ML-TYO")
F14 = PlannedFiling(FilingType.F14, "AOB26OSA1001", "ML-TYO", "COLOADER-A")
F12 = PlannedFiling(FilingType.F12, None, "CARRIER-A")
HOUSE = "/IE3F15/consignmentMasterLevel/consignmentHouseLevel"


def render(consolidation: Consolidation, planned: PlannedFiling, lrn: str = "CHECK-1") -> bytes:
    return render_filing(FilingDraft(consolidation, planned, lrn, NOW))


def with_party(consolidation: Consolidation, party_id: str, **changes: Any) -> Consolidation:
    parties = dict(consolidation.parties)
    parties[party_id] = dataclasses.replace(parties[party_id], **changes)
    return dataclasses.replace(consolidation, parties=parties)


def with_address(consolidation: Consolidation, party_id: str, **changes: Any) -> Consolidation:
    address = dataclasses.replace(consolidation.parties[party_id].address, **changes)
    return with_party(consolidation, party_id, address=address)


def edited(xml: bytes, path: str, text: str | None) -> bytes:
    """The XML with the elements at ``path`` (``i:`` prefixed) given a new text, or removed when ``text`` is None."""
    root = etree.fromstring(xml)
    for element in root.xpath(path, namespaces={"i": NS}):
        if text is None:
            element.getparent().remove(element)
        else:
            element.text = text
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def codes_and_pointers(xml: bytes) -> list[tuple[str, str | None]]:
    return [(e.code, e.pointer) for e in customs_grade_errors(xml)]


def rejection(xml: bytes) -> list[tuple[str, str | None]]:
    """What the simulator answers: one IE3N99 to the filer, parsed back for its errors."""
    out = CustomsSimulator(RiskScript(), seed=1).submit(xml, NOW)
    assert [o.message_type for o in out] == ["IE3N99"]
    notification = parse_notification(out[0].xml)
    return [(e.code, e.pointer) for e in notification.errors]


class TestRejections:
    def test_address_without_number_or_po_box(self):
        """R3002: SHIPPER-1 (consignor and seller) without house number is rejected at both its addresses (13)."""
        xml = render(with_address(SEED, "SHIPPER-1", number=None), F15)
        assert rejection(xml) == [("13", f"{HOUSE}/consignor/address"), ("13", f"{HOUSE}/goodsShipment/seller/address")]

    def test_amendment_is_checked_as_the_filing_it_amends(self):
        """An IE3A15 whose new content breaks R3002 is rejected like an F15 would be, before any state is looked up."""
        xml = amendment_xml(render(with_address(SEED, "SHIPPER-1", number=None), F15), "AMEND-1", "27NLABCDEFGHIJKLM1")
        amended = HOUSE.replace("IE3F15", "IE3A15")
        assert rejection(xml) == [
            ("13", f"{amended}/consignor/address"),
            ("13", f"{amended}/goodsShipment/seller/address"),
        ]

    def test_address_with_po_box_only_passes(self):
        """A P.O. box alone satisfies R3002."""
        xml = render(with_address(SEED, "SHIPPER-1", street="", number=None, po_box="PO Box 12"), F15)
        assert customs_grade_errors(xml) == []

    @pytest.mark.parametrize("eori", ["GB123456789000", "JP1234567890"])
    def test_non_eu_filer_eori(self, eori):
        """A GB or JP declarant is rejected with 12 at declarant/identificationNumber."""
        xml = render(with_party(SEED, "ML-TYO", eori=eori), F15)
        assert rejection(xml) == [("12", "/IE3F15/declarant/identificationNumber")]

    def test_xi_filer_eori_passes(self):
        """Northern Ireland's XI EORI files."""
        assert customs_grade_errors(render(with_party(SEED, "ML-TYO", eori="XI812345678000"), F15)) == []

    def test_non_eu_supplementary_declarant(self):
        """The F14 naming a JP co-loader as the F16's filer is rejected at supplementaryDeclarant."""
        xml = render(with_party(SEED, "COLOADER-A", eori="JP1234567890"), F14)
        pointer_ = "/IE3F14/consignmentMasterLevel/consignmentHouseLevel/supplementaryDeclarant/identificationNumber"
        assert rejection(xml) == [("12", pointer_)]

    def test_f12_without_house_filers(self):
        """An F12 that names no supplementary declarant is rejected (13) where they belong."""
        xml = edited(render(SEED, F12), "i:consignmentMasterLevel/i:supplementaryDeclarant", None)
        assert rejection(xml) == [("13", "/IE3F12/consignmentMasterLevel/supplementaryDeclarant")]

    @pytest.mark.parametrize(
        ("path", "value", "expected"),
        [
            ("//i:transportCharges/i:methodOfPayment", "Q", f"{HOUSE}/transportCharges/methodOfPayment"),
            ("//i:consignor/i:typeOfPerson", "7", f"{HOUSE}/consignor/typeOfPerson"),
        ],
    )
    def test_unknown_code_list_value(self, path, value, expected):
        """A method of payment outside CL116 or a type of person outside CL729 is rejected with 12."""
        xml = edited(render(SEED, F15), path, value)
        assert rejection(xml) == [("12", expected)]

    def test_unknown_representative_status(self):
        """A representative whose status is outside CL094 (1 is the declarant's own) is rejected with 12."""
        agent = Representative(
            "Rotterdam Filing Services B.V.",
            "NL009988776",
            "2",
            Address("Wilhelminakade", "Rotterdam", "3072AP", "NL", number="909"),
            Contact(email="ics2@rfs.example"),
        )
        xml = render(with_party(SEED, "ML-TYO", representative=agent), F15)
        assert customs_grade_errors(xml) == []
        assert rejection(edited(xml, "i:representative/i:status", "1")) == [("12", "/IE3F15/representative/status")]

    def test_f14_with_house_level_filing_type(self):
        """CL745 code 1 (house level) on an F14 is not the sub-house level filing its F16 is."""
        xml = edited(render(SEED, F14), "//i:supplementaryFilingType", "1")
        assert codes_and_pointers(xml) == [
            (
                "12",
                "/IE3F14/consignmentMasterLevel/consignmentHouseLevel/supplementaryDeclarant/supplementaryFilingType",
            )
        ]

    def test_rejected_filing_is_not_registered(self):
        """After the rejection the corrected filing with the same LRN is registered (IE3R01), not a duplicate."""
        sim = CustomsSimulator(RiskScript(), seed=1)
        bad = render(with_address(SEED, "SHIPPER-1", number=None), F15)
        assert [o.message_type for o in sim.submit(bad, NOW)] == ["IE3N99"]
        assert "IE3R01" in [o.message_type for o in sim.submit(render(SEED, F15), NOW)]

    def test_every_fault_is_listed(self):
        """A filing with several faults gets one error per fault, in document order."""
        consolidation = with_party(with_address(SEED, "SHIPPER-1", number=None), "ML-TYO", eori="GB123456789000")
        assert codes_and_pointers(render(consolidation, F15)) == [
            ("13", f"{HOUSE}/consignor/address"),
            ("13", f"{HOUSE}/goodsShipment/seller/address"),
            ("12", "/IE3F15/declarant/identificationNumber"),
        ]


class TestOurFilingsPass:
    @pytest.mark.parametrize("scenario", ["seed", *CLEAN_SCENARIOS])
    def test_every_filing_of_the_plan_and_the_f12_passes(self, scenario):
        """Every filing the demo and the tests send (the plans of the seed and the clean scenarios, ours and the
        co-loaders', and the carrier's F12) passes the customs-grade checks."""
        path = SEED_PATH if scenario == "seed" else SCENARIOS / f"{scenario}.json"
        consolidation = Consolidation.from_json(json.loads(path.read_text()))
        planned = list(plan(consolidation).filings)
        if not any(f.filing is FilingType.F12 for f in planned):
            planned.append(PlannedFiling(FilingType.F12, None, consolidation.master.carrier))
        for i, filing in enumerate(planned):
            xml = render(consolidation, filing, f"PASS-{i}")
            assert customs_grade_errors(xml) == [], f"{filing.filing.value} {filing.hbl}"

    def test_seed_filings_are_registered_by_the_simulator(self):
        """Submitted in order, the seed's F12 and F15 are registered: no IE3N99."""
        sim = CustomsSimulator(RiskScript(), seed=1)
        answers = [
            o.message_type for xml in (render(SEED, F12, "S-F12"), render(SEED, F15)) for o in sim.submit(xml, NOW)
        ]
        assert "IE3N99" not in answers and answers.count("IE3R01") >= 2


def test_pointer_indexes_repeated_siblings():
    """The second of two goods items is goodsItem[2]; a lone element has no index."""
    root = etree.fromstring(b"<a><b><c/></b><b><c/></b><d/></a>")
    assert pointer(root[1][0]) == "/a/b[2]/c"
    assert pointer(root[2]) == "/a/d"


@pytest.mark.parametrize("path", [SEED_PATH, *sorted(SCENARIOS.glob("*.json"))], ids=lambda p: p.name)
def test_bundled_bookings_give_every_address_a_number_or_po_box(path: Path):
    """The seed and every scenario are customs-grade: R3002 holds for every party's address."""
    data = json.loads(path.read_text())
    for party in data.get("parties", []):
        address = party["address"]
        assert address.get("po_box") or (address["street"] and address.get("number")), party["id"]
