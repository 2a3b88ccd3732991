"""Notifications read by the HTI v2.02 message tables: transport documents by their CL754 type, IE3N99's
functionalReference by what it names, containers of a Do Not Load, and no answer deadline where the table has none.

Messages with an official EU schema (IE3N99, IE3N11 in tests/fixtures/ics2-xsd-v2) are validated against it; the
others against the project's schemas, which every builder validates against anyway.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from lxml import etree

from streams.domain.notifications import NotificationError, NotificationKind, mrn_check_character
from streams.errors import XMLRejected
from streams.messages import NS, build
from streams.messages.parse import parse_notification
from streams.messages.schemas import schema_for
from tests.data import OFFICIAL_XSD

NOW = datetime(2027, 6, 13, 9, 30, tzinfo=UTC)
MBL = "OCLU26TYO7781234"
HBL = "SKC26TYO0003"
MRN = "27NLA1B2C3D4E5F6G" + mrn_check_character("27NLA1B2C3D4E5F6G")
ML_TYO = "NL812345678000"
CARRIER = "NL860123456"
LRN = "F15V1ABCDEFGHIJKLMNOPQ"
#: CL754 type -> which correlation key the document is.
DOCUMENT_TYPES = [("N704", "mbl"), ("N705", "mbl"), ("N714", "hbl")]


def official(code: str) -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(OFFICIAL_XSD / f"{code}.xsd")))


def with_document_type(data: bytes, doc_type: str, path: str = "i:transportDocument") -> bytes:
    """The same message with the root transport document's CL754 type changed."""
    root = etree.fromstring(data)
    (element,) = root.xpath(f"{path}/i:type", namespaces={"i": NS})
    element.text = doc_type
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def official_n99(reference: str, doc_type: str, pointer: str, number: str = MBL) -> bytes:
    errors = [NotificationError("12", pointer, "incorrect value")]
    data = build.build_ie3n99(
        errors=errors, notified_at=NOW, functional_reference=reference, mbl=number, declarant=ML_TYO
    )
    data = with_document_type(data, doc_type)
    schema = official("IE3N99")
    assert schema.validate(etree.fromstring(data)), schema.error_log
    return data


