"""The project's XSDs: the loader, their independence from shared/, and how they compare with the official types."""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from lxml import etree

from streams.domain.model import Contact
from streams.domain.planning import FilingDraft, FilingType, PlannedFiling
from streams.messages import NS
from streams.messages.answers import RfiAnswer, RfsAnswer, ScreeningResult
from streams.messages.render import render_filing, render_rfi_answer, render_rfs_answer
from streams.messages.schemas import (
    SCHEMAS_DIR_ENV,
    XsdUnavailable,
    XsdViolation,
    conforms,
    schema_for,
    schema_path,
    schemas_dir,
    validate,
)
from tests.data import OFFICIAL_XSD, SEED_PLAN_PATH, seed_consolidation

REPO = Path(__file__).resolve().parents[2]
OURS = REPO / "schemas" / "xsd"
XS = "http://www.w3.org/2001/XMLSchema"
NSMAP = {"i": NS}
MESSAGES = ("IE3F12", "IE3F14", "IE3F15", "IE3F16", "IE3R02", "IE3R03")
ISSUED = datetime(2027, 6, 10, 8, 0, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Counterpart:
    """Our complex type, the official ctypes.xsd type it follows, and official required children we leave out."""

    ours: str
    official: str
    omitted: tuple[str, ...] = ()
    why: str = ""


#: Our types and the official types they follow. Where ``omitted`` is not empty our type is not a restriction of
#: the official one; ``why`` documents the deviation.
COUNTERPARTS = (
    Counterpart("Address", "AddressType"),
    Counterpart("Communication", "CommunicationType"),
    Counterpart("Party", "ConsignorType"),
    Counterpart("Party", "ConsigneeType"),
    Counterpart("Party", "NotifyPartyType02"),
    Counterpart("Party", "BuyerType02"),
    Counterpart("Party", "SellerType02"),
    Counterpart("Declarant", "DeclarantType"),
    Counterpart("Representative", "RepresentativeType"),
    Counterpart("Carrier", "CarrierType07"),
    Counterpart("Identified", "CarrierType08"),
    Counterpart("Identified", "DeclarantType03"),
    Counterpart("SupplementaryDeclarant", "SupplementaryDeclarantType02"),
    Counterpart("MemberState", "ResponsibleMemberStateType"),
    Counterpart("Place", "PlaceOfAcceptanceType03"),
    Counterpart("Place", "PlaceOfDeliveryType03"),
    Counterpart("Place", "PlaceOfLoadingType02"),
    Counterpart("Place", "PlaceOfUnloadingType02"),
    Counterpart("TransportDocument", "TransportDocumentMasterLevelType03"),
    Counterpart("TransportDocument", "TransportDocumentHouseLevelType02"),
    Counterpart("RoutingCountry", "CountriesOfRoutingOfConsignmentType03"),
    Counterpart("RoutingCountry", "CountriesOfRoutingOfMeansOfTransportType03"),
    Counterpart("TransportCharges", "TransportChargesType02"),
    Counterpart("CustomsOffice", "CustomsOfficeOfFirstEntryType"),
    Counterpart("CommodityCode", "CommodityCodeType"),
    Counterpart("DangerousGoods", "DangerousGoodsType02"),
    Counterpart("Commodity", "CommodityType07"),
    Counterpart("Weight", "WeightType"),
    Counterpart("Packaging", "PackagingType08"),
    Counterpart("Seal", "SealType02"),
    Counterpart("TransportEquipment", "TransportEquipmentType14"),
    Counterpart("TransportEquipment", "TransportEquipmentType11"),
    Counterpart("GoodsItem", "GoodsItemType41"),
    Counterpart("GoodsShipment", "GoodsShipmentType02"),
    Counterpart("ModeOnly", "ActiveBorderTransportMeansType05"),
    Counterpart("Vessel", "ActiveBorderTransportMeansType"),
    Counterpart("HouseConsignmentF15", "ConsignmentHouseLevelType49"),
    Counterpart("HouseConsignmentF14", "ConsignmentHouseLevelType48"),
    Counterpart("HouseConsignmentF16", "ConsignmentHouseLevelType55"),
    Counterpart("MasterConsignmentF15", "ConsignmentMasterLevelType38"),
    Counterpart("MasterConsignmentF14", "ConsignmentMasterLevelType36"),
    Counterpart("MasterConsignmentF16", "ConsignmentMasterLevelType63"),
    Counterpart("MasterConsignmentF12", "ConsignmentMasterLevelType66"),
    Counterpart("AnswerText", "AdditionalInformationType04"),
    Counterpart("AnswerText", "AdditionalInformationType03"),
    Counterpart("Attachment", "BinaryAttachmentType"),
    Counterpart("Attachment", "BinaryFileType"),
    Counterpart("InformationResponse", "AdditionalInformationResponseType05"),
    Counterpart("ScreeningMethod", "ScreeningMethodType"),
    Counterpart("AuthorizedPerson", "AuthorizedPersonType"),
    Counterpart("FacilityPlace", "FacilityPlaceType02"),
    Counterpart("ScreeningResult", "HrcmScreeningResultsType04"),
)


@dataclass(frozen=True, slots=True)
class Child:
    name: str
    min: int
    max: float


def children(path: Path, type_name: str) -> list[Child]:
    """The element children of a named complex type's sequence, with occurrences (unbounded as infinity)."""
    tree = etree.parse(str(path))
    found = tree.xpath(f"/xs:schema/xs:complexType[@name='{type_name}']", namespaces={"xs": XS})
    assert found, f"{type_name} not in {path.name}"
    result = []
    for el in found[0].xpath("xs:sequence/xs:element", namespaces={"xs": XS}):
        most = el.get("maxOccurs", "1")
        result.append(
            Child(el.get("name"), int(el.get("minOccurs", "1")), float("inf") if most == "unbounded" else int(most))
        )
    return result


def deviations(ours: list[Child], official: list[Child], omitted: tuple[str, ...] = ()) -> list[str]:
    """Why ``ours`` is not a restriction of ``official``: unknown or reordered children, looser occurrences,
    missing required children (other than the documented ``omitted``)."""
    problems: list[str] = []
    index = {c.name: i for i, c in enumerate(official)}
    last = -1
    for child in ours:
        if child.name not in index:
            problems.append(f"{child.name} is not in the official type")
            continue
        position = index[child.name]
        if position <= last:
            problems.append(f"{child.name} is out of the official order")
        last = position
        theirs = official[position]
        if child.min < theirs.min:
            problems.append(f"{child.name} minOccurs {child.min} < {theirs.min}")
        if child.max > theirs.max:
            problems.append(f"{child.name} maxOccurs {child.max} > {theirs.max}")
    present = {c.name for c in ours}
    for theirs in official:
        if theirs.min >= 1 and theirs.name not in present and theirs.name not in omitted:
            problems.append(f"required {theirs.name} is missing")
    return problems


def seed_messages() -> list[tuple[str, bytes]]:
    """Every filing of the seed's plan, the carrier's F12, and one answer of each kind."""
    consolidation = seed_consolidation()
    plan = json.loads(SEED_PLAN_PATH.read_text())["filings"]
    out = []
    for i, entry in enumerate(plan):
        planned = PlannedFiling(
            FilingType(entry["filing"]), entry["hbl"], entry["filer"], entry["supplementary_declarant"]
        )
        out.append((planned.filing.message_type, render_filing(FilingDraft(consolidation, planned, f"L{i}", ISSUED))))
    parties = dict(consolidation.parties)
    parties["CARRIER-A"] = dataclasses.replace(parties["CARRIER-A"], contact=Contact(phone="+65 6000 0000"))
    with_contact = dataclasses.replace(consolidation, parties=parties)
    f12 = FilingDraft(with_contact, PlannedFiling(FilingType.F12, None, "CARRIER-A"), "F12L1", ISSUED)
    out.append(("IE3F12", render_filing(f12)))
    mrn = "27NLQ8E4F0A1B2C3D4"
    out.append(
        ("IE3R02", render_rfi_answer(RfiAnswer(mrn, "RFI-1", "NL812345678000", "NL", ISSUED, hbl="SKC26TYO0001")))
    )
    screening = ScreeningResult("RFS-1", "AOB26OSA1001", "1", ("XRY", "EDD"))
    out.append(("IE3R03", render_rfs_answer(RfsAnswer(mrn, "DE993311220000", "NL", ISSUED, (screening,)))))
    return out


MESSAGES_RENDERED = seed_messages()


class TestSchemaLoader:
    def test_schemas_dir_is_beside_the_package(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without the env var the XSDs are read from <repo>/schemas/xsd."""
        monkeypatch.delenv(SCHEMAS_DIR_ENV, raising=False)
        assert schemas_dir() == OURS

    @pytest.mark.parametrize("code", MESSAGES)
    def test_each_message_has_one_schema(self, code: str) -> None:
        """schema_path finds exactly <code>.xsd under schemas/xsd."""
        assert schema_path(code) == OURS / f"{code}.xsd"

    def test_schema_is_compiled_once(self) -> None:
        """Asking twice for a schema gives the same compiled object."""
        assert schema_for("IE3F15") is schema_for("IE3F15")

    def test_unknown_message_has_no_schema(self) -> None:
        """An unknown message code raises XsdUnavailable."""
        with pytest.raises(XsdUnavailable, match="IE3X99"):
            schema_for("IE3X99")

    def test_env_var_overrides_the_folder_and_subfolders_are_searched(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        """ICS2_SCHEMAS_DIR points at another schemas folder; codes are found in its subfolders."""
        target = tmp_path / "xsd" / "notifications"
        target.mkdir(parents=True)
        (target / "IE3X01.xsd").write_text(
            f'<xs:schema xmlns:xs="{XS}" targetNamespace="{NS}" elementFormDefault="qualified">'
            '<xs:element name="IE3X01" type="xs:string"/></xs:schema>'
        )
        monkeypatch.setenv(SCHEMAS_DIR_ENV, str(tmp_path))
        assert schema_path("IE3X01") == target / "IE3X01.xsd"
        assert validate(f'<IE3X01 xmlns="{NS}">x</IE3X01>'.encode(), "IE3X01").text == "x"
        with pytest.raises(XsdUnavailable):
            schema_path("IE3F15")

    def test_errors_are_listed_with_line_numbers(self) -> None:
        """A document its XSD refuses raises XsdViolation listing each error with its line."""
        data = dict(MESSAGES_RENDERED)["IE3F15"]
        root = etree.fromstring(data)
        root.find(f"{{{NS}}}LRN").text = "X" * 23
        root.find(f"{{{NS}}}addressedMemberState/{{{NS}}}country").text = "nl"
        broken = etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)
        lines = broken.decode().splitlines()
        expected = [n for n, line in enumerate(lines, start=1) if "<LRN>" in line or "<country>nl<" in line]
        with pytest.raises(XsdViolation) as caught:
            validate(broken, "IE3F15")
        issues = caught.value.issues
        assert [i.line for i in issues] == expected
        assert "LRN" in issues[0].message and "country" in issues[1].message
        assert f"line {expected[0]}" in str(caught.value)

    def test_wrong_root_is_refused(self) -> None:
        """A valid IE3F16 is not accepted as an IE3F15."""
        with pytest.raises(XsdViolation, match="expected"):
            validate(dict(MESSAGES_RENDERED)["IE3F16"], "IE3F15")

    def test_elements_and_bytes_are_both_accepted(self) -> None:
        """validate takes bytes or an element and returns the root."""
        data = dict(MESSAGES_RENDERED)["IE3F14"]
        assert validate(data, "IE3F14").tag == f"{{{NS}}}IE3F14"
        assert validate(etree.fromstring(data), "IE3F14").tag == f"{{{NS}}}IE3F14"


class TestTreeValidation:
    """``conforms`` checks the tree a renderer built, without its bytes; it must judge exactly as ``validate``."""

    @pytest.mark.parametrize(("code", "data"), MESSAGES_RENDERED, ids=[c for c, _ in MESSAGES_RENDERED])
    def test_a_valid_tree_conforms(self, code: str, data: bytes) -> None:
        assert conforms(etree.fromstring(data), code)

    def test_a_broken_tree_does_not_conform(self) -> None:
        root = etree.fromstring(dict(MESSAGES_RENDERED)["IE3F15"])
        root.find(f"{{{NS}}}LRN").text = "X" * 23
        assert not conforms(root, "IE3F15")
        with pytest.raises(XsdViolation):
            validate(etree.tostring(root), "IE3F15")

    def test_another_root_does_not_conform(self) -> None:
        assert not conforms(etree.fromstring(dict(MESSAGES_RENDERED)["IE3F16"]), "IE3F15")

    def test_a_tree_built_in_memory_is_judged_as_its_bytes(self) -> None:
        """A tree never parsed (no line numbers, no whitespace between elements) conforms as its bytes validate."""
        data = dict(MESSAGES_RENDERED)["IE3F14"]
        built = etree.fromstring(data, etree.XMLParser(remove_blank_text=True))
        copied = etree.Element(built.tag, nsmap=built.nsmap)
        copied.extend(copy.deepcopy(child) for child in built)
        assert conforms(copied, "IE3F14")
        copied.find(f"{{{NS}}}addressedMemberState/{{{NS}}}country").text = "nl"
        assert not conforms(copied, "IE3F14")


class TestSchemaFiles:
    @pytest.mark.parametrize("path", sorted(OURS.glob("*.xsd")), ids=lambda p: p.name)
    def test_no_include_or_import_leaves_the_repo(self, path: Path) -> None:
        """Our XSDs include only files beside them: never shared/ nor an absolute path."""
        tree = etree.parse(str(path))
        for ref in tree.xpath("//xs:include/@schemaLocation | //xs:import/@schemaLocation", namespaces={"xs": XS}):
            assert not Path(ref).is_absolute() and "shared" not in ref and ".." not in ref
            assert (path.parent / ref).is_file()

    @pytest.mark.parametrize(("code", "data"), MESSAGES_RENDERED, ids=[c for c, _ in MESSAGES_RENDERED])
    def test_rendered_seed_messages_validate(self, code: str, data: bytes) -> None:
        """Every message rendered from the seed's plan validates against our XSD."""
        assert validate(data, code).tag == f"{{{NS}}}{code}"


class TestAgainstOfficialTypes:
    @pytest.mark.parametrize("pair", COUNTERPARTS, ids=lambda c: f"{c.ours}-{c.official}")
    def test_our_type_follows_the_official_type(self, pair: Counterpart) -> None:
        """Child names, order and occurrences are those of the official type or a restriction of them."""
        ours = children(OURS / "ics2-types.xsd", pair.ours)
        official = children(OFFICIAL_XSD / "ctypes.xsd", pair.official)
        assert deviations(ours, official, pair.omitted) == []
        assert not pair.omitted or pair.why

    def test_documented_omissions_are_really_required_officially(self) -> None:
        """Every omission listed is a required child of the official type (else the list is stale)."""
        for pair in (c for c in COUNTERPARTS if c.omitted):
            required = {c.name for c in children(OFFICIAL_XSD / "ctypes.xsd", pair.official) if c.min >= 1}
            assert set(pair.omitted) <= required

    def test_comparison_detects_a_mismatch(self) -> None:
        """The F15 house level is not a restriction of the F14 one (goodsShipment) nor the F16 one."""
        f15 = children(OURS / "ics2-types.xsd", "HouseConsignmentF15")
        assert "goodsShipment is not in the official type" in deviations(
            f15, children(OFFICIAL_XSD / "ctypes.xsd", "ConsignmentHouseLevelType48")
        )
        loose = [Child(c.name, 0, c.max) for c in f15]
        assert deviations(loose, children(OFFICIAL_XSD / "ctypes.xsd", "ConsignmentHouseLevelType49"))

    @pytest.mark.parametrize(
        ("code", "path", "official_type"),
        [
            ("IE3F15", "i:consignmentMasterLevel", "ConsignmentMasterLevelType38"),
            ("IE3F14", "i:consignmentMasterLevel", "ConsignmentMasterLevelType36"),
            ("IE3F16", "i:consignmentMasterLevel", "ConsignmentMasterLevelType63"),
            ("IE3F15", "i:declarant", "DeclarantType"),
            ("IE3F15", "i:addressedMemberState", "AddressedMemberStateType"),
            ("IE3F15", "i:activeBorderTransportMeans", "ActiveBorderTransportMeansType05"),
            ("IE3F12", "i:consignmentMasterLevel/i:carrier", "CarrierType07"),
            ("IE3F12", "i:consignmentMasterLevel/i:transportEquipment", "TransportEquipmentType11"),
            ("IE3F12", "i:consignmentMasterLevel/i:placeOfLoading", "PlaceOfLoadingType02"),
            ("IE3F12", "i:customsOfficeOfFirstEntry", "CustomsOfficeOfFirstEntryType"),
            ("IE3R02", "i:additionalInformationResponse", "AdditionalInformationResponseType05"),
            ("IE3R03", "i:hrcmScreeningResults", "HrcmScreeningResultsType04"),
        ],
    )
    def test_rendered_subtree_validates_against_the_official_type(
        self, tmp_path_factory: pytest.TempPathFactory, code: str, path: str, official_type: str
    ) -> None:
        """The rendered block validates against the official type, through a wrapper schema including ctypes.xsd."""
        root = etree.fromstring(dict(MESSAGES_RENDERED)[code])
        blocks = root.xpath(path, namespaces=NSMAP)
        assert blocks
        schema = official_schema(etree.QName(blocks[0]).localname, official_type, tmp_path_factory)
        for block in blocks:
            document = copy.deepcopy(block)
            assert schema.validate(document), [str(e) for e in schema.error_log]

    def test_official_wrapper_can_refuse(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        """An F15 master level without its house level fails the official type, so the check above can fail."""
        root = etree.fromstring(dict(MESSAGES_RENDERED)["IE3F15"])
        block = copy.deepcopy(root.find(f"{{{NS}}}consignmentMasterLevel"))
        block.remove(block[0])
        assert not official_schema("consignmentMasterLevel", "ConsignmentMasterLevelType38", tmp_path_factory).validate(
            block
        )


_OFFICIAL_SCHEMAS: dict[tuple[str, str], etree.XMLSchema] = {}


def official_schema(element: str, type_name: str, factory: pytest.TempPathFactory) -> etree.XMLSchema:
    """A test-only schema declaring ``element`` of an official type, including ctypes.xsd by absolute path."""
    key = (element, type_name)
    if key not in _OFFICIAL_SCHEMAS:
        wrapper = factory.mktemp("official") / f"{element}-{type_name}.xsd"
        wrapper.write_text(
            f'<xs:schema xmlns:xs="{XS}" xmlns="{NS}" targetNamespace="{NS}" elementFormDefault="qualified">'
            f'<xs:include schemaLocation="{(OFFICIAL_XSD / "ctypes.xsd").as_uri()}"/>'
            f'<xs:element name="{element}" type="{type_name}"/></xs:schema>'
        )
        _OFFICIAL_SCHEMAS[key] = etree.XMLSchema(etree.parse(str(wrapper)))
    return _OFFICIAL_SCHEMAS[key]
