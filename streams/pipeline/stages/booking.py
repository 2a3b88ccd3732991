"""The booking stage: bookings -> drafts, filings to the gateway, ledger entries, lifecycle events and alerts."""

from __future__ import annotations

import json
from collections.abc import MutableMapping
from datetime import datetime

import structlog

from streams.contracts.avro import SchemaCatalogue
from streams.contracts.records import draft_record, filing_message, ledger_record
from streams.domain.dates import format_datetime
from streams.domain.deadlines import lodging_deadline
from streams.domain.ledger import FilingRecord, filing_record, ledger_keys, lrn_key
from streams.domain.model import Consolidation
from streams.domain.outbound import BookingOutcome, PlanMemory, decide_booking
from streams.domain.planning import PlannedFiling
from streams.domain.routing import blocks, booking_alerts, stale_alert
from streams.errors import BookingError
from streams.messages.render import render_filing
from streams.pipeline.stage import Emit, Incoming, StageFailure
from streams.pipeline.stages import changes
from streams.pipeline.stages.base import Clock, EmittingStage
from streams.topics import Catalogue

log = structlog.get_logger(__name__)


def process_booking(consolidation: Consolidation, previous: PlanMemory | None, now: datetime) -> BookingOutcome:
    """Plan, validate and render the filings of ours for one booking version, and what it changes for customs.

    The domain decides (``streams.domain.outbound.decide_booking``) and takes the renderer as a parameter; this
    stage owns the choice of renderer, so no arrow runs from the domain up to ``streams.messages``."""
    return decide_booking(consolidation, previous, now, render=render_filing)


def decode_booking(schemas: SchemaCatalogue, incoming: Incoming) -> Consolidation:
    """Avro single-object bytes -> consolidation; both failures are the booking system's to fix."""
    record = schemas.decode(incoming.value, reader="BookingEvent").record
    try:
        return Consolidation.from_json(record)
    except BookingError as exc:
        party = record.get("planning_party")
        raise StageFailure("decode", f"booking cannot be used: {exc}", party=party, cause=exc) from exc