class TestTransportDocumentsByType:
    @pytest.mark.parametrize(("doc_type", "key"), DOCUMENT_TYPES)
    def test_official_ie3n99_reads_its_document_by_type(self, doc_type, key):
        """An official-XSD-valid IE3N99: N704/N705 is the MBL, N714 the HBL (not the MBL)."""
        number = HBL if key == "hbl" else MBL
        parsed = parse_notification(official_n99(LRN, doc_type, "/IE3F15/LRN", number))
        assert (parsed.mbl, parsed.hbl) == ((number, None) if key == "mbl" else (None, number))
        assert parsed.hbls == (() if key == "mbl" else (number,))

    @pytest.mark.parametrize(("doc_type", "key"), DOCUMENT_TYPES)
    def test_official_ie3n11_needs_a_master_document(self, doc_type, key):
        """An official-XSD-valid IE3N11 names the MBL (N704/N705); an N714 there is no MBL, so it is refused."""
        data = build.build_ie3n11(notified_at=NOW, mbl=MBL, office="NL000396", supplementary_declarant=ML_TYO)
        data = with_document_type(data, doc_type)
        schema = official("IE3N11")
        assert schema.validate(etree.fromstring(data)), schema.error_log
        if key == "mbl":
            assert parse_notification(data).mbl == MBL
        else:
            with pytest.raises(XMLRejected, match="lacks mandatory mbl"):
                parse_notification(data)

    @pytest.mark.parametrize(("doc_type", "key"), DOCUMENT_TYPES)
    @pytest.mark.parametrize(
        "code",
        ["IE3R01", "IE3N01", "IE3N03", "IE3Q01", "IE3Q03", "IE3N05", "IE3N08", "IE3N10", "IE3R07", "IE3R04"],
    )
    def test_root_document_of_every_message_by_type(self, code, doc_type, key):
        """The root ``transportDocument`` of each message (project XSD) is the MBL or an HBL by its type."""
        data = with_document_type(built_with_master(code), doc_type)
        assert schema_for(code).validate(etree.fromstring(data))
        parsed = parse_notification(data)
        if key == "mbl":
            assert parsed.mbl == MBL
        else:
            assert parsed.mbl is None and MBL in parsed.hbls

    @pytest.mark.parametrize(("doc_type", "key"), DOCUMENT_TYPES)
    def test_referral_documents_by_type(self, doc_type, key):
        """IE3Q02's ``transportDocumentMaster`` is read by its type too: the element name is not trusted."""
        data = build.build_ie3q02(
            mrn=MRN, issued_at=NOW, member_state="NL", declarant=ML_TYO, referral_reference="R1", mbl=MBL
        )
        data = with_document_type(data, doc_type, "i:referralRequestDetails/i:transportDocumentMaster")
        parsed = parse_notification(data)
        assert (parsed.mbl, parsed.hbls) == ((MBL, ()) if key == "mbl" else (None, (MBL,)))

    def test_house_document_at_the_root_of_a_dnl(self):
        """IE3Q01's house document and its doNotLoadDetails document are the HBL, its master document the MBL."""
        data = build.build_ie3q01(mrn=MRN, issued_at=NOW, member_state="NL", hbl=HBL, mbl=MBL, carrier=CARRIER)
        parsed = parse_notification(data)
        assert (parsed.mbl, parsed.hbl, parsed.hbls) == (MBL, HBL, (HBL,))

    def test_a_type_outside_sea_bills_is_refused(self):
        """A document type that is no sea B/L of CL754 (here an air waybill code) is refused, not guessed."""
        data = with_document_type(build.build_ie3n10(mrn=MRN, completed_at=NOW, declarant=ML_TYO, mbl=MBL), "N740")
        with pytest.raises(XMLRejected, match="not a sea B/L type of CL754"):
            parse_notification(data)


def built_with_master(code: str) -> bytes:
    """``code`` built with the master document ``MBL`` at its root."""
    errors = [NotificationError("26", "/IE3F15/LRN", "LRN is already registered")]
    common = {"mrn": MRN, "member_state": "NL", "mbl": MBL}
    builders = {
        "IE3R01": lambda: build.build_ie3r01(lrn=LRN, mrn=MRN, registered_at=NOW, circumstance="F15", mbl=MBL),
        "IE3N01": lambda: build.build_ie3n01(errors=errors, notified_at=NOW, declarant=ML_TYO, lrn=LRN, mbl=MBL),
        "IE3N03": lambda: build.build_ie3n03(**common, completed_at=NOW),
        "IE3Q01": lambda: build.build_ie3q01(**common, issued_at=NOW, containers=["TCNU1234565"]),
        "IE3Q03": lambda: build.build_ie3q03(
            **common, issued_at=NOW, declarant=ML_TYO, referral_reference="R2", hbl=HBL
        ),
        "IE3N05": lambda: build.build_ie3n05(
            **common, issued_at=NOW, carrier=CARRIER, referral_reference="R2", hbl=HBL
        ),
        "IE3N08": lambda: build.build_ie3n08(mrn=MRN, notified_at=NOW, office_of_control="NL000396", mbl=MBL),
        "IE3N10": lambda: build.build_ie3n10(mrn=MRN, completed_at=NOW, declarant=ML_TYO, mbl=MBL),
        "IE3R07": lambda: build.build_ie3r07(mrn=MRN, completed_at=NOW, declarant=ML_TYO, mbl=MBL),
        "IE3R04": lambda: build.build_ie3r04(mrn=MRN, registered_at=NOW, mbl=MBL),
    }
    return builders[code]()


