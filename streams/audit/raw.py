"""A replay from raw messages: the workers decode too.

Read back from Kafka, a replay's reading process used to decode every message before the chains could be shared
out, so fastavro's decode stayed serial. Here the reader shares each fetch's raw messages out by the MBL that the
first field of an ``AuditRecord`` holds (read from the bytes without decoding the rest) and streams them to workers
forked before the first fetch (``SharedReplay``); each share's process decodes its messages as they come, then walks
their chains and builds their histories. The report and the problems are those
of decoding everything in one process and calling ``build_report``: a record's chain is the same, in the same order,
wherever it is walked, and a message that does not decode is reported with the same text (its partition and offset).

A message whose MBL cannot be read that way (another schema version, not Avro at all, an MBL over 63 bytes) is
decoded by the reader to find its share, or reported there when it does not decode.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from operator import itemgetter
from typing import Any

from streams.audit.completeness import Claims, Sources, check, claims_of
from streams.audit.decoding import BatchDecoder
from streams.audit.parallel import share_of, worth_forking
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
    claims: Claims = field(default_factory=Claims)
    """The source each distinct record names (when completeness is checked)."""


class _ShareBuilder:
    """One share: its messages decoded as they arrive, then its chains walked and its histories built."""

    def __init__(
        self,
        topic: str,
        schemas: SchemaCatalogue,
        keys: Keyring | None,
        accept_unsigned: bool,
        filters: ReplayFilter | None,
        claims: bool = False,
    ) -> None:
        self.topic = topic
        self.schemas = schemas
        self.keys = keys
        self.accept_unsigned = accept_unsigned
        self.filters = filters
        self.claims = claims
        self.decoder = BatchDecoder(schemas)
        self.part = ShareReplay()
        self.stored: list[Key] = []
        self.records: list[dict[str, Any]] = []

    def feed(self, messages: list[tuple[Key, bytes]]) -> None:
        """Decodes messages (in stored order); those that do not decode go to the problems."""
        for start in range(0, len(messages), DECODE_CHUNK):
            chunk = messages[start : start + DECODE_CHUNK]
            decoded = self.decoder.decode([value for _, value in chunk])
            if decoded is not None:
                self.stored.extend(key for key, _ in chunk)
                self.records.extend(decoded)
                continue
            for key, value in chunk:
                try:
                    self.records.append(self.schemas.decode(value, reader="AuditRecord").record)
                except DecodeError as exc:
                    self.part.problems.append((key, not_an_audit_record(self.topic, key, exc)))
                    continue
                self.stored.append(key)

    def finish(self) -> ShareReplay:
        """The share's part: its chains walked, the sources its records name (when asked), its histories built (none
        without filters)."""
        part, stored, records = self.part, self.stored, self.records
        part.walker = os.getpid()
        walked = walk(records, None, self.keys, self.accept_unsigned)
        found = walked.found
        part.records = len(records)
        part.breaks = [(stored[r], b) for r, b in zip(walked.break_rows, found.breaks, strict=True) if r is not None]
        part.duplicates = [(stored[r], d) for r, d in zip(walked.duplicate_rows, found.duplicates, strict=True)]
        part.unsigned_accepted = found.unsigned_accepted
        if self.claims:
            part.claims = claims_of(found.unique)
        chains = by_chain(found.unique)
        part.chains = len(chains)
        if self.filters is not None:
            built = ((m, consolidation(m, chains[m], self.filters)) for m in selected_chains(chains, self.filters))
            part.consolidations = [(m, c) for m, c in built if c is not None]
        return part


def _stream_worker(pipe: Connection, share: _ShareBuilder) -> None:
    """A forked worker: decodes each batch of messages as it comes, then sends its share's part back."""
    try:
        while (messages := pipe.recv()) is not None:
            share.feed(messages)
        pipe.send(share.finish())
    except (EOFError, BrokenPipeError):
        return
    finally:
        pipe.close()


