"""Customs' notifications: hand-written and built messages parse into the right typed values."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from streams.domain.notifications import (
    MESSAGE_SPECS,
    Action,
    Actor,
    NotificationError,
    NotificationKind,
    Urgency,
    is_well_formed_mrn,
    mrn_check_character,
)
from streams.errors import RenderError, XMLRejected
from streams.messages import NS, build
from streams.messages.parse import LAYOUTS, parse_notification
from streams.messages.schemas import XsdViolation, schema_for
from tests.data import OFFICIAL_XSD

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "xml"

MRN = "27NLA1B2C3D4E5F6G7"
MBL = "OCLU26TYO7781234"
ML_TYO = "NL812345678000"
CARRIER = "NL860123456"
NOW = datetime(2027, 6, 13, 9, 30, tzinfo=UTC)


def official_schema(code: str) -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(OFFICIAL_XSD / f"{code}.xsd")))


# fixture file, expected kind, and the values the parsed notification must carry
FIXTURE_CASES = [
    (
        "IE3R01.xml",
        NotificationKind.REGISTERED,
        {"lrn": "LRN-ML-TYO-0001", "mrn": MRN, "mbl": MBL, "addressee": ML_TYO},
    ),
    ("IE3N99-official.xml", NotificationKind.REJECTED, {"lrn": "LRN-ML-TYO-0001", "mbl": MBL, "addressee": ML_TYO}),
    ("IE3N01.xml", NotificationKind.LIFECYCLE_ERROR, {"lrn": "LRN-ML-TYO-0001", "mbl": MBL, "addressee": ML_TYO}),
    ("IE3N02.xml", NotificationKind.NOT_COMPLETE, {"mrn": MRN, "missing_filers": ("DE993311220000", "BE0455123987")}),
    ("IE3N11-official.xml", NotificationKind.PENDING, {"mbl": MBL, "addressee": "DE993311220000"}),
    ("IE3N03.xml", NotificationKind.ASSESSMENT_COMPLETE, {"hbls": ("SKC26TYO0001", "SKC26TYO0003"), "mbl": MBL}),
    ("IE3Q01.xml", NotificationKind.DO_NOT_LOAD, {"hbl": "SKC26TYO0003", "carrier_eori": CARRIER}),
    ("IE3Q02.xml", NotificationKind.RFI, {"referral_reference": "RFI27000000A1", "hbl": "AOB26OSA1001", "mbl": MBL}),
    ("IE3N04.xml", NotificationKind.RFI_NOTICE_TO_CARRIER, {"carrier_eori": CARRIER, "hbl": "AOB26OSA1001"}),
    ("IE3Q03.xml", NotificationKind.RFS, {"referral_reference": "RFS27000000B2", "hbl": "CHY26YOK0501"}),
    ("IE3N05.xml", NotificationKind.RFS_NOTICE_TO_CARRIER, {"carrier_eori": CARRIER, "hbl": "CHY26YOK0501"}),
    ("IE3N08.xml", NotificationKind.CONTROL, {"mrn": MRN, "hbl": "SKC26TYO0001", "addressee": ML_TYO}),
    ("IE3N09.xml", NotificationKind.CONTROL_AEO, {"mrn": MRN, "hbl": "SKC26TYO0001"}),
    ("IE3N10.xml", NotificationKind.AMENDMENT_ACCEPTED, {"mrn": MRN, "addressee": ML_TYO}),
    ("IE3R04.xml", NotificationKind.ARRIVAL_REGISTERED, {"mrn": MRN, "carrier_eori": CARRIER, "lrn": None}),
    ("IE3N07.xml", NotificationKind.ARRIVAL_REJECTED, {"mrn": MRN, "addressee": CARRIER}),
    ("IE3R07.xml", NotificationKind.INVALIDATION_ACCEPTED, {"mrn": MRN, "addressee": ML_TYO}),
    ("IE3R08.xml", NotificationKind.CONSULTATION_RESULTS, {"mrn": MRN, "hbl": "SKC26TYO0001", "addressee": ML_TYO}),
]


class TestParseFixtures:
    @pytest.mark.parametrize(("name", "kind", "expected"), FIXTURE_CASES, ids=[c[0] for c in FIXTURE_CASES])
    def test_fixture(self, name, kind, expected):
        """Each hand-written notification parses to its kind and carries its correlation keys."""
        notification = parse_notification((FIXTURES / name).read_bytes())
        assert notification.kind is kind
        assert notification.notification_date is not None
        for field, value in expected.items():
            assert getattr(notification, field) == value, field

    def test_fixtures_cover_every_message(self):
        """There is a hand-written fixture for each of the 17 notifications."""
        assert {c[0].split(".")[0].split("-")[0] for c in FIXTURE_CASES} == set(MESSAGE_SPECS)

    def test_plain_and_wrapped_dates_agree(self):
        """HTI-style text dates and XSD-style DateTime children give the same instant."""
        plain = parse_notification((FIXTURES / "IE3Q02.xml").read_bytes())
        assert plain.notification_date == NOW
        wrapped = parse_notification((FIXTURES / "IE3N11-official.xml").read_bytes())
        assert wrapped.notification_date == datetime(2027, 6, 13, 10, tzinfo=UTC)

    def test_rfi_has_no_deadline(self):
        """The IE3Q02 table has no deadline element: a real RFI parses without one (the lifecycle assumes one)."""
        assert parse_notification((FIXTURES / "IE3Q02.xml").read_bytes()).deadline is None

    def test_rfs_has_no_deadline(self):
        """An RFS carries no deadline, so none is invented."""
        assert parse_notification((FIXTURES / "IE3Q03.xml").read_bytes()).deadline is None

    def test_dnl_is_critical_stop_loading(self):
        """A DNL asks the filer and the carrier to stop loading, at critical urgency."""
        dnl = parse_notification((FIXTURES / "IE3Q01.xml").read_bytes())
        assert (dnl.action, dnl.urgency, dnl.actors) == (
            Action.STOP_LOADING,
            Urgency.CRITICAL,
            (Actor.FILER, Actor.CARRIER),
        )


class TestOfficialSchemas:
    @pytest.mark.parametrize("code", ["IE3N99", "IE3N11"])
    def test_official_instances_validate_and_parse(self, code):
        """The official-XSD-valid fixture is valid against the EU's XSD and parses."""
        data = (FIXTURES / f"{code}-official.xml").read_bytes()
        schema = official_schema(code)
        assert schema.validate(etree.fromstring(data)), schema.error_log
        assert parse_notification(data).message_type == code

    def test_official_n99_errors(self):
        """Every error of an IE3N99 keeps its code, pointer and description (or technical message)."""
        errors = parse_notification((FIXTURES / "IE3N99-official.xml").read_bytes()).errors
        assert errors == (
            NotificationError(
                "12",
                "/IE3F15/consignmentMasterLevel/consignmentHouseLevel/goodsItem[1]/commodity/descriptionOfGoods",
                "Goods description consists of stop words only",
            ),
            NotificationError("13", None, "cvc-complex-type.2.4.b: content of element 'consignor' is not complete"),
        )

    def test_official_n11_names_missing_filer(self):
        """IE3N11 is addressed to the supplementary declarant and names it as the missing filer."""
        n11 = parse_notification((FIXTURES / "IE3N11-official.xml").read_bytes())
        assert (n11.action, n11.missing_filers) == (Action.FILE_MISSING_FILING, ("DE993311220000",))

    def test_built_n99_and_n11_validate_against_official_xsds(self):
        """The project's own IE3N99 and IE3N11 also conform to the EU's XSDs."""
        n99 = build.build_ie3n99(
            errors=[NotificationError("13", "/IE3F15/LRN", "LRN is missing"), NotificationError("12", None)],
            notified_at=NOW,
            lrn="LRN1",
            mbl=MBL,
            declarant=ML_TYO,
            office="NL000396",
            member_state="NL",
        )
        n11 = build.build_ie3n11(notified_at=NOW, mbl=MBL, office="NL000396", supplementary_declarant="DE993311220000")
        for code, data in (("IE3N99", n99), ("IE3N11", n11)):
            schema = official_schema(code)
            assert schema.validate(etree.fromstring(data)), schema.error_log


