"""Chains verified in parallel: a trail's chains are independent per MBL, so the records are shared out by MBL over
worker processes, each walks its share with ``streams.audit.trail.walk``, and the findings merge back in stored
order. The result is the ``Examination`` that ``examine`` gives, break for break and duplicate for duplicate.

The records are never sent to a worker: the workers are forked once the records are read and find them (with the
kept heads and the trusted keys) in the memory they inherit, so only the findings cross a pipe. The calling process
walks the first share itself while the workers walk the others. ``in_shares`` runs any such work; the replay also
builds each consolidation's history with it.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from operator import attrgetter, itemgetter
from typing import Any, TypeVar

from streams.audit.signing import Keyring
from streams.audit.trail import Break, ChainHead, Duplicate, Examination, examine, walk

T = TypeVar("T")

MIN_SHARE = 10_000
"""Fewer records than this per worker are walked in one process: forking costs more than it saves."""


def default_workers() -> int:
    """One worker per CPU this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def worth_forking(records: int, workers: int | None = None, min_share: int | None = None) -> int:
    """How many processes to share ``records`` over: ``workers`` (default: one per CPU), fewer when a share would
    hold fewer than ``min_share`` (default ``MIN_SHARE``) records; 1 means none forked (also where processes
    cannot be forked)."""
    if "fork" not in multiprocessing.get_all_start_methods():
        return 1
    least = MIN_SHARE if min_share is None else max(1, min_share)
    return max(1, min(workers or default_workers(), records // least))


def share_of(mbl: str, workers: int) -> int:
    """Which share an MBL's chain is walked in (stable within a process and the workers forked from it)."""
    return hash(mbl) % workers


@dataclass(frozen=True)
class _Job:
    """What the forked workers inherit: the records, each share's rows and kept heads, the keys."""

    records: Sequence[Mapping[str, Any]]
    shares: list[list[int]]
    heads: list[dict[str, ChainHead]]
    keys: Keyring | None
    accept_unsigned: bool

    def walk_share(self, index: int) -> ShareFindings:
        rows = self.shares[index]
        records = self.records
        walked = walk([records[r] for r in rows], self.heads[index], self.keys, self.accept_unsigned)
        found = walked.found
        return ShareFindings(
            walker=os.getpid(),
            breaks=[(None if r is None else rows[r], b) for r, b in zip(walked.break_rows, found.breaks, strict=True)],
            duplicates=[(rows[r], d) for r, d in zip(walked.duplicate_rows, found.duplicates, strict=True)],
            unsigned_accepted=found.unsigned_accepted,
        )


@dataclass
class ShareFindings:
    """One share's findings with the rows (in the whole trail) they are about; ``walker`` is the process id."""

    walker: int
    breaks: list[tuple[int | None, Break]] = field(default_factory=list)
    duplicates: list[tuple[int, Duplicate]] = field(default_factory=list)
    unsigned_accepted: int = 0


_task: Callable[[int], Any] | None = None
"""The work of one share, set before the workers are forked: they inherit it with everything it refers to."""


def _run_share(index: int) -> Any:
    if _task is None:
        raise RuntimeError("no work to do: the worker was not forked by in_shares")
    return _task(index)


def in_shares(task: Callable[[int], T], workers: int) -> list[T]:
    """``task(share)`` for every share, share 0 in this process and the others in ``workers - 1`` forked workers
    (a worker that dies has its share done here). Nothing but the results is pickled."""
    global _task
    _task = task
    try:
        with ProcessPoolExecutor(workers - 1, mp_context=multiprocessing.get_context("fork")) as pool:
            futures: list[Future[T]] = [pool.submit(_run_share, i) for i in range(1, workers)]
            results = [task(0)]
            for index, future in enumerate(futures, start=1):
                try:
                    results.append(future.result())
                except BrokenProcessPool:
                    results.append(task(index))
    finally:
        _task = None
    return results


def _share_out(
    records: Sequence[Mapping[str, Any]], heads: Mapping[str, ChainHead], workers: int
) -> tuple[list[list[int]], list[dict[str, ChainHead]]]:
    shares: list[list[int]] = [[] for _ in range(workers)]
    for row, record in enumerate(records):
        shares[share_of(record["mbl"], workers)].append(row)
    kept: list[dict[str, ChainHead]] = [{} for _ in range(workers)]
    for mbl, head in heads.items():
        kept[share_of(mbl, workers)][mbl] = head
    return shares, kept


def walk_shares(
    records: Sequence[Mapping[str, Any]],
    heads: Mapping[str, ChainHead] | None,
    keys: Keyring | None,
    accept_unsigned: bool,
    workers: int,
) -> list[ShareFindings]:
    """Each share's findings, share 0 walked here and the others in ``workers - 1`` forked processes."""
    shares, kept = _share_out(records, heads or {}, workers)
    return in_shares(_Job(records, shares, kept, keys, accept_unsigned).walk_share, workers)


def merge(records: Sequence[Mapping[str, Any]], parts: Sequence[ShareFindings]) -> Examination:
    """The shares' findings as one ``Examination``: breaks about records in stored order (each record's own in the
    order found), then those against kept heads by MBL, as ``examine`` lists them (the sorts are stable and each
    record and each MBL is in one share only)."""
    found = Examination()
    about_records = sorted(((row, b) for p in parts for row, b in p.breaks if row is not None), key=itemgetter(0))
    against_heads = sorted((b for p in parts for row, b in p.breaks if row is None), key=attrgetter("mbl"))
    found.breaks = [b for _, b in about_records] + against_heads
    duplicates = sorted((d for p in parts for d in p.duplicates), key=itemgetter(0))
    found.duplicates = [d for _, d in duplicates]
    repeated = {row for row, _ in duplicates}
    found.unique = [r for row, r in enumerate(records) if row not in repeated] if repeated else list(records)
    found.unsigned_accepted = sum(p.unsigned_accepted for p in parts)
    return found


def examine_parallel(
    records: Sequence[Mapping[str, Any]],
    heads: Mapping[str, ChainHead] | None = None,
    keys: Keyring | None = None,
    accept_unsigned: bool = False,
    workers: int | None = None,
    min_share: int | None = None,
) -> Examination:
    """``examine`` over ``workers`` processes (default: one per CPU); in this process alone when there are fewer
    than ``min_share`` (default ``MIN_SHARE``) records per worker."""
    workers = worth_forking(len(records), workers, min_share)
    if workers <= 1:
        return examine(records, heads, keys, accept_unsigned)
    return merge(records, walk_shares(records, heads, keys, accept_unsigned, workers))
