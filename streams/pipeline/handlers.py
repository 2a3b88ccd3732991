"""Stage handlers: decode, call the domain, encode what it decided. No Faust here.

Each handler is a callable ``Incoming -> list[Emit]``; the tables it needs are plain mutable mappings handed in
(Faust tables in the worker, dicts in unit tests). Every emitted record carries an ``ics2-source`` header naming
the input it came from, so that count in = count out + dead letters can be checked record by record.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import structlog

from streams.contracts.avro import SchemaCatalogue
from streams.contracts.events import decode_lifecycle_event
from streams.contracts.records import (
    draft_record,
    ens_event,
    filing_message,
    filing_record_from_ledger,
    ledger_record,
    notification_from_record,
    notification_record,
)
from streams.domain.deadlines import DEFAULT_RESPONSE_TIMES, lodging_deadline
from streams.domain.events import Ack, NotificationReceived
from streams.domain.ledger import (
    FilingRecord,
    correlation_keys,
    filing_record,
    ledger_keys,
    lrn_key,
    mrn_key,
    referral_key,
)
from streams.domain.lifecycle import DEFAULT_MARGINS, EnsState, apply
from streams.domain.model import Consolidation, format_datetime
from streams.domain.notifications import Action, NotificationKind, Urgency
from streams.domain.outbound import BookingOutcome, PlanMemory
from streams.domain.planning import PlannedFiling
from streams.domain.routing import PartyAlert, alert_id
from streams.domain.validation import Finding
from streams.errors import BookingError, XMLRejected
from streams.messages.parse import parse_notification
from streams.pipeline import answers, changes
from streams.pipeline.booking import process_booking
from streams.pipeline.stage import Emit, Headers, Incoming, StageFailure
from streams.topics import Catalogue

log = structlog.get_logger(__name__)

Clock = Callable[[], datetime]

#: How the title of a "Filing blocked" alert begins.
BLOCKED_TITLE = "Filing blocked for"


def source_of(incoming: Incoming) -> str:
    return f"{incoming.topic}:{incoming.partition}:{incoming.offset}"


class _Stage:
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
        """Each alert goes to the alerts topic (for alerting services) and to its party's queue, encoded once."""
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
            if not self.catalogue.names_a_queue(alert.party):
                log.warning("party_id_cannot_name_a_queue", party=alert.party)
                continue
            queue = self.catalogue.party_queue(alert.party).name
            emits.append(self.emit_encoded(queue, alert.mbl or alert.party, "PartyAlert", value, incoming, *extra))
        return emits

    def event_emit(self, mbl: str, kind: str, payload: dict[str, Any], incoming: Incoming) -> Emit:
        record = ens_event(mbl, kind, self.clock(), payload, source_of(incoming))
        return self.emit(self.catalogue.ens_events.name, mbl, "EnsEvent", record, incoming)


def decode_booking(schemas: SchemaCatalogue, incoming: Incoming) -> Consolidation:
    """Avro single-object bytes -> consolidation; both failures are the booking system's to fix."""
    record = schemas.decode(incoming.value, reader="BookingEvent").record
    try:
        return Consolidation.from_json(record)
    except BookingError as exc:
        party = record.get("planning_party")
        raise StageFailure("decode", f"booking cannot be used: {exc}", party=party, cause=exc) from exc


