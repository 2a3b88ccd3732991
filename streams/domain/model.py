"""The consolidation as booking systems describe it: one carrier's master B/L and the tree of house B/Ls below it.

The JSON form is the one of ``streams/scenarios/seed-coload.json`` (and of the Avro ``BookingEvent`` record);
``streams.domain.booking_json`` reads it (``Consolidation.from_json``), raising ``BookingError`` with the path of
the first field it cannot use.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from streams.errors import BookingError


class Mode(StrEnum):
    """Mode of transport of the master leg; it decides the lodging deadline."""

    DEEP_SEA_CONTAINER = "deep_sea_container"
    DEEP_SEA_BULK = "deep_sea_bulk"
    SHORT_SEA = "short_sea"


class Role(StrEnum):
    """What a party is in the consolidation."""

    CARRIER = "carrier"
    MASTER_LOADER = "master_loader"
    CO_LOADER = "co_loader"
    SHIPPER = "shipper"
    CONSIGNEE = "consignee"
    NOTIFY = "notify"
    SELLER = "seller"
    BUYER = "buyer"


@dataclass(frozen=True, slots=True)
class Address:
    """A structured address as ICS2's AddressType carries it; rule R3002 wants a street and number, or a P.O. box."""

    street: str
    city: str
    postcode: str | None
    country: str
    number: str | None = None
    """House number, kept apart from the street as ICS2 files it."""
    po_box: str | None = None
    sub_division: str | None = None
    """Region, state or prefecture."""


@dataclass(frozen=True, slots=True)
class Contact:
    email: str | None = None
    phone: str | None = None


@dataclass(frozen=True, slots=True)
class Representative:
    """A service provider that files in its own name for a party (the ``representative`` of an ICS2 filing)."""

    name: str
    eori: str
    status: str
    """CL094 representative status: 2 direct, 3 indirect representation."""
    address: Address
    contact: Contact | None = None


@dataclass(frozen=True, slots=True)
class Party:
    """A party of the booking; ``automated_filer`` says whether it files ICS2 data itself."""

    id: str
    name: str
    eori: str | None
    role: Role
    type_of_person: int
    address: Address
    automated_filer: bool = False
    contact: Contact | None = None
    representative: Representative | None = None
    """The service provider that files this party's filings for it, if any."""


@dataclass(frozen=True, slots=True)
class Packages:
    type: str
    count: int


@dataclass(frozen=True, slots=True)
class GoodsItem:
    description: str
    hs_code: str
    packages: Packages
    gross_mass_kg: float
    container: str | None = None
    un_number: str | None = None
    """UN number of dangerous goods (4 digits), if any."""


@dataclass(frozen=True, slots=True)
class Container:
    id: str
    size_type: str | None
    packed_status: str | None
    supplier_type: str | None
    seals: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class MasterBill:
    """The ocean carrier's transport document: the key every house filing links to."""

    mbl_number: str
    document_type: str
    carrier: str
    mode: Mode
    vessel_imo: str | None
    voyage: str | None
    port_of_loading: str
    loading_at: datetime
    port_of_discharge: str
    customs_office_of_first_entry: str
    transhipment_ports: tuple[str, ...] = ()
    containers: tuple[Container, ...] = ()


@dataclass(frozen=True, slots=True)
class HouseBill:
    """A house B/L; a *lowest* one (issued to the actual shipper) carries goods, shipper, seller and buyer."""

    hbl_number: str
    issuer: str
    parent: str | None
    customer: str
    shipper: str | None = None
    consignee: str | None = None
    notify_party: str | None = None
    seller: str | None = None
    buyer: str | None = None
    place_of_acceptance: str | None = None
    place_of_delivery: str | None = None
    goods: tuple[GoodsItem, ...] = ()
    f15_requested: bool = False
    """The issuer asks the master loader to file F15 for this HBL instead of F14 + F16."""
    freight_payment: str | None = None
    """CL116 method of payment of the transport charges (A cash ... Y account holder with carrier, Z not pre-paid)."""


@dataclass(frozen=True, slots=True)
class Consolidation:
    """One booking event: a master B/L, its house B/L tree and the parties they name."""

    event_id: str
    event_type: str
    occurred_at: datetime
    planning_party: str
    master: MasterBill
    house_bills: tuple[HouseBill, ...]
    parties: Mapping[str, Party]
    version: int = 1

    @property
    def mbl(self) -> str:
        return self.master.mbl_number

    @property
    def carrier(self) -> Party | None:
        return self.parties.get(self.master.carrier)

    def party(self, party_id: str | None) -> Party | None:
        """The party with this id, or None when the booking does not describe it."""
        return None if party_id is None else self.parties.get(party_id)

    def house_bill(self, hbl_number: str) -> HouseBill | None:
        return next((h for h in self.house_bills if h.hbl_number == hbl_number), None)

    def children(self, hbl_number: str) -> tuple[HouseBill, ...]:
        """The HBLs issued below this one (by the co-loader it was issued to)."""
        return tuple(h for h in self.house_bills if h.parent == hbl_number)

    def is_lowest(self, hbl: HouseBill) -> bool:
        """A lowest HBL has no HBL below it: it is the one issued to the actual shipper."""
        return not any(h.parent == hbl.hbl_number for h in self.house_bills)

    def lowest_hbls(self) -> tuple[HouseBill, ...]:
        """Every lowest HBL, in booking order (one pass for the parents, not one per HBL)."""
        parents = {h.parent for h in self.house_bills}
        return tuple(h for h in self.house_bills if h.hbl_number not in parents)

    def chain(self, hbl: HouseBill) -> tuple[HouseBill, ...]:
        """The HBLs from the master loader's (top) down to ``hbl`` itself.

        Raises ``BookingError`` on a parent that does not exist or a cycle, which no real B/L tree has.
        """
        path: list[HouseBill] = [hbl]
        seen = {hbl.hbl_number}
        current = hbl
        while current.parent is not None:
            parent = self.house_bill(current.parent)
            if parent is None:
                raise BookingError(
                    f"house bill {current.hbl_number} names parent {current.parent}, which is not in the booking"
                )
            if parent.hbl_number in seen:
                raise BookingError(f"house bills form a cycle at {parent.hbl_number}")
            seen.add(parent.hbl_number)
            path.append(parent)
            current = parent
        return tuple(reversed(path))

    def walk(self) -> Iterator[tuple[int, HouseBill]]:
        """Depth-first walk of the HBL tree as (depth, hbl), roots first, for display."""

        def visit(hbl: HouseBill, depth: int) -> Iterator[tuple[int, HouseBill]]:
            yield depth, hbl
            for child in self.children(hbl.hbl_number):
                yield from visit(child, depth + 1)

        for root in (h for h in self.house_bills if h.parent is None):
            yield from visit(root, 0)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Consolidation:
        """Build a consolidation from the booking event's JSON form (the seed's shape; ``domain.booking_json``)."""
        from streams.domain.booking_json import read_consolidation  # the reader builds these classes: no cycle

        return read_consolidation(data)

    def to_json(self) -> dict[str, Any]:
        """The booking event's JSON form, the inverse of ``from_json``."""
        from streams.domain.booking_json import consolidation_json

        return consolidation_json(self)
