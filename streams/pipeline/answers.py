"""Answers to customs' referrals sent from the product: an ``AnswerRequest`` in, IE3R02 / IE3R03 out.

A party answers an RFI or RFS with ``ics2 answer``; the request travels keyed ``ref:<reference>`` to the correlate
stage, whose filing ledger knows the referral (MRN, filer, MBL, HBL) once customs' request was correlated. Only
there can the answer be completed and rendered. It then leaves as a ``Filing`` on the outbound topic, like every
filing, so the gateway sends it and the audit trail records it. An answer that arrives before its referral is
known waits in the parked table, as early notifications do.

No Faust here: the correlate stage hands in its tables and its way of wording emits (``Emitter``).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog

from streams.contracts.avro import SchemaCatalogue
from streams.contracts.events import ANSWER_SENT
from streams.contracts.records import filing_record_from_ledger, sha256
from streams.domain.ledger import FilingRecord, referral_key
from streams.domain.model import Address, format_datetime, parse_datetime
from streams.domain.notifications import Action, Urgency
from streams.domain.planning import FilingType
from streams.domain.routing import PartyAlert, alert_id
from streams.errors import InputError, RenderError
from streams.messages.answers import AnswerText, Attachment, AuthorizedPerson, RfiAnswer, RfsAnswer, ScreeningResult
from streams.messages.render import render_rfi_answer, render_rfs_answer
from streams.pipeline.dead_letters import dead_letter_emit
from streams.pipeline.stage import Emit, Incoming
from streams.topics import Catalogue

log = structlog.get_logger(__name__)

#: Record type header value (``ics2-record``) the correlate stage dispatches on.
RECORD = "AnswerRequest"
#: The message each kind of answer is rendered as.
MESSAGE_TYPES: Mapping[str, str] = {"rfi": "IE3R02", "rfs": "IE3R03"}
#: Referral request reference an..17: printable, no spaces (it is also part of a Kafka key).
_REFERENCE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,16}")
#: Stand-ins for what only the ledger knows, so that ``ics2 answer`` can check a file before publishing it.
_PLACEHOLDER = FilingRecord(
    mbl="MBLPLACEHOLDER",
    hbl="HBLPLACEHOLDER",
    filing=FilingType.F15,
    filer="FILER",
    planning_party="FILER",
    carrier="CARRIER",
    mrn="27NL0000000000000A",
    eoris={"NL000000000000": "FILER"},
)


class AnswerRejected(InputError):
    """An answer that will never be sent as it is: bad file, wrong party, wrong MBL, or XML customs would refuse."""


class Emitter(Protocol):
    """What the correlate stage lends: its schemas, topics, clock and the way it words emits."""

    schemas: SchemaCatalogue
    catalogue: Catalogue
    clock: Callable[[], datetime]

    def emit(
        self, topic: str, key: str, schema: str, record: dict[str, Any], incoming: Incoming, *extra: tuple[str, str]
    ) -> Emit: ...

    def alert_emits(self, alerts: Iterable[PartyAlert], incoming: Incoming) -> list[Emit]: ...

    def event_emit(self, mbl: str, kind: str, payload: dict[str, Any], incoming: Incoming) -> Emit: ...


@dataclass(frozen=True, slots=True)
class Sent:
    """An answer rendered for a known referral: the outbound record and what the answering party is told."""

    filing: dict[str, Any]
    alert: PartyAlert


def check_reference(reference: str) -> str:
    """A reference that is not an..17 can never match a referral, and must not make a Kafka key of anything."""
    if not _REFERENCE.fullmatch(reference):
        raise AnswerRejected(f"referral reference {reference!r} is not an..17 without spaces")
    return reference


def answer_request(
    kind: str,
    reference: str,
    answer: Mapping[str, Any],
    *,
    requested_at: datetime,
    mbl: str | None = None,
    requested_by: str | None = None,
    request_id: str | None = None,
) -> dict[str, Any]:
    """The ``AnswerRequest`` record for an answer file, after checking that it renders (with stand-in MRN and filer)."""
    check_answer(kind, reference, answer)
    return {
        "request_id": request_id or str(uuid.uuid4()),
        "kind": kind,
        "referral_reference": reference,
        "mbl": mbl,
        "requested_by": requested_by,
        "answer": json.dumps(answer, sort_keys=True),
        "requested_at": format_datetime(requested_at),
    }


def check_answer(kind: str, reference: str, answer: Mapping[str, Any]) -> RfiAnswer | RfsAnswer:
    """What ``ics2 answer`` can check alone: the file's shape and that the XML passes the XSD."""
    check_reference(reference)
    typed = build_answer(kind, reference, answer, _PLACEHOLDER, datetime.now(UTC).replace(microsecond=0))
    render_answer(typed)
    return typed


