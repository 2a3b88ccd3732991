"""The booking event's JSON form (``streams/scenarios/seed-coload.json``, the Avro ``BookingEvent``) <-> the model.

Read field by field so that every ``BookingError`` names the path of the first field it cannot use. Format checks
(EORI, HS code, ...) are not done here: they are rules of the validator, so that a booking with a bad value still
yields a plan and findings instead of a parse failure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal, overload

from streams.domain.dates import EARLIEST_DATE, LATEST_DATE, format_datetime, parse_datetime
from streams.domain.model import (
    Address,
    Consolidation,
    Contact,
    Container,
    GoodsItem,
    HouseBill,
    MasterBill,
    Mode,
    Packages,
    Party,
    Representative,
    Role,
)
from streams.errors import BookingError

MAX_VERSION = 99_999_999
"""A booking version travels in every LRN (22 characters, ``F15V<version>`` + a digest): 8 digits at most."""


def read_consolidation(data: Mapping[str, Any]) -> Consolidation:
    """Build a consolidation from the booking event's JSON form."""
    return _Reader(data).consolidation()


def consolidation_json(c: Consolidation) -> dict[str, Any]:
    """The booking event's JSON form, the inverse of ``read_consolidation``."""
    return _to_json(c)


_NOT_XML_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
"""Characters XML 1.0 cannot carry: a booking holding one could never be rendered as an ICS2 message."""


def _xml_text(value: str, path: str) -> None:
    bad = _NOT_XML_TEXT.search(value)
    if bad:
        raise BookingError(f"{path} holds the character U+{ord(bad.group()):04X}, which no ICS2 message can carry")


