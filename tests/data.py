"""Where the tests find their reference data: inside the repository, never beside it.

The seed co-load ships with the product (``streams/scenarios``); its expected plan and the official ICS2 v2 type
library (Apache-2.0, see ``fixtures/ics2-xsd-v2/SOURCE.md``) are test data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from streams.domain.model import Consolidation

REPO = Path(__file__).resolve().parents[1]
SEED_PATH = REPO / "streams" / "scenarios" / "seed-coload.json"
SEED_PLAN_PATH = REPO / "tests" / "scenarios" / "seed-coload.plan.json"
OFFICIAL_XSD = REPO / "tests" / "fixtures" / "ics2-xsd-v2"
#: The seed co-load's parties, each given its queue (and login) by the scenarios run against the broker.
SEED_PARTIES = ("ML-TYO", "CARRIER-A", "COLOADER-A", "COLOADER-C", "COLOADER-D")


def seed_json() -> dict[str, Any]:
    """The seed booking as JSON, a fresh copy per call so a test may change it."""
    return json.loads(SEED_PATH.read_text(encoding="utf-8"))


def seed_plan_json() -> dict[str, Any]:
    """The seed's expected plan (filings and expected filings)."""
    return json.loads(SEED_PLAN_PATH.read_text(encoding="utf-8"))


def seed_consolidation() -> Consolidation:
    """The seed booking as the model reads it."""
    return Consolidation.from_json(seed_json())


def seed_json_with_carrier_contact() -> dict[str, Any]:
    """The seed co-load; its carrier gets the ICS2 contact an F12 needs, so the carrier's booking files one."""
    data = seed_json()
    for party in data["parties"]:
        if party["id"] == "CARRIER-A":
            party["contact"] = {"email": "ens@oceanic.example", "phone": None}
    return data