def build_answer(
    kind: str, reference: str, answer: Mapping[str, Any], record: FilingRecord, issued_at: datetime
) -> RfiAnswer | RfsAnswer:
    """The typed answer: the file's content completed with what the ledger knows of the referred filing."""
    if kind not in MESSAGE_TYPES:
        raise AnswerRejected(f"answer kind {kind!r} is not one of {', '.join(MESSAGE_TYPES)}")
    if not isinstance(answer, Mapping):
        raise AnswerRejected("the answer file must hold a JSON object")
    if record.mrn is None:
        raise AnswerRejected(f"the filing referred to by {reference} has no MRN yet")
    declarant = next((eori for eori, party in record.eoris.items() if party == record.filer), None)
    if declarant is None:
        raise AnswerRejected(f"no EORI known for the filer {record.filer}: it cannot be the answer's declarant")
    common: dict[str, Any] = {
        "mrn": record.mrn,
        "declarant_eori": declarant,
        "responsible_member_state": record.mrn[2:4],
        "issued_at": issued_at,
        "mbl": record.mbl,
    }
    try:
        if kind == "rfi":
            _only(answer, {"texts", "attachments"}, "RFI answer")
            texts = tuple(_text(t) for t in _list(answer, "texts"))
            attachments = tuple(_attachment(a) for a in _list(answer, "attachments"))
            if not texts and not attachments:
                raise AnswerRejected("an RFI answer needs at least one text or attachment")
            return RfiAnswer(
                **common, referral_request_reference=reference, texts=texts, attachments=attachments, hbl=record.hbl
            )
        _only(answer, {"results"}, "RFS answer")
        results = tuple(_screening(r, reference, record.hbl) for r in _list(answer, "results"))
        if not results:
            raise AnswerRejected("an RFS answer needs at least one screening result")
        return RfsAnswer(**common, results=results)
    except (KeyError, TypeError, ValueError) as exc:
        raise AnswerRejected(f"the {kind.upper()} answer file is not usable: {exc!r}") from exc


def render_answer(answer: RfiAnswer | RfsAnswer) -> bytes:
    """IE3R02 / IE3R03, XSD-validated; a refusal becomes ``AnswerRejected`` (the party must fix its file)."""
    try:
        return render_rfi_answer(answer) if isinstance(answer, RfiAnswer) else render_rfs_answer(answer)
    except RenderError as exc:
        raise AnswerRejected(f"customs would refuse this answer: {exc}") from exc


