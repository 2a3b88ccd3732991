"""A replay from raw messages: the workers decode too.

Read back from Kafka, a replay's reading process used to decode every message before the chains could be shared
out, so fastavro's decode stayed serial. Here the reader keeps the messages' bytes, shares them out by the MBL that
the first field of an ``AuditRecord`` holds (read from the bytes without decoding the rest), and each share's
process decodes its messages, walks their chains and builds their histories. The report and the problems are those
of decoding everything in one process and calling ``build_report``: a record's chain is the same, in the same order,
wherever it is walked, and a message that does not decode is reported with the same text (its partition and offset).

A message whose MBL cannot be read that way (another schema version, not Avro at all, an MBL over 63 bytes) is
decoded by the reader to find its share, or reported there when it does not decode.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from streams.audit.decoding import BatchDecoder
from streams.audit.parallel import in_shares, share_of, worth_forking
from streams.audit.replay import ReplayFilter, assemble_report, by_chain, consolidation, selected_chains
from streams.audit.signing import Keyring
from streams.audit.trail import Break, Duplicate, Examination, walk
from streams.contracts.avro import HEADER_SIZE, SchemaCatalogue
from streams.errors import DecodeError

Key = tuple[int, int]
"""Where a message is stored: (partition, offset); in stored order when sorted."""

DECODE_CHUNK = 2048
"""Messages decoded in one container pass; a chunk with a bad message is decoded one by one."""


@dataclass(repr=False)
class RawTrail:
    """The audit topic's messages as read, not decoded: per partition (in order), (offset, value) in offset order."""

    topic: str
    partitions: dict[int, list[tuple[int, bytes]]] = field(default_factory=dict)
    offsets: dict[int, tuple[int, int]] = field(default_factory=dict)

    def __len__(self) -> int:
        return sum(len(m) for m in self.partitions.values())

    def __repr__(self) -> str:
        return f"RawTrail({self.topic!r}, {len(self)} messages)"


def not_an_audit_record(topic: str, key: Key, exc: DecodeError) -> str:
    """The problem a message that does not decode is reported as, whichever process decodes it."""
    return f"{topic}:{key[0]}:{key[1]}: not an AuditRecord: {exc}"


@contextmanager
def collection_paused() -> Iterator[None]:
    """No cyclic garbage collection meanwhile (then as before). A replay creates hundreds of thousands of dicts and
    lists and frees few: each collection the allocations trigger walks everything still alive, a fifth of a whole
    report's CPU and most of the time to unpickle what the workers send back (their forks inherit the pause)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def peeked_mbl(value: Any, prefix: bytes) -> str | None:
    """The MBL in the first field of a current ``AuditRecord`` message, read without decoding the rest; None when
    it cannot be read so (then only decoding the message tells)."""
    if type(value) is not bytes or not value.startswith(prefix) or len(value) <= HEADER_SIZE:
        return None
    length = value[HEADER_SIZE]
    if length & 0x81:
        return None
    end = HEADER_SIZE + 1 + (length >> 1)
    if end > len(value):
        return None
    try:
        return value[HEADER_SIZE + 1 : end].decode("utf-8")
    except UnicodeDecodeError:
        return None


@dataclass
class ShareReplay:
    """One share's part of the report, each finding with the key of the record it is about; ``walker`` is the id of
    the process that decoded and walked the share."""

    walker: int = 0
    records: int = 0
    chains: int = 0
    breaks: list[tuple[Key, Break]] = field(default_factory=list)
    duplicates: list[tuple[Key, Duplicate]] = field(default_factory=list)
    unsigned_accepted: int = 0
    problems: list[tuple[Key, str]] = field(default_factory=list)
    consolidations: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


@dataclass(frozen=True)
class _RawJob:
    """What the forked workers inherit: the messages of each share, how to decode them, what to check and build."""

    topic: str
    shares: list[list[tuple[Key, bytes]]]
    schemas: SchemaCatalogue
    keys: Keyring | None
    accept_unsigned: bool
    filters: ReplayFilter | None

    def replay_share(self, index: int) -> ShareReplay:
        part = ShareReplay(os.getpid())
        keys, records = self._decoded(self.shares[index], part)
        walked = walk(records, None, self.keys, self.accept_unsigned)
        found = walked.found
        part.records = len(records)
        part.breaks = [(keys[r], b) for r, b in zip(walked.break_rows, found.breaks, strict=True) if r is not None]
        part.duplicates = [(keys[r], d) for r, d in zip(walked.duplicate_rows, found.duplicates, strict=True)]
        part.unsigned_accepted = found.unsigned_accepted
        chains = by_chain(found.unique)
        part.chains = len(chains)
        if self.filters is not None:
            built = ((m, consolidation(m, chains[m], self.filters)) for m in selected_chains(chains, self.filters))
            part.consolidations = [(m, c) for m, c in built if c is not None]
        return part

    def _decoded(self, messages: list[tuple[Key, bytes]], part: ShareReplay) -> tuple[list[Key], list[dict[str, Any]]]:
        """The records of a share's messages in order, with their keys; those that do not decode go to problems."""
        decoder = BatchDecoder(self.schemas)
        keys: list[Key] = []
        records: list[dict[str, Any]] = []
        for start in range(0, len(messages), DECODE_CHUNK):
            chunk = messages[start : start + DECODE_CHUNK]
            decoded = decoder.decode([value for _, value in chunk])
            if decoded is not None:
                keys.extend(key for key, _ in chunk)
                records.extend(decoded)
                continue
            for key, value in chunk:
                try:
                    records.append(self.schemas.decode(value, reader="AuditRecord").record)
                except DecodeError as exc:
                    part.problems.append((key, not_an_audit_record(self.topic, key, exc)))
                    continue
                keys.append(key)
        return keys, records


