"""The correlate stage: ledger entries meet notifications per correlation key; answers and changes wait there too."""

from __future__ import annotations

import json
from collections.abc import MutableMapping
from dataclasses import replace
from typing import Any

import structlog

from streams.contracts.avro import SchemaCatalogue
from streams.contracts.records import filing_record_from_ledger, ledger_record, notification_from_record
from streams.domain.ledger import FilingRecord, lrn_key, mrn_key, referral_key
from streams.domain.notifications import NotificationKind
from streams.domain.routing import REFUSAL_KINDS
from streams.pipeline.stage import Emit, Incoming, StageFailure
from streams.pipeline.stages import answers, changes
from streams.pipeline.stages.base import Clock, EmittingStage
from streams.topics import Catalogue

log = structlog.get_logger(__name__)


class Correlator(EmittingStage):
    """Meets ledger entries and notifications per correlation key; parks a notification until its filing is known."""

    def __init__(
        self,
        schemas: SchemaCatalogue,
        catalogue: Catalogue,
        clock: Clock,
        ledger: MutableMapping[str, bytes],
        parked: MutableMapping[str, bytes],
    ) -> None:
        super().__init__(schemas, catalogue, clock)
        self.ledger = ledger
        self.parked = parked

    def __call__(self, incoming: Incoming) -> list[Emit]:
        if incoming.header("ics2-record") == answers.RECORD.encode():
            return answers.handle_answer_request(self, incoming, self.ledger, self.parked)
        if incoming.header("ics2-record") == changes.RECORD.encode():
            return changes.handle_change_request(self, incoming, self.ledger, self.parked)
        decoded = self.schemas.decode(incoming.value)
        key = (incoming.key or b"").decode()
        if decoded.name.endswith("LedgerEntry"):
            decoded = replace(decoded, record=_keeping_known(decoded.record, self.ledger.get(key)))
            self.ledger[key] = json.dumps(decoded.record).encode()
            waiting = json.loads(self.parked.pop(key, b"[]") or b"[]")
            if waiting:
                ids = {k: decoded.record.get(k) for k in ("mbl", "hbl", "lrn", "mrn")}
                with structlog.contextvars.bound_contextvars(**ids):
                    log.info("parked_released", key=key, count=len(waiting))
            released = answers.release_answers(self, key, decoded.record, self.parked, incoming)
            record = filing_record_from_ledger(decoded.record)
            released += changes.release_changes(self, key, record, False, self.parked, incoming, self.ledger)
            return [e for record in waiting for e in self._correlate(record, decoded.record, incoming)] + released
        if decoded.name.endswith("CustomsNotification"):
            entry = self.ledger.get(key)
            if entry is None:
                waiting = json.loads(self.parked.get(key, b"[]") or b"[]")
                if all(w["message_id"] != decoded.record["message_id"] for w in waiting):
                    waiting.append(decoded.record)
                self.parked[key] = json.dumps(waiting).encode()
                ids = {k: decoded.record.get(k) for k in ("mbl", "hbl", "lrn", "mrn")}
                with structlog.contextvars.bound_contextvars(**ids):
                    log.info("notification_parked", key=key, message_type=decoded.record["message_type"])
                return []
            return self._correlate(decoded.record, json.loads(entry), incoming)
        raise StageFailure("decode", f"{decoded.name} does not belong on {incoming.topic}")

    def _correlate(self, notification: dict[str, Any], entry: dict[str, Any], incoming: Incoming) -> list[Emit]:
        record: FilingRecord = filing_record_from_ledger(entry)
        parsed = notification_from_record(notification)
        emits: list[Emit] = []
        if parsed.mrn and record.mrn is None:
            record = record.with_mrn(parsed.mrn)
            emits.append(self._publish(mrn_key(parsed.mrn), record, incoming))
            if record.lrn:
                # The LRN's entry learns the MRN too: requests about the filing wait for it there.
                emits.append(self._publish(lrn_key(record.lrn), record, incoming))
        elif (
            record.mrn is None
            and record.lrn
            and parsed.kind in REFUSAL_KINDS
            and incoming.key == lrn_key(record.lrn).encode()
        ):
            # Only under the LRN's own key: the table's changelog partition is the input's.
            key = lrn_key(record.lrn)
            emits += changes.release_changes(self, key, record, True, self.parked, incoming, self.ledger)
        accepted = parsed.kind is NotificationKind.INVALIDATION_ACCEPTED and parsed.mrn
        if accepted and incoming.key == mrn_key(parsed.mrn or "").encode():
            # The filings replacing the withdrawn one wait under its MRN (``changes.release_followers``).
            emits += changes.release_followers(self, mrn_key(parsed.mrn or ""), self.ledger, self.parked, incoming)
        for reference in dict.fromkeys((parsed.referral_reference, *parsed.referral_references)):
            if reference:
                emits.append(self._publish(referral_key(reference), record, incoming))
        with structlog.contextvars.bound_contextvars(mbl=record.mbl, hbl=record.hbl, lrn=record.lrn, mrn=parsed.mrn):
            if parsed.containers:
                notification = self._fan_out(notification, parsed.hbls, parsed.containers, record)
            log.info("notification_correlated", message_type=parsed.message_type)
        payload = {
            "notification_id": notification["message_id"],
            "notification": notification,
            "record": record.to_json(),
        }
        emits.append(self.event_emit(record.mbl, "notification", payload, incoming))
        return emits

    @staticmethod
    def _fan_out(
        notification: dict[str, Any], named: tuple[str, ...], containers: tuple[str, ...], record: FilingRecord
    ) -> dict[str, Any]:
        """A notification naming containers concerns every HBL stuffed in them (the booking's container map)."""
        unknown = [c for c in containers if c not in record.containers]
        if unknown:
            log.warning("containers_not_in_booking", containers=unknown)
        hbls = tuple(dict.fromkeys((*named, *record.hbls_in(containers))))
        if hbls == named:
            return notification
        log.info("containers_fanned_out", containers=list(containers), hbls=list(hbls))
        return {**notification, "hbls": list(hbls), "hbl": hbls[0]}

    def _publish(self, key: str, record: FilingRecord, incoming: Incoming) -> Emit:
        return self.emit(
            self.catalogue.notifications_parsed.name, key, "LedgerEntry", ledger_record(key, record), incoming
        )


def _keeping_known(entry: dict[str, Any], stored: bytes | None) -> dict[str, Any]:
    """A redelivered booking re-sends its ledger entries without what customs said since: the MRN it gave, its
    rejection or accepted invalidation stay known, or the requests about the filing (amendments, invalidations)
    would wait for ever."""
    if stored is None:
        return entry
    known = json.loads(stored)
    facts = ("mrn", changes.REJECTED_AT, changes.INVALIDATED_AT)
    kept = {k: known[k] for k in facts if entry.get(k) is None and known.get(k) is not None}
    return {**entry, **kept} if kept else entry
