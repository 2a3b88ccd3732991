"""Completeness: every record of every recorded topic chained exactly once, and every entry true to its record.

The hash chains and signatures show a record changed, removed or reordered within a chain, but not a source record that
never reached the trail (a collector that lost it, the trail's last records removed) nor an entry made up for a record
that never existed. ``check`` compares what the trail claims (each chained record's ``source`` and ``source_sha256``,
read from its payload: ``claims_of``) with the recorded topics themselves (``Sources``: the offset and the SHA-256 of
the value of every record, read by ``streams.audit.reading.read_sources``):

- every record from its partition's start (the log start offset, once retention removed the head) up to the
  partition's ``bound`` (the worker's committed position, or the partition's end) is chained, or its entry still
  waits on ``audit-entries`` (``pending``); else a ``gap`` names the offsets;
- no record is chained as two different records (``double``; byte-identical copies, chained again after a crash, are
  duplicates and were removed before);
- every chained record, below the bound or not, names a record that exists (``unknown_source``) and the SHA-256 of
  its value (``digest_mismatch``, ``undigested``, ``no_source``). Records chained from offsets retention has removed
  are counted (``expired``): there is nothing left to compare them with.

Findings are sorted by where they are, so the same trail and topics always give the same findings, whichever process
walked which chain.
"""

from __future__ import annotations

import itertools
import json
import re
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from streams.audit.entries import UNATTRIBUTED

Where = tuple[str, int]
"""A partition of a recorded topic: (topic, partition)."""

DIGEST_BYTES = 32
NO_DIGEST = bytes(DIGEST_BYTES)
"""Stands for the digest of an entry that gives none (such entries are also listed, so it is never compared)."""

_TAIL = re.compile(r',"source":"([^"\\]+:[0-9]{1,18}):([0-9]{1,18})"(?:,"source_sha256":"([0-9a-f]{64})")?\}')
"""How a canonical payload ends (keys sorted: ``source`` and ``source_sha256`` come last). Every quote in it is a real
token boundary (none is preceded by a backslash), so in a JSON object that ends so these are its last two members,
the ones ``json.loads`` keeps; anything else is parsed whole."""


@dataclass
class PartitionClaims:
    """The chained records that name one partition, in the order met, as columns: the offset each names, the digest
    it gives (``NO_DIGEST`` when none), and which record it is (chain number in ``Claims.mbls``, sequence)."""

    offsets: array[int] = field(default_factory=lambda: array("q"))
    digests: bytearray = field(default_factory=bytearray)
    chains: array[int] = field(default_factory=lambda: array("q"))
    sequences: array[int] = field(default_factory=lambda: array("q"))
    undigested: list[int] = field(default_factory=list)
    """Rows of records that give no digest."""


@dataclass
class Claims:
    """What the chained records say they were made of, by source partition (``topic:partition``): columns that pickle
    as bytes, so that replay workers send them back for next to nothing."""

    mbls: list[str] = field(default_factory=list)
    chain_numbers: dict[str, int] = field(default_factory=dict)
    partitions: dict[str, PartitionClaims] = field(default_factory=dict)
    unsourced: list[tuple[str | None, str, int]] = field(default_factory=list)
    """(source as named, MBL, sequence) of records that name no ``topic:partition:offset``."""
    count: int = 0
    unattributed: int = 0

    def add(self, record: Mapping[str, Any]) -> None:
        """One chained record's claim, read from its payload's tail when the payload is canonical (a tenth of parsing
        a payload of a few kilobytes), else by parsing it."""
        mbl, sequence, payload = record["mbl"], int(record["sequence"]), record["payload"]
        self.count += 1
        self.unattributed += mbl == UNATTRIBUTED
        start = payload.rfind(',"source":"')
        match = _TAIL.fullmatch(payload, start) if start > 0 and payload[:1] == "{" else None
        if match is not None:
            where, offset, digest = match.group(1), int(match.group(2)), match.group(3)
        else:
            parsed = _parsed_claim(payload)
            if parsed is None:
                self.unsourced.append((_named_source(payload), mbl, sequence))
                return
            where, offset, digest = parsed
        number = self.chain_numbers.get(mbl)
        if number is None:
            number = self.chain_numbers[mbl] = len(self.mbls)
            self.mbls.append(mbl)
        claims = self.partitions.get(where)
        if claims is None:
            claims = self.partitions[where] = PartitionClaims()
        if digest is None:
            claims.undigested.append(len(claims.offsets))
        claims.offsets.append(offset)
        claims.digests += NO_DIGEST if digest is None else bytes.fromhex(digest)
        claims.chains.append(number)
        claims.sequences.append(sequence)


