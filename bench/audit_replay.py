"""Audit replay throughput: a synthetic trail of hash-chained ``AuditRecord``s read back and verified.

The records are what ``audit-chain`` writes (one chain per MBL, interleaved); the measure is what ``ics2 replay``
does before it builds timelines: read every record (from the Kafka audit topic, or from an Avro archive file) and
verify every chain, in one process (the baseline) and in one process per CPU (``streams.audit.parallel``). From
Kafka the reader keeps the raw messages and the processes decode their share too (``streams.audit.raw``).
"""

from __future__ import annotations

import resource
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from aiokafka.admin import NewTopic
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from streams.admin import admin_client
from streams.audit.archive import read_archives, write_archive
from streams.audit.parallel import default_workers, examine_parallel, worth_forking
from streams.audit.reading import read_trail, share_trail
from streams.audit.signing import Keyring, Signer
from streams.audit.trail import ChainHead, chain, head_after
from streams.client import produce
from streams.contracts.avro import SchemaCatalogue
from streams.settings import Settings
from streams.topics import Catalogue

#: Records per MBL chain in the synthetic trail (a consolidation's life: booking, plan, filings, answers, alerts).
RECORDS_PER_MBL = 40


@dataclass(frozen=True, slots=True)
class ReplayRate:
    """One replay: the records read and verified, the wall time and the CPU time it took (this process and the
    verifying workers), in how many processes the chains were verified."""

    source: str
    records: int
    seconds: float
    intact: bool
    workers: int = 1
    cpu_seconds: float | None = None

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_s_per_100k(self) -> float | None:
        return None if self.cpu_seconds is None or not self.records else self.cpu_seconds * 100_000 / self.records


def cpu_seconds() -> float:
    """CPU time of this process and of its children that have ended (the verifying workers, once joined)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@dataclass(frozen=True, slots=True)
class ReadBack:
    """Records read back (from Kafka or an archive), with what reading them took."""

    records: list[dict[str, Any]]
    heads: dict[str, ChainHead]
    problems: list[str]
    seconds: float
    cpu_seconds: float


def _verified(source: str, read: ReadBack, workers: int, keys: Keyring | None = None) -> ReplayRate:
    """The read plus verifying its chains in ``workers`` processes (fewer for a small trail), timed together."""
    workers = worth_forking(len(read.records), workers)
    started, cpu = time.perf_counter(), cpu_seconds()
    found = examine_parallel(read.records, read.heads, keys, workers=workers)
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    intact = not found.breaks and not read.problems
    return ReplayRate(source, len(read.records), read.seconds + seconds, intact, workers, read.cpu_seconds + cpu)


def one_and_parallel(
    source: str, read: ReadBack, workers: int | None, keys: Keyring | None = None
) -> tuple[ReplayRate, ReplayRate]:
    """The rate with the chains verified in one process (the baseline) and in ``workers`` (default: one per CPU);
    the records are read once and each rate counts the read."""
    return _verified(source, read, 1, keys), _verified(source, read, workers or default_workers(), keys)


def summary(one: ReplayRate, parallel: ReplayRate) -> dict[str, Any]:
    """What the bench document keeps of a source: the parallel rate, the one-process rate beside it, CPU per 100k."""
    return {
        **asdict(parallel),
        "records_per_s": parallel.records_per_s,
        "cpu_s_per_100k": parallel.cpu_s_per_100k,
        "one_process_per_s": one.records_per_s,
        "one_process_cpu_s_per_100k": one.cpu_s_per_100k,
        "intact": one.intact and parallel.intact,
    }


def synthetic_trail(count: int, signer: Signer | None = None) -> Iterator[dict[str, Any]]:
    """``count`` records over ``count / RECORDS_PER_MBL`` MBLs, chains interleaved as the audit topic holds them,
    signed when a signer is given."""
    mbls = max(1, count // RECORDS_PER_MBL)
    heads = {index: ChainHead(f"OCLU27AUD{index:07d}") for index in range(mbls)}
    for n in range(count):
        index = n % mbls
        payload = {
            "mbl": heads[index].mbl,
            "n": n,
            "record": {"lrn": f"F15V1{n:017d}", "hbl": f"SKC27AUD{n:06d}", "status": "registered", "note": "x" * 240},
        }
        at = f"2027-06-01T09:{n // 60 % 60:02d}:{n % 60:02d}Z"
        record = chain(heads[index], "notification", payload, at, signer)
        heads[index] = head_after(record)
        yield record


async def load_trail(settings: Settings, schemas: SchemaCatalogue, count: int, partitions: int) -> list[dict[str, Any]]:
    """Write the synthetic trail to the audit topic of ``settings``' prefix; returns the records."""
    topic = Catalogue.for_prefix(settings.topic_prefix).audit.name
    async with admin_client(settings) as admin:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    records = list(synthetic_trail(count))
    values = [(r["mbl"].encode(), schemas.encode("AuditRecord", r)) for r in records]
    await produce(settings, topic, values, headers=[("ics2-record", b"AuditRecord")])
    return records


async def replay_from_kafka(
    settings: Settings, schemas: SchemaCatalogue, workers: int | None = None
) -> tuple[ReplayRate, ReplayRate]:
    """Read the audit topic back as ``ics2 replay`` does (``streams.audit.reading.share_trail``: the reader shares
    the raw messages out by MBL as they are fetched, the processes decode and verify their share), read once with
    one process and once with ``workers``."""
    one = await _shared(settings, schemas, 1)
    return one, await _shared(settings, schemas, workers or default_workers())


async def _shared(settings: Settings, schemas: SchemaCatalogue, workers: int) -> ReplayRate:
    started, cpu = time.perf_counter(), cpu_seconds()
    parts, problems = await share_trail(settings, None, workers=workers, schemas=schemas)
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    intact = not problems and not any(p.breaks or p.problems for p in parts)
    return ReplayRate("kafka", sum(p.records for p in parts), seconds, intact, len(parts), cpu)


async def read_then_verify(
    settings: Settings, schemas: SchemaCatalogue, workers: int | None = None
) -> tuple[ReplayRate, ReplayRate]:
    """The path before ``streams.audit.raw``, for comparison: the reader decodes every message (``read_trail``),
    then the chains are verified in one process and in ``workers``."""
    started, cpu = time.perf_counter(), cpu_seconds()
    read = await read_trail(settings, schemas=schemas)
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    return one_and_parallel("kafka-decoded-by-reader", ReadBack(read.records, {}, read.problems, seconds, cpu), workers)


def replay_from_archive(
    records: list[dict[str, Any]], directory: Path, schemas: SchemaCatalogue, workers: int | None = None
) -> tuple[ReplayRate, ReplayRate]:
    """Archive the records (not timed), then read the archive folder back (manifest heads included) and verify it
    in one process and in ``workers``."""
    write_archive(directory, "audit", records, {0: (0, len(records))}, schemas)
    started, cpu = time.perf_counter(), cpu_seconds()
    content = read_archives([directory])
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    read = ReadBack(content.records, content.heads, content.problems, seconds, cpu)
    return one_and_parallel("archive", read, workers)


def signed_verify(count: int, workers: int | None = None) -> tuple[ReplayRate, ReplayRate]:
    """Verifying a signed trail held in memory with its public key, as ``ics2 replay`` verifies the worker's trail:
    the Ed25519 check of every record, which no read or decode optimisation touches (records signed untimed)."""
    signer = Signer.of(Ed25519PrivateKey.generate())
    records = list(synthetic_trail(count, signer))
    return one_and_parallel("signed", ReadBack(records, {}, [], 0.0, 0.0), workers, Keyring.of([signer.public]))
