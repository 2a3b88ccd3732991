"""The audit trail's hash chain: one chain per MBL, so a changed, removed or reordered entry shows.

Each ``AuditRecord`` (``schemas/avro/AuditRecord.avsc``) carries the SHA-256 of its canonical JSON payload and a hash
over ``previous_hash|sequence|kind|payload_sha256|recorded_at``; the next record of the same MBL names that hash as
its ``previous_hash``. ``verify`` walks the records in the order they were stored and says where each chain breaks.
Cutting entries off the end of a chain cannot show in the chain itself: compare its head with a kept copy
(``ChainHead``, e.g. the archive's manifest) for that. Payloads name their MBL at the top level
(``{"mbl": ..., ...}``): the hash does not cover the record's ``mbl`` field, so that is how a record moved to another
chain shows.

Records are a pure function of what they chain (the entry, its Kafka time and the previous head) and Ed25519
signatures are deterministic, so a record chained again after a crash (written, but the head not stored) is
byte-identical to the first: ``examine`` counts it as a duplicate, while a different record under a sequence already
seen is a break. Given a ``Keyring``, every record must be signed by one of its keys (``streams.audit.signing``):
that is what stops a writer of the audit topic from appending records with recomputed hashes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from streams.audit.signing import Keyring, Signer
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
    key_id: str | None = None
    """The key that signed the record the head names (kept heads are signed, so a manifest cannot be forged)."""
    signature: str | None = None


def chain(
    previous: ChainHead, kind: str, payload: Any, recorded_at: str, signer: Signer | None = None
) -> dict[str, Any]:
    """The ``AuditRecord`` that appends ``payload`` to the chain whose head is ``previous``, signed if a signer is
    given; the same arguments always give the same record."""
    text = payload if isinstance(payload, str) else canonical_json(payload)
    payload_sha256 = sha256_hex(text)
    sequence = previous.next_sequence
    sealed = record_hash(previous.last_hash, sequence, kind, payload_sha256, recorded_at)
    return {
        "mbl": previous.mbl,
        "sequence": sequence,
        "kind": kind,
        "payload": text,
        "payload_sha256": payload_sha256,
        "previous_hash": previous.last_hash,
        "hash": sealed,
        "recorded_at": recorded_at,
        "key_id": None if signer is None else signer.key_id,
        "signature": None if signer is None else signer.sign(previous.mbl, sequence, sealed),
    }


def head_after(record: Mapping[str, Any]) -> ChainHead:
    """The chain's head once ``record`` is written, with the record's signature."""
    return ChainHead(
        record["mbl"], int(record["sequence"]) + 1, record["hash"], record.get("key_id"), record.get("signature")
    )


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
    UNSIGNED = "unsigned"
    """The record carries no signature (records from before signing existed pass only with ``accept_unsigned``)."""
    BAD_SIGNATURE = "bad_signature"
    """The record is signed, but not by a trusted key, or the signature does not verify: not written by the stage."""
    HEAD_MISMATCH = "head_mismatch"
    """A head kept elsewhere is not signed by a trusted key, or names another hash than the chain's record."""


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


def _faults(record: Mapping[str, Any], head: ChainHead, keys: Keyring | None) -> list[tuple[BreakKind, str]]:
    """What is wrong with one record, given the head of its chain before it (and the trusted keys, if any)."""
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
    if keys is not None:
        fault = keys.fault(record["mbl"], sequence, record["hash"], record.get("key_id"), record.get("signature"))
        if fault == "unsigned":
            faults.append((BreakKind.UNSIGNED, "the record carries no signature"))
        elif fault is not None:
            faults.append((BreakKind.BAD_SIGNATURE, fault))
    return faults


@dataclass(frozen=True, slots=True)
class Duplicate:
    """A record stored again byte for byte (chained again after a crash): the same fact, not a fork."""

    mbl: str
    sequence: int
    position: int

    def to_json(self) -> dict[str, Any]:
        return {"mbl": self.mbl, "sequence": self.sequence, "position": self.position}


@dataclass
class Examination:
    """What ``examine`` found: the breaks, the duplicates, the records once each, and unsigned records accepted."""

    breaks: list[Break] = field(default_factory=list)
    duplicates: list[Duplicate] = field(default_factory=list)
    unique: list[Mapping[str, Any]] = field(default_factory=list)
    unsigned_accepted: int = 0