class _Reader:
    """Reads the JSON form field by field so that every error names its path."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        if not isinstance(data, Mapping):
            raise BookingError(f"a booking event is a JSON object, not {type(data).__name__}")
        self.data = data

    @staticmethod
    def _get(obj: Mapping[str, Any], key: str, path: str, kind: type | tuple[type, ...], required: bool = True) -> Any:
        value = obj.get(key)
        if value is None:
            if required:
                raise BookingError(f"{path}.{key} is missing")
            return None
        if kind is str and type(value) is str:  # most fields: no type to explain, the path named only on error
            if _NOT_XML_TEXT.search(value):
                _xml_text(value, f"{path}.{key}")
            return value
        if isinstance(value, bool) and kind in (int, float, (int, float)):
            raise BookingError(f"{path}.{key} must be a number, not a boolean")
        if not isinstance(value, kind):
            expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise BookingError(f"{path}.{key} must be {expected}, not {type(value).__name__} ({value!r})")
        if isinstance(value, str):
            _xml_text(value, f"{path}.{key}")
        return value

    @overload
    def _object(self, obj: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any]: ...
    @overload
    def _object(self, obj: Mapping[str, Any], key: str, path: str, required: bool) -> Mapping[str, Any] | None: ...
    def _object(self, obj: Mapping[str, Any], key: str, path: str, required: bool = True) -> Mapping[str, Any] | None:
        """A required field is never None (``_get`` raises), which the overloads tell the type checker."""
        value: Mapping[str, Any] | None = self._get(obj, key, path, Mapping, required)
        return value

    def _list(self, obj: Mapping[str, Any], key: str, path: str) -> list[Any]:
        return self._get(obj, key, path, list, required=False) or []

    @overload
    def _str(self, obj: Mapping[str, Any], key: str, path: str, required: Literal[True] = True) -> str: ...
    @overload
    def _str(self, obj: Mapping[str, Any], key: str, path: str, required: bool) -> str | None: ...
    def _str(self, obj: Mapping[str, Any], key: str, path: str, required: bool = True) -> str | None:
        value = obj.get(key)
        if type(value) is str:  # as ``_get`` reads a text field, one call fewer for most fields of a booking
            if _NOT_XML_TEXT.search(value):
                _xml_text(value, f"{path}.{key}")
            return value
        checked: str | None = self._get(obj, key, path, str, required)
        return checked

    def _datetime(self, obj: Mapping[str, Any], key: str, path: str) -> datetime:
        text = self._str(obj, key, path)
        parsed = parse_datetime(text, f"{path}.{key}")
        if not EARLIEST_DATE <= parsed <= LATEST_DATE:
            raise BookingError(f"{path}.{key}: {text!r} is not a plausible date (years 2000 to 2999 are accepted)")
        return parsed

    def consolidation(self) -> Consolidation:
        d = self.data
        master = self._master(self._object(d, "master", "$"))
        house_bills = tuple(
            self._house_bill(h, f"$.house_bills[{i}]") for i, h in enumerate(self._list(d, "house_bills", "$"))
        )
        parties: dict[str, Party] = {}
        for i, p in enumerate(self._list(d, "parties", "$")):
            party = self._party(p, f"$.parties[{i}]")
            if party.id in parties:
                raise BookingError(f"$.parties[{i}].id: party {party.id} is described twice")
            parties[party.id] = party
        numbers = [h.hbl_number for h in house_bills]
        for number in numbers:
            if numbers.count(number) > 1:
                raise BookingError(f"$.house_bills: house bill number {number} appears more than once")
        version = self._get(d, "version", "$", int, required=False)
        if version is not None and not 0 <= version <= MAX_VERSION:
            raise BookingError(f"$.version: {version} is not a booking version, a whole number from 0 to {MAX_VERSION}")
        return Consolidation(
            event_id=self._str(d, "event_id", "$"),
            event_type=self._str(d, "event_type", "$"),
            occurred_at=self._datetime(d, "occurred_at", "$"),
            planning_party=self._str(d, "planning_party", "$"),
            master=master,
            house_bills=house_bills,
            parties=parties,
            version=1 if version is None else version,
        )

    def _master(self, m: Mapping[str, Any]) -> MasterBill:
        p = "$.master"
        mode = self._str(m, "mode", p)
        try:
            parsed_mode = Mode(mode)
        except ValueError as exc:
            known = ", ".join(x.value for x in Mode)
            raise BookingError(f"{p}.mode: {mode!r} is not a known mode ({known})") from exc
        containers = tuple(
            self._container(c, f"{p}.containers[{i}]") for i, c in enumerate(self._list(m, "containers", p))
        )
        return MasterBill(
            mbl_number=self._str(m, "mbl_number", p),
            document_type=self._str(m, "document_type", p, required=False) or "N704",
            carrier=self._str(m, "carrier", p),
            mode=parsed_mode,
            vessel_imo=self._str(m, "vessel_imo", p, required=False),
            voyage=self._str(m, "voyage", p, required=False),
            port_of_loading=self._str(m, "port_of_loading", p),
            loading_at=self._datetime(m, "loading_at", p),
            port_of_discharge=self._str(m, "port_of_discharge", p),
            customs_office_of_first_entry=self._str(m, "customs_office_of_first_entry", p),
            transhipment_ports=tuple(self._strings(m, "transhipment_ports", p)),
            containers=containers,
        )

    def _strings(self, obj: Mapping[str, Any], key: str, path: str) -> list[str]:
        values = self._list(obj, key, path)
        for i, v in enumerate(values):
            if not isinstance(v, str):
                raise BookingError(f"{path}.{key}[{i}] must be str, not {type(v).__name__}")
            _xml_text(v, f"{path}.{key}[{i}]")
        return values

    def _container(self, c: Mapping[str, Any], p: str) -> Container:
        if not isinstance(c, Mapping):
            raise BookingError(f"{p} must be an object")
        return Container(
            id=self._str(c, "id", p),
            size_type=self._str(c, "size_type", p, required=False),
            packed_status=self._str(c, "packed_status", p, required=False),
            supplier_type=self._str(c, "supplier_type", p, required=False),
            seals=tuple(self._strings(c, "seals", p)),
        )

    def _house_bill(self, h: Mapping[str, Any], p: str) -> HouseBill:
        if not isinstance(h, Mapping):
            raise BookingError(f"{p} must be an object")
        goods = tuple(self._goods(g, f"{p}.goods[{i}]") for i, g in enumerate(self._list(h, "goods", p)))
        return HouseBill(
            hbl_number=self._str(h, "hbl_number", p),
            issuer=self._str(h, "issuer", p),
            parent=self._str(h, "parent", p, required=False),
            customer=self._str(h, "customer", p),
            shipper=self._str(h, "shipper", p, required=False),
            consignee=self._str(h, "consignee", p, required=False),
            notify_party=self._str(h, "notify_party", p, required=False),
            seller=self._str(h, "seller", p, required=False),
            buyer=self._str(h, "buyer", p, required=False),
            place_of_acceptance=self._str(h, "place_of_acceptance", p, required=False),
            place_of_delivery=self._str(h, "place_of_delivery", p, required=False),
            goods=goods,
            f15_requested=bool(self._get(h, "f15_requested", p, bool, required=False)),
            freight_payment=self._str(h, "freight_payment", p, required=False),
        )

    def _goods(self, g: Mapping[str, Any], p: str) -> GoodsItem:
        if not isinstance(g, Mapping):
            raise BookingError(f"{p} must be an object")
        packages = self._object(g, "packages", p)
        count = self._get(packages, "count", f"{p}.packages", int)
        return GoodsItem(
            description=self._str(g, "description", p),
            hs_code=self._str(g, "hs_code", p),
            packages=Packages(type=self._str(packages, "type", f"{p}.packages"), count=count),
            gross_mass_kg=float(self._get(g, "gross_mass_kg", p, (int, float))),
            container=self._str(g, "container", p, required=False),
            un_number=self._str(g, "un_number", p, required=False),
        )

    def _party(self, d: Mapping[str, Any], p: str) -> Party:
        if not isinstance(d, Mapping):
            raise BookingError(f"{p} must be an object")
        role = self._str(d, "role", p)
        try:
            parsed_role = Role(role)
        except ValueError as exc:
            raise BookingError(f"{p}.role: {role!r} is not a known role") from exc
        type_of_person = self._get(d, "type_of_person", p, int, required=False)
        representative = self._object(d, "representative", p, required=False)
        return Party(
            id=self._str(d, "id", p),
            name=self._str(d, "name", p),
            eori=self._str(d, "eori", p, required=False),
            role=parsed_role,
            type_of_person=2 if type_of_person is None else type_of_person,
            address=self._address(d, p),
            automated_filer=bool(self._get(d, "automated_filer", p, bool, required=False)),
            contact=self._contact(d, p),
            representative=None
            if representative is None
            else self._representative(representative, f"{p}.representative"),
        )

    def _address(self, obj: Mapping[str, Any], p: str) -> Address:
        a = self._object(obj, "address", p)
        ap = f"{p}.address"
        return Address(
            street=self._str(a, "street", ap),
            city=self._str(a, "city", ap),
            postcode=self._str(a, "postcode", ap, required=False),
            country=self._str(a, "country", ap),
            number=self._str(a, "number", ap, required=False),
            po_box=self._str(a, "po_box", ap, required=False),
            sub_division=self._str(a, "sub_division", ap, required=False),
        )

    def _contact(self, obj: Mapping[str, Any], p: str) -> Contact | None:
        contact = self._object(obj, "contact", p, required=False)
        if contact is None:
            return None
        return Contact(
            email=self._str(contact, "email", f"{p}.contact", required=False),
            phone=self._str(contact, "phone", f"{p}.contact", required=False),
        )

    def _representative(self, r: Mapping[str, Any], p: str) -> Representative:
        return Representative(
            name=self._str(r, "name", p),
            eori=self._str(r, "eori", p),
            status=self._str(r, "status", p),
            address=self._address(r, p),
            contact=self._contact(r, p),
        )


def _to_json(c: Consolidation) -> dict[str, Any]:
    m = c.master
    return {
        "event_id": c.event_id,
        "event_type": c.event_type,
        "occurred_at": format_datetime(c.occurred_at),
        "planning_party": c.planning_party,
        "version": c.version,
        "master": {
            "mbl_number": m.mbl_number,
            "document_type": m.document_type,
            "carrier": m.carrier,
            "mode": m.mode.value,
            "vessel_imo": m.vessel_imo,
            "voyage": m.voyage,
            "port_of_loading": m.port_of_loading,
            "loading_at": format_datetime(m.loading_at),
            "port_of_discharge": m.port_of_discharge,
            "customs_office_of_first_entry": m.customs_office_of_first_entry,
            "transhipment_ports": list(m.transhipment_ports),
            "containers": [
                {
                    "id": k.id,
                    "size_type": k.size_type,
                    "packed_status": k.packed_status,
                    "supplier_type": k.supplier_type,
                    "seals": list(k.seals),
                }
                for k in m.containers
            ],
        },
        "house_bills": [
            {
                "hbl_number": h.hbl_number,
                "issuer": h.issuer,
                "parent": h.parent,
                "customer": h.customer,
                "shipper": h.shipper,
                "consignee": h.consignee,
                "notify_party": h.notify_party,
                "seller": h.seller,
                "buyer": h.buyer,
                "place_of_acceptance": h.place_of_acceptance,
                "place_of_delivery": h.place_of_delivery,
                "f15_requested": h.f15_requested,
                "freight_payment": h.freight_payment,
                "goods": [
                    {
                        "description": g.description,
                        "hs_code": g.hs_code,
                        "packages": {"type": g.packages.type, "count": g.packages.count},
                        "gross_mass_kg": g.gross_mass_kg,
                        "container": g.container,
                        "un_number": g.un_number,
                    }
                    for g in h.goods
                ],
            }
            for h in c.house_bills
        ],
        "parties": [
            {
                "id": p.id,
                "name": p.name,
                "eori": p.eori,
                "role": p.role.value,
                "type_of_person": p.type_of_person,
                "address": _address_json(p.address),
                "automated_filer": p.automated_filer,
                "contact": _contact_json(p.contact),
                "representative": None if p.representative is None else _representative_json(p.representative),
            }
            for p in c.parties.values()
        ],
    }


def _address_json(a: Address) -> dict[str, Any]:
    return {
        "street": a.street,
        "number": a.number,
        "po_box": a.po_box,
        "postcode": a.postcode,
        "city": a.city,
        "sub_division": a.sub_division,
        "country": a.country,
    }


def _contact_json(contact: Contact | None) -> dict[str, Any] | None:
    return None if contact is None else {"email": contact.email, "phone": contact.phone}


def _representative_json(r: Representative) -> dict[str, Any]:
    return {
        "name": r.name,
        "eori": r.eori,
        "status": r.status,
        "address": _address_json(r.address),
        "contact": _contact_json(r.contact),
    }