def built_messages() -> dict[str, bytes]:
    common = {"mrn": MRN, "member_state": "NL"}
    errors = [NotificationError("26", "/IE3F15/LRN", "LRN is already registered")]
    return {
        "IE3R01": build.build_ie3r01(lrn="L1", mrn=MRN, registered_at=NOW, circumstance="F15", declarant=ML_TYO),
        "IE3N99": build.build_ie3n99(errors=errors, notified_at=NOW, lrn="L1"),
        "IE3N01": build.build_ie3n01(errors=errors, notified_at=NOW, declarant=ML_TYO, lrn="L1"),
        "IE3N02": build.build_ie3n02(
            mrn=MRN, notified_at=NOW, mbl=MBL, declarant=ML_TYO, office="NL000396", missing_filers=["DE993311220000"]
        ),
        "IE3N11": build.build_ie3n11(notified_at=NOW, mbl=MBL, office="NL000396", supplementary_declarant="DE9933"),
        "IE3N03": build.build_ie3n03(**common, completed_at=NOW, hbls=["H1"], carrier=CARRIER),
        "IE3Q01": build.build_ie3q01(**common, issued_at=NOW, hbl="H1", carrier=CARRIER, declarant=ML_TYO),
        "IE3Q02": build.build_ie3q02(**common, issued_at=NOW, declarant=ML_TYO, referral_reference="R1", hbl="H1"),
        "IE3N04": build.build_ie3n04(**common, issued_at=NOW, carrier=CARRIER, referral_reference="R1", hbl="H1"),
        "IE3Q03": build.build_ie3q03(**common, issued_at=NOW, declarant=ML_TYO, referral_reference="R2", hbl="H1"),
        "IE3N05": build.build_ie3n05(**common, issued_at=NOW, carrier=CARRIER, referral_reference="R2", hbl="H1"),
        "IE3N08": build.build_ie3n08(mrn=MRN, notified_at=NOW, office_of_control="NL000396", hbls=["H1"]),
        "IE3N09": build.build_ie3n09(mrn=MRN, notified_at=NOW, office_of_control="NL000396", hbls=["H1"]),
        "IE3N10": build.build_ie3n10(mrn=MRN, completed_at=NOW, declarant=ML_TYO),
        "IE3R04": build.build_ie3r04(mrn=MRN, registered_at=NOW, carrier=CARRIER),
        "IE3N07": build.build_ie3n07(errors=errors, notified_at=NOW, declarant=CARRIER, mrn=MRN),
        "IE3R07": build.build_ie3r07(mrn=MRN, completed_at=NOW, declarant=ML_TYO),
        "IE3R08": build.build_ie3r08(
            reference="Q05-1",
            consulted_at=NOW,
            requester=ML_TYO,
            filings=[build.ConsultedFiling(MRN, "F15", "registered", ML_TYO, lrn="L1", hbl="H1")],
            mbl=MBL,
        ),
    }


