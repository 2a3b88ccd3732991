"""Answers to customs' referrals sent from the product: an ``AnswerRequest`` in, IE3R02 / IE3R03 out.

A party answers an RFI or RFS with ``ics2 answer``; the request travels keyed ``ref:<reference>`` to the correlate
stage, whose filing ledger knows the referral (MRN, filer, MBL, HBL) once customs' request was correlated. Only
there can the answer be completed and rendered. It then leaves as a ``Filing`` on the outbound topic, like every
filing, so the gateway sends it and the audit trail records it. An answer that arrives before its referral is
known waits in the parked table, as early notifications do. Who may answer and the alerts' wording are the
domain's (``streams.domain.answers``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog

from streams.contracts.events import ANSWER_SENT
from streams.contracts.records import filing_record_from_ledger, sha256
from streams.domain.answers import (
    MESSAGE_TYPES,
    AnswerRejected,
    check_answerer,
    check_reference,
    refusal_alert,
    sent_alert,
    waiting_alert,
)
from streams.domain.dates import format_datetime, parse_datetime
from streams.domain.ledger import FilingRecord, referral_key
from streams.domain.routing import PartyAlert
from streams.messages.answer_files import build_answer, render_answer
from streams.pipeline.dead_letters import dead_letter_emit
from streams.pipeline.stage import Emit, Incoming
from streams.pipeline.stages.base import Emitter

log = structlog.get_logger(__name__)

#: Record type header value (``ics2-record``) the correlate stage dispatches on.
RECORD = "AnswerRequest"


@dataclass(frozen=True, slots=True)
class Sent:
    """An answer rendered for a known referral: the outbound record and what the answering party is told."""

    filing: dict[str, Any]
    alert: PartyAlert


def answer_for_referral(request: Mapping[str, Any], record: FilingRecord, now: datetime) -> Sent:
    """Render ``request`` for the referral whose filing is ``record``; ``AnswerRejected`` if it cannot go."""
    reference, party = check_answerer(request, record)
    try:
        answer = json.loads(request["answer"])
    except ValueError as exc:
        raise AnswerRejected(f"the answer is not JSON: {exc}") from exc
    issued_at = parse_datetime(request["requested_at"])
    xml = render_answer(build_answer(request["kind"], reference, answer, record, issued_at))
    message_type = MESSAGE_TYPES[request["kind"]]
    filer_eori = next(e for e, p in record.eoris.items() if p == record.filer)
    filing = {
        "message_id": f"{message_type}-{reference}-{sha256(xml)[:12]}",
        "message_type": message_type,
        "lrn": record.lrn or "",
        "mbl": record.mbl,
        "hbl": record.hbl,
        "filer_party_id": record.filer,
        "filer_eori": filer_eori,
        "supplementary_declarant": None,
        "supplementary_declarant_eori": None,
        "booking_version": 0,
        "xml_sha256": sha256(xml),
        "xml": xml,
        "created_at": format_datetime(now),
    }
    alert = sent_alert(request, record, party, message_type, now)
    return Sent(filing, alert)


def parked_key(key: str) -> str:
    """Answers wait under their own parked key, apart from the notifications waiting for the same ledger key."""
    return f"answers|{key}"


def handle_answer_request(
    stage: Emitter,
    incoming: Incoming,
    ledger: MutableMapping[str, bytes],
    parked: MutableMapping[str, bytes],
) -> list[Emit]:
    """The correlate stage's step for an ``AnswerRequest``: send it, park it, or refuse it (dead letter + alert)."""
    request = stage.schemas.decode(incoming.value, reader=RECORD).record
    key = (incoming.key or b"").decode()
    with structlog.contextvars.bound_contextvars(referral=request["referral_reference"], kind=request["kind"]):
        try:
            check_reference(request["referral_reference"])
        except AnswerRejected as exc:
            return _refuse(stage, request, str(exc), None, incoming)
        if key != referral_key(request["referral_reference"]):
            return _refuse(stage, request, f"keyed {key!r}, not by its referral reference", None, incoming)
        entry = ledger.get(key)
        if entry is None:
            waiting = json.loads(parked.get(parked_key(key), b"[]") or b"[]")
            if all(w["request_id"] != request["request_id"] for w in waiting):
                waiting.append(request)
            parked[parked_key(key)] = json.dumps(waiting).encode()
            log.info("answer_parked", key=key)
            alert = waiting_alert(request, stage.clock())
            return stage.alert_emits([alert], incoming) if _queue_name_ok(stage, alert.party) else []
        return _send(stage, request, filing_record_from_ledger(json.loads(entry)), incoming)


