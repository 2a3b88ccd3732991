"""Drafts of our planned filings, each with its local reference number (LRN).

The LRN ties a filing to customs' registration (IE3R01) and error (IE3N99) answers, so it must be stable: the same
(MBL, HBL, filing, filer, booking version) always gives the same LRN, and a re-planned version gives a new one.
Form: filing code, ``V``, the version, then a base32 digest of all five inputs, 22 upper-case letters or digits;
versions up to 99,999,999 fit (at least 10 digest characters, 50 bits).
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime

from streams.domain.model import Consolidation
from streams.domain.planning import FilingDraft, FilingPlan, FilingType
from streams.errors import InputError

LRN_LENGTH = 22
_MIN_DIGEST = 10
"""At least 50 bits of digest, so that different inputs practically never share an LRN."""


def make_lrn(mbl: str, hbl: str | None, filing: FilingType | str, filer: str, version: int) -> str:
    """The deterministic LRN of one filing of one booking version, like ``F15V1`` + 17 base32 characters."""
    code = FilingType(filing).value
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise InputError(f"a booking version is a whole number from 0, not {version!r}")
    prefix = f"{code}V{version}"
    room = LRN_LENGTH - len(prefix)
    if room < _MIN_DIGEST:
        raise InputError(f"booking version {version} is too large to fit an LRN")
    key = "\x1f".join((mbl, hbl or "", code, filer, str(version))).encode()
    digest = base64.b32encode(hashlib.sha256(key).digest()).decode("ascii")
    return prefix + digest[:room]


def drafts_for(consolidation: Consolidation, plan: FilingPlan, issued_at: datetime) -> tuple[FilingDraft, ...]:
    """A draft for each filing of ours in the plan, in plan order; HBLs the plan reports as errors have none."""
    if issued_at.tzinfo is None:
        raise InputError("the issue time of a draft must carry a time zone")
    if plan.mbl != consolidation.mbl or plan.version != consolidation.version:
        raise InputError(
            f"the plan is for {plan.mbl} version {plan.version}, not for {consolidation.mbl} "
            f"version {consolidation.version}"
        )
    issued = issued_at.astimezone(UTC)
    return tuple(
        FilingDraft(
            consolidation=consolidation,
            planned=f,
            lrn=make_lrn(consolidation.mbl, f.hbl, f.filing, f.filer, consolidation.version),
            issued_at=issued,
        )
        for f in plan.ours()
    )