class BookingStage(_Stage):
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
                return self.alert_emits([self._stale_alert(outcome, previous, now)], incoming)
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
        records = [
            (f, filing_record(c, f, lrns.get((f.filing, f.hbl, f.filer))))
            for f in (*outcome.plan.filings, *carrier_filings)
        ]
        deadline = lodging_deadline(c.master)
        alerts = self._booking_alerts(outcome, now)
        emits = [
            self.event_emit(
                c.mbl,
                "planned",
                {
                    "planning_party": c.planning_party,
                    "version": c.version,
                    "deadline": format_datetime(deadline.latest),
                    "filings": [{"ours": f.ours, "record": r.to_json()} for f, r in records],
                    "withdrawn": [filing_record(c, f, None).to_json() for f in diff_removed(outcome)],
                },
                incoming,
            )
        ]
        for d in outcome.drafts:
            planned = d.draft.planned
            record = filing_record(c, planned, d.draft.lrn)
            ids = (("ics2-mbl", c.mbl), ("ics2-hbl", planned.hbl or ""), ("ics2-lrn", d.draft.lrn))
            emits.append(
                self.emit(self.catalogue.filing_drafts.name, c.mbl, "FilingDraft", draft_record(d, now), incoming, *ids)
            )
            if d.blocked:
                # The lifecycle closes the "Filing blocked" alerts about this filing once a fixed version is filed.
                told = {f.party or c.planning_party for f in d.blocking}
                blocked = [[a.alert_id, a.party, a.title] for a in alerts if a.party in told and _blocks(a)]
                payload = {"record": record.to_json(), "alerts": blocked}
                emits.append(self.event_emit(c.mbl, "filing_blocked", payload, incoming))
                continue
            if not d.send:
                if d.xml is not None:
                    emits.extend(self._ledger(key, record, incoming) for key in ledger_keys(record, c))
                continue
            headers = (*ids, ("ics2-message-type", planned.filing.message_type), ("ics2-filer", planned.filer))
            emits.append(
                self.emit(
                    self.catalogue.filings_outbound.name, c.mbl, "Filing", filing_message(d, now), incoming, *headers
                )
            )
            emits.extend(self._ledger(key, record, incoming) for key in ledger_keys(record, c))
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

    def _ledger(self, key: str, record: FilingRecord, incoming: Incoming) -> Emit:
        return self.emit(
            self.catalogue.notifications_parsed.name, key, "LedgerEntry", ledger_record(key, record), incoming
        )

    def _booking_alerts(self, outcome: BookingOutcome, now: datetime) -> list[PartyAlert]:
        """Blocked drafts go to the parties that must fix their data; plan errors and changes to the planner."""
        c = outcome.consolidation
        by_party: dict[str, list[Finding]] = defaultdict(list)
        for d in outcome.drafts:
            for finding in d.blocking:
                by_party[finding.party or c.planning_party].append(finding)
        alerts: list[PartyAlert] = []
        for party, findings in by_party.items():
            unique = list(dict.fromkeys(findings))
            text = "; ".join(f"[{f.rule_id}] {f.path}: {f.message}" for f in unique)
            hbls = sorted({f.hbl for f in unique if f.hbl})
            alerts.append(
                self._alert(
                    c,
                    party,
                    Urgency.HIGH,
                    Action.FIX_AND_REFILE,
                    f"{BLOCKED_TITLE} {', '.join(hbls) or c.mbl}: fix the booking data",
                    f"Not sent to customs until fixed (booking version {c.version}): {text}",
                    now,
                    hbl=hbls[0] if len(hbls) == 1 else None,
                )
            )
        for error in outcome.plan.errors:
            alerts.append(
                self._alert(
                    c,
                    error.party or c.planning_party,
                    Urgency.HIGH,
                    Action.FIX_AND_REFILE,
                    f"Cannot plan filings for {error.hbl or c.mbl}",
                    f"[{error.code}] {error.message}",
                    now,
                    hbl=error.hbl,
                )
            )
        for gone in outcome.withdrawn:
            where = f"house B/L {gone.hbl}" if gone.hbl else f"master B/L {c.mbl}"
            alerts.append(
                self._alert(
                    c,
                    gone.filer,
                    Urgency.HIGH,
                    Action.INFO,
                    f"Withdraw your {gone.filing.value} for {gone.hbl or c.mbl}: no longer needed",
                    f"With booking version {c.version}, {c.planning_party} no longer plans a {gone.filing.value} by "
                    f"you for {where}. If you filed it, invalidate it (IE3Q04) so that customs does not hold it "
                    "against the consignment.",
                    now,
                    hbl=gone.hbl,
                )
            )
        if outcome.diff is not None and not outcome.diff.empty:
            lines = [f"+{f.filing.value} {f.hbl} by {f.filer}" for f in outcome.diff.added]
            lines += [f"-{f.filing.value} {f.hbl} by {f.filer}" for f in outcome.diff.removed]
            lines += [f"~{ch.new.filing.value} {ch.new.hbl} by {ch.new.filer}" for ch in outcome.diff.changed]
            alerts.append(
                self._alert(
                    c,
                    c.planning_party,
                    Urgency.NORMAL,
                    Action.INFO,
                    f"Plan changed with booking version {c.version}",
                    "; ".join(lines),
                    now,
                )
            )
        return alerts

    def _stale_alert(self, outcome: BookingOutcome, previous: PlanMemory | None, now: datetime) -> PartyAlert:
        c = outcome.consolidation
        last = previous.version if previous else c.version
        return self._alert(
            c,
            c.planning_party,
            Urgency.NORMAL,
            Action.INFO,
            f"Booking version {c.version} of {c.mbl} ignored",
            f"Version {last} was already processed; an older or repeated version changes nothing.",
            now,
        )

    @staticmethod
    def _alert(
        c: Consolidation,
        party: str,
        urgency: Urgency,
        action: Action,
        title: str,
        message: str,
        now: datetime,
        hbl: str | None = None,
    ) -> PartyAlert:
        return PartyAlert(
            alert_id=alert_id(f"booking|{c.mbl}|{c.planning_party}|{c.version}|{title}|{message}", party),
            party=party, urgency=urgency, action=action, title=title, message=message, mbl=c.mbl, hbl=hbl,
            hbl_chain=(), party_at_fault=party if action is Action.FIX_AND_REFILE else None, lrn=None, mrn=None,
            referral_reference=None, deadline=None, message_type="BOOKING", created_at=now,
        )  # fmt: skip