_NUMBER = re.compile("[0-9]{1,18}")
"""A partition or offset (a Kafka offset is a signed 64-bit number: more digits are no offset)."""


def _named_source(payload: str) -> str | None:
    try:
        data = json.loads(payload)
    except ValueError:
        return None
    source = data.get("source") if isinstance(data, dict) else None
    return source if isinstance(source, str) else None


def _parsed_claim(payload: str) -> tuple[str, int, str | None] | None:
    """(``topic:partition``, offset, digest) of a payload that is not canonical, None when it names no source."""
    try:
        data = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("source"), str):
        return None
    where, _, offset = data["source"].rpartition(":")
    topic, _, partition = where.rpartition(":")
    if not (topic and _NUMBER.fullmatch(partition) and _NUMBER.fullmatch(offset)):
        return None
    digest = data.get("source_sha256")
    valid = isinstance(digest, str) and re.fullmatch("[0-9a-f]{64}", digest) is not None
    return where, int(offset), digest if valid else None


def claims_of(records: Iterable[Mapping[str, Any]]) -> Claims:
    claims = Claims()
    for record in records:
        claims.add(record)
    return claims


@dataclass
class SourcePartition:
    """One partition of a recorded topic as read: its start and end when read, the bound below which every record
    must be chained, and each record's offset and value digest (32 bytes each, in offset order)."""

    topic: str
    partition: int
    start: int
    end: int
    bound: int
    offsets: array[int] = field(default_factory=lambda: array("q"))
    digests: bytearray = field(default_factory=bytearray)

    def index(self, offset: int) -> int | None:
        """Where the record at ``offset`` is in ``offsets``, None when there is no record there."""
        offsets = self.offsets
        if not offsets:
            return None
        at = offset - offsets[0]
        if not (0 <= at < len(offsets) and offsets[at] == offset):
            at = bisect_left(offsets, offset)
            if at >= len(offsets) or offsets[at] != offset:
                return None
        return at

    def digest(self, index: int) -> bytes:
        return bytes(self.digests[index * DIGEST_BYTES : (index + 1) * DIGEST_BYTES])


class Reach(StrEnum):
    """How far a replay checks that the recorded topics are chained."""

    COMMITTED = "committed"
    """Up to the positions the worker's consumer group committed: what the collectors have taken."""
    END = "end"
    """Up to each partition's end: for a stopped worker that has caught up."""
    OFF = "off"
    """Not at all (e.g. an archive whose topics retention has emptied)."""


@dataclass
class Sources:
    """The recorded topics as read for a replay, and how far each partition must be chained."""

    reach: Reach
    group: str | None
    """The consumer group whose positions bound the check (None for ``end``)."""
    partitions: dict[Where, SourcePartition] = field(default_factory=dict)
    topics: tuple[str, ...] = ()
    """Every recorded topic, whether it exists or not."""
    pending: dict[Where, set[int]] = field(default_factory=dict)
    """Source offsets whose entries wait on ``audit-entries``, not chained yet."""
    uncommitted: list[Where] = field(default_factory=list)
    """Partitions holding records on which the collector's group has committed no position (``committed`` reach):
    nothing of them is checked to be chained, which a group renamed or never run would otherwise hide."""


class LackKind(StrEnum):
    """What completeness can find; each names what was found, not a guess at what was done."""

    GAP = "gap"
    """Records of a recorded topic below the bound that no chained record names."""
    DOUBLE = "double"
    """A record named by two or more different chained records."""
    UNKNOWN_SOURCE = "unknown_source"
    """A chained record names a topic, partition or offset that holds no recorded record."""
    DIGEST_MISMATCH = "digest_mismatch"
    """A chained record's ``source_sha256`` is not the SHA-256 of the value of the record it names."""
    UNDIGESTED = "undigested"
    """A chained record names its source without its SHA-256 (written before entries carried it)."""
    NO_SOURCE = "no_source"
    """A chained record names no source at all, or one that is not ``topic:partition:offset``."""


@dataclass(frozen=True, slots=True)
class Lack:
    """One completeness finding: where (topic, partition, offsets ``first..last``), how many source records, the
    chained records concerned as (MBL, sequence), and what is wrong."""

    kind: LackKind
    topic: str | None
    partition: int | None
    first: int | None
    last: int | None
    records: int
    entries: tuple[tuple[str, int], ...]
    detail: str

    def order(self) -> tuple[Any, ...]:
        return (
            self.topic or "",
            -1 if self.partition is None else self.partition,
            -1 if self.first is None else self.first,
            self.kind.value,
            self.entries,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "topic": self.topic,
            "partition": self.partition,
            "first": self.first,
            "last": self.last,
            "records": self.records,
            "entries": [{"mbl": m, "sequence": s} for m, s in self.entries],
            "detail": self.detail,
        }


