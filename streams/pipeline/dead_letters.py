"""The dead-letter topic: what a stage could not handle, with its reason and the original bytes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from streams.contracts.avro import SchemaCatalogue
from streams.contracts.dead_letter import dead_letter
from streams.pipeline.stage import Emit, Incoming

if TYPE_CHECKING:
    from streams.pipeline.runner import Producer


def dead_letter_emit(
    topic: str,
    schemas: SchemaCatalogue,
    *,
    stage: str,
    phase: str,
    reason: str,
    exc: BaseException,
    incoming: Incoming,
    party: str | None,
) -> Emit:
    """The record to produce for one failed input; KIP-1034-style headers say where it came from and why."""
    envelope = dead_letter(
        f"{stage}/{phase}",
        exc,
        key=incoming.key,
        value=incoming.value,
        topic=incoming.topic,
        partition=incoming.partition,
        offset=incoming.offset,
        headers=incoming.headers,
        responsible_party=party,
        reason=reason,
    )
    return Emit(topic, envelope.key, schemas.encode("DeadLetter", envelope.record), envelope.headers)


class DeadLetterSink:
    """Produces dead letters and waits for the broker's acknowledgement before the input is acknowledged."""

    def __init__(self, producer: Producer, topic: str, schemas: SchemaCatalogue) -> None:
        self.producer = producer
        self.topic = topic
        self.schemas = schemas

    async def send(
        self, *, stage: str, phase: str, reason: str, exc: BaseException, incoming: Incoming, party: str | None
    ) -> None:
        emit = dead_letter_emit(
            self.topic, self.schemas, stage=stage, phase=phase, reason=reason, exc=exc, incoming=incoming, party=party
        )
        await self.producer.send_all([emit])
