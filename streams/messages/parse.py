"""Customs' notifications parsed into ``Notification`` values.

Where each correlation key sits differs per message (the house document alone has three names), so the places
are one table, ``LAYOUTS``, read by one function. Dates are accepted both as plain text (the HTI tables) and wrapped
in a ``DateTime`` child (the EU's v2 XSDs).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType

from lxml import etree

from streams.domain.model import EARLIEST_DATE, LATEST_DATE
from streams.errors import XMLRejected
from streams.messages import NS
from streams.messages.build import DEADLINE_CODE
from streams.messages.notifications import Notification, NotificationError
from streams.messages.safe import DEFAULT_MAX_BYTES, read_xml

_NSMAP = {"i": NS}
_MASTER = "i:transportDocument/i:documentNumber"
_DECLARANT = "i:declarant/i:identificationNumber"
_CARRIER = "i:carrier/i:identificationNumber"
_SUPPLEMENTARY = "i:supplementaryDeclarant/i:identificationNumber"
_RRD = "i:referralRequestDetails"
#: Names in ``Layout.required`` that differ from the ``Notification`` field they check.
_FIELD_OF = {"carrier": "carrier_eori", "referral": "referral_reference"}


@dataclass(frozen=True, slots=True)
class Layout:
    """Where one message keeps each value (XPaths from the root, prefix ``i``), and which values it must carry."""

    date: str
    required: frozenset[str]
    lrn: tuple[str, ...] = ()
    mrn: tuple[str, ...] = ("i:MRN",)
    mbl: tuple[str, ...] = (_MASTER,)
    hbl: tuple[str, ...] = ()
    addressee: tuple[str, ...] = (_DECLARANT,)
    carrier: tuple[str, ...] = (_CARRIER,)
    referral: tuple[str, ...] = ()
    deadline: tuple[str, ...] = ()
    missing_filers: tuple[str, ...] = ()
    errors: str | None = None


def _need(*names: str) -> frozenset[str]:
    return frozenset(("notification_date", *names))


_RFI = {
    "mbl": (f"{_RRD}/i:transportDocumentMaster/i:documentNumber",),
    "hbl": (f"{_RRD}/i:transportDocumentHouse/i:documentNumber",),
    "referral": (f"{_RRD}/i:referralRequestReference",),
    "deadline": (f"{_RRD}/i:additionalInformation[i:code='{DEADLINE_CODE}']/i:text",),
}
_RFS = {
    "hbl": (f"{_RRD}/i:transportDocumentHouse/i:documentNumber",),
    "referral": (f"{_RRD}/i:referralRequestReference",),
}
_CONTROLLED_HOUSE = (
    "i:control/i:controlSubject/i:consignmentMasterLevel/i:consignmentHouseLevel/i:transportDocumentHouseLevel"
    "/i:documentNumber"
)

#: Message code -> where its values are. IE3N09/IE3R04/IE3N07 follow IE3N08/IE3R01/IE3N01 (no public table).
LAYOUTS = MappingProxyType(
    {
        "IE3R01": Layout("registrationDate", _need("lrn", "mrn"), lrn=("i:LRN",)),
        "IE3N99": Layout("notificationDate", _need("errors"), lrn=("i:functionalReference",), mrn=(), errors="i:error"),
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
            "completionDate", _need("mrn"), hbl=("i:assessmentComplete/i:transportDocument/i:documentNumber",)
        ),
        "IE3Q01": Layout(
            "documentIssueDate",
            _need("mrn"),
            hbl=(
                "i:transportDocumentHouse/i:documentNumber",
                "i:doNotLoadDetails/i:transportDocument/i:documentNumber",
            ),
        ),
        "IE3Q02": Layout("documentIssueDate", _need("mrn", "addressee", "referral"), **_RFI),
        "IE3N04": Layout("documentIssueDate", _need("mrn", "carrier", "referral"), **_RFI),
        "IE3Q03": Layout("documentIssueDate", _need("mrn", "addressee", "referral", "hbl"), **_RFS),
        "IE3N05": Layout("documentIssueDate", _need("mrn", "carrier", "referral", "hbl"), **_RFS),
        "IE3N08": Layout("notificationDate", _need("mrn"), hbl=(_CONTROLLED_HOUSE,)),
        "IE3N09": Layout("notificationDate", _need("mrn"), hbl=(_CONTROLLED_HOUSE,)),
        "IE3N10": Layout("completionDate", _need("mrn", "addressee")),
        "IE3R04": Layout("registrationDate", _need("mrn"), lrn=("i:LRN",)),
        "IE3N07": Layout("notificationDate", _need("addressee", "errors"), lrn=("i:LRN",), errors="i:error"),
        "IE3R07": Layout("completionDate", _need("mrn", "addressee")),
        "IE3R08": Layout(
            "consultationDate",
            _need("addressee"),
            mrn=("i:filingState/i:MRN",),
            hbl=("i:filingState/i:transportDocumentHouse/i:documentNumber",),
            addressee=("i:requester/i:identificationNumber",),
        ),
    }
)
"""Names in ``Layout.required`` that differ from the ``Notification`` field they check."""


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
    deadline_text = _first(root, layout.deadline)
    hbls = _values(root, layout.hbl)
    referrals = _values(root, layout.referral)
    notification = Notification(
        message_type=message_type,
        notification_date=_date(root, layout.date),
        lrn=_first(root, layout.lrn),
        mrn=_first(root, layout.mrn),
        mbl=_first(root, layout.mbl),
        hbl=hbls[0] if hbls else None,
        referral_reference=referrals[0] if referrals else None,
        errors=_errors(root, layout.errors),
        missing_filers=_values(root, layout.missing_filers),
        addressee=_first(root, layout.addressee),
        carrier_eori=_first(root, layout.carrier),
        deadline=None if deadline_text is None else _datetime(deadline_text, "answer deadline"),
        hbls=hbls,
        referral_references=referrals,
    )
    missing = sorted(name for name in layout.required if not getattr(notification, _FIELD_OF.get(name, name)))
    if missing:
        raise XMLRejected(f"{message_type} lacks mandatory {', '.join(missing)}")
    return notification
