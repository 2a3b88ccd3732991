"""The correlate stage: ledger entries meet notifications per correlation key; answers and changes wait there too."""

from __future__ import annotations

import json
from collections.abc import Iterable, MutableMapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog

from streams.contracts.avro import SchemaCatalogue
from streams.contracts.records import filing_record_from_ledger, ledger_record, notification_from_record
from streams.domain.dates import format_datetime, parse_datetime
from streams.domain.ledger import FilingRecord, lrn_key, mrn_key, referral_key
from streams.domain.notifications import NotificationKind
from streams.domain.routing import REFUSAL_KINDS
from streams.errors import ICS2StreamsError
from streams.pipeline.stage import Emit, Incoming, StageFailure
from streams.pipeline.stages import answers, changes
from streams.pipeline.stages.base import Clock, EmittingStage
from streams.topics import Catalogue

if TYPE_CHECKING:
    from streams.pipeline.dead_letters import DeadLetterSink

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
            self.parked.pop(unmatched_key(key), None)
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
                if unmatched_key(key) not in self.parked:
                    since = {"since": format_datetime(self.clock()), "reported": False}
                    self.parked[unmatched_key(key)] = json.dumps(since).encode()
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


#: The header of a dead letter reported from the parked table, not from a record of a topic: its partition and
#: offset are the answer's place in the parked list, its value the parsed notification.
UNMATCHED = (("ics2-parked", b"unmatched"),)


def unmatched_key(key: str) -> str:
    """Where the parked table notes since when customs' answers under ``key`` match no filing, and if reported."""
    return f"unmatched:{key}"


def unmatched_due(parked: Iterable[tuple[str, bytes]], now: datetime, wait: timedelta) -> list[str]:
    """Keys whose parked answers have matched no filing for longer than ``wait`` and were not reported yet."""
    due = []
    for name, raw in parked:
        if name.startswith(unmatched_key("")) and raw:
            note = json.loads(raw)
            if not note["reported"] and now - parse_datetime(note["since"]) >= wait:
                due.append(name.removeprefix(unmatched_key("")))
    return due


def report_unmatched(
    stage: Correlator, keys: Iterable[str], wait: timedelta, dead_letters: DeadLetterSink
) -> list[Emit]:
    """One dead letter per parked answer under ``keys``, with its bytes (the parsed notification) and why; the
    answers stay parked, so a filing that appears later still meets them. Each key is reported once."""
    emits: list[Emit] = []
    for key in keys:
        note_key = unmatched_key(key)
        raw_note = stage.parked.get(note_key)
        if raw_note is None:
            continue
        note = json.loads(raw_note)
        for offset, notification in enumerate(json.loads(stage.parked.get(key, b"[]") or b"[]")):
            value = stage.schemas.encode("CustomsNotification", notification)
            incoming = Incoming(stage.catalogue.notifications_parsed.name, 0, offset, key.encode(), value, UNMATCHED)
            reason = (
                f"customs answer {notification.get('message_type')} under {key} matches no filing we know after"
                f" {wait}: kept, and matched if its filing appears"
            )
            log.warning("customs_answer_unmatched", key=key, message_type=notification.get("message_type"))
            emits += dead_letters.emits(
                stage="correlate", phase="unmatched", reason=reason, exc=UnmatchedAnswer(reason), incoming=incoming,
                party=None,
            )  # fmt: skip
        stage.parked[note_key] = json.dumps({**note, "reported": True}).encode()
    return emits


class UnmatchedAnswer(ICS2StreamsError):
    """A customs answer that matches no filing known to the system."""


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
