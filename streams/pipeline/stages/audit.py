"""The audit trail's two stages: collect what each recorded topic holds, then hash-chain it per MBL.

``audit-collect-*`` stages are stateless: each derives the entry of one record (``streams.audit.entries``) and emits
it to ``ics2.audit-entries`` keyed by MBL, so that every entry of an MBL meets in one partition. ``audit-chain``
keeps per MBL the next sequence, the last hash and, per source partition, the highest source offset chained: an
entry redelivered after a restart is recognised and never chained twice.

A crash after a record is written but before the chain's head is stored makes the entry chained again from the
older head. The record is a pure function of the entry (its content and Kafka time) and that head, and its Ed25519
signature is deterministic, so the record written again is byte-identical and the replay sees a duplicate, not a
fork. ``recorded_at`` is therefore the Kafka time of the entry, never the stage's clock.

Every record of a recorded topic gives one entry, those without an MBL on the ``UNATTRIBUTED`` chain, so that a replay
can check that each was chained once (``streams.audit.completeness``). The collector tags each entry with a MAC of the
worker's audit key (header ``ics2-entry-mac``, ``streams.audit.signing.EntryKey``) and the chain stage chains only
entries whose tag verifies: anything else written to ``ics2.audit-entries`` is dead-lettered (phase ``audit``), never
signed as if the worker had seen its source record. The dead letter itself is recorded, in the chain of the MBL the
entry was keyed by.

Why every entry takes the hop through ``ics2.audit-entries``, even of topics already keyed by MBL: chaining again
gives the same bytes only if each MBL's entries come in one fixed order, which one partition of one topic gives.
A chain stage reading bookings, drafts, filings and ENS events itself (16 records less per booking) was tried: after
a crash the restarted worker read those topics interleaved differently and chained records again under other
sequences, forks that the fault test killing the worker twice caught.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog

from streams.audit.entries import (
    CHAIN_STAGE,
    UNATTRIBUTED,
    AuditEntry,
    EntryDeriver,
    collector_stages,
    kafka_time,
    source_id,
    split_source,
)
from streams.audit.signing import EntryKey, Signer
from streams.audit.trail import ChainHead, chain
from streams.contracts.avro import SchemaCatalogue
from streams.domain.dates import format_datetime
from streams.pipeline.stage import Emit, Handler, Incoming, StageFailure
from streams.topics import Catalogue, TopicSpec

if TYPE_CHECKING:  # the runner imports Faust, which the audit stages themselves do not need
    from streams.pipeline.runner import AsyncHandler

log = structlog.get_logger(__name__)

Clock = Callable[[], datetime]
Send = Callable[[Sequence[Emit]], Awaitable[None]]
"""Sends records and returns once the broker acknowledged them (``streams.pipeline.runner.Producer.send_all``)."""

ENTRY_MAC_HEADER = "ics2-entry-mac"


class AuditCollector:
    """One recorded record -> its audit entry on ``audit_entries``, tagged with ``entry_key`` when given (the worker
    always gives one); records without an MBL go to the ``UNATTRIBUTED`` chain and are counted by reason."""

    def __init__(self, schemas: SchemaCatalogue, catalogue: Catalogue, entry_key: EntryKey | None = None) -> None:
        self.schemas = schemas
        self.catalogue = catalogue
        self.entry_key = entry_key
        self.deriver = EntryDeriver(schemas, catalogue)
        self.skipped: Counter[str] = Counter()

    @property
    def recorded_topics(self) -> tuple[str, ...]:
        return self.deriver.recorded_topics

    def __call__(self, incoming: Incoming) -> list[Emit]:
        derived = self.deriver.account(incoming)
        if not isinstance(derived, AuditEntry):
            self.skipped[derived.reason] += 1
            log.info("audit_skipped", reason=derived.reason, source=derived.source, total=self.skipped[derived.reason])
            return []
        if derived.mbl == UNATTRIBUTED:
            reason = derived.record["reason"]
            self.skipped[reason] += 1
            log.info("audit_unattributed", reason=reason, source=derived.source, total=self.skipped[reason])
        headers: tuple[tuple[str, bytes], ...] = (
            ("ics2-source", source_id(incoming).encode()),
            ("ics2-record", b"AuditEntry"),
        )
        value = self.schemas.encode("AuditEntry", derived.to_avro())
        if self.entry_key is not None:
            headers += ((ENTRY_MAC_HEADER, self.entry_key.tag(value)),)
        return [Emit(self.catalogue.audit_entries.name, derived.mbl.encode(), value, headers)]


@dataclass
class ChainState:
    """What the chain stage remembers of one MBL (the table's value, as JSON)."""

    next_sequence: int = 0
    last_hash: str | None = None
    offsets: dict[str, int] = field(default_factory=dict)
    """``topic:partition`` -> the highest source offset chained from it."""

    def to_json(self) -> dict[str, Any]:
        return {"next_sequence": self.next_sequence, "last_hash": self.last_hash, "offsets": self.offsets}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ChainState:
        return cls(int(data["next_sequence"]), data.get("last_hash"), {k: int(v) for k, v in data["offsets"].items()})


class AuditChainer:
    """``audit_entries`` -> ``AuditRecord``s on the audit topic, each linked to the MBL's previous record and signed
    with ``signer`` when given (the worker always gives one). Given ``entry_key`` (the worker gives it), an entry
    whose MAC does not verify fails (phase ``audit``) and is dead-lettered instead of chained."""

    def __init__(
        self,
        schemas: SchemaCatalogue,
        catalogue: Catalogue,
        clock: Clock,
        chains: MutableMapping[str, bytes],
        signer: Signer | None = None,
        entry_key: EntryKey | None = None,
    ) -> None:
        self.schemas = schemas
        self.catalogue = catalogue
        self.clock = clock
        self.chains = chains
        self.signer = signer
        self.entry_key = entry_key

    def recorded_at(self, incoming: Incoming) -> str:
        """The Kafka time of the entry, so that chaining it again gives the same record; the clock only for a
        record built in process without one."""
        return kafka_time(incoming) or format_datetime(self.clock())

    def prepare(
        self, incoming: Incoming, pending: Mapping[str, ChainState] | None = None
    ) -> tuple[str, ChainState, Emit] | None:
        """The MBL, its chain state once the entry is chained, and the record to emit; None for a redelivery.

        Nothing is stored here: the caller stores the state only once the record is safely written. ``pending``
        holds states chained but not stored yet (the batch in flight); they are taken before the table's.
        """
        if self.entry_key is not None:
            tag = incoming.header(ENTRY_MAC_HEADER)
            if not self.entry_key.verifies(incoming.value, tag):
                why = "carries no MAC" if tag is None else "carries a MAC that does not verify with the audit key"
                raise StageFailure(
                    "audit", f"audit entry not authenticated: it {why}, so no collector of this worker made it"
                )
        entry = self.schemas.decode(incoming.value, reader="AuditEntry").record
        mbl = entry["mbl"]
        try:
            topic, partition, offset = split_source(entry["source"])
        except ValueError as exc:
            reason = f"audit entry source {entry['source']!r} is not topic:partition:offset"
            raise StageFailure("decode", reason) from exc
        state = (pending or {}).get(mbl) or self._stored(mbl)
        where = f"{topic}:{partition}"
        if offset <= state.offsets.get(where, -1):
            log.info("audit_entry_already_chained", mbl=mbl, source=entry["source"])
            return None
        record = chain(
            ChainHead(mbl, state.next_sequence, state.last_hash),
            entry["kind"],
            entry["payload"],
            self.recorded_at(incoming),
            self.signer,
        )
        state.next_sequence, state.last_hash = record["sequence"] + 1, record["hash"]
        state.offsets[where] = offset
        headers = (
            ("ics2-source", f"{incoming.topic}:{incoming.partition}:{incoming.offset}".encode()),
            ("ics2-record", b"AuditRecord"),
        )
        value = self.schemas.encode("AuditRecord", record)
        return mbl, state, Emit(self.catalogue.audit.name, mbl.encode(), value, headers)

    def _stored(self, mbl: str) -> ChainState:
        stored = self.chains.get(mbl)
        return ChainState() if stored is None else ChainState.from_json(json.loads(stored))

    def store(self, mbl: str, state: ChainState) -> None:
        self.chains[mbl] = json.dumps(state.to_json(), sort_keys=True).encode()

    def __call__(self, incoming: Incoming) -> list[Emit]:
        """In process (tests, tools): store the state and hand back the record to emit."""
        prepared = self.prepare(incoming)
        if prepared is None:
            return []
        mbl, state, emit = prepared
        self.store(mbl, state)
        return [emit]


class SendFirstChainer:
    """The chain stage as the worker runs it: the record is acknowledged by the broker before the state is stored.

    A crash between the two makes the redelivered entry chained again under the same sequence: the same bytes, which
    the replay counts as a duplicate; the other order would lose the entry silently (state stored, record never
    written).
    """

    def __init__(self, chainer: AuditChainer, send: Send) -> None:
        self.chainer = chainer
        self.send = send

    async def __call__(self, incoming: Incoming) -> list[Emit]:
        prepared = self.chainer.prepare(incoming)
        if prepared is None:
            return []
        mbl, state, emit = prepared
        await self.send([emit])
        self.chainer.store(mbl, state)
        return []


class BatchChainer:
    """The chain stage as the worker runs it: a batch's records are chained in memory, and each MBL's state is
    stored once, after the broker acknowledged every record of the batch (``StageRunner.flush`` calls
    ``acknowledged``); a batch that fails is forgotten (``abandoned``) and chained again when it is redelivered.

    Same order as ``SendFirstChainer`` (record written, then state stored), one table write per MBL per batch.
    """

    def __init__(self, chainer: AuditChainer) -> None:
        self.chainer = chainer
        self.pending: dict[str, ChainState] = {}

    def __call__(self, incoming: Incoming) -> list[Emit]:
        prepared = self.chainer.prepare(incoming, self.pending)
        if prepared is None:
            return []
        mbl, state, emit = prepared
        self.pending[mbl] = state
        return [emit]

    def acknowledged(self) -> None:
        for mbl, state in self.pending.items():
            self.chainer.store(mbl, state)
        self.pending.clear()

    def abandoned(self) -> None:
        self.pending.clear()


def audit_stages(
    schemas: SchemaCatalogue,
    catalogue: Catalogue,
    clock: Clock,
    chains: MutableMapping[str, bytes],
    send: Send | None = None,
    *,
    batched: bool = False,
    signer: Signer | None = None,
) -> dict[str, tuple[TopicSpec, Handler | AsyncHandler]]:
    """Stage name -> (source topic, handler), named explicitly so that no rename moves a consumer group's offsets.

    Given ``send`` (the worker's producer), the chain stage writes each record before it stores the chain's state;
    ``batched`` (the worker's batching runner) does the same per batch. ``signer`` signs every record, and its entry
    key authenticates every entry from the collector to the chain stage.
    """
    entry_key = None if signer is None else signer.entry_key()
    collector = AuditCollector(schemas, catalogue, entry_key)
    base = AuditChainer(schemas, catalogue, clock, chains, signer, entry_key)
    chainer: AuditChainer | SendFirstChainer | BatchChainer = base
    if batched:
        chainer = BatchChainer(base)
    elif send is not None:
        chainer = SendFirstChainer(base, send)
    stages: dict[str, tuple[TopicSpec, Handler | AsyncHandler]] = {
        name: (topic, collector) for name, topic in collector_stages(catalogue).items()
    }
    stages[CHAIN_STAGE] = (catalogue.audit_entries, chainer)
    return stages