class SharedReplay:
    """Messages shared out by MBL as they are fetched: share 0 decoded in this process, each other share streamed
    to a worker forked before the first fetch, so the workers decode while the reader waits for the next fetch.
    Each share's messages are kept here too, and a worker that dies has its share done here."""

    def __init__(
        self,
        topic: str,
        schemas: SchemaCatalogue,
        keys: Keyring | None,
        accept_unsigned: bool,
        filters: ReplayFilter | None,
        workers: int,
        claims: bool = False,
    ) -> None:
        self.topic, self.schemas, self.workers = topic, schemas, workers
        self.builder = (topic, schemas, keys, accept_unsigned, filters, claims)
        self.prefix = BatchDecoder(schemas).prefix
        self.here = _ShareBuilder(*self.builder)
        self.kept: list[list[tuple[Key, bytes]]] = [[] for _ in range(workers)]
        self.problems: list[tuple[Key, str]] = []
        self.pipes: list[Connection | None] = []
        self.processes: list[BaseProcess] = []
        context = multiprocessing.get_context("fork") if workers > 1 else None
        for _ in range(1, workers):
            assert context is not None
            ours, theirs = context.Pipe()
            process = context.Process(target=_stream_worker, args=(theirs, _ShareBuilder(*self.builder)), daemon=True)
            process.start()
            theirs.close()
            self.pipes.append(ours)
            self.processes.append(process)

    def fetched(self, partition: int, messages: list[tuple[int, bytes]]) -> None:
        """One fetch of a partition: each message to the share of the MBL it names (problems of those that name
        none readable and do not decode)."""
        if self.workers == 1:
            self.here.feed([((partition, offset), value) for offset, value in messages])
            return
        shares: list[list[tuple[Key, bytes]]] = [[] for _ in range(self.workers)]
        for offset, value in messages:
            mbl = peeked_mbl(value, self.prefix)
            if mbl is None:
                try:
                    mbl = self.schemas.decode(value, reader="AuditRecord").record["mbl"]
                except DecodeError as exc:
                    self.problems.append(
                        ((partition, offset), not_an_audit_record(self.topic, (partition, offset), exc))
                    )
                    continue
            shares[share_of(mbl, self.workers)].append(((partition, offset), value))
        for index, messages_of_share in enumerate(shares[1:], start=1):
            if messages_of_share:
                self.kept[index].extend(messages_of_share)
                self._send(index, messages_of_share)
        self.here.feed(shares[0])

    def _send(self, index: int, messages: list[tuple[Key, bytes]] | None) -> None:
        pipe = self.pipes[index - 1]
        if pipe is None:
            return
        try:
            pipe.send(messages)
        except (BrokenPipeError, OSError):
            self.pipes[index - 1] = None

    def finish(self) -> tuple[list[ShareReplay], list[tuple[Key, str]]]:
        """Every share's part (share 0 first) and the problems found while sharing out."""
        for index in range(1, self.workers):
            self._send(index, None)
        parts = [self.here.finish()]
        for index in range(1, self.workers):
            parts.append(self._received(index))
        self.close()
        return parts, self.problems

    def _received(self, index: int) -> ShareReplay:
        pipe = self.pipes[index - 1]
        try:
            if pipe is not None:
                return pipe.recv()  # type: ignore[no-any-return]
        except (EOFError, OSError):
            pass
        share = _ShareBuilder(*self.builder)
        share.feed(self.kept[index])
        return share.finish()

    def close(self) -> None:
        """Closes the pipes (a worker still waiting ends) and waits for the workers."""
        for pipe in self.pipes:
            if pipe is not None:
                pipe.close()
        self.pipes = [None] * len(self.pipes)
        for process in self.processes:
            process.join()
        self.processes = []


#: Messages handed to the shares at a time when replaying a trail already in memory (about one fetch).
PIECE = 10_000


def replay_shares(
    raw: RawTrail,
    schemas: SchemaCatalogue,
    keys: Keyring | None,
    accept_unsigned: bool,
    filters: ReplayFilter | None,
    workers: int,
    claims: bool = False,
) -> tuple[list[ShareReplay], list[tuple[Key, str]]]:
    """Each share's part, share 0 in this process and the others in ``workers - 1`` forked ones, and the problems
    found while sharing out (``filters`` None: chains verified, no histories built; ``claims``: the sources the
    records name collected)."""
    with collection_paused():
        shared = SharedReplay(raw.topic, schemas, keys, accept_unsigned, filters, workers, claims)
        try:
            for partition, messages in raw.partitions.items():
                for start in range(0, len(messages), PIECE):
                    shared.fetched(partition, messages[start : start + PIECE])
            return shared.finish()
        finally:
            shared.close()


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
    sources: Sources | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """``build_report`` of the decoded messages, and the problems of those that do not decode (in stored order),
    decoded and verified in ``workers`` processes (default: one per CPU; one for a small trail)."""
    filters = filters or ReplayFilter()
    schemas = schemas or SchemaCatalogue.load()
    forks = worth_forking(len(raw), workers)
    parts, problems = replay_shares(raw, schemas, keys, accept_unsigned, filters, forks, sources is not None)
    return report_of(parts, problems, filters, keys, sources)


def report_of(
    parts: list[ShareReplay],
    problems: list[tuple[Key, str]],
    filters: ReplayFilter,
    keys: Keyring | None,
    sources: Sources | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """The report and the problems (in stored order) from the shares' parts and the sharing out's problems; with
    ``sources``, the completeness of the shares' claims against them."""
    built: Mapping[str, dict[str, Any]] = dict(sorted((c for p in parts for c in p.consolidations), key=itemgetter(0)))
    complete = None if sources is None else check([p.claims for p in parts], sources)
    report = assemble_report(
        filters,
        merged(parts),
        sum(p.records for p in parts),
        sum(p.chains for p in parts),
        keys,
        list(built.values()),
        complete,
    )
    found = sorted([*problems, *(q for p in parts for q in p.problems)], key=itemgetter(0))
    return report, [text for _, text in found]