def _blocks(alert: PartyAlert) -> bool:
    """Whether a booking alert is a "Filing blocked" one (``BookingStage._booking_alerts``)."""
    return alert.message_type == "BOOKING" and alert.title.startswith(BLOCKED_TITLE)


class NotificationParser(_Stage):
    """Raw customs XML -> a typed notification keyed by the ledger key it will be correlated under."""

    def __call__(self, incoming: Incoming) -> list[Emit]:
        try:
            label = incoming.header("ics2-message-type")
            expected = label.decode(errors="replace") if label else None
            notification = parse_notification(incoming.value, expected_type=expected)
        except XMLRejected as exc:
            party = (incoming.header("ics2-addressee") or b"").decode(errors="replace") or None
            raise StageFailure("decode", f"customs notification rejected: {exc}", party=party, cause=exc) from exc
        keys = correlation_keys(notification)
        if not keys:
            raise StageFailure("process", f"{notification.message_type} names no LRN, MRN, MBL/HBL or referral")
        record = notification_record(notification, incoming.value)
        with structlog.contextvars.bound_contextvars(lrn=notification.lrn, mrn=notification.mrn, mbl=notification.mbl):
            log.info("notification_parsed", message_type=notification.message_type, key=keys[0])
        return [
            self.emit(
                self.catalogue.notifications_parsed.name, keys[0], "CustomsNotification", record, incoming,
                ("ics2-message-type", notification.message_type),
            )
        ]  # fmt: skip


class Correlator(_Stage):
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
            and parsed.kind in _REFUSALS
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


#: Answers that leave a filing unregistered: requests about it send its filings anew.
_REFUSALS = frozenset({NotificationKind.REJECTED, NotificationKind.LIFECYCLE_ERROR})


def diff_removed(outcome: BookingOutcome) -> tuple[PlannedFiling, ...]:
    """Filings of the previous plan that the new one no longer has."""
    return outcome.diff.removed if outcome.diff is not None else ()


class LifecycleTracker(_Stage):
    """ENS events -> the ENS state table and the alerts each event calls for."""

    def __init__(
        self,
        schemas: SchemaCatalogue,
        catalogue: Catalogue,
        clock: Clock,
        states: MutableMapping[str, bytes],
        margins: Sequence[timedelta] = DEFAULT_MARGINS,
        response_times: Mapping[str, timedelta] = DEFAULT_RESPONSE_TIMES,
    ) -> None:
        super().__init__(schemas, catalogue, clock)
        self.states = states
        self.margins = tuple(margins)
        self.response_times = dict(response_times)

    def __call__(self, incoming: Incoming) -> list[Emit]:
        record = self.schemas.decode(incoming.value, reader="EnsEvent").record
        payload = json.loads(record["payload"])
        event = decode_lifecycle_event(record["type"], record["mbl"], payload)
        ids = {k: payload["record"].get(k) for k in ("hbl", "lrn", "mrn")} if "record" in payload else {}
        with structlog.contextvars.bound_contextvars(mbl=record["mbl"], **ids):
            stored = self.states.get(record["mbl"])
            if stored is None and isinstance(event, Ack):
                log.warning("ack_for_unknown_ens", alert_id=event.alert_id)
                return []
            state = None if stored is None else EnsState.from_json(json.loads(stored))
            transition = apply(state, event, self.clock(), self.margins, self.response_times)
            self.states[record["mbl"]] = json.dumps(transition.state.to_json()).encode()
            if transition.duplicate:
                log.info("duplicate_suppressed", event_id=record["event_id"])
            elif isinstance(event, Ack):
                log.info("alert_acknowledged", alert_id=event.alert_id, by=event.by)
            emits = self.alert_emits(transition.alerts, incoming)
        if isinstance(event, NotificationReceived):
            # The alerts' latency is measured from the notification's arrival (streams.pipeline.metrics).
            tag = ("ics2-notification-id", str(payload["notification_id"]).encode())
            emits = [replace(e, headers=(*e.headers, tag)) for e in emits]
        return emits


def ticks_due(states: Iterable[tuple[str, bytes]], now: datetime, widest_margin: timedelta) -> list[str]:
    """MBLs whose ENS misses filings, or has unacknowledged DNL/RFI/RFS alerts, within the widest margin."""
    due: list[str] = []
    for mbl, raw in states:
        state = EnsState.from_json(json.loads(raw))
        if state.needs_tick(now, widest_margin):
            due.append(mbl)
    return due
