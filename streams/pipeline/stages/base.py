"""What every stage shares: the schemas, the topic names and the way it words its emits. No Faust here.

Each stage is a callable ``Incoming -> list[Emit]``; the tables it needs are plain mutable mappings handed in
(Faust tables in the worker, dicts in unit tests). Every emitted record carries an ``ics2-source`` header naming
the input it came from, so that count in = count out + dead letters can be checked record by record.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, Protocol

import structlog

from streams.contracts.avro import SchemaCatalogue
from streams.contracts.records import ens_event
from streams.domain.routing import PartyAlert
from streams.pipeline.stage import Emit, Headers, Incoming
from streams.topics import Catalogue

log = structlog.get_logger(__name__)

Clock = Callable[[], datetime]


def source_of(incoming: Incoming) -> str:
    return f"{incoming.topic}:{incoming.partition}:{incoming.offset}"


class EmittingStage:
    """What every handler shares: the schemas, the topic names and the way it words its emits."""

    def __init__(self, schemas: SchemaCatalogue, catalogue: Catalogue, clock: Clock) -> None:
        self.schemas = schemas
        self.catalogue = catalogue
        self.clock = clock

    def emit(
        self, topic: str, key: str, schema: str, record: dict[str, Any], incoming: Incoming, *extra: tuple[str, str]
    ) -> Emit:
        return self.emit_encoded(topic, key, schema, self.schemas.encode(schema, record), incoming, *extra)

    @staticmethod
    def emit_encoded(
        topic: str, key: str, schema: str, value: bytes, incoming: Incoming, *extra: tuple[str, str]
    ) -> Emit:
        headers: Headers = (
            ("ics2-source", source_of(incoming).encode()),
            ("ics2-record", schema.encode()),
            *((k, v.encode()) for k, v in extra if v),
        )
        return Emit(topic, key.encode(), value, headers)

    def alert_emits(self, alerts: Iterable[PartyAlert], incoming: Incoming) -> list[Emit]:
        """Each alert goes to the alerts topic, keyed by its party, encoded once; the delivery stage
        (``streams.pipeline.stages.delivery``) puts it on the party's queue, or keeps it until the queue exists."""
        emits: list[Emit] = []
        for alert in alerts:
            value = self.schemas.encode("PartyAlert", alert.to_record())
            extra = (
                ("ics2-party", alert.party),
                ("ics2-urgency", alert.urgency.value),
                ("ics2-alert-id", alert.alert_id),
            )
            emits.append(
                self.emit_encoded(self.catalogue.alerts.name, alert.party, "PartyAlert", value, incoming, *extra)
            )
        return emits

    def event_emit(self, mbl: str, kind: str, payload: dict[str, Any], incoming: Incoming) -> Emit:
        record = ens_event(mbl, kind, self.clock(), payload, source_of(incoming))
        return self.emit(self.catalogue.ens_events.name, mbl, "EnsEvent", record, incoming)


class Emitter(Protocol):
    """What a stage lends the steps it delegates to (answers, changes): schemas, topics, clock, how it words emits."""

    schemas: SchemaCatalogue
    catalogue: Catalogue
    clock: Callable[[], datetime]

    def emit(
        self, topic: str, key: str, schema: str, record: dict[str, Any], incoming: Incoming, *extra: tuple[str, str]
    ) -> Emit: ...

    def alert_emits(self, alerts: Iterable[PartyAlert], incoming: Incoming) -> list[Emit]: ...

    def event_emit(self, mbl: str, kind: str, payload: dict[str, Any], incoming: Incoming) -> Emit: ...
