"""Requests about filings customs already holds, completed by the correlate stage: ``FilingChange`` in, IE3A1x /
IE3Q04 (and the filings that follow an invalidation) out.

The booking stage decides (``streams.domain.outbound``); only the filing ledger knows the MRN customs registered
the filing under, and that lives in the correlate stage. A request travels keyed ``lrn:<LRN>`` like the filing's
ledger entry; once the entry carries the MRN (the correlate stage republishes it under the LRN when the IE3R01
arrives), the request is rendered and goes out on the outbound topic. The filings that replace an invalidated one
wait for customs to accept the invalidation (IE3R07) under the withdrawn filing's ``mrn:<MRN>`` key: customs would
refuse a second filing of the same house consignment, and refused (IE3N99: arrival, control, Do Not Load) the old
filing stays registered and the new ones are never sent (they expire, the filer told). A request whose
filing customs rejected sends its filings as new ones (nothing registered to amend or withdraw). A request that
waits sits in the parked table under ``changes|<key>``; a rejection is remembered in the filing's own ledger entry
(``rejected_at``), so that nothing but waiting requests lives in the parked table (older workers wrote it there as
``rejected|<key>``: still honoured, and moved to the ledger entry on first use).

Nothing waits for ever: a request still without its MRN ``change_wait`` after it was parked (customs neither
registered nor rejected the filing) is taken out of the parked table by the timer's expiry record (``expired``),
sent to the dead-letter topic with its original bytes and source, and its filer is told what was not sent and how to
learn the filing's state (``ics2 consult``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, MutableMapping
from datetime import datetime, timedelta
from typing import Any

import structlog

from streams.contracts.avro import SchemaCatalogue
from streams.contracts.events import CHANGE_SENT
from streams.contracts.records import filing_record_from_ledger, ledger_record, sha256
from streams.domain.dates import format_datetime, parse_datetime
from streams.domain.ledger import FilingRecord, lrn_key, mrn_key
from streams.domain.outbound import FilingChangeRequest
from streams.domain.planning import ChangeKind
from streams.domain.routing import change_expired_alert, change_sent_alert
from streams.errors import ICS2StreamsError, RenderError
from streams.messages.render_requests import Invalidation, amendment_xml, invalidation_reference, render_invalidation
from streams.pipeline.dead_letters import dead_letter_emit
from streams.pipeline.stage import Emit, Incoming
from streams.pipeline.stages.base import Emitter

log = structlog.get_logger(__name__)

#: Record type header value (``ics2-record``) the correlate stage dispatches on.
RECORD = "FilingChange"
#: Header of a parked request sent again by the expiry timer: when it was parked (ISO 8601 UTC).
EXPIRY = "ics2-expiry"
#: Ledger-table field (JSON, not Avro) saying customs rejected the filing, and when we learnt it.
REJECTED_AT = "rejected_at"
#: Ledger-table field (JSON): customs accepted the filing's invalidation (IE3R07), and when we learnt it.
INVALIDATED_AT = "invalidated_at"
#: Header of a replace request sent on, keyed ``mrn:<MRN>`` of the filing withdrawn, whose filings wait there for
#: customs' IE3R07: value the IE3Q04's reference.
AFTER_INVALIDATION = "ics2-after-invalidation"
#: What the parked table adds to a waiting request: when and from where it was parked, what it waits for.
_PARKING = ("parked_at", "source", "after")


def change_record(
    request: FilingChangeRequest, mbl: str, version: int, filings: list[bytes], records: list[str], issued: datetime
) -> dict[str, Any]:
    """The ``FilingChange`` record of a request; ``filings`` are the encoded Filing records it carries.

    ``issued`` is the booking version's time, not the processing time: a replayed version gives a byte-identical
    IE3Q04, whose message id the gateway recognises, never a second invalidation of the same filing."""
    amendment = request.amendment
    planned = request.planned
    return {
        "change_id": sha256(f"{mbl}|{version}|{request.kind.value}|{request.lrn}".encode())[:32],
        "kind": request.kind.value,
        "mbl": mbl,
        "hbl": planned.hbl,
        "lrn": request.lrn,
        "filing": planned.filing.value,
        "filer": planned.filer,
        "version": version,
        "reason": request.reason,
        "amendment_lrn": amendment.draft.lrn if amendment else None,
        "amendment": amendment.xml if amendment else None,
        "filings": filings,
        "records": records,
        "requested_at": format_datetime(issued),
    }


def parked_key(key: str) -> str:
    return f"changes|{key}"


def rejected_key(key: str) -> str:
    return f"rejected|{key}"


def handle_change_request(
    stage: Emitter, incoming: Incoming, ledger: MutableMapping[str, bytes], parked: MutableMapping[str, bytes]
) -> list[Emit]:
    """The correlate stage's step for a ``FilingChange``: send it, or park it until the MRN (or a rejection)."""
    change = stage.schemas.decode(incoming.value, reader=RECORD).record
    key = (incoming.key or b"").decode()
    with structlog.contextvars.bound_contextvars(mbl=change["mbl"], hbl=change["hbl"], lrn=change["lrn"]):
        if incoming.header(AFTER_INVALIDATION) is not None and key.startswith(mrn_key("")):
            return _hold_followers(stage, change, key, incoming, ledger, parked)
        if key != lrn_key(change["lrn"]):
            reason = f"keyed {key!r}, not by the LRN of its filing"
            log.warning("change_refused", reason=reason)
            dead = dead_letter_emit(
                stage.catalogue.dead_letters.name, stage.schemas, stage="correlate", phase="process",
                reason=f"filing change refused: {reason}", exc=ICS2StreamsError(reason), incoming=incoming,
                party=change["filer"],
            )  # fmt: skip
            return [dead]
        entry = ledger.get(key)
        record = None if entry is None else filing_record_from_ledger(json.loads(entry))
        rejected = is_rejected(key, ledger, parked)
        waiting = json.loads(parked.get(parked_key(key), b"[]") or b"[]")
        if incoming.header(EXPIRY) is not None:
            return _expire(stage, change, waiting, record, rejected, parked, key)
        if rejected or (record is not None and record.mrn is not None):
            return _send(stage, change, record, rejected, incoming)
        if all(w["change_id"] != change["change_id"] for w in waiting):
            waiting.append(
                {**_jsonable(change), "parked_at": format_datetime(stage.clock()), "source": _source(incoming)}
            )
        parked[parked_key(key)] = json.dumps(waiting).encode()
        log.info("change_parked", key=key, kind=change["kind"])
        return []