def _share_out(
    raw: RawTrail, schemas: SchemaCatalogue, workers: int
) -> tuple[list[list[tuple[Key, bytes]]], list[tuple[Key, str]]]:
    """Each share's messages in stored order, by the MBL each names; the problems of those that do not decode."""
    shares: list[list[tuple[Key, bytes]]] = [[] for _ in range(workers)]
    problems: list[tuple[Key, str]] = []
    if workers == 1:
        shares[0] = [((p, offset), value) for p, messages in raw.partitions.items() for offset, value in messages]
        return shares, problems
    prefix = BatchDecoder(schemas).prefix
    for partition, messages in raw.partitions.items():
        for offset, value in messages:
            mbl = peeked_mbl(value, prefix)
            if mbl is None:
                try:
                    mbl = schemas.decode(value, reader="AuditRecord").record["mbl"]
                except DecodeError as exc:
                    problems.append(((partition, offset), not_an_audit_record(raw.topic, (partition, offset), exc)))
                    continue
            shares[share_of(mbl, workers)].append(((partition, offset), value))
    return shares, problems


def replay_shares(
    raw: RawTrail,
    schemas: SchemaCatalogue,
    keys: Keyring | None,
    accept_unsigned: bool,
    filters: ReplayFilter | None,
    workers: int,
) -> tuple[list[ShareReplay], list[tuple[Key, str]]]:
    """Each share's part, share 0 in this process and the others in ``workers - 1`` forked ones, and the problems
    found while sharing out (``filters`` None: chains verified, no histories built)."""
    with collection_paused():
        shares, problems = _share_out(raw, schemas, workers)
        job = _RawJob(raw.topic, shares, schemas, keys, accept_unsigned, filters)
        parts = [job.replay_share(0)] if workers == 1 else in_shares(job.replay_share, workers)
    return parts, problems


def merged(parts: list[ShareReplay]) -> Examination:
    """The shares' findings in stored order, as ``examine`` lists them (``unique`` left empty: the records stayed
    in the shares)."""
    found = Examination()
    found.breaks = [b for _, b in sorted((b for p in parts for b in p.breaks), key=itemgetter(0))]
    found.duplicates = [d for _, d in sorted((d for p in parts for d in p.duplicates), key=itemgetter(0))]
    found.unsigned_accepted = sum(p.unsigned_accepted for p in parts)
    return found


def replay_raw(
    raw: RawTrail,
    filters: ReplayFilter | None = None,
    keys: Keyring | None = None,
    accept_unsigned: bool = False,
    workers: int | None = None,
    schemas: SchemaCatalogue | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """``build_report`` of the decoded messages, and the problems of those that do not decode (in stored order),
    decoded and verified in ``workers`` processes (default: one per CPU; one for a small trail)."""
    filters = filters or ReplayFilter()
    schemas = schemas or SchemaCatalogue.load()
    parts, problems = replay_shares(raw, schemas, keys, accept_unsigned, filters, worth_forking(len(raw), workers))
    built: Mapping[str, dict[str, Any]] = dict(sorted((c for p in parts for c in p.consolidations), key=itemgetter(0)))
    report = assemble_report(
        filters,
        merged(parts),
        sum(p.records for p in parts),
        sum(p.chains for p in parts),
        keys,
        list(built.values()),
    )
    found = sorted([*problems, *(q for p in parts for q in p.problems)], key=itemgetter(0))
    return report, [text for _, text in found]
