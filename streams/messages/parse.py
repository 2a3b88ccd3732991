"""Customs' notifications parsed into ``Notification`` values, by the HTI v2.02 message tables.

Where each correlation key sits differs per message (the house document alone has three names), so the places
are one table, ``LAYOUTS``, read by one function. Three readings follow the tables rather than the element names:

- A transport document is a number *and* a type (code list CL754, ``TransportDocumentType`` in the EU's
  ``ctypes.xsd``): ``N704`` master B/L and ``N705`` B/L are the MBL, ``N714`` house B/L is an HBL, wherever the
  group sits (an IE3N99's ``transportDocument`` may well be the house document of the filing it refuses).
- IE3N99's ``functionalReference`` (an..35, ``FunctionalReferenceContentType``) names the trader message refused,
  whatever it was: the LRN of a filing, the referral request reference an IE3R02/IE3R03 answer quoted, or the MRN
  an IE3Q04 invalidation request named. Which one is read from the root of the error pointers (the XPath into the
  refused message), else from its shape (an MRN has a check character).
- The IE3Q02 table has no element for an answer deadline: none is read, and the lifecycle assumes a configured
  response time (``streams.domain.deadlines``).

Dates are accepted both as plain text (the HTI tables) and wrapped in a ``DateTime`` child (the EU's v2 XSDs).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import TypedDict

from lxml import etree

from streams.domain.dates import EARLIEST_DATE, LATEST_DATE
from streams.domain.notifications import REFERRAL_ANSWERS, Notification, NotificationError, is_well_formed_mrn
from streams.errors import XMLRejected
from streams.messages import NS
from streams.messages.safe import DEFAULT_MAX_BYTES, read_xml

_NSMAP = {"i": NS}
_DECLARANT = "i:declarant/i:identificationNumber"
_CARRIER = "i:carrier/i:identificationNumber"
_SUPPLEMENTARY = "i:supplementaryDeclarant/i:identificationNumber"
_RRD = "i:referralRequestDetails"
#: Names in ``Layout.required`` that differ from the ``Notification`` field they check.
_FIELD_OF = {"carrier": "carrier_eori", "referral": "referral_reference"}

#: CL754 transport document types: the master-level documents and the house B/L.
MASTER_DOCUMENT_TYPES = frozenset({"N704", "N705"})
HOUSE_DOCUMENT_TYPES = frozenset({"N714"})
_MESSAGE_CODE = re.compile(r"IE3[A-Z][0-9]{2}")


@dataclass(frozen=True, slots=True)
class Layout:
    """Where one message keeps each value (XPaths from the root, prefix ``i``), and which values it must carry.

    ``documents`` are the transport-document groups (``documentNumber`` + ``type``); each is the MBL or an HBL
    by its CL754 type, not by where it sits.
    """

    date: str
    required: frozenset[str]
    lrn: tuple[str, ...] = ()
    mrn: tuple[str, ...] = ("i:MRN",)
    documents: tuple[str, ...] = ("i:transportDocument",)
    addressee: tuple[str, ...] = (_DECLARANT,)
    carrier: tuple[str, ...] = (_CARRIER,)
    referral: tuple[str, ...] = ()
    containers: tuple[str, ...] = ()
    missing_filers: tuple[str, ...] = ()
    functional_reference: str | None = None
    errors: str | None = None


def _need(*names: str) -> frozenset[str]:
    return frozenset(("notification_date", *names))


class _Places(TypedDict, total=False):
    """Places shared by several layouts, passed as ``Layout`` keywords."""

    documents: tuple[str, ...]
    referral: tuple[str, ...]
    containers: tuple[str, ...]


_RFI: _Places = {
    "documents": (f"{_RRD}/i:transportDocumentMaster", f"{_RRD}/i:transportDocumentHouse"),
    "referral": (f"{_RRD}/i:referralRequestReference",),
}
_RFS: _Places = {
    "documents": ("i:transportDocument", f"{_RRD}/i:transportDocumentHouse"),
    "referral": (f"{_RRD}/i:referralRequestReference",),
}
_CONTROLLED = "i:control/i:controlSubject/i:consignmentMasterLevel"
_CONTROL: _Places = {
    "documents": ("i:transportDocument", f"{_CONTROLLED}/i:consignmentHouseLevel/i:transportDocumentHouseLevel"),
    "containers": (f"{_CONTROLLED}/i:transportEquipment/i:containerIdentificationNumber",),
}

#: Message code -> where its values are. IE3N09/IE3R04/IE3N07 follow IE3N08/IE3R01/IE3N01 (no public table).
LAYOUTS = MappingProxyType(
    {
        "IE3R01": Layout("registrationDate", _need("lrn", "mrn"), lrn=("i:LRN",)),
        "IE3N99": Layout(
            "notificationDate", _need("errors"), mrn=(), functional_reference="i:functionalReference", errors="i:error"
        ),
        "IE3N01": Layout("notificationDate", _need("addressee", "errors"), lrn=("i:LRN",), errors="i:error"),
        "IE3N02": Layout(
            "notificationDate", _need("mrn", "mbl", "addressee", "missing_filers"), missing_filers=(_SUPPLEMENTARY,)
        ),
        "IE3N11": Layout(
            "notificationDate",
            _need("mbl", "addressee"),
            mrn=(),
            addressee=(_SUPPLEMENTARY,),
            missing_filers=(_SUPPLEMENTARY,),
        ),
        "IE3N03": Layout(
            "completionDate",
            _need("mrn"),
            documents=("i:transportDocument", "i:assessmentComplete/i:transportDocument"),
            containers=("i:assessmentComplete/i:transportEquipment/i:containerIdentificationNumber",),
        ),
        "IE3Q01": Layout(
            "documentIssueDate",
            _need("mrn"),
            documents=("i:transportDocument", "i:transportDocumentHouse", "i:doNotLoadDetails/i:transportDocument"),
            containers=("i:doNotLoadDetails/i:transportEquipment/i:containerIdentificationNumber",),
        ),
        "IE3Q02": Layout("documentIssueDate", _need("mrn", "addressee", "referral"), **_RFI),
        "IE3N04": Layout("documentIssueDate", _need("mrn", "carrier", "referral"), **_RFI),
        "IE3Q03": Layout("documentIssueDate", _need("mrn", "addressee", "referral", "hbl"), **_RFS),
        "IE3N05": Layout("documentIssueDate", _need("mrn", "carrier", "referral", "hbl"), **_RFS),
        "IE3N08": Layout("notificationDate", _need("mrn"), **_CONTROL),
        "IE3N09": Layout("notificationDate", _need("mrn"), **_CONTROL),
        "IE3N10": Layout("completionDate", _need("mrn", "addressee")),
        "IE3R04": Layout("registrationDate", _need("mrn"), lrn=("i:LRN",)),
        "IE3N07": Layout("notificationDate", _need("addressee", "errors"), lrn=("i:LRN",), errors="i:error"),
        "IE3R07": Layout("completionDate", _need("mrn", "addressee")),
        "IE3R08": Layout(
            "consultationDate",
            _need("addressee"),
            mrn=("i:filingState/i:MRN",),
            documents=("i:transportDocument", "i:filingState/i:transportDocumentHouse"),
            addressee=("i:requester/i:identificationNumber",),
        ),
    }
)


def _values(root: etree._Element, paths: tuple[str, ...]) -> tuple[str, ...]:
    """Every non-empty text at these paths, in order, without repeats."""
    found: list[str] = []
    for path in paths:
        for element in root.xpath(path, namespaces=_NSMAP):
            text = (element.text or "").strip()
            if text and text not in found:
                found.append(text)
    return tuple(found)


def _first(root: etree._Element, paths: tuple[str, ...]) -> str | None:
    values = _values(root, paths)
    return values[0] if values else None


def _datetime(text: str, where: str) -> datetime:
    """A zoned date-time in the plausible span, so that deadline arithmetic downstream can never overflow."""
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise XMLRejected(f"{where}: {text!r} is not a date-time like 2027-06-15T12:00:00Z") from exc
    if parsed.tzinfo is None:
        raise XMLRejected(f"{where}: {text!r} has no time zone")
    try:
        parsed = parsed.astimezone(UTC)
    except OverflowError as exc:
        raise XMLRejected(f"{where}: {text!r} is out of the range of dates") from exc
    if not EARLIEST_DATE <= parsed <= LATEST_DATE:
        raise XMLRejected(f"{where}: {text!r} is not a plausible date (years 2000 to 2999 are accepted)")
    return parsed


def _date(root: etree._Element, name: str) -> datetime | None:
    element = root.find(f"{{{NS}}}{name}")
    if element is None:
        return None
    wrapped = element.find(f"{{{NS}}}DateTime")
    text = ((wrapped if wrapped is not None else element).text or "").strip()
    return _datetime(text, name) if text else None


def _errors(root: etree._Element, path: str | None) -> tuple[NotificationError, ...]:
    if path is None:
        return ()
    errors = []
    for element in root.xpath(path, namespaces=_NSMAP):
        code = _first(element, ("i:validationCode",))
        if code is None:
            raise XMLRejected(f"{etree.QName(root).localname}: an error has no validationCode")
        errors.append(
            NotificationError(
                code=code,
                pointer=_first(element, ("i:pointer/i:messageElementPath",)),
                description=_first(element, ("i:description", "i:technicalErrorMessage")),
            )
        )
    return tuple(errors)


def _documents(root: etree._Element, paths: tuple[str, ...]) -> tuple[str | None, tuple[str, ...]]:
    """The MBL and the HBLs among these transport-document groups, each told by its CL754 type."""
    mbl: str | None = None
    hbls: list[str] = []
    for path in paths:
        for group in root.xpath(path, namespaces=_NSMAP):
            number = _first(group, ("i:documentNumber",))
            doc_type = _first(group, ("i:type",))
            if number is None:
                continue
            where = f"{etree.QName(root).localname}/{etree.QName(group).localname} {number}"
            if doc_type in MASTER_DOCUMENT_TYPES:
                if mbl is not None and mbl != number:
                    raise XMLRejected(f"{where}: a second master document besides {mbl}")
                mbl = number
            elif doc_type in HOUSE_DOCUMENT_TYPES:
                if number not in hbls:
                    hbls.append(number)
            else:
                known = ", ".join(sorted(MASTER_DOCUMENT_TYPES | HOUSE_DOCUMENT_TYPES))
                raise XMLRejected(f"{where}: document type {doc_type!r} is not a sea B/L type of CL754 ({known})")
    return mbl, tuple(hbls)


def rejected_message(errors: tuple[NotificationError, ...]) -> str | None:
    """The message an error notification refuses: the root step of its error pointers, when they agree on one."""
    roots = set()
    for error in errors:
        step = (error.pointer or "").lstrip("/").split("/", 1)[0].split("[", 1)[0]
        if _MESSAGE_CODE.fullmatch(step):
            roots.add(step)
    return roots.pop() if len(roots) == 1 else None


def interpret_functional_reference(reference: str, refused: str | None) -> dict[str, str]:
    """What an IE3N99's ``functionalReference`` names, as the ``Notification`` field to put it in.

    A refused IE3R02/IE3R03 is known by the referral request reference it answered; a message identified by an
    MRN (an IE3Q04 invalidation request) by that MRN, told by its shape and check character; every filing or
    amendment by its LRN.
    """
    if refused in REFERRAL_ANSWERS:
        return {"referral_reference": reference}
    if is_well_formed_mrn(reference):
        return {"mrn": reference}
    return {"lrn": reference}


def parse_notification(
    data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, expected_type: str | None = None
) -> Notification:
    """Parse one customs notification; anything unknown, foreign or lacking a mandatory key is ``XMLRejected``.

    ``expected_type`` is the message code the carrier of the bytes announced (the gateway's ``ics2-message-type``
    header); a document of another type is refused, since routing that trusted the label would go wrong.
    """
    root = read_xml(data, max_bytes=max_bytes)
    message_type = etree.QName(root).localname
    if expected_type is not None and message_type != expected_type:
        raise XMLRejected(f"the message is labelled {expected_type!r} but the document is {message_type!r}")
    layout = LAYOUTS.get(message_type)
    if layout is None:
        known = ", ".join(sorted(LAYOUTS))
        raise XMLRejected(f"{message_type} is not a customs notification this project reads ({known})")
    mbl, hbls = _documents(root, layout.documents)
    referrals = _values(root, layout.referral)
    errors = _errors(root, layout.errors)
    refused = rejected_message(errors) if errors else None
    reference = _first(root, (layout.functional_reference,)) if layout.functional_reference else None
    keys: dict[str, str | None] = {"lrn": _first(root, layout.lrn), "mrn": _first(root, layout.mrn)}
    if reference is not None:
        keys.update(interpret_functional_reference(reference, refused))
    referral = keys.pop("referral_reference", None)
    if referral is not None and referral not in referrals:
        referrals = (referral, *referrals)
    notification = Notification(
        message_type=message_type,
        notification_date=_date(root, layout.date),
        lrn=keys["lrn"],
        mrn=keys["mrn"],
        mbl=mbl,
        hbl=hbls[0] if hbls else None,
        referral_reference=referrals[0] if referrals else None,
        errors=errors,
        missing_filers=_values(root, layout.missing_filers),
        addressee=_first(root, layout.addressee),
        carrier_eori=_first(root, layout.carrier),
        hbls=hbls,
        referral_references=referrals,
        containers=_values(root, layout.containers),
        functional_reference=reference,
        rejected_message=refused,
    )
    missing = sorted(name for name in layout.required if not getattr(notification, _FIELD_OF.get(name, name)))
    if missing:
        raise XMLRejected(f"{message_type} lacks mandatory {', '.join(missing)}")
    return notification
