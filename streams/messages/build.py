"""Builders of customs' notifications (IE3R01, IE3N99, ...) from typed values.

Customs builds these in reality; the project builds them for its simulator and its tests, so that the parser and
the pipeline are exercised with messages that validate against ``schemas/xsd/notifications/``. Every builder
validates what it returns: a simulator that emits invalid XML would hide parser bugs.

What real customs sends, per the HTI v2.02 tables: every transport document carries its CL754 type (``N704``
master B/L, ``N705`` straight B/L, ``N714`` house B/L), and the type says what it is, not the element name; an
IE3N99's ``functionalReference`` names the refused message (a filing's LRN, the referral reference of a refused
IE3R02/IE3R03, the MRN of a refused IE3Q04); an IE3Q02 carries no answer deadline (its table has no such element);
a Do Not Load may name whole containers rather than house documents.

Decision without a public source: request types are ``RFI``/``RFS``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import NotRequired, TypedDict, Unpack

from lxml import etree

from streams.domain.dates import format_datetime
from streams.domain.notifications import NotificationError
from streams.errors import RenderError
from streams.messages import NS
from streams.messages.schemas import validate

MASTER_BL = "N704"
STRAIGHT_BL = "N705"
HOUSE_BL = "N714"
RFI_REQUEST_TYPE = "RFI"
RFS_REQUEST_TYPE = "RFS"
DEFAULT_SCREENING_METHODS = ("XRY", "ETD")


def _q(name: str) -> str:
    return f"{{{NS}}}{name}"


def _add(parent: etree._Element, name: str, text: str | None = None) -> etree._Element:
    child = etree.SubElement(parent, _q(name))
    if text is not None:
        child.text = text
    return child


def _date(parent: etree._Element, name: str, value: datetime) -> None:
    """ICS2 v2 wraps every date in a ``DateTime`` child (``NotificationDateType`` and its siblings)."""
    _add(_add(parent, name), "DateTime", format_datetime(value))


def _party(parent: etree._Element, name: str, eori: str | None) -> None:
    if eori is not None:
        _add(_add(parent, name), "identificationNumber", eori)


def _document(parent: etree._Element, name: str, number: str | None, doc_type: str) -> None:
    if number is not None:
        group = _add(parent, name)
        _add(group, "documentNumber", number)
        _add(group, "type", doc_type)


def _country(parent: etree._Element, name: str, country: str | None) -> None:
    if country is not None:
        _add(_add(parent, name), "country", country)


def _office(parent: etree._Element, name: str, reference: str | None) -> None:
    if reference is not None:
        _add(_add(parent, name), "referenceNumber", reference)


def _equipment(parent: etree._Element, containers: Iterable[str]) -> None:
    for container in containers:
        _add(_add(parent, "transportEquipment"), "containerIdentificationNumber", container)


def _pointer(parent: etree._Element, path: str) -> None:
    _add(_add(parent, "pointer"), "messageElementPath", path)


def _finish(root: etree._Element) -> bytes:
    """Serialise after validating against the project's XSD; invalid values raise ``XsdViolation``."""
    validate(root, etree.QName(root).localname)
    data: bytes = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    return data


def _root(message_type: str) -> etree._Element:
    return etree.Element(_q(message_type), nsmap={None: NS})


def build_ie3r01(
    *,
    lrn: str,
    mrn: str,
    registered_at: datetime,
    circumstance: str,
    mbl: str | None = None,
    carrier: str | None = None,
    declarant: str | None = None,
    office: str | None = None,
    member_state: str | None = None,
) -> bytes:
    """Registration: the filing's LRN gets an MRN. ``circumstance`` is the filing type (``F15``, CL742)."""
    root = _root("IE3R01")
    _add(root, "LRN", lrn)
    _add(root, "MRN", mrn)
    _date(root, "registrationDate", registered_at)
    _add(root, "SpecificCircumstanceIndicator", circumstance)
    _country(root, "addressedMemberState", member_state)
    _document(root, "transportDocument", mbl, MASTER_BL)
    _party(root, "carrier", carrier)
    _party(root, "declarant", declarant)
    _office(root, "customsOfficeOfFirstEntry", office)
    return _finish(root)