class TestFunctionalReference:
    def test_lrn_of_a_refused_filing(self):
        """Errors pointing into an IE3F15: the functional reference is the filing's LRN."""
        parsed = parse_notification(official_n99(LRN, "N704", "/IE3F15/consignmentMasterLevel/grossMass"))
        assert (parsed.lrn, parsed.mrn, parsed.referral_reference) == (LRN, None, None)
        assert (parsed.rejected_message, parsed.refuses_a_filing) == ("IE3F15", True)

    @pytest.mark.parametrize("answer", ["IE3R02", "IE3R03"])
    def test_referral_reference_of_a_refused_answer(self, answer):
        """A refused IE3R02/IE3R03 is named by the referral reference it answered, never taken for an LRN."""
        parsed = parse_notification(official_n99("RFI27000000A1", "N704", f"/{answer}/referralRequestReference"))
        assert (parsed.lrn, parsed.referral_reference, parsed.referral_references) == (
            None,
            "RFI27000000A1",
            ("RFI27000000A1",),
        )
        assert (parsed.rejected_message, parsed.refuses_a_filing) == (answer, False)

    def test_mrn_of_a_refused_invalidation_request(self):
        """A refused IE3Q04 is named by the MRN of the filing it asked to invalidate."""
        parsed = parse_notification(official_n99(MRN, "N704", "/IE3Q04/MRN"))
        assert (parsed.lrn, parsed.mrn, parsed.rejected_message) == (None, MRN, "IE3Q04")
        assert not parsed.refuses_a_filing

    def test_shape_decides_without_a_pointer(self):
        """Without an error pointer an MRN-shaped reference is an MRN, anything else an LRN."""
        errors = [NotificationError("13", None, "missing")]
        by_mrn = parse_notification(build.build_ie3n99(errors=errors, notified_at=NOW, functional_reference=MRN))
        by_lrn = parse_notification(build.build_ie3n99(errors=errors, notified_at=NOW, lrn=LRN))
        assert (by_mrn.mrn, by_mrn.lrn, by_lrn.lrn, by_lrn.mrn) == (MRN, None, LRN, None)
        assert by_mrn.functional_reference == MRN and by_lrn.rejected_message is None

    def test_lifecycle_error_on_an_answer_names_the_refused_message(self):
        """An IE3N01 whose pointer is in an IE3R02 refuses the answer, not the filing."""
        error = NotificationError("92", "/IE3R02/additionalInformationResponse/referralRequestReference", "closed")
        parsed = parse_notification(build.build_ie3n01(errors=[error], notified_at=NOW, declarant=ML_TYO, mrn=MRN))
        assert (parsed.kind, parsed.rejected_message, parsed.refuses_a_filing) == (
            NotificationKind.LIFECYCLE_ERROR,
            "IE3R02",
            False,
        )


class TestContainersAndDeadlines:
    def test_dnl_of_a_container(self):
        """A DNL naming only a container (doNotLoadDetails/transportEquipment) carries it, and no HBL of its own."""
        data = build.build_ie3q01(
            mrn=MRN, issued_at=NOW, member_state="NL", mbl=MBL, containers=["TCNU1234565", "MSKU7654321"]
        )
        parsed = parse_notification(data)
        assert (parsed.kind, parsed.containers, parsed.hbls) == (
            NotificationKind.DO_NOT_LOAD,
            ("TCNU1234565", "MSKU7654321"),
            (),
        )

    def test_assessment_of_a_container(self):
        """An IE3N03 clearing a container carries it for the fan-out too."""
        data = build.build_ie3n03(mrn=MRN, completed_at=NOW, member_state="NL", containers=["TCNU1234565"])
        assert parse_notification(data).containers == ("TCNU1234565",)

    def test_no_deadline_is_read_from_additional_information(self):
        """An IE3Q02 whose additional information looks like a deadline still has none: the table has no such
        element, and a code of our own would never come from real customs."""
        data = build.build_ie3q02(
            mrn=MRN,
            issued_at=NOW,
            member_state="NL",
            declarant=ML_TYO,
            referral_reference="R1",
            hbl=HBL,
            question="Answer by 2027-06-14T09:30:00Z",
        )
        assert parse_notification(data).deadline is None
        assert b"ANSWER-DEADLINE" not in data
