"""ENS consultation through the gateway: IE3Q05 out on the outbound topic like every filing, IE3R08 back on the
inbound topic, matched by the consultation's functional reference.

It recovers what customs holds when a notification was lost or a state is in doubt: every filing of the requester
(as declarant, or as the carrier of the MBL) under an MRN or an MBL, with its state and the last notification
customs sent about it.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from lxml import etree

from streams.contracts.records import sha256
from streams.domain.dates import format_datetime
from streams.domain.notifications import is_well_formed_mrn
from streams.errors import XMLRejected
from streams.messages import NS
from streams.messages.render_requests import Consultation, render_consultation
from streams.messages.safe import read_xml
from streams.settings import Settings
from streams.topics import Catalogue

_NSMAP = {"i": NS}


@dataclass(frozen=True, slots=True)
class ConsultedFiling:
    """One filing customs reports in an IE3R08."""

    mrn: str
    filing: str
    status: str
    declarant: str
    lrn: str | None
    hbl: str | None
    last_notification: str | None


@dataclass(frozen=True, slots=True)
class ConsultationResults:
    reference: str
    requester: str
    mbl: str | None
    filings: tuple[ConsultedFiling, ...]

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "filings": [asdict(f) for f in self.filings]}


def consultation_request(
    target: str, requester_eori: str, requested_at: datetime, *, party: str | None = None, hbl: str | None = None
) -> tuple[str, dict[str, Any]]:
    """The functional reference and ``Filing`` record of an IE3Q05 about ``target`` (an MRN, else an MBL)."""
    reference = f"Q05{uuid.uuid4().hex[:20].upper()}"
    mrn = target if is_well_formed_mrn(target) else None
    mbl = None if mrn else target
    xml = render_consultation(Consultation(reference, requester_eori, mrn=mrn, mbl=mbl, hbl=hbl))
    record = {
        "message_id": f"{reference}-{sha256(xml)[:12]}",
        "message_type": "IE3Q05",
        "lrn": reference,
        "mbl": mbl or "",
        "hbl": hbl,
        "filer_party_id": party or requester_eori,
        "filer_eori": requester_eori,
        "supplementary_declarant": None,
        "supplementary_declarant_eori": None,
        "booking_version": 0,
        "xml_sha256": sha256(xml),
        "xml": xml,
        "created_at": format_datetime(requested_at),
    }
    return reference, record


def _text(element: etree._Element, path: str) -> str | None:
    found = element.xpath(path, namespaces=_NSMAP)
    return (found[0].text or "").strip() or None if found else None


def read_results(data: bytes) -> ConsultationResults:
    """An IE3R08's filings; ``XMLRejected`` when the bytes are no IE3R08 or lack its reference or requester."""
    root = read_xml(data)
    if etree.QName(root).localname != "IE3R08":
        raise XMLRejected(f"{etree.QName(root).localname} is not an IE3R08")
    reference = _text(root, "i:functionalReference")
    requester = _text(root, "i:requester/i:identificationNumber")
    if reference is None or requester is None:
        raise XMLRejected("IE3R08 lacks its functional reference or requester")
    filings = tuple(
        ConsultedFiling(
            mrn=_text(e, "i:MRN") or "",
            filing=_text(e, "i:SpecificCircumstanceIndicator") or "",
            status=_text(e, "i:status") or "",
            declarant=_text(e, "i:declarant/i:identificationNumber") or "",
            lrn=_text(e, "i:LRN"),
            hbl=_text(e, "i:transportDocumentHouse/i:documentNumber"),
            last_notification=_text(e, "i:lastNotification"),
        )
        for e in root.xpath("i:filingState", namespaces=_NSMAP)
    )
    return ConsultationResults(reference, requester, _text(root, "i:transportDocument/i:documentNumber"), filings)


async def consult(
    settings: Settings,
    target: str,
    requester_eori: str,
    requested_at: datetime,
    *,
    party: str | None = None,
    hbl: str | None = None,
    timeout: float = 60.0,
) -> ConsultationResults | None:
    """Send an IE3Q05 through the gateway and wait for its IE3R08; None when none came within ``timeout``."""
    from streams.client import produce, read_topic
    from streams.contracts.avro import SchemaCatalogue

    catalogue = Catalogue.for_prefix(settings.topic_prefix)
    reference, record = consultation_request(target, requester_eori, requested_at, party=party, hbl=hbl)
    headers = [("ics2-record", b"Filing"), ("ics2-message-type", b"IE3Q05"), ("ics2-lrn", reference.encode())]
    value = SchemaCatalogue.load().encode("Filing", record)
    key = (record["mbl"] or target).encode()
    await produce(settings, catalogue.filings_outbound.name, [(key, value)], headers=headers)
    marker = reference.encode()

    def answered(records: list[Any]) -> bool:
        return any(marker in (r.value or b"") for r in records)

    records = await read_topic(settings, catalogue.notifications_inbound.name, until=answered, timeout=timeout)
    for r in records:
        if r.value and marker in r.value:
            try:
                results = read_results(r.value)
            except XMLRejected:
                continue
            if results.reference == reference:
                return results
    return None
