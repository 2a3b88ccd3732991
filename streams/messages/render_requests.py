"""Trader requests about filings customs already registered: amendment (IE3A1x), invalidation (IE3Q04), consultation
(IE3Q05).

An amendment repeats the whole filing (HTI v2.02 IE3A15: the house level of an amendment is the filing's own) under
its own LRN, naming the MRN of the filing it amends; it is made from the F1x the renderers produced for the new
booking version, so the filing and its amendment can never say different things. Every message is checked against
its XSD in ``schemas/xsd`` before it is returned.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import datetime

from lxml import etree

from streams.domain.dates import format_datetime
from streams.errors import RenderError
from streams.messages.render_common import (
    HOUSE_BILL_TYPE,
    MASTER_BILL_TYPE,
    finish,
    identified,
    new_root,
    q,
    sub,
    transport_document,
)
from streams.messages.safe import read_xml

#: Filing message -> the amendment message that amends it (catalogue: IE3A12 amends an F12, ... IE3A16 an F16).
AMENDMENTS = {"IE3F12": "IE3A12", "IE3F14": "IE3A14", "IE3F15": "IE3A15", "IE3F16": "IE3A16"}
#: CL027 (IE3Q05 dataRequest): 1 asks for the notifications sent about the filings with the state.
WITH_NOTIFICATIONS = "1"
#: Invalidation functional references start with this, followed by the LRN of the filing invalidated (an..35).
INVALIDATION_PREFIX = "Q04"


def amendment_xml(filing_xml: bytes, lrn: str, mrn: str) -> bytes:
    """The IE3A1x amending a registered filing: ``filing_xml`` (an IE3F1x of the new version) under LRN ``lrn``,
    naming ``mrn``. ``RenderError`` when the filing is no F12/F14/F15/F16 or the result breaks the XSD."""
    source = read_xml(filing_xml)
    filing_type = etree.QName(source).localname
    message_type = AMENDMENTS.get(filing_type)
    if message_type is None:
        raise RenderError(f"{filing_type} has no amendment message (only {', '.join(AMENDMENTS)})")
    root = new_root(message_type)
    for child in source:
        root.append(copy.deepcopy(child))
    lrn_element = root.find(q("LRN"))
    if lrn_element is None:
        raise RenderError(f"{filing_type} has no LRN to put the MRN after")
    lrn_element.text = lrn
    mrn_element = etree.Element(q("MRN"))
    mrn_element.text = mrn
    lrn_element.addnext(mrn_element)
    return finish(root, message_type, f"{message_type} amending MRN {mrn} (LRN {lrn})")


def invalidation_reference(lrn: str) -> str:
    """The functional reference of the IE3Q04 that withdraws the filing sent as ``lrn``: one per filing, stable."""
    return f"{INVALIDATION_PREFIX}{lrn}"


@dataclass(frozen=True, slots=True)
class Invalidation:
    """What an IE3Q04 says: which registered filing (MRN) its declarant withdraws, and why."""

    reference: str
    mrn: str
    declarant_eori: str
    issued_at: datetime
    reason: str
    mbl: str | None = None
    hbl: str | None = None


def render_invalidation(request: Invalidation) -> bytes:
    """IE3Q04, answered by IE3R07 (accepted) or an IE3N99 quoting ``reference``."""
    root = new_root("IE3Q04")
    sub(root, "functionalReference", request.reference)
    sub(root, "documentIssueDate", format_datetime(request.issued_at))
    sub(root, "MRN", request.mrn)
    sub(root, "invalidationReason", request.reason[:512])
    if request.mbl:
        transport_document(root, "transportDocument", request.mbl, MASTER_BILL_TYPE)
    if request.hbl:
        transport_document(root, "transportDocumentHouse", request.hbl, HOUSE_BILL_TYPE)
    identified(root, "declarant", request.declarant_eori)
    return finish(root, "IE3Q04", f"IE3Q04 withdrawing MRN {request.mrn}")


@dataclass(frozen=True, slots=True)
class Consultation:
    """What an IE3Q05 asks: the state of the filings under an MRN or an MBL (and HBL), for one requester."""

    reference: str
    requester_eori: str
    mrn: str | None = None
    mbl: str | None = None
    hbl: str | None = None


def render_consultation(request: Consultation) -> bytes:
    """IE3Q05 (HTI v2.02): an MRN or a transport document must be given (R3028)."""
    if not (request.mrn or request.mbl or request.hbl):
        raise RenderError("IE3Q05 needs an MRN or a transport document (R3028)")
    root = new_root("IE3Q05")
    sub(root, "dataRequest", WITH_NOTIFICATIONS)
    sub(root, "functionalReference", request.reference)
    if request.mrn:
        sub(root, "MRN", request.mrn)
    identified(root, "requester", request.requester_eori)
    if request.mbl:
        transport_document(root, "transportDocument", request.mbl, MASTER_BILL_TYPE)
    if request.hbl:
        transport_document(root, "transportDocumentHouse", request.hbl, HOUSE_BILL_TYPE)
    return finish(root, "IE3Q05", f"IE3Q05 {request.reference}")
