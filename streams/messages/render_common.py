"""Building blocks shared by the ICS2 renderers: qualified elements, party blocks, the filing header, final checks.

Every renderer builds its tree through ``Render`` so that a value the message needs and the booking lacks becomes a
``RenderError`` naming the element and the HBL (or the MBL for the master level), never an incomplete message.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from functools import lru_cache
from typing import TypeVar

from lxml import etree

from streams.domain.dates import format_datetime
from streams.domain.model import Address, Consolidation, Contact, HouseBill, Party
from streams.domain.planning import FilingDraft
from streams.errors import RenderError
from streams.messages import NS
from streams.messages.safe import DEFAULT_MAX_BYTES
from streams.messages.schemas import XsdViolation, conforms, validate

T = TypeVar("T")

#: CL754: the ocean carrier's master bill of lading, the key every house filing links to.
MASTER_BILL_TYPE = "N704"
#: CL754: house bill of lading.
HOUSE_BILL_TYPE = "N714"
#: CL018: maritime transport.
MODE_MARITIME = "1"
#: CL750: the vessel is identified by its IMO ship identification number.
IMO_IDENTIFICATION = "10"
#: CL745 supplementary filing type of the house filers an F12 names (they file the house level: F15 or F14).
HOUSE_LEVEL_FILING = "1"
#: CL745 supplementary filing type of the declarant an F14 names (it files the lowest HBL's F16: sub-house level).
SUB_HOUSE_LEVEL_FILING = "2"
#: CL707 communication types.
EMAIL = "EM"
PHONE = "TE"

_MICRO = Decimal("0.000001")


#: Qualified tags by element name, made once: a filing appends about a hundred elements.
_TAGS: dict[str, str] = {}


def q(name: str) -> str:
    """The qualified tag of an ICS2 element."""
    tag = _TAGS.get(name)
    if tag is None:
        tag = _TAGS[name] = f"{{{NS}}}{name}"
    return tag


def sub(parent: etree._Element, name: str, text: str | int | None = None) -> etree._Element:
    """Append a qualified child, with text when given."""
    child = etree.SubElement(parent, q(name))
    if text is not None:
        child.text = text if type(text) is str else str(text)
    return child


def new_root(message_type: str) -> etree._Element:
    return etree.Element(q(message_type), nsmap={None: NS})


def decimal_text(value: float | Decimal) -> str:
    """n..16,6 without exponent or trailing zeros: 820.5, 1450, 0.25."""
    number = value if isinstance(value, Decimal) else Decimal(repr(value))
    return format(number.quantize(_MICRO, rounding=ROUND_HALF_EVEN).normalize(), "f")


def country_of(locode: str) -> str:
    """The country part of a UN/LOCODE (``JPTYO`` -> ``JP``)."""
    return locode[:2].upper()


def routing(stops: Iterable[str | None]) -> list[str]:
    """Countries in the order the stops are passed, a country repeated only when the route returns to it."""
    countries: list[str] = []
    for stop in stops:
        if stop and (not countries or countries[-1] != country_of(stop)):
            countries.append(country_of(stop))
    return countries


@dataclass(frozen=True, slots=True)
class Render:
    """One draft being rendered: finds the data, and names the element and the HBL when something is missing."""

    draft: FilingDraft

    @property
    def consolidation(self) -> Consolidation:
        return self.draft.consolidation

    @property
    def message_type(self) -> str:
        return self.draft.planned.filing.message_type

    def where(self) -> str:
        planned = self.draft.planned
        bill = f"HBL {planned.hbl}" if planned.hbl else f"MBL {self.consolidation.mbl}"
        return f"{self.message_type} for {bill} (LRN {self.draft.lrn})"

    def fail(self, element: str, reason: str) -> RenderError:
        return RenderError(f"{self.where()}: cannot fill {element}: {reason}")

    def need(self, value: T | None, element: str, reason: str) -> T:
        """The value, or a ``RenderError`` naming the element when it is missing or empty."""
        if value is None or value == "" or value == ():
            raise self.fail(element, reason)
        return value

    def party(self, party_id: str | None, element: str) -> Party:
        party_id = self.need(party_id, element, "the booking names no party for it")
        return self.need(self.consolidation.party(party_id), element, f"party {party_id} is not in the booking")

    def eori(self, party: Party, element: str) -> str:
        return self.need(party.eori, element, f"party {party.id} has no EORI")

    def house_bill(self) -> HouseBill:
        number = self.need(self.draft.planned.hbl, "transportDocumentHouseLevel", "the planned filing names no HBL")
        return self.need(
            self.consolidation.house_bill(number), "transportDocumentHouseLevel", "the HBL is not in the booking"
        )

    def carrier_eori(self, element: str = "carrier/identificationNumber") -> str:
        carrier = self.party(self.consolidation.master.carrier, element)
        return self.eori(carrier, element)


def address_block(parent: etree._Element, name: str, address: Address) -> etree._Element:
    """The address in the order of ICS2's AddressType: city, country, sub-division, street, post code, number, box."""
    block = sub(parent, name)
    sub(block, "city", address.city)
    sub(block, "country", address.country)
    for element, value in (
        ("subDivision", address.sub_division),
        ("street", address.street),
        ("postCode", address.postcode),
        ("number", address.number),
        ("poBox", address.po_box),
    ):
        if value:
            sub(block, element, value)
    return block


