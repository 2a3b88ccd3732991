"""Where the tests find their reference data: inside the repository, never beside it.

The seed co-load ships with the product (``streams/scenarios``); its expected plan and the official ICS2 v2 type
library (Apache-2.0, see ``fixtures/ics2-xsd-v2/SOURCE.md``) are test data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SEED_PATH = REPO / "streams" / "scenarios" / "seed-coload.json"
SEED_PLAN_PATH = REPO / "tests" / "scenarios" / "seed-coload.plan.json"
OFFICIAL_XSD = REPO / "tests" / "fixtures" / "ics2-xsd-v2"


def seed_json() -> dict[str, Any]:
    """The seed booking as JSON, a fresh copy per call so a test may change it."""
    return json.loads(SEED_PATH.read_text(encoding="utf-8"))


def seed_plan_json() -> dict[str, Any]:
    """The seed's expected plan (filings and expected filings)."""
    return json.loads(SEED_PLAN_PATH.read_text(encoding="utf-8"))