class TestBuilders:
    @pytest.mark.parametrize("code", sorted(MESSAGE_SPECS))
    def test_built_message_validates_and_parses(self, code):
        """Each builder's output is valid against the project's XSD and parses back to its message type."""
        data = built_messages()[code]
        assert schema_for(code).validate(etree.fromstring(data))
        notification = parse_notification(data)
        assert (notification.message_type, notification.kind) == (code, MESSAGE_SPECS[code].kind)
        assert notification.notification_date == NOW

    def test_invalid_values_are_refused(self):
        """A builder refuses values its schema refuses, instead of emitting invalid XML."""
        with pytest.raises(XsdViolation, match="does not conform"):
            build.build_ie3n11(notified_at=NOW, mbl=MBL, office="NL0003", supplementary_declarant="DE1")

    def test_lifecycle_errors_need_a_pointer(self):
        """IE3N01 errors without a pointer cannot be built (the pointer is mandatory there)."""
        with pytest.raises(RenderError, match="pointer"):
            build.build_ie3n01(errors=[NotificationError("26", None, "dup")], notified_at=NOW, declarant=ML_TYO)


class TestRejections:
    def test_unknown_root(self):
        """A message that is not a known notification is refused, naming the ones that are."""
        with pytest.raises(XMLRejected, match="IE3F15 is not a customs notification"):
            parse_notification(f'<IE3F15 xmlns="{NS}"/>'.encode())

    def test_wrong_namespace(self):
        """A notification in another namespace is refused."""
        data = (FIXTURES / "IE3R01.xml").read_bytes().replace(NS.encode(), b"urn:wco:datamodel:eu:ics2:1")
        with pytest.raises(XMLRejected, match="namespace"):
            parse_notification(data)

    @pytest.mark.parametrize(
        ("name", "element", "missing"),
        [
            ("IE3R01.xml", b"MRN", "mrn"),
            ("IE3R01.xml", b"LRN", "lrn"),
            ("IE3Q02.xml", b"referralRequestReference", "referral"),
            ("IE3N04.xml", b"carrier", "carrier"),
            ("IE3N02.xml", b"supplementaryDeclarant", "missing_filers"),
            ("IE3N03.xml", b"completionDate", "notification_date"),
        ],
    )
    def test_missing_mandatory_key(self, name, element, missing):
        """A notification lacking a mandatory key is refused, naming the key."""
        data = (FIXTURES / name).read_bytes()
        renamed = data.replace(b"<" + element + b">", b"<x" + element + b">").replace(
            b"</" + element + b">", b"</x" + element + b">"
        )
        with pytest.raises(XMLRejected, match=f"lacks mandatory .*{missing}"):
            parse_notification(renamed)

    def test_n99_without_errors(self):
        """An IE3N99 with no error element is refused."""
        with pytest.raises(XMLRejected, match="errors"):
            parse_notification(
                f'<IE3N99 xmlns="{NS}"><notificationDate>2027-06-13T09:30:00Z</notificationDate></IE3N99>'.encode()
            )

    def test_bad_date(self):
        """A date that is not ICS2's date-time form is refused."""
        data = (FIXTURES / "IE3N10.xml").read_bytes().replace(b"2027-06-13T11:00:00Z", b"13/06/2027")
        with pytest.raises(XMLRejected, match="not a date-time"):
            parse_notification(data)

    def test_attack_refused_by_parser(self):
        """The parser reads through the hardened reader: an entity attack never gets parsed."""
        data = b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><IE3R01>&x;</IE3R01>'
        with pytest.raises(XMLRejected, match="DTDs"):
            parse_notification(data)