def build_ie3n99(
    *,
    errors: Sequence[NotificationError],
    notified_at: datetime,
    lrn: str | None = None,
    mbl: str | None = None,
    declarant: str | None = None,
    office: str | None = None,
    member_state: str | None = None,
    functional_reference: str | None = None,
    hbl: str | None = None,
    master_type: str = MASTER_BL,
) -> bytes:
    """Rejection of a trader message. ``functionalReference`` names it: the LRN of a filing (``lrn``), else
    ``functional_reference`` (the referral reference of an answer, the MRN of an invalidation request). The one
    transport document is the house B/L (``hbl``, N714) when given, else the master document (``mbl``)."""
    root = _root("IE3N99")
    reference = lrn if lrn is not None else functional_reference
    if reference is not None:
        _add(root, "functionalReference", reference)
    _date(root, "notificationDate", notified_at)
    _country(root, "addressedMemberState", member_state)
    if hbl is not None:
        _document(root, "transportDocument", hbl, HOUSE_BL)
    else:
        _document(root, "transportDocument", mbl, master_type)
    _party(root, "declarant", declarant)
    _office(root, "customsOfficeOfFirstEntry", office)
    for error in errors:
        group = _add(root, "error")
        if error.description is not None:
            _add(group, "description", error.description)
        _add(group, "validationCode", error.code)
        if error.pointer is not None:
            _pointer(group, error.pointer)
    return _finish(root)


def _lifecycle_error(
    message_type: str,
    *,
    errors: Sequence[NotificationError],
    notified_at: datetime,
    declarant: str,
    lrn: str | None = None,
    mrn: str | None = None,
    mbl: str | None = None,
    office: str | None = None,
    member_state: str | None = None,
) -> bytes:
    root = _root(message_type)
    if lrn is not None:
        _add(root, "LRN", lrn)
    if mrn is not None:
        _add(root, "MRN", mrn)
    _date(root, "notificationDate", notified_at)
    _country(root, "addressedMemberState", member_state)
    _document(root, "transportDocument", mbl, MASTER_BL)
    _party(root, "declarant", declarant)
    _office(root, "customsOfficeOfFirstEntry", office)
    for error in errors:
        if error.pointer is None or error.description is None:
            raise RenderError(f"{message_type} errors need a description and a pointer: {error}")
        group = _add(root, "error")
        _add(group, "description", error.description)
        _add(group, "validationCode", error.code)
        _pointer(group, error.pointer)
    return _finish(root)


#: Lifecycle validation error (duplicate LRN or linking key, wrong state).
build_ie3n01 = partial(_lifecycle_error, "IE3N01")
#: Arrival refused: the ENS is in the wrong state (shaped like IE3N01, for want of a public table).
build_ie3n07 = partial(_lifecycle_error, "IE3N07")


def build_ie3n02(
    *,
    mrn: str,
    notified_at: datetime,
    mbl: str,
    declarant: str,
    office: str,
    missing_filers: Sequence[str],
) -> bytes:
    """ENS not complete, to the filer whose filing waits: lists the supplementary declarants that have not filed."""
    root = _root("IE3N02")
    _add(root, "MRN", mrn)
    _date(root, "notificationDate", notified_at)
    _document(root, "transportDocument", mbl, MASTER_BL)
    _party(root, "declarant", declarant)
    _office(root, "customsOfficeOfFirstEntry", office)
    for eori in missing_filers:
        _party(root, "supplementaryDeclarant", eori)
    return _finish(root)


def build_ie3n11(*, notified_at: datetime, mbl: str, office: str, supplementary_declarant: str) -> bytes:
    """ENS pending, to the supplementary declarant that has not filed yet."""
    root = _root("IE3N11")
    _date(root, "notificationDate", notified_at)
    _document(root, "transportDocument", mbl, MASTER_BL)
    _office(root, "customsOfficeOfFirstEntry", office)
    _party(root, "supplementaryDeclarant", supplementary_declarant)
    return _finish(root)


def build_ie3n03(
    *,
    mrn: str,
    completed_at: datetime,
    member_state: str,
    hbls: Sequence[str] = (),
    mbl: str | None = None,
    carrier: str | None = None,
    declarant: str | None = None,
    containers: Sequence[str] = (),
) -> bytes:
    """Assessment complete for the named house documents (or the whole filing when none are named)."""
    root = _root("IE3N03")
    _add(root, "MRN", mrn)
    _date(root, "completionDate", completed_at)
    if hbls or containers:
        assessed = _add(root, "assessmentComplete")
        for hbl in hbls:
            _document(assessed, "transportDocument", hbl, HOUSE_BL)
        _equipment(assessed, containers)
    _country(root, "responsibleMemberState", member_state)
    _document(root, "transportDocument", mbl, MASTER_BL)
    _party(root, "carrier", carrier)
    _party(root, "declarant", declarant)
    return _finish(root)


