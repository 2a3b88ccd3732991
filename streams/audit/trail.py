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
from collections.abc import Callable, Iterable, Mapping
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


_scan_json: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
"""The C scanner behind ``json.loads``: a whole canonical payload in one call, without the wrapper's two regex
matches (a payload with spaces around it or any error takes ``json.loads`` itself, so the outcome is the same)."""


def _payload_mbl(payload: str) -> str | None:
    """The MBL a payload names at its top level, if it is a JSON object that names one."""
    try:
        data, end = _scan_json(payload, 0)
    except (StopIteration, ValueError):
        end = -1
    if end != len(payload):
        try:
            data = json.loads(payload)
        except ValueError:
            return None
    named = data.get("mbl") if isinstance(data, dict) else None
    return named if isinstance(named, str) else None


def _faults(
    record: Mapping[str, Any], sequence: int, next_sequence: int, last_hash: str | None, keys: Keyring | None
) -> list[tuple[BreakKind, str]]:
    """What is wrong with one record, given the head of its chain before it (the next sequence and the hash the
    record must name) and the trusted keys, if any."""
    faults: list[tuple[BreakKind, str]] = []
    if sequence > next_sequence:
        faults.append((BreakKind.GAP, f"sequences {next_sequence}..{sequence - 1} are missing"))
    elif sequence < next_sequence:
        faults.append((BreakKind.OUT_OF_ORDER, f"sequence {sequence} after {next_sequence - 1}"))
    payload = record["payload"]
    payload_sha256 = record["payload_sha256"]
    if sha256_hex(payload) != payload_sha256:
        faults.append((BreakKind.PAYLOAD_CHANGED, "the payload does not match its payload_sha256"))
    previous_hash = record["previous_hash"]
    if record_hash(previous_hash, sequence, record["kind"], payload_sha256, record["recorded_at"]) != record["hash"]:
        faults.append((BreakKind.HASH_MISMATCH, "the hash does not seal the record's fields"))
    named = _payload_mbl(payload)
    if named is not None and named != record["mbl"]:
        faults.append((BreakKind.MISFILED, f"the payload belongs to MBL {named}"))
    if previous_hash != last_hash:
        before = "no record" if last_hash is None else f"record {next_sequence - 1}"
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
    """Every field of a record, so that only a byte-identical copy counts as a duplicate."""
    return tuple(record.get(k) for k in AUDIT_RECORD_FIELDS)


@dataclass
class Walked:
    """``examine``'s findings with the row (index in the records given) of each break and duplicate, so that
    findings made on parts of a trail (``streams.audit.parallel``) merge back in stored order."""

    found: Examination
    break_rows: list[int | None] = field(default_factory=list)
    """The row of the record each break is about; None for a break found against a kept head."""
    duplicate_rows: list[int] = field(default_factory=list)


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
    return walk(records, heads, keys, accept_unsigned).found


def walk(
    records: Iterable[Mapping[str, Any]],
    heads: Mapping[str, ChainHead] | None = None,
    keys: Keyring | None = None,
    accept_unsigned: bool = False,
) -> Walked:
    """``examine``, keeping the row of every finding.

    Each chain's state is one small list (next sequence, last hash, records read, the first record at each
    sequence, whether a signed record was seen): no objects per record, and a record is compared field by field
    only with one stored at the same sequence.
    """
    walked = Walked(Examination())
    found = walked.found
    chains: dict[str, list[Any]] = {}
    for row, record in enumerate(records):
        mbl = record["mbl"]
        state = chains.get(mbl)
        if state is None:
            state = chains[mbl] = [0, None, 0, {}, False]
        next_sequence, last_hash, position, seen, signed = state
        state[2] = position + 1
        sequence = int(record["sequence"])
        earlier = seen.get(sequence)
        if earlier is not None and _fingerprint(earlier) == _fingerprint(record):
            found.duplicates.append(Duplicate(mbl, sequence, position))
            walked.duplicate_rows.append(row)
            continue
        signature = record.get("signature")
        legacy = keys is not None and accept_unsigned and not signed and not signature
        faults = _faults(record, sequence, next_sequence, last_hash, None if legacy else keys)
        found.unsigned_accepted += legacy
        if signature:
            state[4] = True
        if faults:
            found.breaks.extend(Break(mbl, sequence, position, kind, detail) for kind, detail in faults)
            walked.break_rows.extend([row] * len(faults))
        found.unique.append(record)
        if earlier is None:
            seen[sequence] = record
        state[0] = max(sequence + 1, next_sequence)
        state[1] = record["hash"]
    for mbl, kept in sorted((heads or {}).items()):
        state = chains.get(mbl) or [0, None, 0, {}, False]
        breaks = _kept_head_faults(kept, state[0], state[3], state[2], keys, accept_unsigned)
        found.breaks.extend(breaks)
        walked.break_rows.extend([None] * len(breaks))
    return walked


def _kept_head_faults(
    kept: ChainHead,
    reached: int,
    seen: Mapping[int, Mapping[str, Any]],
    position: int,
    keys: Keyring | None,
    accept_unsigned: bool,
) -> list[Break]:
    """A head kept elsewhere against the chain read (``reached``: its next sequence; ``seen``: its first record at
    each sequence): cut short, naming another record, or not signed."""
    mbl, last = kept.mbl, kept.next_sequence - 1
    if reached < kept.next_sequence:
        detail = f"the chain ends at sequence {reached - 1}, the kept head at {last}"
        return [Break(mbl, reached, position, BreakKind.TRUNCATED, detail)]
    breaks = []
    if last >= 0 and last in seen and seen[last]["hash"] != kept.last_hash:
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
