"""ICS2 XML out: the seed plan's filings, the carrier's F12, the answers to referrals, and what may not be rendered."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from streams.domain.model import Address, Consolidation, Contact, GoodsItem, Packages, Representative
from streams.domain.planning import FilingDraft, FilingType, PlannedFiling
from streams.errors import RenderError
from streams.messages import NS
from streams.messages.answers import AnswerText, Attachment, AuthorizedPerson, RfiAnswer, RfsAnswer, ScreeningResult
from streams.messages.render import render_filing, render_rfi_answer, render_rfs_answer
from streams.messages.schemas import validate
from tests.data import SEED_PLAN_PATH, seed_consolidation

NSMAP = {"i": NS}
ISSUED = datetime(2027, 6, 10, 8, 0, tzinfo=UTC)
HOUSE = "i:consignmentMasterLevel/i:consignmentHouseLevel"


def load_seed() -> Consolidation:
    return seed_consolidation()


def load_plan() -> list[dict[str, Any]]:
    return json.loads(SEED_PLAN_PATH.read_text())["filings"]


def draft_for(consolidation: Consolidation, entry: dict[str, Any], lrn: str) -> FilingDraft:
    """A draft built by hand from a row of the expected plan."""
    planned = PlannedFiling(
        filing=FilingType(entry["filing"]),
        hbl=entry["hbl"],
        filer=entry["filer"],
        supplementary_declarant=entry["supplementary_declarant"],
    )
    return FilingDraft(consolidation=consolidation, planned=planned, lrn=lrn, issued_at=ISSUED)


def parse(data: bytes) -> etree._Element:
    return etree.fromstring(data)


def text(root: etree._Element, path: str) -> str:
    found = root.xpath(path + "/text()", namespaces=NSMAP)
    assert len(found) == 1, f"{path}: expected one value, found {found}"
    return str(found[0])


def texts(root: etree._Element, path: str) -> list[str]:
    return [str(v) for v in root.xpath(path + "/text()", namespaces=NSMAP)]


def with_carrier_contact(consolidation: Consolidation) -> Consolidation:
    """The carrier with another contact (the seed's carrier has one since the seed became customs-grade)."""
    parties = dict(consolidation.parties)
    carrier = parties["CARRIER-A"]
    parties["CARRIER-A"] = dataclasses.replace(carrier, contact=Contact(email="ens@oceanic.example"))
    return dataclasses.replace(consolidation, parties=parties)


def with_hbl(consolidation: Consolidation, number: str, **changes: Any) -> Consolidation:
    bills = tuple(dataclasses.replace(h, **changes) if h.hbl_number == number else h for h in consolidation.house_bills)
    return dataclasses.replace(consolidation, house_bills=bills)


def with_party(consolidation: Consolidation, party_id: str, **changes: Any) -> Consolidation:
    parties = dict(consolidation.parties)
    parties[party_id] = dataclasses.replace(parties[party_id], **changes)
    return dataclasses.replace(consolidation, parties=parties)


SEED = load_seed()
PLAN = load_plan()
RENDERED = [(entry, parse(render_filing(draft_for(SEED, entry, f"ML26TYO{i:04d}")))) for i, entry in enumerate(PLAN)]
IDS = [f"{e['filing']}-{e['hbl']}" for e in PLAN]


class TestSeedFilings:
    @pytest.mark.parametrize(("entry", "root"), RENDERED, ids=IDS)
    def test_root_is_the_message_code_in_the_ics2_namespace(self, entry: dict[str, Any], root: etree._Element) -> None:
        """The root element is IE3F1x in urn:wco:datamodel:eu:ics2:2 and every element is qualified."""
        assert root.tag == f"{{{NS}}}IE3{entry['filing']}"
        assert all(etree.QName(el).namespace == NS for el in root.iter(etree.Element))

    @pytest.mark.parametrize(("entry", "root"), RENDERED, ids=IDS)
    def test_lrn_indicator_and_date_come_from_the_draft(self, entry: dict[str, Any], root: etree._Element) -> None:
        """LRN, the filing type as specific circumstance indicator and the issue date are those of the draft."""
        assert text(root, "i:LRN") == f"ML26TYO{PLAN.index(entry):04d}"
        assert text(root, "i:SpecificCircumstanceIndicator") == entry["filing"]
        assert text(root, "i:documentIssueDate") == "2027-06-10T08:00:00Z"
        assert text(root, "i:addressedMemberState/i:country") == "NL"

    @pytest.mark.parametrize(("entry", "root"), RENDERED, ids=IDS)
    def test_house_filing_links_to_carrier_mbl_never_an_intermediate_hbl(
        self, entry: dict[str, Any], root: etree._Element
    ) -> None:
        """Every house filing names the carrier's MBL as N704 with the carrier's EORI, never an upper HBL or issuer."""
        assert text(root, f"{HOUSE}/i:transportDocumentMasterLevel/i:documentNumber") == "OCLU26TYO7781234"
        assert text(root, f"{HOUSE}/i:transportDocumentMasterLevel/i:type") == "N704"
        assert text(root, f"{HOUSE}/i:carrier/i:identificationNumber") == SEED.parties["CARRIER-A"].eori
        lowest = SEED.house_bill(entry["hbl"])
        above = SEED.chain(lowest)[:-1]
        numbers = set(texts(root, "//i:documentNumber"))
        assert not numbers & {h.hbl_number for h in above}
        issuers = {SEED.parties[h.issuer].eori for h in above} - {SEED.parties[entry["filer"]].eori}
        assert not set(texts(root, f"{HOUSE}//i:identificationNumber")) & issuers

    @pytest.mark.parametrize(("entry", "root"), RENDERED, ids=IDS)
    def test_house_document_is_the_lowest_hbl(self, entry: dict[str, Any], root: etree._Element) -> None:
        """The house transport document is the lowest HBL, type N714."""
        assert text(root, f"{HOUSE}/i:transportDocumentHouseLevel/i:documentNumber") == entry["hbl"]
        assert text(root, f"{HOUSE}/i:transportDocumentHouseLevel/i:type") == "N714"

    @pytest.mark.parametrize(("entry", "root"), RENDERED, ids=IDS)
    def test_declarant_is_the_filer(self, entry: dict[str, Any], root: etree._Element) -> None:
        """The declarant is the planned filer, with its EORI and name."""
        filer = SEED.parties[entry["filer"]]
        assert text(root, "i:declarant/i:identificationNumber") == filer.eori
        assert text(root, "i:declarant/i:name") == filer.name
        assert texts(root, "i:declarant/i:communication/i:identifier")

    def test_f14_names_the_f16_filer_as_supplementary_declarant(self) -> None:
        """Each F14's supplementary declarant EORI is that of the party filing the F16 for the same HBL."""
        f14s = [(e, r) for e, r in RENDERED if e["filing"] == "F14"]
        assert len(f14s) == 3
        for entry, root in f14s:
            f16 = next(e for e in PLAN if e["filing"] == "F16" and e["hbl"] == entry["hbl"])
            expected = SEED.parties[f16["filer"]].eori
            assert text(root, f"{HOUSE}/i:supplementaryDeclarant/i:identificationNumber") == expected

    def test_f14_has_no_buyer_or_seller(self) -> None:
        """An F14 carries everything except seller and buyer."""
        for entry, root in RENDERED:
            if entry["filing"] == "F14":
                assert root.xpath("//i:goodsShipment | //i:buyer | //i:seller", namespaces=NSMAP) == []
                assert texts(root, f"{HOUSE}/i:goodsItem/i:commodity/i:descriptionOfGoods")

    @pytest.mark.parametrize("filing", ["F15", "F16"])
    def test_f15_and_f16_carry_the_lowest_hbl_buyer_and_seller(self, filing: str) -> None:
        """F15 and F16 name the booking's buyer and seller of the lowest HBL."""
        for entry, root in (pair for pair in RENDERED if pair[0]["filing"] == filing):
            hbl = SEED.house_bill(entry["hbl"])
            assert text(root, f"{HOUSE}/i:goodsShipment/i:buyer/i:name") == SEED.parties[hbl.buyer].name
            assert text(root, f"{HOUSE}/i:goodsShipment/i:seller/i:name") == SEED.parties[hbl.seller].name
            buyer_country = SEED.parties[hbl.buyer].address.country
            assert text(root, f"{HOUSE}/i:goodsShipment/i:buyer/i:address/i:country") == buyer_country

    def test_f16_carries_only_linking_data_and_parties(self) -> None:
        """An F16's house level holds the MBL, the carrier, buyer/seller and the HBL, and no goods."""
        for entry, root in RENDERED:
            if entry["filing"] == "F16":
                house = root.xpath(HOUSE, namespaces=NSMAP)[0]
                names = [etree.QName(child).localname for child in house]
                assert names == [
                    "transportDocumentMasterLevel",
                    "carrier",
                    "goodsShipment",
                    "transportDocumentHouseLevel",
                ]
                assert root.xpath("i:activeBorderTransportMeans", namespaces=NSMAP) == []

    @pytest.mark.parametrize("filing", ["F14", "F15"])
    def test_goods_items_carry_booking_hs_codes_masses_and_packages(self, filing: str) -> None:
        """Each goods item has the booking's description, HS code, gross mass, packages and container."""
        for entry, root in (pair for pair in RENDERED if pair[0]["filing"] == filing):
            goods = SEED.house_bill(entry["hbl"]).goods
            item = f"{HOUSE}/i:goodsItem"
            assert texts(root, f"{item}/i:commodity/i:commodityCode/i:harmonizedSystemSubHeadingCode") == [
                g.hs_code for g in goods
            ]
            assert [float(v) for v in texts(root, f"{item}/i:weight/i:grossMass")] == [g.gross_mass_kg for g in goods]
            assert texts(root, f"{item}/i:packaging/i:typeOfPackages") == [g.packages.type for g in goods]
            assert texts(root, f"{item}/i:goodsItemNumber") == [str(n) for n in range(1, len(goods) + 1)]
            assert texts(root, f"{item}/i:transportEquipment/i:containerIdentificationNumber") == [
                g.container for g in goods
            ]
            total = float(text(root, f"{HOUSE}/i:totalGrossMass"))
            assert total == pytest.approx(sum(g.gross_mass_kg for g in goods))

    def test_routing_starts_in_the_loading_country(self) -> None:
        """Countries of routing run from the loading country through discharge to the delivery country."""
        root = dict((e["hbl"], r) for e, r in RENDERED if e["filing"] == "F15")["SKC26TYO0003"]
        assert texts(root, f"{HOUSE}/i:countriesOfRoutingOfConsignment/i:country") == ["JP", "NL", "IT"]
        assert texts(root, f"{HOUSE}/i:countriesOfRoutingOfConsignment/i:sequenceNumber") == ["1", "2", "3"]

    def test_every_message_is_utf8_with_declaration_and_valid(self) -> None:
        """The bytes start with an XML declaration naming UTF-8 and validate against the project's XSD."""
        for i, entry in enumerate(PLAN):
            data = render_filing(draft_for(SEED, entry, f"L{i}"))
            assert data.startswith(b"<?xml version='1.0' encoding='UTF-8'?>")
            validate(data, f"IE3{entry['filing']}")


class TestPartiesInARow:
    def test_a_party_changed_between_filings_is_written_anew(self):
        """Party blocks are copied from the block written once per party data: a changed party is written with its
        new data, and the unchanged one again gives the same bytes as before."""
        before = render_filing(draft_for(SEED, PLAN[0], "L1"))
        changed = with_party(SEED, "SHIPPER-1", name="Kanto Denshi Trading")
        after = render_filing(draft_for(changed, PLAN[0], "L1"))
        assert b"Kanto Denshi Trading" in after and b"Kanto Denshi Trading" not in before
        assert after.replace(b"Kanto Denshi Trading", SEED.parties["SHIPPER-1"].name.encode()) == before
        assert render_filing(draft_for(SEED, PLAN[0], "L1")) == before

    def test_a_filer_that_loses_its_contact_is_refused_then_written_again(self):
        """The declarant block kept per filer never hides a contact removed in the next booking, nor its return."""
        before = render_filing(draft_for(SEED, PLAN[0], "L1"))
        unreachable = with_party(SEED, PLAN[0]["filer"], contact=None)
        with pytest.raises(RenderError, match="declarant/communication"):
            render_filing(draft_for(unreachable, PLAN[0], "L1"))
        assert render_filing(draft_for(SEED, PLAN[0], "L1")) == before

    def test_one_party_in_two_roles_is_written_in_each(self):
        """The same party as consignor and seller gets a block of each name, in the order of the message."""
        root = etree.fromstring(render_filing(draft_for(SEED, PLAN[0], "L1")))
        hbl = SEED.house_bill(PLAN[0]["hbl"])
        assert hbl is not None and hbl.shipper == hbl.seller
        names = [e.findtext(f"{{{NS}}}name") for e in root.iter(f"{{{NS}}}consignor", f"{{{NS}}}seller")]
        assert names == [SEED.parties[hbl.shipper].name] * 2


class TestHouseFilingDetails:
    def test_eight_digit_code_is_split_into_hs_and_combined_nomenclature(self) -> None:
        """An 8-digit code becomes the 6-digit HS sub-heading plus the 2 CN digits."""
        goods = (GoodsItem("Laptop computers", "84713000", Packages("CT", 4), 20.0, "TCNU1234565"),)
        consolidation = with_hbl(SEED, "SKC26TYO0001", goods=goods)
        root = parse(render_filing(draft_for(consolidation, PLAN[0], "L1")))
        code = f"{HOUSE}/i:goodsItem/i:commodity/i:commodityCode"
        assert text(root, f"{code}/i:harmonizedSystemSubHeadingCode") == "847130"
        assert text(root, f"{code}/i:combinedNomenclatureCode") == "00"

    def test_dangerous_goods_carry_their_un_number(self) -> None:
        """A goods item with a UN number lists it under dangerousGoods."""
        goods = (GoodsItem("Lithium ion batteries", "850760", Packages("CT", 2), 12.5, None, "3480"),)
        root = parse(render_filing(draft_for(with_hbl(SEED, "SKC26TYO0001", goods=goods), PLAN[0], "L1")))
        assert text(root, f"{HOUSE}/i:goodsItem/i:commodity/i:dangerousGoods/i:UNNumber") == "3480"
        assert text(root, f"{HOUSE}/i:containerIndicator") == "0"

    def test_transhipment_countries_are_routed(self) -> None:
        """A transhipment port's country sits between the loading and discharge countries."""
        master = dataclasses.replace(SEED.master, transhipment_ports=("SGSIN",))
        root = parse(render_filing(draft_for(dataclasses.replace(SEED, master=master), PLAN[0], "L1")))
        assert texts(root, f"{HOUSE}/i:countriesOfRoutingOfConsignment/i:country") == ["JP", "SG", "NL", "DE"]

    def test_notify_party_is_rendered_when_booked(self) -> None:
        """A notify party named on the HBL appears with its name."""
        consolidation = with_hbl(SEED, "SKC26TYO0001", notify_party="CONSIGNEE-4")
        root = parse(render_filing(draft_for(consolidation, PLAN[0], "L1")))
        assert text(root, f"{HOUSE}/i:notifyParty/i:name") == "Mobili Nord S.r.l."


class TestCarrierMasterLevel:
    def render(self, consolidation: Consolidation) -> etree._Element:
        planned = PlannedFiling(FilingType.F12, None, "CARRIER-A")
        return parse(render_filing(FilingDraft(consolidation, planned, "OCLU26F12001", ISSUED)))

    def test_f12_names_vessel_voyage_ports_office_and_mbl(self) -> None:
        """F12 carries IMO, voyage, departure, office of first entry, ports, MBL and the carrier."""
        root = self.render(with_carrier_contact(SEED))
        assert root.tag == f"{{{NS}}}IE3F12"
        assert text(root, "i:activeBorderTransportMeans/i:identificationNumber") == "9806067"
        assert text(root, "i:activeBorderTransportMeans/i:conveyanceReferenceNumber") == "042W"
        assert text(root, "i:activeBorderTransportMeans/i:estimatedDateAndTimeOfDeparture") == "2027-06-15T12:00:00Z"
        assert text(root, "i:customsOfficeOfFirstEntry/i:referenceNumber") == "NL000396"
        master = "i:consignmentMasterLevel"
        assert text(root, f"{master}/i:transportDocumentMasterLevel/i:documentNumber") == "OCLU26TYO7781234"
        assert text(root, f"{master}/i:placeOfLoading/i:UNLOCODE") == "JPTYO"
        assert text(root, f"{master}/i:placeOfUnloading/i:UNLOCODE") == "NLRTM"
        assert text(root, f"{master}/i:carrier/i:identificationNumber") == "NL860123456"
        assert text(root, "i:declarant/i:identificationNumber") == "NL860123456"

    def test_f12_lists_containers_with_seals(self) -> None:
        """Each container of the MBL appears with its id, size/type and seals."""
        root = self.render(with_carrier_contact(SEED))
        equipment = "i:consignmentMasterLevel/i:transportEquipment"
        assert texts(root, f"{equipment}/i:containerIdentificationNumber") == ["TCNU1234565"]
        assert texts(root, f"{equipment}/i:seal/i:identifier") == ["JPS0098812"]
        assert text(root, f"{equipment}/i:numberOfSeals") == "1"

    def test_f12_without_a_carrier_contact_is_refused(self) -> None:
        """A carrier without e-mail or phone cannot be the declarant: the declarant block needs one."""
        with pytest.raises(RenderError, match=r"declarant/communication.*CARRIER-A"):
            self.render(with_party(SEED, "CARRIER-A", contact=None))

    def test_f12_names_the_house_filers_as_house_level_supplementary_declarants(self) -> None:
        """The F12 names every F15/F14 filer of the plan (ML-TYO, and COLOADER-A for DAI26NGO0077), CL745 code 1."""
        root = self.render(SEED)
        declarants = "i:consignmentMasterLevel/i:supplementaryDeclarant"
        assert texts(root, f"{declarants}/i:identificationNumber") == ["NL812345678000", "DE993311220000"]
        assert set(texts(root, f"{declarants}/i:supplementaryFilingType")) == {"1"}


class TestCustomsGradeData:
    def test_address_carries_street_number_post_code_and_sub_division_in_xsd_order(self) -> None:
        """The declarant's address is split as ICS2's AddressType wants it, in its order."""
        address = Address("Hamamatsucho", "Minato-ku", "105-0013", "JP", number="2-4-1", sub_division="Tokyo")
        consolidation = with_party(SEED, "ML-TYO", address=address)
        root = parse(render_filing(draft_for(consolidation, PLAN[0], "L1")))
        names = [etree.QName(e).localname for e in root.xpath("i:declarant/i:address/*", namespaces=NSMAP)]
        assert names == ["city", "country", "subDivision", "street", "postCode", "number"]
        assert text(root, "i:declarant/i:address/i:number") == "2-4-1"

    def test_po_box_is_rendered(self) -> None:
        """An address given by P.O. box carries it."""
        address = Address("", "Osaka", "530-8691", "JP", po_box="PO Box 1234")
        consolidation = with_party(SEED, "SHIPPER-1", address=address)
        root = parse(render_filing(draft_for(consolidation, PLAN[0], "L1")))
        assert text(root, f"{HOUSE}/i:consignor/i:address/i:poBox") == "PO Box 1234"

    def test_freight_payment_method_comes_from_the_booking(self) -> None:
        """transportCharges/methodOfPayment is the HBL's CL116 code, not an assumed one."""
        root = parse(render_filing(draft_for(with_hbl(SEED, "SKC26TYO0001", freight_payment="H"), PLAN[0], "L1")))
        assert text(root, f"{HOUSE}/i:transportCharges/i:methodOfPayment") == "H"

    def test_missing_freight_payment_method_is_refused(self) -> None:
        """An HBL without a method of payment cannot be filed."""
        with pytest.raises(RenderError, match=r"HBL SKC26TYO0001.*transportCharges/methodOfPayment"):
            render_filing(draft_for(with_hbl(SEED, "SKC26TYO0001", freight_payment=None), PLAN[0], "L1"))

    def test_unknown_freight_payment_code_breaks_the_schema(self) -> None:
        """A code outside CL116 never leaves the renderer."""
        with pytest.raises(RenderError, match="schema"):
            render_filing(draft_for(with_hbl(SEED, "SKC26TYO0001", freight_payment="Q"), PLAN[0], "L1"))

    def test_f14_names_its_supplementary_declarant_at_sub_house_level(self) -> None:
        """The F16 filer an F14 names files the lowest HBL below the house level: CL745 code 2."""
        root = parse(render_filing(draft_for(SEED, PLAN[2], "L1")))
        assert text(root, f"{HOUSE}/i:supplementaryDeclarant/i:supplementaryFilingType") == "2"

    def test_representative_of_the_filer_is_rendered_with_its_status(self) -> None:
        """A service provider filing for ML-TYO appears as representative with its CL094 status."""
        agent = Representative(
            "Rotterdam Filing Services B.V.",
            "NL009988776",
            "2",
            Address("Wilhelminakade", "Rotterdam", "3072AP", "NL", number="909"),
            Contact(email="ics2@rfs.example"),
        )
        root = parse(render_filing(draft_for(with_party(SEED, "ML-TYO", representative=agent), PLAN[0], "L1")))
        assert text(root, "i:representative/i:identificationNumber") == "NL009988776"
        assert text(root, "i:representative/i:status") == "2"
        assert text(root, "i:representative/i:address/i:number") == "909"


class TestRenderErrors:
    def test_f15_without_seller_names_the_element_and_hbl(self) -> None:
        """A missing seller is refused with goodsShipment/seller and the HBL in the message."""
        consolidation = with_hbl(SEED, "SKC26TYO0001", seller=None)
        with pytest.raises(RenderError, match=r"HBL SKC26TYO0001.*goodsShipment/seller"):
            render_filing(draft_for(consolidation, PLAN[0], "L1"))

    def test_carrier_without_eori_is_refused(self) -> None:
        """House filings cannot link without the carrier's EORI."""
        consolidation = with_party(SEED, "CARRIER-A", eori=None)
        with pytest.raises(RenderError, match=r"HBL AOB26OSA1001.*carrier/identificationNumber"):
            render_filing(draft_for(consolidation, PLAN[3], "L1"))

    def test_supplementary_declarant_without_eori_is_refused(self) -> None:
        """An F14 cannot name a supplementary declarant that has no EORI."""
        consolidation = with_party(SEED, "COLOADER-A", eori=None)
        with pytest.raises(RenderError, match=r"supplementaryDeclarant/identificationNumber"):
            render_filing(draft_for(consolidation, PLAN[2], "L1"))

    def test_hs_code_of_wrong_length_is_refused(self) -> None:
        """An HS code of 4 digits names the goods item's commodity code."""
        goods = (GoodsItem("Laptop computers", "8471", Packages("CT", 4), 20.0),)
        with pytest.raises(RenderError, match=r"goodsItem\[1\]/commodity/commodityCode"):
            render_filing(draft_for(with_hbl(SEED, "SKC26TYO0001", goods=goods), PLAN[0], "L1"))

    def test_hbl_not_in_booking_is_refused(self) -> None:
        """A planned filing for an HBL the booking does not hold is refused."""
        entry = dict(PLAN[0], hbl="NOPE0001")
        with pytest.raises(RenderError, match="NOPE0001"):
            render_filing(draft_for(SEED, entry, "L1"))

    def test_text_outside_latin_greek_cyrillic_is_refused(self) -> None:
        """Japanese script is refused (ICS2 error 102) instead of being sent."""
        consolidation = with_party(SEED, "SHIPPER-1", name="関東電子株式会社")
        with pytest.raises(RenderError, match=r"HBL SKC26TYO0001.*breaks its schema.*line \d+"):
            render_filing(draft_for(consolidation, PLAN[0], "L1"))

    def test_lrn_longer_than_22_is_refused(self) -> None:
        """An LRN over an..22 never leaves the renderer."""
        with pytest.raises(RenderError, match="LRN"):
            render_filing(draft_for(SEED, PLAN[0], "L" * 23))

    def test_unsupported_filing_is_refused(self) -> None:
        """F10 is not rendered by this module."""
        entry = dict(PLAN[0], filing="F10")
        with pytest.raises(RenderError, match="F10 is not rendered"):
            render_filing(draft_for(SEED, entry, "L1"))


class TestReferralAnswers:
    def test_rfi_answer_quotes_reference_mrn_and_hbl(self) -> None:
        """IE3R02 carries the MRN, the referral request reference, the text, the attachment and the HBL."""
        answer = RfiAnswer(
            mrn="27NLQ8E4F0A1B2C3D4",
            referral_request_reference="RFI-2027-0001",
            declarant_eori="NL812345678000",
            responsible_member_state="NL",
            issued_at=ISSUED,
            texts=(AnswerText(text="Laptops for an office fit-out; invoice attached & signed"),),
            attachments=(Attachment("DOC-1", "invoice.pdf", "application/pdf", "Commercial invoice"),),
            mbl="OCLU26TYO7781234",
            hbl="SKC26TYO0001",
        )
        root = parse(render_rfi_answer(answer))
        assert root.tag == f"{{{NS}}}IE3R02"
        assert text(root, "i:MRN") == "27NLQ8E4F0A1B2C3D4"
        response = "i:additionalInformationResponse"
        assert text(root, f"{response}/i:referralRequestReference") == "RFI-2027-0001"
        assert text(root, f"{response}/i:additionalInformation/i:text") == answer.texts[0].text
        assert text(root, f"{response}/i:binaryAttachment/i:filename") == "invoice.pdf"
        assert text(root, f"{response}/i:transportDocumentHouseLevel/i:documentNumber") == "SKC26TYO0001"
        assert text(root, "i:transportDocument/i:type") == "N704"

    def test_rfs_answer_lists_screening_per_hbl(self) -> None:
        """IE3R03 carries one screening result per HBL with its methods and result."""
        result = ScreeningResult(
            referral_request_reference="RFS-2027-0002",
            hbl="AOB26OSA1001",
            result="1",
            methods=("XRY", "EDD"),
            authorized_person=AuthorizedPerson("Aoba Screening", "DE993311220000"),
            facility=SEED.parties["COLOADER-A"].address,
        )
        answer = RfsAnswer("27NLQ8E4F0A1B2C3D4", "DE993311220000", "NL", ISSUED, (result,), mbl="OCLU26TYO7781234")
        root = parse(render_rfs_answer(answer))
        results = "i:hrcmScreeningResults"
        assert root.tag == f"{{{NS}}}IE3R03"
        assert texts(root, f"{results}/i:screeningMethod/i:method") == ["XRY", "EDD"]
        assert text(root, f"{results}/i:transportDocumentHouseLevel/i:documentNumber") == "AOB26OSA1001"
        assert text(root, f"{results}/i:facilityPlace/i:address/i:city") == "Osaka"
        assert text(root, "i:declarant/i:identificationNumber") == "DE993311220000"

    def test_rfs_answer_with_one_method_is_refused(self) -> None:
        """Screening needs at least two methods; one is refused before sending."""
        result = ScreeningResult("RFS-1", "AOB26OSA1001", "1", ("XRY",))
        with pytest.raises(RenderError, match="IE3R03"):
            render_rfs_answer(RfsAnswer("27NLQ8E4F0A1B2C3D4", "DE993311220000", "NL", ISSUED, (result,)))

    def test_rfi_answer_with_bad_mrn_is_refused(self) -> None:
        """An MRN that is not 18 characters never leaves the renderer."""
        answer = RfiAnswer("27NL", "RFI-1", "NL812345678000", "NL", ISSUED)
        with pytest.raises(RenderError, match="MRN"):
            render_rfi_answer(answer)


SCRIPTS = (
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,-/()"
    "àéüßçñøÅ"
    "ΑΒΓΔΕΖΗΘαβγδεζηθλμπσωάέ"
    "АБВГДЕЖЗИЙабвгдежзийюяё"
    "<>&\"'"
)
names = st.text(alphabet=SCRIPTS, min_size=1, max_size=70)
descriptions = st.text(alphabet=SCRIPTS, min_size=1, max_size=512)
hs_codes = st.from_regex(r"[0-9]{6}([0-9]{2})?", fullmatch=True)
masses = st.decimals(min_value="0.001", max_value="999999999", places=3).map(float)


class TestRoundTrip:
    @settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        description=descriptions,
        hs_code=hs_codes,
        mass=masses,
        shipper=names,
        consignee=names,
        city=st.text(alphabet=SCRIPTS, min_size=1, max_size=35),
    )
    def test_rendered_values_read_back_unchanged(
        self, description: str, hs_code: str, mass: float, shipper: str, consignee: str, city: str
    ) -> None:
        """Descriptions, HS codes, masses and party names in Latin/Greek/Cyrillic with <&"' survive rendering."""
        goods = (GoodsItem(description, hs_code, Packages("CT", 3), mass, "TCNU1234565"),)
        consolidation = with_hbl(SEED, "SKC26TYO0001", goods=goods)
        consolidation = with_party(consolidation, "SHIPPER-1", name=shipper)
        consignee_party = consolidation.parties["CONSIGNEE-1"]
        address = dataclasses.replace(consignee_party.address, city=city)
        consolidation = with_party(consolidation, "CONSIGNEE-1", name=consignee, address=address)
        data = render_filing(draft_for(consolidation, PLAN[0], "ML26TYO0001"))
        root = validate(data, "IE3F15")
        item = f"{HOUSE}/i:goodsItem"
        assert text(root, f"{item}/i:commodity/i:descriptionOfGoods") == description
        code = f"{item}/i:commodity/i:commodityCode"
        read_code = text(root, f"{code}/i:harmonizedSystemSubHeadingCode") + "".join(
            texts(root, f"{code}/i:combinedNomenclatureCode")
        )
        assert read_code == hs_code
        assert float(text(root, f"{item}/i:weight/i:grossMass")) == mass
        assert text(root, f"{HOUSE}/i:consignor/i:name") == shipper
        assert text(root, f"{HOUSE}/i:goodsShipment/i:seller/i:name") == shipper
        assert text(root, f"{HOUSE}/i:consignee/i:name") == consignee
        assert text(root, f"{HOUSE}/i:goodsShipment/i:buyer/i:address/i:city") == city