def build_ie3q01(
    *,
    mrn: str,
    issued_at: datetime,
    member_state: str,
    hbl: str | None = None,
    mbl: str | None = None,
    carrier: str | None = None,
    declarant: str | None = None,
    containers: Sequence[str] = (),
) -> bytes:
    """Do Not Load, to the filer and the carrier."""
    root = _issued("IE3Q01", mrn, issued_at, member_state)
    _document(root, "transportDocument", mbl, MASTER_BL)
    _document(root, "transportDocumentHouse", hbl, HOUSE_BL)
    _party(root, "carrier", carrier)
    _party(root, "declarant", declarant)
    details = _add(root, "doNotLoadDetails")
    _document(details, "transportDocument", hbl, HOUSE_BL)
    _equipment(details, containers)
    return _finish(root)


def _issued(message_type: str, mrn: str, issued_at: datetime, member_state: str) -> etree._Element:
    """The head of a referral or Do Not Load: issue date, MRN, responsible member state."""
    root = _root(message_type)
    _date(root, "documentIssueDate", issued_at)
    _add(root, "MRN", mrn)
    _country(root, "responsibleMemberState", member_state)
    return root


class _Referral(TypedDict):
    """What a referral request (to the filer) and its notice (to the carrier) share."""

    mrn: str
    issued_at: datetime
    member_state: str
    referral_reference: str
    mbl: NotRequired[str | None]


class _InformationRequest(_Referral):
    hbl: NotRequired[str | None]
    question: NotRequired[str | None]


class _ScreeningRequest(_Referral):
    hbl: str
    methods: NotRequired[Sequence[str]]


def _information_request(message_type: str, role: str, party: str, **request: Unpack[_InformationRequest]) -> bytes:
    """IE3Q02/IE3N04 with their ``referralRequestDetails``: no answer deadline, as the message table has none."""
    root = _issued(message_type, request["mrn"], request["issued_at"], request["member_state"])
    _party(root, role, party)
    details = _add(root, "referralRequestDetails")
    _add(details, "referralRequestReference", request["referral_reference"])
    _add(details, "requestType", RFI_REQUEST_TYPE)
    _document(details, "transportDocumentHouse", request.get("hbl"), HOUSE_BL)
    _document(details, "transportDocumentMaster", request.get("mbl"), MASTER_BL)
    question = request.get("question")
    if question is not None:
        _add(_add(details, "additionalInformation"), "text", question)
    return _finish(root)


def build_ie3q02(*, declarant: str, **request: Unpack[_InformationRequest]) -> bytes:
    """Request for information to the filer; answered with IE3R02 quoting ``referral_reference``."""
    return _information_request("IE3Q02", "declarant", declarant, **request)


def build_ie3n04(*, carrier: str, **request: Unpack[_InformationRequest]) -> bytes:
    """Notice to the carrier that an RFI is open on a house filing naming it."""
    return _information_request("IE3N04", "carrier", carrier, **request)


def _screening_request(message_type: str, role: str, party: str, **request: Unpack[_ScreeningRequest]) -> bytes:
    """IE3Q03/IE3N05 with their ``referralRequestDetails``: the recommended screening methods."""
    root = _issued(message_type, request["mrn"], request["issued_at"], request["member_state"])
    _document(root, "transportDocument", request.get("mbl"), MASTER_BL)
    _party(root, role, party)
    details = _add(root, "referralRequestDetails")
    _add(details, "referralRequestReference", request["referral_reference"])
    _add(details, "requestType", RFS_REQUEST_TYPE)
    for method in request.get("methods", DEFAULT_SCREENING_METHODS):
        _add(_add(details, "recommendedHRCMScreeningMethod"), "method", method)
    _document(details, "transportDocumentHouse", request["hbl"], HOUSE_BL)
    return _finish(root)


def build_ie3q03(*, declarant: str, **request: Unpack[_ScreeningRequest]) -> bytes:
    """Request for high-risk cargo screening to the filer; answered with IE3R03."""
    return _screening_request("IE3Q03", "declarant", declarant, **request)


def build_ie3n05(*, carrier: str, **request: Unpack[_ScreeningRequest]) -> bytes:
    """Notice to the carrier that screening was requested for a house filing naming it."""
    return _screening_request("IE3N05", "carrier", carrier, **request)