#: Every field of an ``AuditRecord``, in the order of its schema.
AUDIT_RECORD_FIELDS = (
    "mbl",
    "sequence",
    "kind",
    "payload",
    "payload_sha256",
    "previous_hash",
    "hash",
    "recorded_at",
    "key_id",
    "signature",
)


def _fingerprint(record: Mapping[str, Any]) -> tuple[Any, ...]:
    """Every field of a record, so that only a byte-identical copy counts as a duplicate (the values are kept by
    reference: no copy, no hashing)."""
    return tuple(record.get(k) for k in AUDIT_RECORD_FIELDS)


def examine(
    records: Iterable[Mapping[str, Any]],
    heads: Mapping[str, ChainHead] | None = None,
    keys: Keyring | None = None,
    accept_unsigned: bool = False,
) -> Examination:
    """Every break in the chains of ``records``, in stored order, and every duplicate.

    ``position`` counts the records of the same MBL as read. After a break the walk goes on from the record found,
    so one tampered record gives its own breaks and not a cascade. A record equal in every field to the one already
    seen at its sequence is a duplicate and changes nothing; any other record at a sequence already seen is a break.
    ``heads`` (kept elsewhere) reveal truncation. With ``keys``, every record must be signed by one of them;
    ``accept_unsigned`` lets unsigned records pass while their chain has no signed record yet (trails written
    before signing existed), counted in ``unsigned_accepted``.
    """
    found = Examination()
    state: dict[str, ChainHead] = {}
    positions: dict[str, int] = {}
    seen: dict[str, dict[int, tuple[tuple[Any, ...], str]]] = {}
    signed: set[str] = set()
    for record in records:
        mbl = record["mbl"]
        position = positions.get(mbl, 0)
        positions[mbl] = position + 1
        head = state.get(mbl, ChainHead(mbl))
        sequence = int(record["sequence"])
        fingerprint = _fingerprint(record)
        earlier = seen.setdefault(mbl, {}).get(sequence)
        if earlier is not None and earlier[0] == fingerprint:
            found.duplicates.append(Duplicate(mbl, sequence, position))
            continue
        legacy = keys is not None and accept_unsigned and mbl not in signed and not record.get("signature")
        faults = _faults(record, head, None if legacy else keys)
        found.unsigned_accepted += legacy
        if record.get("signature"):
            signed.add(mbl)
        found.breaks.extend(Break(mbl, sequence, position, kind, detail) for kind, detail in faults)
        found.unique.append(record)
        seen[mbl].setdefault(sequence, (fingerprint, record["hash"]))
        state[mbl] = ChainHead(mbl, max(sequence + 1, head.next_sequence), record["hash"])
    for mbl, kept in sorted((heads or {}).items()):
        found.breaks.extend(
            _kept_head_faults(
                kept, state.get(mbl, ChainHead(mbl)), seen.get(mbl, {}), positions.get(mbl, 0), keys, accept_unsigned
            )
        )
    return found


def _kept_head_faults(
    kept: ChainHead,
    reached: ChainHead,
    seen: Mapping[int, tuple[tuple[Any, ...], str]],
    position: int,
    keys: Keyring | None,
    accept_unsigned: bool,
) -> list[Break]:
    """A head kept elsewhere against the chain read: cut short, naming another record, or not signed."""
    mbl, last = kept.mbl, kept.next_sequence - 1
    if reached.next_sequence < kept.next_sequence:
        detail = f"the chain ends at sequence {reached.next_sequence - 1}, the kept head at {last}"
        return [Break(mbl, reached.next_sequence, position, BreakKind.TRUNCATED, detail)]
    breaks = []
    if last >= 0 and last in seen and seen[last][1] != kept.last_hash:
        detail = f"the kept head names another hash than the chain's record {last}"
        breaks.append(Break(mbl, last, position, BreakKind.HEAD_MISMATCH, detail))
    if keys is not None and last >= 0 and kept.last_hash is not None:
        fault = keys.fault(mbl, last, kept.last_hash, kept.key_id, kept.signature)
        if fault is not None and not (fault == "unsigned" and accept_unsigned):
            breaks.append(Break(mbl, last, position, BreakKind.HEAD_MISMATCH, f"kept head: {fault}"))
    return breaks


def verify(
    records: Iterable[Mapping[str, Any]],
    heads: Mapping[str, ChainHead] | None = None,
    keys: Keyring | None = None,
    accept_unsigned: bool = False,
) -> list[Break]:
    """Every break in the chains of ``records`` (``examine``); an empty list means the trail is intact."""
    return examine(records, heads, keys, accept_unsigned).breaks