def communications(parent: etree._Element, party: Party) -> int:
    """The party's e-mail and phone as ``communication`` blocks; returns how many were written."""
    return contact_blocks(parent, party.contact)


def contact_blocks(parent: etree._Element, contact: Contact | None) -> int:
    """E-mail and phone as ``communication`` blocks; returns how many were written."""
    written = 0
    for identifier, kind in ((contact.email, EMAIL), (contact.phone, PHONE)) if contact else ():
        if identifier:
            block = sub(parent, "communication")
            sub(block, "identifier", identifier)
            sub(block, "type", kind)
            written += 1
    return written


def party_block(parent: etree._Element, name: str, party: Party) -> etree._Element:
    """Consignor, consignee, notify party, buyer or seller: name, EORI if any, type of person, address, contact.

    Copied from the block written once per party: the same parties fill block after block, filing after filing,
    and copying a block costs a fraction of writing it element by element."""
    block = _copy(_party_template(name, party))
    parent.append(block)
    return block


def _copy(template: etree._Element) -> etree._Element:
    """A deep copy of a kept block: lxml's own copy, without ``copy.deepcopy``'s memo, which a tree never needs."""
    return template.__deepcopy__(None)


@lru_cache(maxsize=1024)
def _party_template(name: str, party: Party) -> etree._Element:
    """The block ``party_block`` copies, under a root of its own that no filing holds (the party is immutable)."""
    block = sub(new_root("PartyTemplate"), name)
    sub(block, "name", party.name)
    if party.eori:
        sub(block, "identificationNumber", party.eori)
    sub(block, "typeOfPerson", party.type_of_person)
    address_block(block, "address", party.address)
    communications(block, party)
    return block


def identified(parent: etree._Element, name: str, eori: str) -> etree._Element:
    block = sub(parent, name)
    sub(block, "identificationNumber", eori)
    return block


def transport_document(parent: etree._Element, name: str, number: str, doc_type: str) -> etree._Element:
    block = sub(parent, name)
    sub(block, "documentNumber", number)
    sub(block, "type", doc_type)
    return block


def place(parent: etree._Element, name: str, locode: str) -> etree._Element:
    block = sub(parent, name)
    sub(block, "UNLOCODE", locode)
    return block


def routing_block(parent: etree._Element, name: str, countries: list[str]) -> None:
    for number, country in enumerate(countries, start=1):
        block = sub(parent, name)
        sub(block, "sequenceNumber", number)
        sub(block, "country", country)


def filing_header(root: etree._Element, ctx: Render) -> None:
    """LRN, issue date, the filing type as specific circumstance indicator, the member state of first entry, and
    the filer's representative when a service provider files for it."""
    draft = ctx.draft
    sub(root, "LRN", ctx.need(draft.lrn, "LRN", "the draft has no LRN"))
    sub(root, "documentIssueDate", format_datetime(draft.issued_at))
    sub(root, "SpecificCircumstanceIndicator", draft.planned.filing.value)
    office = ctx.need(
        ctx.consolidation.master.customs_office_of_first_entry,
        "addressedMemberState/country",
        "the booking names no customs office of first entry",
    )
    sub(sub(root, "addressedMemberState"), "country", country_of(office))
    filer = ctx.party(draft.planned.filer, "declarant")
    representative = filer.representative
    if representative is not None:
        block = sub(root, "representative")
        sub(block, "name", representative.name)
        sub(block, "identificationNumber", representative.eori)
        sub(block, "status", representative.status)
        address_block(block, "address", representative.address)
        if not contact_blocks(block, representative.contact):
            raise ctx.fail("representative/communication", f"the representative of {filer.id} has no e-mail or phone")


def declarant_block(root: etree._Element, ctx: Render) -> None:
    """The filer, with EORI, address and at least one way to reach it (copied, as ``party_block``)."""
    filer = ctx.party(ctx.draft.planned.filer, "declarant")
    eori = ctx.eori(filer, "declarant/identificationNumber")
    block, reachable = _declarant_template(filer, eori)
    if not reachable:
        raise ctx.fail("declarant/communication", f"party {filer.id} has no e-mail or phone")
    root.append(_copy(block))


@lru_cache(maxsize=1024)
def _declarant_template(filer: Party, eori: str) -> tuple[etree._Element, bool]:
    """The declarant block of a filer, and whether it names a way to reach the filer."""
    block = sub(new_root("DeclarantTemplate"), "declarant")
    sub(block, "name", filer.name)
    sub(block, "identificationNumber", eori)
    address_block(block, "address", filer.address)
    return block, communications(block, filer) > 0


def finish(root: etree._Element, message_type: str, where: str) -> bytes:
    """Serialise as UTF-8 with a declaration and check it against the project's XSD before it leaves.

    The tree just built is checked as it is; only one that fails (or one too large for the XML reader) is checked
    again from its bytes, as customs will read them, so that the error names its lines as it always did."""
    data: bytes = etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)
    if len(data) <= DEFAULT_MAX_BYTES and conforms(root, message_type):
        return data
    try:
        validate(data, message_type)
    except XsdViolation as exc:
        raise RenderError(f"{where}: the rendered message breaks its schema: {exc}") from exc
    return data