def _control(
    message_type: str,
    *,
    mrn: str,
    notified_at: datetime,
    office_of_control: str,
    hbls: Sequence[str] = (),
    mbl: str | None = None,
    declarant: str | None = None,
    containers: Sequence[str] = (),
    place: str | None = None,
    scheduled_at: datetime | None = None,
) -> bytes:
    root = _root(message_type)
    _add(root, "MRN", mrn)
    _date(root, "notificationDate", notified_at)
    if scheduled_at is not None:
        _date(root, "scheduledControlDate", scheduled_at)
    _office(root, "customsOfficeOfControl", office_of_control)
    _document(root, "transportDocument", mbl, MASTER_BL)
    control = _add(root, "control")
    examination = _add(control, "examinationPlace")
    if place is not None:
        _add(examination, "placeOfExamination", place)
    master = _add(_add(control, "controlSubject"), "consignmentMasterLevel")
    for hbl in hbls:
        _document(_add(master, "consignmentHouseLevel"), "transportDocumentHouseLevel", hbl, HOUSE_BL)
    _equipment(master, containers)
    _party(root, "declarant", declarant)
    return _finish(root)


#: Control notification: the named consignments must be presented for examination.
build_ie3n08 = partial(_control, "IE3N08")
#: Control notification for an AEO (shaped like IE3N08, for want of a public table).
build_ie3n09 = partial(_control, "IE3N09")


def _completion(
    message_type: str,
    *,
    mrn: str,
    completed_at: datetime,
    declarant: str,
    mbl: str | None = None,
    office: str | None = None,
    member_state: str | None = None,
) -> bytes:
    root = _root(message_type)
    _add(root, "MRN", mrn)
    _date(root, "completionDate", completed_at)
    _country(root, "addressedMemberState", member_state)
    _document(root, "transportDocument", mbl, MASTER_BL)
    _party(root, "declarant", declarant)
    _office(root, "customsOfficeOfFirstEntry", office)
    return _finish(root)


#: Amendment accepted.
build_ie3n10 = partial(_completion, "IE3N10")
#: Invalidation accepted.
build_ie3r07 = partial(_completion, "IE3R07")


def build_ie3r04(
    *,
    mrn: str,
    registered_at: datetime,
    lrn: str | None = None,
    mbl: str | None = None,
    carrier: str | None = None,
    declarant: str | None = None,
    office: str | None = None,
    member_state: str | None = None,
) -> bytes:
    """Arrival registered (shaped like IE3R01, for want of a public table)."""
    root = _root("IE3R04")
    if lrn is not None:
        _add(root, "LRN", lrn)
    _add(root, "MRN", mrn)
    _date(root, "registrationDate", registered_at)
    _country(root, "addressedMemberState", member_state)
    _document(root, "transportDocument", mbl, MASTER_BL)
    _party(root, "carrier", carrier)
    _party(root, "declarant", declarant)
    _office(root, "customsOfficeOfFirstEntry", office)
    return _finish(root)


@dataclass(frozen=True, slots=True)
class ConsultedFiling:
    """One filing an IE3R08 reports: its MRN, LRN, type, HBL, filer, state and the last notification about it."""

    mrn: str
    filing: str
    status: str
    declarant: str
    lrn: str | None = None
    hbl: str | None = None
    last_notification: str | None = None


def build_ie3r08(
    *,
    reference: str,
    consulted_at: datetime,
    requester: str,
    filings: Sequence[ConsultedFiling],
    mbl: str | None = None,
) -> bytes:
    """ENS consultation results, the answer to an IE3Q05 (no public table: see ``IE3R08.xsd``)."""
    root = _root("IE3R08")
    _add(root, "functionalReference", reference)
    _date(root, "consultationDate", consulted_at)
    _document(root, "transportDocument", mbl, MASTER_BL)
    _party(root, "requester", requester)
    for filing in filings:
        group = _add(root, "filingState")
        _add(group, "MRN", filing.mrn)
        if filing.lrn:
            _add(group, "LRN", filing.lrn)
        _add(group, "SpecificCircumstanceIndicator", filing.filing)
        _add(group, "status", filing.status)
        if filing.last_notification:
            _add(group, "lastNotification", filing.last_notification)
        _document(group, "transportDocumentHouse", filing.hbl, HOUSE_BL)
        _party(group, "declarant", filing.declarant)
    return _finish(root)