def is_rejected(key: str, ledger: MutableMapping[str, bytes], parked: MutableMapping[str, bytes]) -> bool:
    """Whether customs rejected the filing under ``key``; an older worker's parked marker moves to the ledger."""
    if parked.pop(rejected_key(key), None) is not None:
        _mark_rejected(key, ledger, None)
        return True
    entry = ledger.get(key)
    return entry is not None and json.loads(entry).get(REJECTED_AT) is not None


def _mark_rejected(key: str, ledger: MutableMapping[str, bytes], at: datetime | None) -> None:
    entry = ledger.get(key)
    if entry is None:
        return
    data = json.loads(entry)
    if data.get(REJECTED_AT) is None:
        data[REJECTED_AT] = format_datetime(at) if at is not None else "unknown"
        ledger[key] = json.dumps(data).encode()


def release_changes(
    stage: Emitter,
    key: str,
    record: FilingRecord | None,
    rejected: bool,
    parked: MutableMapping[str, bytes],
    incoming: Incoming,
    ledger: MutableMapping[str, bytes],
) -> list[Emit]:
    """Requests waiting under ``key`` go out now that its filing was registered (``record.mrn``) or rejected."""
    if rejected:
        _mark_rejected(key, ledger, stage.clock())
    elif record is None or record.mrn is None:
        return []
    waiting = json.loads(parked.pop(parked_key(key), b"[]") or b"[]")
    if waiting:
        log.info("parked_changes_released", key=key, count=len(waiting))
    return [e for change in waiting for e in _send(stage, _from_json(change), record, rejected, incoming)]


def expired(
    parked: Iterable[tuple[str, bytes]], now: datetime, wait: timedelta, schemas: SchemaCatalogue, topic: str
) -> list[Emit]:
    """The expiry timer's records: each request parked longer than ``wait``, sent again to the correlate stage with
    the ``EXPIRY`` header (the stage alone may change its table; it checks again and expires what still waits)."""
    emits: list[Emit] = []
    for name, raw in parked:
        if not name.startswith(parked_key("")):
            continue
        for change in json.loads(raw or b"[]"):
            since = change.get("parked_at") or change["requested_at"]
            if now - parse_datetime(since) < wait:
                continue
            key = name.removeprefix(parked_key(""))
            value = schemas.encode(RECORD, _record(change))
            headers: tuple[tuple[str, bytes], ...] = (("ics2-record", RECORD.encode()), (EXPIRY, since.encode()))
            if change.get("after"):
                headers += ((AFTER_INVALIDATION, change["after"].encode()),)
            emits.append(Emit(topic, key.encode(), value, headers))
    return emits