class TestSpecTable:
    def test_layout_for_every_spec(self):
        """Every message with a spec has a layout, and the reverse: 17 messages."""
        assert set(LAYOUTS) == set(MESSAGE_SPECS)
        assert len(MESSAGE_SPECS) == 18

    @pytest.mark.parametrize(
        ("code", "urgency"),
        [
            ("IE3Q01", Urgency.CRITICAL),
            ("IE3Q02", Urgency.HIGH),
            ("IE3N99", Urgency.HIGH),
            ("IE3N11", Urgency.HIGH),
            ("IE3N08", Urgency.HIGH),
            ("IE3N02", Urgency.NORMAL),
            ("IE3R01", Urgency.INFO),
            ("IE3N03", Urgency.INFO),
        ],
    )
    def test_urgency(self, code, urgency):
        """Urgency follows the policy: DNL critical, RFI/RFS/errors/pending/controls high, N02 normal, rest info."""
        assert MESSAGE_SPECS[code].urgency is urgency


class TestMrn:
    def test_check_character(self):
        """A well-formed MRN passes; changing one character breaks its check character."""
        body = "27NLA1B2C3D4E5F6G"
        mrn = body + mrn_check_character(body)
        assert is_well_formed_mrn(mrn)
        assert not is_well_formed_mrn("27NLA1B2C3D4E5F6H" + mrn[-1])

    @pytest.mark.parametrize("mrn", ["27NL123", "2XNLA1B2C3D4E5F6G7", "27N1A1B2C3D4E5F6G7", "27nla1b2c3d4e5f6g7"])
    def test_malformed(self, mrn):
        """Wrong length, a letter in the year, a digit in the country or lower case are not MRNs."""
        assert not is_well_formed_mrn(mrn)


ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
ids = st.text(alphabet=ALNUM + "-/", min_size=1, max_size=17).filter(lambda s: s.strip() == s)
documents = st.text(alphabet=ALNUM + "-/ ", min_size=1, max_size=70).map(str.strip).filter(bool)


@st.composite
def mrns(draw: st.DrawFn) -> str:
    year = draw(st.integers(0, 99))
    country = draw(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=2, max_size=2))
    body = f"{year:02d}{country}" + draw(st.text(alphabet=ALNUM, min_size=13, max_size=13))
    return body + mrn_check_character(body)


