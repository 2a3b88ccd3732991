"""Audit replay throughput: a synthetic trail of hash-chained ``AuditRecord``s read back and verified.

The records are what ``audit-chain`` writes (one chain per MBL, interleaved); the measure is what ``ics2 replay``
does before it builds timelines: read every record (from the Kafka audit topic, or from an Avro archive file) and
verify every chain.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka.admin import NewTopic

from streams.admin import admin_client
from streams.audit.archive import read_archives, write_archive
from streams.audit.reading import read_trail
from streams.audit.trail import ChainHead, chain, head_after, verify
from streams.client import produce
from streams.contracts.avro import SchemaCatalogue
from streams.settings import Settings
from streams.topics import Catalogue

#: Records per MBL chain in the synthetic trail (a consolidation's life: booking, plan, filings, answers, alerts).
RECORDS_PER_MBL = 40


@dataclass(frozen=True, slots=True)
class ReplayRate:
    source: str
    records: int
    seconds: float
    intact: bool

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0


def synthetic_trail(count: int) -> Iterator[dict[str, Any]]:
    """``count`` records over ``count / RECORDS_PER_MBL`` MBLs, chains interleaved as the audit topic holds them."""
    mbls = max(1, count // RECORDS_PER_MBL)
    heads = {index: ChainHead(f"OCLU27AUD{index:07d}") for index in range(mbls)}
    for n in range(count):
        index = n % mbls
        payload = {
            "mbl": heads[index].mbl,
            "n": n,
            "record": {"lrn": f"F15V1{n:017d}", "hbl": f"SKC27AUD{n:06d}", "status": "registered", "note": "x" * 240},
        }
        record = chain(heads[index], "notification", payload, f"2027-06-01T09:{n // 60 % 60:02d}:{n % 60:02d}Z")
        heads[index] = head_after(record)
        yield record


async def load_trail(settings: Settings, schemas: SchemaCatalogue, count: int, partitions: int) -> list[dict]:
    """Write the synthetic trail to the audit topic of ``settings``' prefix; returns the records."""
    topic = Catalogue.for_prefix(settings.topic_prefix).audit.name
    async with admin_client(settings) as admin:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    records = list(synthetic_trail(count))
    values = [(r["mbl"].encode(), schemas.encode("AuditRecord", r)) for r in records]
    await produce(settings, topic, values, headers=[("ics2-record", b"AuditRecord")])
    return records


async def replay_from_kafka(settings: Settings, schemas: SchemaCatalogue) -> ReplayRate:
    started = time.perf_counter()
    read = await read_trail(settings, schemas=schemas)
    breaks = verify(read.records)
    return ReplayRate("kafka", len(read.records), time.perf_counter() - started, not breaks and not read.problems)


def replay_from_archive(records: list[dict], directory: Path, schemas: SchemaCatalogue) -> ReplayRate:
    """Archive the records (not timed), then read the archive folder back and verify it."""
    write_archive(directory, "audit", records, {0: (0, len(records))}, schemas)
    started = time.perf_counter()
    content = read_archives([directory])
    breaks = verify(content.records, None)
    seconds = time.perf_counter() - started
    return ReplayRate("archive", len(content.records), seconds, not breaks and not content.problems)