def release_answers(
    stage: Emitter, key: str, entry: Mapping[str, Any], parked: MutableMapping[str, bytes], incoming: Incoming
) -> list[Emit]:
    """Answers parked under ``key`` go out now that the referral's ledger entry arrived."""
    waiting = json.loads(parked.pop(parked_key(key), b"[]") or b"[]")
    if not waiting:
        return []
    log.info("parked_answers_released", key=key, count=len(waiting))
    record = filing_record_from_ledger(entry)
    emits: list[Emit] = []
    for request in waiting:
        original = Incoming(
            incoming.topic, incoming.partition, incoming.offset, key.encode(),
            stage.schemas.encode(RECORD, request), (("ics2-record", RECORD.encode()),), incoming.timestamp_ms,
        )  # fmt: skip
        emits.extend(_send(stage, request, record, original))
    return emits


def _send(stage: Emitter, request: Mapping[str, Any], record: FilingRecord, incoming: Incoming) -> list[Emit]:
    now = stage.clock()
    try:
        sent = answer_for_referral(request, record, now)
    except AnswerRejected as exc:
        return _refuse(stage, request, str(exc), record, incoming, exc)
    filing = sent.filing
    headers = (
        ("ics2-mbl", record.mbl),
        ("ics2-hbl", record.hbl or ""),
        ("ics2-lrn", record.lrn or ""),
        ("ics2-message-type", filing["message_type"]),
        ("ics2-filer", record.filer),
        ("ics2-referral", request["referral_reference"]),
    )
    log.info("answer_sent", mbl=record.mbl, hbl=record.hbl, mrn=record.mrn, message_type=filing["message_type"])
    outbound = stage.emit(stage.catalogue.filings_outbound.name, record.mbl, "Filing", filing, incoming, *headers)
    answered = {
        ANSWER_SENT: {
            "referral_reference": request["referral_reference"],
            "kind": request["kind"],
            "message_type": filing["message_type"],
            "message_id": filing["message_id"],
            "request_id": request["request_id"],
            "hbl": record.hbl,
            "filer": record.filer,
            "mrn": record.mrn,
        }
    }
    event = stage.event_emit(record.mbl, "tick", answered, incoming)
    return [outbound, event, *stage.alert_emits([sent.alert], incoming)]


def _refuse(
    stage: Emitter,
    request: Mapping[str, Any],
    reason: str,
    record: FilingRecord | None,
    incoming: Incoming,
    exc: BaseException | None = None,
) -> list[Emit]:
    """The request to the dead-letter topic (with its reason) and the reason to the answering party's queue."""
    log.warning("answer_refused", reason=reason)
    alert = refusal_alert(request, reason, record, stage.clock())
    dead = dead_letter_emit(
        stage.catalogue.dead_letters.name,
        stage.schemas,
        stage="correlate",
        phase="process",
        reason=f"answer refused: {reason}",
        exc=exc or AnswerRejected(reason),
        incoming=incoming,
        party=alert.party or None,
    )
    return [dead, *(stage.alert_emits([alert], incoming) if _queue_name_ok(stage, alert.party) else [])]


def _queue_name_ok(stage: Emitter, party: str) -> bool:
    """A party id that cannot name a queue (typo, empty) gets no alert; the dead letter still names it."""
    try:
        stage.catalogue.party_queue(party)
    except ValueError:
        return False
    return True