def _take(
    change: Mapping[str, Any], waiting: list[dict[str, Any]], parked: MutableMapping[str, bytes], key: str
) -> dict[str, Any] | None:
    """The request out of the parked table; None when it was released or expired since the timer looked."""
    parked_change = next((w for w in waiting if w["change_id"] == change["change_id"]), None)
    if parked_change is None:
        return None
    rest = [w for w in waiting if w is not parked_change]
    if rest:
        parked[parked_key(key)] = json.dumps(rest).encode()
    else:
        parked.pop(parked_key(key), None)
    return parked_change


def _expire(
    stage: Emitter,
    change: Mapping[str, Any],
    waiting: list[dict[str, Any]],
    record: FilingRecord | None,
    rejected: bool,
    parked: MutableMapping[str, bytes],
    key: str,
) -> list[Emit]:
    """The request's time is up: if it still waits, out of the parked table to the dead-letter topic, filer told."""
    parked_change = _take(change, waiting, parked, key)
    if parked_change is None:
        return []
    original = _original(stage, parked_change, key)
    if rejected or (record is not None and record.mrn is not None):
        return _send(stage, change, record, rejected, original)
    since = parked_change.get("parked_at") or change["requested_at"]
    reason = (
        f"no answer from customs to {change['filing']} {change['lrn']} since {since}: neither registered nor rejected, "
        f"so its {change['kind']} (booking version {change['version']}) cannot be sent"
    )
    title = f"{change['kind']} not sent, customs never answered {change['lrn']}"
    then = f"send booking version {change['version']} again once the filing is registered or rejected"
    return _expired(stage, change, original, record, reason, title, then)


def _expired(
    stage: Emitter,
    change: Mapping[str, Any],
    original: Incoming,
    record: FilingRecord | None,
    reason: str,
    title: str,
    then: str,
) -> list[Emit]:
    """An expired request's dead letter (its own source and bytes) and its filer's alert."""
    key = (original.key or b"").decode()
    log.warning("change_expired", key=key, kind=change["kind"], reason=reason)
    dead = dead_letter_emit(
        stage.catalogue.dead_letters.name, stage.schemas, stage="correlate", phase="expire",
        reason=f"filing change expired: {reason}", exc=ICS2StreamsError(reason), incoming=original,
        party=change["filer"],
    )  # fmt: skip
    alert = change_expired_alert(change, record, key, reason, title, then, stage.clock())
    return [dead, *stage.alert_emits([alert], original)]


def _hold_followers(
    stage: Emitter,
    change: Mapping[str, Any],
    key: str,
    incoming: Incoming,
    ledger: Mapping[str, bytes],
    parked: MutableMapping[str, bytes],
) -> list[Emit]:
    """A replace request's filings wait under the withdrawn filing's MRN until customs accepts the invalidation
    (IE3R07, ``release_followers``): filed before it, customs would refuse them as a second filing of the house
    consignment; refused (IE3N99), they expire and the filer is told they were not sent."""
    waiting = json.loads(parked.get(parked_key(key), b"[]") or b"[]")
    reference = (incoming.header(AFTER_INVALIDATION) or b"").decode()
    entry = ledger.get(key)
    if incoming.header(EXPIRY) is None and entry is not None and json.loads(entry).get(INVALIDATED_AT):
        # Accepted already: a redelivered request; its filings are byte-identical, the gateway knows them.
        return _forward(stage, change, list(zip(change["filings"], change["records"], strict=True)), incoming)
    if incoming.header(EXPIRY) is None:
        if all(w["change_id"] != change["change_id"] for w in waiting):
            parking = {"parked_at": format_datetime(stage.clock()), "source": _source(incoming), "after": reference}
            waiting.append({**_jsonable(change), **parking})
        parked[parked_key(key)] = json.dumps(waiting).encode()
        log.info("followers_held", key=key, reference=reference)
        return []
    parked_change = _take(change, waiting, parked, key)
    if parked_change is None:
        return []
    mrn = key.removeprefix(mrn_key(""))
    since = parked_change.get("parked_at") or change["requested_at"]
    reason = (
        f"customs has not accepted the invalidation {reference} of {change['filing']} {mrn} since {since} (no IE3R07), "
        f"so the {len(change['filings'])} filing(s) replacing it (booking version {change['version']}) were not sent"
    )
    title = f"replacement not filed, invalidation of {mrn} not accepted"
    then = "if customs refused the invalidation, the filing stays registered: amend it or change the booking"
    return _expired(stage, change, _original(stage, parked_change, key), None, reason, title, then)