def _only(data: Mapping[str, Any], allowed: set[str], what: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise AnswerRejected(f"{what} has unknown fields {unknown}; allowed: {sorted(allowed)}")


def _list(data: Mapping[str, Any], name: str) -> list[Any]:
    value = data.get(name, [])
    if not isinstance(value, list):
        raise AnswerRejected(f"{name} must be a list")
    return value


def _text(data: Mapping[str, Any]) -> AnswerText:
    _only(data, {"text", "code", "type"}, "a text")
    text = AnswerText(text=data.get("text"), code=data.get("code"), type=data.get("type"))
    if not (text.text or text.code):
        raise AnswerRejected("a text needs text or code")
    return text


def _attachment(data: Mapping[str, Any]) -> Attachment:
    _only(data, {"identification", "filename", "mime", "description"}, "an attachment")
    return Attachment(data["identification"], data["filename"], data["mime"], data.get("description"))


def _screening(data: Mapping[str, Any], reference: str, hbl: str | None) -> ScreeningResult:
    allowed = {"result", "methods", "texts", "authorized_person", "attachments", "facility", "hbl"}
    _only(data, allowed, "a screening result")
    house = data.get("hbl") or hbl
    if house is None:
        raise AnswerRejected("a screening result needs the HBL screened and the referral names none")
    person = data.get("authorized_person")
    facility = data.get("facility")
    return ScreeningResult(
        referral_request_reference=reference,
        hbl=house,
        result=str(data["result"]),
        methods=tuple(str(m) for m in data["methods"]),
        texts=tuple(_text(t) for t in _list(data, "texts")),
        authorized_person=None
        if person is None
        else AuthorizedPerson(person["name"], person["eori"], int(person.get("type_of_person", 2))),
        attachments=tuple(_attachment(a) for a in _list(data, "attachments")),
        facility=None
        if facility is None
        else Address(
            facility["street"],
            facility["city"],
            facility.get("postcode"),
            facility["country"],
            number=facility.get("number"),
            po_box=facility.get("po_box"),
            sub_division=facility.get("sub_division"),
        ),
    )


def answer_for_referral(request: Mapping[str, Any], record: FilingRecord, now: datetime) -> Sent:
    """Render ``request`` for the referral whose filing is ``record``; ``AnswerRejected`` if it cannot go."""
    reference = check_reference(request["referral_reference"])
    party = request.get("requested_by") or record.filer
    if party != record.filer:
        raise AnswerRejected(f"only {record.filer}, the filer of the referred filing, may answer {reference}")
    if request.get("mbl") and request["mbl"] != record.mbl:
        raise AnswerRejected(f"referral {reference} is about MBL {record.mbl}, not {request['mbl']}")
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
    kind = request["kind"].upper()
    alert = PartyAlert(
        alert_id=alert_id(f"answer|{request['request_id']}|sent", party),
        party=party, urgency=Urgency.INFO, action=Action.NONE,
        title=f"{message_type} answering {kind} {reference} sent for {record.hbl or record.mbl}",
        message=f"The answer to {kind} {reference} (MRN {record.mrn}) went to customs as {message_type}.",
        mbl=record.mbl, hbl=record.hbl, hbl_chain=record.hbl_chain, party_at_fault=None, lrn=record.lrn,
        mrn=record.mrn, referral_reference=reference, deadline=None, message_type=message_type, created_at=now,
    )  # fmt: skip
    return Sent(filing, alert)


def refusal_alert(request: Mapping[str, Any], reason: str, record: FilingRecord | None, now: datetime) -> PartyAlert:
    """Tells the answering party why its answer was not sent, so it can fix and answer again before the deadline."""
    party = request.get("requested_by") or (record.filer if record else "")
    reference = request.get("referral_reference") or "?"
    kind = str(request.get("kind", "")).upper()
    return PartyAlert(
        alert_id=alert_id(f"answer|{request.get('request_id')}|refused", party),
        party=party, urgency=Urgency.HIGH, action=Action.FIX_AND_REFILE,
        title=f"Answer to {kind} {reference} not sent: fix it and answer again",
        message=f"Not sent to customs: {reason}",
        mbl=record.mbl if record else request.get("mbl"), hbl=record.hbl if record else None,
        hbl_chain=record.hbl_chain if record else (), party_at_fault=party, lrn=record.lrn if record else None,
        mrn=record.mrn if record else None, referral_reference=reference, deadline=None,
        message_type=MESSAGE_TYPES.get(str(request.get("kind")), "ANSWER"), created_at=now,
    )  # fmt: skip


def waiting_alert(request: Mapping[str, Any], now: datetime) -> PartyAlert:
    """Tells the answering party its answer waits for the referral, which also shows a mistyped reference."""
    party = request.get("requested_by") or ""
    reference = request["referral_reference"]
    kind = str(request["kind"]).upper()
    return PartyAlert(
        alert_id=alert_id(f"answer|{request['request_id']}|parked", party),
        party=party, urgency=Urgency.NORMAL, action=Action.INFO,
        title=f"Answer to {kind} {reference} waits for the referral",
        message=(
            f"No {kind} with reference {reference} is known yet; the answer goes to customs as soon as it is. "
            "If no such request reached you, check the reference and answer again."
        ),
        mbl=request.get("mbl"), hbl=None, hbl_chain=(), party_at_fault=None, lrn=None, mrn=None,
        referral_reference=reference, deadline=None, message_type=MESSAGE_TYPES.get(str(request["kind"]), "ANSWER"),
        created_at=now,
    )  # fmt: skip


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
        if not _REFERENCE.fullmatch(request["referral_reference"]):
            reason = f"referral reference {request['referral_reference']!r} is not an..17 without spaces"
            return _refuse(stage, request, reason, None, incoming)
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