@dataclass
class Completeness:
    """What ``check`` found, and what it covered."""

    sources: Sources
    lacks: list[Lack] = field(default_factory=list)
    pending: list[tuple[str, int, int, int, int]] = field(default_factory=list)
    """Unchained records whose entries wait on ``audit-entries``: (topic, partition, first, last, records)."""
    checked: int = 0
    """Source records below the bounds (each must be chained or pending)."""
    chained: int = 0
    expired: int = 0
    unattributed: int = 0

    def to_json(self) -> dict[str, Any]:
        parts = sorted(self.sources.partitions.values(), key=lambda p: (p.topic, p.partition))
        return {
            "checked": True,
            "to": self.sources.reach.value,
            "group": self.sources.group,
            "records_checked": self.checked,
            "chained": self.chained,
            "expired": self.expired,
            "unattributed": self.unattributed,
            "partitions": [
                {"topic": p.topic, "partition": p.partition, "from": p.start, "to": p.bound, "end": p.end}
                for p in parts
            ],
            "pending": [
                {"topic": t, "partition": p, "first": a, "last": b, "records": n} for t, p, a, b, n in self.pending
            ],
            "uncommitted": [{"topic": t, "partition": p} for t, p in sorted(self.sources.uncommitted)],
            "lacks": [lack.to_json() for lack in self.lacks],
        }


UNCHECKED: dict[str, Any] = {"checked": False}
"""The report's completeness when it was not checked (archives by default, ``--completeness off``)."""


def _runs(offsets: list[int], indexes: list[int]) -> list[tuple[int, int, int]]:
    """Offsets at consecutive ``indexes`` (among the records that exist) as (first, last, count) runs: a run may span
    offsets that hold no record (compacted, transaction markers)."""
    runs: list[list[int]] = []
    for offset, index in zip(offsets, indexes, strict=True):
        if runs and index == runs[-1][3] + 1:
            run = runs[-1]
            run[1], run[2], run[3] = offset, run[2] + 1, index
        else:
            runs.append([offset, offset, 1, index])
    return [(first, last, count) for first, last, count, _ in runs]


class _Named:
    """Every claim on one partition, the shares' columns end to end, and which record each row is."""

    def __init__(self, groups: Sequence[tuple[Claims, PartitionClaims]]) -> None:
        self.groups = groups
        self.starts: list[int] = []
        self.offsets: array[int] = array("q")
        self.digests = bytearray()
        self.undigested: set[int] = set()
        for _, claims in groups:
            base = len(self.offsets)
            self.starts.append(base)
            self.offsets.extend(claims.offsets)
            self.digests += claims.digests
            self.undigested.update(base + row for row in claims.undigested)

    def entry(self, row: int) -> tuple[str, int]:
        """(MBL, sequence) of the record at ``row``."""
        group = bisect_right(self.starts, row) - 1
        owner, claims = self.groups[group]
        local = row - self.starts[group]
        return owner.mbls[claims.chains[local]], claims.sequences[local]

    def digest(self, row: int) -> bytes:
        return bytes(self.digests[row * DIGEST_BYTES : (row + 1) * DIGEST_BYTES])


