"""Bundled booking scenarios (the seed co-load), for the demo and for users trying the product."""

import copy
import json
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from streams.domain.dates import format_datetime

#: The seed co-load of the ICS2 guide: one carrier MBL, a master loader and its co-loaders' HBL tree.
SEED_COLOAD = Path(__file__).with_name("seed-coload.json")

#: The seed co-load's MBL, and the demo's second consolidation's.
SEED_MBL = "OCLU26TYO7781234"
SECOND_MBL = "OCLU26TYO7790001"


def seed_booking() -> dict[str, Any]:
    """The bundled seed co-load with the carrier's ICS2 contact."""
    data = json.loads(SEED_COLOAD.read_text(encoding="utf-8"))
    for party in data["parties"]:
        if party["id"] == "CARRIER-A":
            party["contact"] = {"email": "ics2@oceanic-line.example", "phone": "+65 6555 0100"}
    return data


def as_party(booking: dict[str, Any], party: str) -> dict[str, Any]:
    """The same consolidation as booked by another party's booking system."""
    copy_ = copy.deepcopy(booking)
    copy_["planning_party"] = party
    copy_["event_id"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{booking['event_id']}/{party}"))
    return copy_


def second_booking(now: datetime) -> dict[str, Any]:
    """ML-TYO's second consolidation: two direct shippers, loading 30 hours from now."""
    data = seed_booking()
    data["event_id"] = str(uuid.uuid5(uuid.NAMESPACE_URL, SECOND_MBL))
    data["master"]["mbl_number"] = SECOND_MBL
    data["master"]["voyage"] = "043W"
    data["master"]["loading_at"] = format_datetime(now + timedelta(hours=30))
    data["master"]["containers"][0]["id"] = "TCNU7654328"
    first, second = copy.deepcopy(data["house_bills"][0]), copy.deepcopy(data["house_bills"][2])
    first["hbl_number"], second["hbl_number"] = "KSN26TYO0101", "KSN26TYO0102"
    for hbl in (first, second):
        for goods in hbl["goods"]:
            goods["container"] = "TCNU7654328"
    second["goods"][0]["description"] = "Furniture"
    data["house_bills"] = [first, second]
    return data


def bookings(now: datetime) -> list[dict[str, Any]]:
    """The demo's bookings: the seed co-load as booked by each party that files for it, and a second consolidation."""
    seed = seed_booking()
    return [
        seed,
        as_party(seed, "COLOADER-A"),
        as_party(seed, "COLOADER-D"),
        as_party(seed, "CARRIER-A"),
        second_booking(now),
    ]


def demo_parties(books: Iterable[dict[str, Any]]) -> list[str]:
    """The parties that get a queue: everyone named in the bookings but the shippers, who file nothing."""
    return sorted({p["id"] for b in books for p in b["parties"] if p["role"] != "shipper"})