def release_followers(
    stage: Emitter,
    key: str,
    ledger: MutableMapping[str, bytes],
    parked: MutableMapping[str, bytes],
    incoming: Incoming,
) -> list[Emit]:
    """Customs accepted the invalidation of the filing under ``key`` (``mrn:<MRN>``): the filings replacing it go,
    and the ledger entry remembers it for a request that comes again (a redelivered booking version)."""
    entry = ledger.get(key)
    if entry is not None and not json.loads(entry).get(INVALIDATED_AT):
        ledger[key] = json.dumps({**json.loads(entry), INVALIDATED_AT: format_datetime(stage.clock())}).encode()
    waiting = json.loads(parked.pop(parked_key(key), b"[]") or b"[]")
    if waiting:
        log.info("followers_released", key=key, count=len(waiting))
    emits: list[Emit] = []
    for change in waiting:
        filings = _from_json(change)
        emits += _forward(stage, filings, list(zip(filings["filings"], filings["records"], strict=True)), incoming)
    return emits


def _source(incoming: Incoming) -> str:
    return f"{incoming.topic}:{incoming.partition}:{incoming.offset}"


def _original(stage: Emitter, change: Mapping[str, Any], key: str) -> Incoming:
    """The parked request as it was consumed, so that its dead letter names its own source (count in = count out +
    dead letters) and carries its bytes; a request parked by an older worker has no source kept: offset -1."""
    topic, partition, offset = (change.get("source") or f"{stage.catalogue.notifications_parsed.name}:-1:-1").rsplit(
        ":", 2
    )
    value = stage.schemas.encode(RECORD, _record(change))
    headers: tuple[tuple[str, bytes], ...] = (("ics2-record", RECORD.encode()),)
    if change.get("after"):
        headers += ((AFTER_INVALIDATION, change["after"].encode()),)
    return Incoming(topic, int(partition), int(offset), key.encode(), value, headers)


def _record(change: Mapping[str, Any]) -> dict[str, Any]:
    """A parked request as the ``FilingChange`` record it was."""
    return _unparked(_from_json(change))


def _unparked(change: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in change.items() if k not in _PARKING}


def _send(
    stage: Emitter, change: Mapping[str, Any], record: FilingRecord | None, rejected: bool, incoming: Incoming
) -> list[Emit]:
    kind = ChangeKind(change["kind"])
    emits: list[Emit] = []
    mrn = None if record is None else record.mrn
    if rejected or mrn is None or record is None:
        sent = list(zip(change["filings"], change["records"], strict=True))
        what = "filed anew" if sent else "nothing to withdraw"
        emits += _forward(stage, change, sent, incoming)
        emits += _events_and_alert(stage, change, None, None, f"customs rejected {change['lrn']}: {what}", incoming)
        return emits
    if kind is ChangeKind.AMEND:
        try:
            xml = amendment_xml(change["amendment"], change["amendment_lrn"], mrn)
        except RenderError as exc:
            log.warning("change_refused", reason=str(exc))
            dead = dead_letter_emit(
                stage.catalogue.dead_letters.name, stage.schemas, stage="correlate", phase="process",
                reason=f"amendment cannot be written: {exc}", exc=exc, incoming=incoming, party=change["filer"],
            )  # fmt: skip
            return [dead]
        message_type = f"IE3A{change['filing'][1:]}"
        emits.append(_outbound(stage, change, record, message_type, change["amendment_lrn"], xml, incoming))
        emits.append(_ledger(stage, lrn_key(change["amendment_lrn"]), record, incoming))
        note = f"amendment {message_type} (LRN {change['amendment_lrn']}) sent against MRN {mrn}"
        return emits + _events_and_alert(stage, change, record, message_type, note, incoming)
    reference = invalidation_reference(change["lrn"])
    declarant = next((e for e, p in record.eoris.items() if p == record.filer), "")
    request = Invalidation(
        reference, mrn, declarant, parse_datetime(change["requested_at"]), change["reason"], record.mbl, record.hbl
    )
    emits.append(_outbound(stage, change, record, "IE3Q04", reference, render_invalidation(request), incoming))
    emits.append(_ledger(stage, lrn_key(reference), record, incoming))
    followers = change["filings"]
    if followers:
        held = ((AFTER_INVALIDATION, reference), ("ics2-mbl", record.mbl), ("ics2-lrn", change["lrn"]))
        parsed = stage.catalogue.notifications_parsed.name
        emits.append(stage.emit(parsed, mrn_key(mrn), RECORD, _unparked(change), incoming, *held))
    then = f", then {len(followers)} filing(s) replacing it once customs accepts (IE3R07)" if followers else ""
    note = f"invalidation IE3Q04 ({reference}) sent for MRN {mrn}{then}"
    return emits + _events_and_alert(stage, change, record, "IE3Q04", note, incoming)