class _Checker:
    """One pass over the claims, partition by partition."""

    def __init__(self, sources: Sources) -> None:
        self.sources = sources
        self.found = Completeness(sources)
        self.recorded = set(sources.topics)

    def lack(
        self, kind: LackKind, where: tuple[str, int, int] | None, entries: list[tuple[str, int]], why: str
    ) -> None:
        topic, partition, offset = where if where is not None else (None, None, None)
        self.found.lacks.append(Lack(kind, topic, partition, offset, offset, 1, tuple(sorted(entries)), why))

    def run(self, parts: Sequence[Claims]) -> Completeness:
        found = self.found
        groups: dict[Where, list[tuple[Claims, PartitionClaims]]] = {}
        for claims in parts:
            found.chained += claims.count
            found.unattributed += claims.unattributed
            for source, mbl, sequence in claims.unsourced:
                what = "names no source" if source is None else f"names {source!r}, not topic:partition:offset"
                self.lack(LackKind.NO_SOURCE, None, [(mbl, sequence)], f"the entry {what}")
            for key, claimed in claims.partitions.items():
                topic, _, partition = key.rpartition(":")
                groups.setdefault((topic, int(partition)), []).append((claims, claimed))
        for where in sorted(set(groups) | set(self.sources.partitions)):
            self.partition(where, _Named(groups.get(where, [])))
        found.lacks.sort(key=Lack.order)
        return found

    def partition(self, where: Where, named: _Named) -> None:
        topic, number = where
        part = self.sources.partitions.get(where)
        if part is None:
            why = f"partition {number} of {topic} does not exist" if topic in self.recorded else "not a recorded topic"
            for offset, rows in sorted(self.by_offset(named).items()):
                self.lack(LackKind.UNKNOWN_SOURCE, (topic, number, offset), [named.entry(r) for r in rows], why)
            return
        order = sorted(range(len(named.offsets)), key=named.offsets.__getitem__)
        claimed = array("q", [named.offsets[r] for r in order])
        below = bisect_left(part.offsets, part.bound)
        if self.all_true(part, named, order, claimed):
            first = bisect_left(part.offsets, claimed[0]) if claimed else 0
            last = first + len(claimed)
            self.gaps(part, below, itertools.chain(range(min(first, below)), range(last, below)))
            return
        rows_at = self.by_offset(named)
        for offset, rows in sorted(rows_at.items()):
            self.claimed(part, offset, rows, named)
        self.gaps(part, below, (i for i in range(below) if part.offsets[i] not in rows_at))

    @staticmethod
    def by_offset(named: _Named) -> dict[int, list[int]]:
        rows_at: dict[int, list[int]] = {}
        for row, offset in enumerate(named.offsets):
            rows_at.setdefault(offset, []).append(row)
        return rows_at

    @staticmethod
    def all_true(part: SourcePartition, named: _Named, order: list[int], claimed: array[int]) -> bool:
        """Whether the claims, in offset order, are exactly a run of the partition's records with their digests
        (what an intact trail gives): compared in two C-level comparisons instead of a claim at a time."""
        if not claimed or named.undigested or claimed[0] < part.start:
            return not claimed
        first = bisect_left(part.offsets, claimed[0])
        last = first + len(claimed)
        if part.offsets[first:last] != claimed:
            return False
        digests = named.digests
        given = b"".join([digests[r * DIGEST_BYTES : (r + 1) * DIGEST_BYTES] for r in order])
        return given == part.digests[first * DIGEST_BYTES : last * DIGEST_BYTES]

    def claimed(self, part: SourcePartition, offset: int, rows: list[int], named: _Named) -> None:
        where = (part.topic, part.partition, offset)
        entries = [named.entry(r) for r in rows]
        if len(rows) > 1:
            self.lack(LackKind.DOUBLE, where, entries, f"chained {len(rows)} times as different records")
        if offset < part.start:
            self.found.expired += len(rows)
            return
        index = part.index(offset)
        if index is None:
            why = (
                f"no record at this offset: the partition ends at {part.end}"
                if offset >= part.end
                else "no record at this offset (compacted, aborted or a transaction marker)"
            )
            self.lack(LackKind.UNKNOWN_SOURCE, where, entries, why)
            return
        actual = part.digest(index)
        for row, entry in zip(rows, entries, strict=True):
            if row in named.undigested:
                self.lack(LackKind.UNDIGESTED, where, [entry], "the entry names no SHA-256 of its source")
            elif named.digest(row) != actual:
                given = named.digest(row).hex()
                why = f"the entry names SHA-256 {given[:16]}..., the record's value has {actual.hex()[:16]}..."
                self.lack(LackKind.DIGEST_MISMATCH, where, [entry], why)

    def gaps(self, part: SourcePartition, below: int, unchained: Iterable[int]) -> None:
        """The records below the bound (the first ``below`` of the partition) that no chained record names (their
        indexes, ``unchained``): pending when their entry waits on ``audit-entries``, else gaps."""
        offsets = part.offsets
        self.found.checked += below
        waiting = self.sources.pending.get((part.topic, part.partition), set())
        missing: tuple[list[int], list[int]] = ([], [])
        pending: tuple[list[int], list[int]] = ([], [])
        for index in unchained:
            offset = offsets[index]
            into = pending if offset in waiting else missing
            into[0].append(offset)
            into[1].append(index)
        for first, last, count in _runs(*pending):
            self.found.pending.append((part.topic, part.partition, first, last, count))
        for first, last, count in _runs(*missing):
            why = f"{count} record(s) below the {self.sources.reach.value} position {part.bound} never chained"
            self.found.lacks.append(Lack(LackKind.GAP, part.topic, part.partition, first, last, count, (), why))


def check(claims: Sequence[Claims], sources: Sources) -> Completeness:
    """Every record of ``sources`` below its bound chained once, every claim (the shares' parts) true to its record."""
    return _Checker(sources).run(claims)
