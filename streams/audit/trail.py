"""The audit trail's hash chain: one chain per MBL, so a changed, removed or reordered entry shows.

Each ``AuditRecord`` (``schemas/avro/AuditRecord.avsc``) carries the SHA-256 of its canonical JSON payload and a hash
over ``previous_hash|sequence|kind|payload_sha256|recorded_at``; the next record of the same MBL names that hash as
its ``previous_hash``. ``verify`` walks the records in the order they were stored and says where each chain breaks.
Cutting entries off the end of a chain cannot show in the chain itself: compare its head with a kept copy
(``ChainHead``, e.g. the archive's manifest) for that. Payloads name their MBL at the top level
(``{"mbl": ..., ...}``): the hash does not cover the record's ``mbl`` field, so that is how a record moved to another
chain shows.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from streams.errors import InputError


class TrailError(InputError):
    """An audit payload that cannot be written as canonical JSON (e.g. NaN or a non-text key)."""


def canonical_json(payload: Any) -> str:
    """Sorted keys, no insignificant spaces, UTF-8 text kept as is: the same data always gives the same text."""
    try:
        return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TrailError(f"audit payload cannot be written as canonical JSON: {exc}") from exc


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def record_hash(previous_hash: str | None, sequence: int, kind: str, payload_sha256: str, recorded_at: str) -> str:
    """The hash that seals one record and links it to the one before (empty text for the first record)."""
    return sha256_hex(f"{previous_hash or ''}|{sequence}|{kind}|{payload_sha256}|{recorded_at}")


@dataclass(frozen=True, slots=True)
class ChainHead:
    """Where an MBL's chain stands: the next sequence to write and the hash the next record must name."""

    mbl: str
    next_sequence: int = 0
    last_hash: str | None = None


def chain(previous: ChainHead, kind: str, payload: Any, recorded_at: str) -> dict[str, Any]:
    """The ``AuditRecord`` that appends ``payload`` to the chain whose head is ``previous``."""
    text = payload if isinstance(payload, str) else canonical_json(payload)
    payload_sha256 = sha256_hex(text)
    sequence = previous.next_sequence
    return {
        "mbl": previous.mbl,
        "sequence": sequence,
        "kind": kind,
        "payload": text,
        "payload_sha256": payload_sha256,
        "previous_hash": previous.last_hash,
        "hash": record_hash(previous.last_hash, sequence, kind, payload_sha256, recorded_at),
        "recorded_at": recorded_at,
    }


def head_after(record: Mapping[str, Any]) -> ChainHead:
    """The chain's head once ``record`` is written."""
    return ChainHead(record["mbl"], int(record["sequence"]) + 1, record["hash"])


class BreakKind(StrEnum):
    """How a chain can break; each names what was found, not a guess at what was done."""

    PAYLOAD_CHANGED = "payload_changed"
    """The payload no longer has the SHA-256 the record states."""
    HASH_MISMATCH = "hash_mismatch"
    """The record's hash does not seal its own fields (kind, sequence, recorded_at, hashes changed)."""
    GAP = "gap"
    """Sequences are missing: entries were removed (or the first one is not 0)."""
    OUT_OF_ORDER = "out_of_order"
    """A sequence at or below one already seen: entries were swapped, repeated or moved."""
    BROKEN_LINK = "broken_link"
    """The record does not name the hash of the record stored before it."""
    MISFILED = "misfiled"
    """The payload names another MBL than the chain the record is in (the ``mbl`` field was changed)."""
    TRUNCATED = "truncated"
    """The chain ends before the head that was kept elsewhere."""


@dataclass(frozen=True, slots=True)
class Break:
    """Where one MBL's chain breaks: the record's position in what was read, its sequence, and what is wrong."""

    mbl: str
    sequence: int
    position: int
    kind: BreakKind
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {
            "mbl": self.mbl,
            "sequence": self.sequence,
            "position": self.position,
            "kind": self.kind.value,
            "detail": self.detail,
        }


def _payload_mbl(payload: str) -> str | None:
    """The MBL a payload names at its top level, if it is a JSON object that names one."""
    try:
        data = json.loads(payload)
    except ValueError:
        return None
    named = data.get("mbl") if isinstance(data, dict) else None
    return named if isinstance(named, str) else None


def _faults(record: Mapping[str, Any], head: ChainHead) -> list[tuple[BreakKind, str]]:
    """What is wrong with one record, given the head of its chain before it."""
    faults: list[tuple[BreakKind, str]] = []
    sequence = int(record["sequence"])
    if sequence > head.next_sequence:
        faults.append((BreakKind.GAP, f"sequences {head.next_sequence}..{sequence - 1} are missing"))
    elif sequence < head.next_sequence:
        faults.append((BreakKind.OUT_OF_ORDER, f"sequence {sequence} after {head.next_sequence - 1}"))
    if sha256_hex(record["payload"]) != record["payload_sha256"]:
        faults.append((BreakKind.PAYLOAD_CHANGED, "the payload does not match its payload_sha256"))
    expected = record_hash(
        record["previous_hash"], sequence, record["kind"], record["payload_sha256"], record["recorded_at"]
    )
    if expected != record["hash"]:
        faults.append((BreakKind.HASH_MISMATCH, "the hash does not seal the record's fields"))
    named = _payload_mbl(record["payload"])
    if named is not None and named != record["mbl"]:
        faults.append((BreakKind.MISFILED, f"the payload belongs to MBL {named}"))
    if record["previous_hash"] != head.last_hash:
        before = "no record" if head.last_hash is None else f"record {head.next_sequence - 1}"
        faults.append((BreakKind.BROKEN_LINK, f"previous_hash does not name the hash of {before}"))
    return faults


def verify(records: Iterable[Mapping[str, Any]], heads: Mapping[str, ChainHead] | None = None) -> list[Break]:
    """Every break in the chains of ``records``, in stored order; an empty list means the trail is intact.

    ``position`` counts the records of the same MBL as read. After a break the walk goes on from the record found,
    so one tampered record gives its own breaks and not a cascade. ``heads`` (kept elsewhere) reveal truncation.
    """
    breaks: list[Break] = []
    state: dict[str, ChainHead] = {}
    positions: dict[str, int] = {}
    for record in records:
        mbl = record["mbl"]
        position = positions.get(mbl, 0)
        positions[mbl] = position + 1
        head = state.get(mbl, ChainHead(mbl))
        sequence = int(record["sequence"])
        breaks.extend(Break(mbl, sequence, position, kind, detail) for kind, detail in _faults(record, head))
        state[mbl] = ChainHead(mbl, max(sequence + 1, head.next_sequence), record["hash"])
    for mbl, kept in sorted((heads or {}).items()):
        seen = state.get(mbl, ChainHead(mbl))
        if seen.next_sequence < kept.next_sequence:
            breaks.append(
                Break(
                    mbl,
                    seen.next_sequence,
                    positions.get(mbl, 0),
                    BreakKind.TRUNCATED,
                    f"the chain ends at sequence {seen.next_sequence - 1}, the kept head at {kept.next_sequence - 1}",
                )
            )
    return breaks