def _outbound(
    stage: Emitter,
    change: Mapping[str, Any],
    record: FilingRecord,
    message_type: str,
    lrn: str,
    xml: bytes,
    incoming: Incoming,
) -> Emit:
    filer_eori = next((e for e, p in record.eoris.items() if p == record.filer), "")
    filing = {
        "message_id": f"{lrn}-{sha256(xml)[:12]}",
        "message_type": message_type,
        "lrn": lrn,
        "mbl": record.mbl,
        "hbl": record.hbl,
        "filer_party_id": record.filer,
        "filer_eori": filer_eori,
        "supplementary_declarant": None,
        "supplementary_declarant_eori": None,
        "booking_version": change["version"],
        "xml_sha256": sha256(xml),
        "xml": xml,
        "created_at": change["requested_at"],
    }
    headers = (
        ("ics2-mbl", record.mbl),
        ("ics2-hbl", record.hbl or ""),
        ("ics2-lrn", lrn),
        ("ics2-message-type", message_type),
        ("ics2-filer", record.filer),
    )
    log.info("change_sent", message_type=message_type, mrn=record.mrn, lrn=lrn)
    return stage.emit(stage.catalogue.filings_outbound.name, record.mbl, "Filing", filing, incoming, *headers)


def _forward(
    stage: Emitter, change: Mapping[str, Any], filings: list[tuple[bytes, str]], incoming: Incoming
) -> list[Emit]:
    """The carried filings as they are, each with the lifecycle's ``filing_sent``."""
    emits: list[Emit] = []
    for value, record_json in filings:
        filing = stage.schemas.decode(value, reader="Filing").record
        headers = (
            ("ics2-source", f"{incoming.topic}:{incoming.partition}:{incoming.offset}".encode()),
            ("ics2-record", b"Filing"),
            ("ics2-mbl", filing["mbl"].encode()),
            ("ics2-lrn", filing["lrn"].encode()),
            ("ics2-message-type", filing["message_type"].encode()),
            ("ics2-filer", filing["filer_party_id"].encode()),
        )
        emits.append(Emit(stage.catalogue.filings_outbound.name, change["mbl"].encode(), value, headers))
        emits.append(stage.event_emit(change["mbl"], "filing_sent", {"record": json.loads(record_json)}, incoming))
    return emits


def _ledger(stage: Emitter, key: str, record: FilingRecord, incoming: Incoming) -> Emit:
    name = stage.catalogue.notifications_parsed.name
    return stage.emit(name, key, "LedgerEntry", ledger_record(key, record), incoming)


def _events_and_alert(
    stage: Emitter,
    change: Mapping[str, Any],
    record: FilingRecord | None,
    message_type: str | None,
    note: str,
    incoming: Incoming,
) -> list[Emit]:
    """The lifecycle's event (amendment or invalidation requested) and the filer's alert."""
    payload = {
        CHANGE_SENT: {
            "kind": change["kind"],
            "change_id": change["change_id"],
            "filing": change["filing"],
            "hbl": change["hbl"],
            "filer": change["filer"],
            "lrn": change["lrn"],
            "mrn": None if record is None else record.mrn,
            "message_type": message_type,
            "registered": record is not None and record.mrn is not None,
        }
    }
    event = stage.event_emit(change["mbl"], "tick", payload, incoming)
    alert = change_sent_alert(change, record, message_type, note, stage.clock())
    return [event, *stage.alert_emits([alert], incoming)]


def _jsonable(change: Mapping[str, Any]) -> dict[str, Any]:
    """Bytes as latin-1 text, so that a parked request is JSON like the other parked records."""
    out = dict(change)
    out["amendment"] = None if change["amendment"] is None else change["amendment"].decode("latin-1")
    out["filings"] = [f.decode("latin-1") for f in change["filings"]]
    return out


def _from_json(change: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(change)
    out["amendment"] = None if change["amendment"] is None else change["amendment"].encode("latin-1")
    out["filings"] = [f.encode("latin-1") for f in change["filings"]]
    return out
