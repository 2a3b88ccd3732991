"""What ``ics2 answer`` checks before publishing an answer file: its shape, and that its XML passes the XSD.

Only the correlate stage knows the referred filing (MRN, filer); stand-ins take their place here.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from streams.domain.answers import check_reference
from streams.domain.dates import format_datetime
from streams.domain.ledger import FilingRecord
from streams.domain.planning import FilingType
from streams.messages.answer_files import build_answer, render_answer
from streams.messages.answers import RfiAnswer, RfsAnswer

#: Stand-ins for what only the ledger knows, so that ``ics2 answer`` can check a file before publishing it.
_PLACEHOLDER = FilingRecord(
    mbl="MBLPLACEHOLDER",
    hbl="HBLPLACEHOLDER",
    filing=FilingType.F15,
    filer="FILER",
    planning_party="FILER",
    carrier="CARRIER",
    mrn="27NL0000000000000A",
    eoris={"NL000000000000": "FILER"},
)


def answer_request(
    kind: str,
    reference: str,
    answer: Mapping[str, Any],
    *,
    requested_at: datetime,
    mbl: str | None = None,
    requested_by: str | None = None,
    request_id: str | None = None,
) -> dict[str, Any]:
    """The ``AnswerRequest`` record for an answer file, after checking that it renders (with stand-in MRN and filer)."""
    check_answer(kind, reference, answer)
    return {
        "request_id": request_id or str(uuid.uuid4()),
        "kind": kind,
        "referral_reference": reference,
        "mbl": mbl,
        "requested_by": requested_by,
        "answer": json.dumps(answer, sort_keys=True),
        "requested_at": format_datetime(requested_at),
    }


def check_answer(kind: str, reference: str, answer: Mapping[str, Any]) -> RfiAnswer | RfsAnswer:
    """What ``ics2 answer`` can check alone: the file's shape and that the XML passes the XSD."""
    check_reference(reference)
    typed = build_answer(kind, reference, answer, _PLACEHOLDER, datetime.now(UTC).replace(microsecond=0))
    render_answer(typed)
    return typed
