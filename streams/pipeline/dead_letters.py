"""The dead-letter topic: what a stage could not handle, with its reason and the original bytes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from streams.contracts.avro import SchemaCatalogue
from streams.contracts.dead_letter import dead_letter
from streams.domain.notifications import Action, Urgency
from streams.domain.routing import PartyAlert, alert_id
from streams.pipeline.stage import Emit, Incoming

if TYPE_CHECKING:
    from streams.pipeline.runner import Producer
    from streams.topics import Catalogue


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

    def emits(
        self, *, stage: str, phase: str, reason: str, exc: BaseException, incoming: Incoming, party: str | None
    ) -> list[Emit]:
        """The dead letter and, when a party is named, its alerts: the outputs of an input that failed."""
        emit = dead_letter_emit(
            self.topic, self.schemas, stage=stage, phase=phase, reason=reason, exc=exc, incoming=incoming, party=party
        )
        emits = [emit]
        if party:
            alert = rejection_alert(party, stage=stage, reason=reason, incoming=incoming, now=datetime.now(UTC))
            emits.extend(rejection_emits(alert, self.producer.catalogue, self.schemas, incoming))
        return emits

    async def send(
        self, *, stage: str, phase: str, reason: str, exc: BaseException, incoming: Incoming, party: str | None
    ) -> None:
        emits = self.emits(stage=stage, phase=phase, reason=reason, exc=exc, incoming=incoming, party=party)
        await self.producer.send_all(emits)


def rejection_alert(party: str, *, stage: str, reason: str, incoming: Incoming, now: datetime) -> PartyAlert:
    """What the party responsible for a rejected input is told: nothing it sent there is processed until it resends.

    The id depends on the input's coordinates only, so a replay after a crash repeats the same alert, not a new one.
    """
    where = f"{incoming.topic}:{incoming.partition}:{incoming.offset}"
    return PartyAlert(
        alert_id=alert_id(f"dead-letter|{where}", party), party=party, urgency=Urgency.HIGH,
        action=Action.FIX_AND_REFILE, title=f"Input rejected by {stage}: fix it and send it again",
        message=f"{reason} (input {where}, kept on the dead-letter topic)", mbl=None, hbl=None, hbl_chain=(),
        party_at_fault=party, lrn=None, mrn=None, referral_reference=None, deadline=None, message_type="DEAD_LETTER",
        created_at=now,
    )  # fmt: skip


def rejection_emits(
    alert: PartyAlert, catalogue: Catalogue, schemas: SchemaCatalogue, incoming: Incoming
) -> list[Emit]:
    """The alert on the alerts topic (the delivery stage puts it on the party's queue).

    It names the input in ``ics2-rejected``, not ``ics2-source``: the input's one outcome is its dead letter.
    """
    headers = (
        ("ics2-rejected", f"{incoming.topic}:{incoming.partition}:{incoming.offset}".encode()),
        ("ics2-record", b"PartyAlert"),
        ("ics2-party", alert.party.encode()),
        ("ics2-urgency", alert.urgency.value.encode()),
        ("ics2-alert-id", alert.alert_id.encode()),
    )
    value = schemas.encode("PartyAlert", alert.to_record())
    return [Emit(catalogue.alerts.name, alert.party.encode(), value, headers)]