errors_strategy = st.lists(
    st.builds(
        NotificationError,
        code=st.sampled_from(["12", "13", "14", "26", "92", "102"]),
        # The pointers' root is the refused filing: a root of IE3R02/IE3R03 would make functionalReference a referral
        # reference, not the LRN (test_parse_tables covers that reading).
        pointer=st.tuples(
            st.sampled_from(["/IE3F12/", "/IE3F14/", "/IE3F15/", "/IE3F16/"]),
            st.text(alphabet=ALNUM + "/[]", min_size=1, max_size=72),
        ).map("".join),
        description=st.text(alphabet=ALNUM + " .", min_size=1, max_size=60).map(str.strip).filter(bool),
    ),
    min_size=1,
    max_size=5,
)


class TestRoundTrip:
    @settings(max_examples=150, deadline=None)
    @given(
        lrn=ids,
        mrn=mrns(),
        mbl=documents,
        hbl=documents,
        reference=ids,
    )
    def test_referral_round_trip(self, lrn, mrn, mbl, hbl, reference):
        """Build -> parse keeps MRN, MBL, HBL and referral reference of an RFI and its carrier notice."""
        assert is_well_formed_mrn(mrn)
        for builder, party in ((build.build_ie3q02, "declarant"), (build.build_ie3n04, "carrier")):
            data = builder(
                mrn=mrn,
                issued_at=NOW,
                member_state="NL",
                referral_reference=reference,
                hbl=hbl,
                mbl=mbl,
                **{party: ML_TYO},
            )
            parsed = parse_notification(data)
            assert (parsed.mrn, parsed.mbl, parsed.hbl, parsed.referral_reference, parsed.deadline) == (
                mrn,
                mbl,
                hbl,
                reference,
                None,
            )

    @settings(max_examples=150, deadline=None)
    @given(lrn=ids, mrn=mrns(), mbl=documents, errors=errors_strategy)
    def test_error_round_trip(self, lrn, mrn, mbl, errors):
        """Build -> parse keeps the LRN, MRN, MBL and every error of IE3N99 and IE3N01, in order."""
        n99 = parse_notification(build.build_ie3n99(errors=errors, notified_at=NOW, lrn=lrn, mbl=mbl))
        assert (n99.lrn, n99.mbl, n99.errors) == (lrn, mbl, tuple(errors))
        n01 = parse_notification(
            build.build_ie3n01(errors=errors, notified_at=NOW, declarant=ML_TYO, lrn=lrn, mrn=mrn, mbl=mbl)
        )
        assert (n01.lrn, n01.mrn, n01.mbl, n01.errors) == (lrn, mrn, mbl, tuple(errors))

    @settings(max_examples=100, deadline=None)
    @given(lrn=ids, mrn=mrns(), mbl=documents, hbls=st.lists(documents, min_size=1, max_size=4, unique=True))
    def test_registration_and_clearance_round_trip(self, lrn, mrn, mbl, hbls):
        """Build -> parse keeps the keys of IE3R01, IE3N03, IE3Q01 and IE3Q03."""
        r01 = parse_notification(build.build_ie3r01(lrn=lrn, mrn=mrn, registered_at=NOW, circumstance="F15", mbl=mbl))
        assert (r01.lrn, r01.mrn, r01.mbl) == (lrn, mrn, mbl)
        n03 = parse_notification(build.build_ie3n03(mrn=mrn, completed_at=NOW, member_state="NL", hbls=hbls, mbl=mbl))
        assert (n03.mrn, n03.mbl, n03.hbls) == (mrn, mbl, tuple(hbls))
        q01 = parse_notification(build.build_ie3q01(mrn=mrn, issued_at=NOW, member_state="NL", hbl=hbls[0], mbl=mbl))
        assert (q01.mrn, q01.mbl, q01.hbl) == (mrn, mbl, hbls[0])
        q03 = parse_notification(
            build.build_ie3q03(
                mrn=mrn,
                issued_at=NOW,
                member_state="NL",
                declarant=ML_TYO,
                referral_reference=lrn[:17],
                hbl=hbls[0],
                mbl=mbl,
            )
        )
        assert (q03.mrn, q03.mbl, q03.hbl, q03.referral_reference) == (mrn, mbl, hbls[0], lrn[:17])