class BookingStage(EmittingStage):
    """bookings -> drafts, filings to the gateway, ledger entries, lifecycle events, alerts for what blocks."""

    def __init__(
        self, schemas: SchemaCatalogue, catalogue: Catalogue, clock: Clock, plans: MutableMapping[str, bytes]
    ) -> None:
        super().__init__(schemas, catalogue, clock)
        self.plans = plans

    def __call__(self, incoming: Incoming) -> list[Emit]:
        consolidation = decode_booking(self.schemas, incoming)
        memory_key = f"{consolidation.mbl}|{consolidation.planning_party}"
        stored = self.plans.get(memory_key)
        previous = None if stored is None else PlanMemory.from_json(json.loads(stored))
        now = self.clock()
        with structlog.contextvars.bound_contextvars(mbl=consolidation.mbl, version=consolidation.version):
            outcome = process_booking(consolidation, previous, now)
            if outcome.stale:
                log.warning("booking_stale", last_version=previous.version if previous else None)
                return self.alert_emits([stale_alert(outcome.consolidation, previous, now)], incoming)
            if outcome.memory is not None:
                self.plans[memory_key] = json.dumps(outcome.memory.to_json()).encode()
            emits = self._emits(outcome, incoming, now)
            log.info(
                "booking_processed",
                filings=len(outcome.plan.filings),
                sent=len(outcome.to_send),
                blocked=sum(1 for d in outcome.drafts if d.blocked),
            )
        return emits

    def _emits(self, outcome: BookingOutcome, incoming: Incoming, now: datetime) -> list[Emit]:
        c = outcome.consolidation
        lrns = {
            (d.draft.planned.filing, d.draft.planned.hbl, d.draft.planned.filer): d.draft.lrn for d in outcome.drafts
        }
        carrier_filings = tuple(
            PlannedFiling(t, None, c.master.carrier, reason="master level, expected from the carrier")
            for t in outcome.plan.expected_from_carrier
        )
        record_of = _RecordsOf(c)
        records = [
            (f, record_of(f, lrns.get((f.filing, f.hbl, f.filer)))) for f in (*outcome.plan.filings, *carrier_filings)
        ]
        deadline = lodging_deadline(c.master)
        alerts = booking_alerts(outcome, now)
        emits = [
            self.event_emit(
                c.mbl,
                "planned",
                {
                    "planning_party": c.planning_party,
                    "version": c.version,
                    "deadline": format_datetime(deadline.latest),
                    "filings": [{"ours": f.ours, "record": r.to_json()} for f, r in records],
                    "withdrawn": [record_of(f, None).to_json() for f in diff_removed(outcome)],
                },
                incoming,
            )
        ]
        for d in outcome.drafts:
            planned = d.draft.planned
            record = record_of(planned, d.draft.lrn)
            ids = (("ics2-mbl", c.mbl), ("ics2-hbl", planned.hbl or ""), ("ics2-lrn", d.draft.lrn))
            emits.append(
                self.emit(self.catalogue.filing_drafts.name, c.mbl, "FilingDraft", draft_record(d, now), incoming, *ids)
            )
            if d.blocked:
                # The lifecycle closes the "Filing blocked" alerts about this filing once a fixed version is filed.
                told = {f.party or c.planning_party for f in d.blocking}
                blocked = [[a.alert_id, a.party, a.title] for a in alerts if a.party in told and blocks(a)]
                payload = {"record": record.to_json(), "alerts": blocked}
                emits.append(self.event_emit(c.mbl, "filing_blocked", payload, incoming))
                continue
            if not d.send:
                if d.xml is not None:
                    emits.extend(self._ledger(ledger_keys(record, c), record, incoming))
                continue
            headers = (*ids, ("ics2-message-type", planned.filing.message_type), ("ics2-filer", planned.filer))
            emits.append(
                self.emit(
                    self.catalogue.filings_outbound.name, c.mbl, "Filing", filing_message(d, now), incoming, *headers
                )
            )
            emits.extend(self._ledger(ledger_keys(record, c), record, incoming))
            emits.append(self.event_emit(c.mbl, "filing_sent", {"record": record.to_json()}, incoming))
        emits.extend(self._change_emits(outcome, incoming, now))
        emits.extend(self.alert_emits(alerts, incoming))
        return emits

    def _change_emits(self, outcome: BookingOutcome, incoming: Incoming, now: datetime) -> list[Emit]:
        """Each request about a filing customs holds, keyed by that filing's LRN, to the correlate stage."""
        c = outcome.consolidation
        emits: list[Emit] = []
        for request in outcome.changes:
            carried = request.replacements or ((request.amendment,) if request.amendment else ())
            filings = [self.schemas.encode("Filing", filing_message(d, now)) for d in carried]
            records = [json.dumps(filing_record(c, d.draft.planned, d.draft.lrn).to_json()) for d in carried]
            record = changes.change_record(request, c.mbl, c.version, filings, records, c.occurred_at)
            ids = (("ics2-mbl", c.mbl), ("ics2-hbl", request.hbl or ""), ("ics2-lrn", request.lrn))
            emits.append(
                self.emit(
                    self.catalogue.notifications_parsed.name, lrn_key(request.lrn), changes.RECORD, record, incoming,
                    *ids,
                )
            )  # fmt: skip
        return emits

    def _ledger(self, keys: tuple[str, ...], record: FilingRecord, incoming: Incoming) -> list[Emit]:
        """The filing's ledger entry under each of its keys: the entries differ by their key alone."""
        if not keys:
            return []
        values = self.schemas.encode_each("LedgerEntry", ledger_record(keys[0], record), "key", keys)
        topic = self.catalogue.notifications_parsed.name
        return [
            self.emit_encoded(topic, key, "LedgerEntry", value, incoming)
            for key, value in zip(keys, values, strict=True)
        ]


class _RecordsOf:
    """The ledger records of one booking's filings, each built once: the plan, the drafts and the ledger all ask."""

    def __init__(self, consolidation: Consolidation) -> None:
        self.consolidation = consolidation
        self._made: dict[tuple[PlannedFiling, str | None], FilingRecord] = {}

    def __call__(self, planned: PlannedFiling, lrn: str | None) -> FilingRecord:
        made = self._made.get((planned, lrn))
        if made is None:
            made = self._made[(planned, lrn)] = filing_record(self.consolidation, planned, lrn)
        return made


def diff_removed(outcome: BookingOutcome) -> tuple[PlannedFiling, ...]:
    """Filings of the previous plan that the new one no longer has."""
    return outcome.diff.removed if outcome.diff is not None else ()
