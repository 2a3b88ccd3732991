"""Domain values <-> the Avro records of ``schemas/avro``: the one place where the two vocabularies meet."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from streams.domain.dates import format_datetime, parse_datetime
from streams.domain.ledger import FilingRecord
from streams.domain.notifications import MESSAGE_SPECS, Notification, NotificationError
from streams.domain.outbound import DraftOutcome


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def draft_record(outcome: DraftOutcome, created_at: datetime) -> dict[str, Any]:
    """``FilingDraft``: one filing of ours with its findings."""
    planned = outcome.draft.planned
    return {
        "mbl": outcome.draft.consolidation.mbl,
        "version": outcome.draft.consolidation.version,
        "filing": planned.filing.value,
        "hbl": planned.hbl,
        "filer": planned.filer,
        "supplementary_declarant": planned.supplementary_declarant,
        "lrn": outcome.draft.lrn,
        "ours": planned.ours,
        "reason": planned.reason,
        "findings": [
            {
                "rule_id": f.rule_id,
                "severity": f.severity.value,
                "path": f.path,
                "message": f.message,
                "party": f.party,
                "hbl": f.hbl,
                "filing": None if f.filing is None else f.filing.value,
            }
            for f in outcome.findings
        ],
        "status": "blocked" if outcome.blocked else "ready",
        "created_at": format_datetime(created_at),
    }


def filing_message(outcome: DraftOutcome, created_at: datetime) -> dict[str, Any]:
    """``Filing``: the rendered XML handed to the gateway."""
    draft = outcome.draft
    planned = draft.planned
    parties = draft.consolidation.parties
    filer = parties[planned.filer]
    declarant = parties.get(planned.supplementary_declarant or "")
    xml = outcome.xml or b""
    digest = sha256(xml)
    return {
        "message_id": f"{draft.lrn}-{digest[:12]}",
        "message_type": planned.filing.message_type,
        "lrn": draft.lrn,
        "mbl": draft.consolidation.mbl,
        "hbl": planned.hbl,
        "filer_party_id": planned.filer,
        "filer_eori": filer.eori or "",
        "supplementary_declarant": planned.supplementary_declarant,
        "supplementary_declarant_eori": None if declarant is None else declarant.eori,
        "booking_version": draft.consolidation.version,
        "xml_sha256": digest,
        "xml": xml,
        "created_at": format_datetime(created_at),
    }


def ledger_record(key: str, record: FilingRecord) -> dict[str, Any]:
    """``LedgerEntry``: a filing published under one correlation key."""
    return {
        "key": key,
        "mbl": record.mbl,
        "hbl": record.hbl,
        "filing": record.filing.value,
        "filer": record.filer,
        "planning_party": record.planning_party,
        "carrier": record.carrier,
        "lrn": record.lrn,
        "mrn": record.mrn,
        "supplementary_declarant": record.supplementary_declarant,
        "hbl_chain": [{"hbl": h, "issuer": i} for h, i in record.hbl_chain],
        "eoris": dict(record.eoris),
        "containers": {k: list(v) for k, v in record.containers.items()},
    }


def filing_record_from_ledger(data: Mapping[str, Any]) -> FilingRecord:
    """A ``LedgerEntry`` back to the domain's record; the chain's links are records in Avro, pairs in the domain."""
    chain = [(link["hbl"], link["issuer"]) for link in data.get("hbl_chain", [])]
    return FilingRecord.from_json({**data, "hbl_chain": chain})


def notification_record(notification: Notification, raw: bytes) -> dict[str, Any]:
    """``CustomsNotification``; its ``message_id`` is the hash of the raw XML, the notification's identity."""
    return {
        "message_id": sha256(raw),
        "message_type": notification.message_type,
        "kind": notification.kind.value,
        "lrn": notification.lrn,
        "mrn": notification.mrn,
        "mbl": notification.mbl,
        "hbl": notification.hbl,
        "referral_reference": notification.referral_reference,
        "notification_date": format_datetime(notification.notification_date) if notification.notification_date else "",
        "errors": [{"code": e.code, "pointer": e.pointer, "description": e.description} for e in notification.errors],
        "hbls": list(notification.hbls),
        "referral_references": list(notification.referral_references),
        "carrier_eori": notification.carrier_eori,
        "missing_filers": list(notification.missing_filers),
        "addressee_eori": notification.addressee,
        "deadline": None if notification.deadline is None else format_datetime(notification.deadline),
        "action": notification.action.value,
        "urgency": notification.urgency.value,
        "raw_sha256": sha256(raw),
        "containers": list(notification.containers),
        "functional_reference": notification.functional_reference,
        "rejected_message": notification.rejected_message,
    }


def notification_from_record(data: Mapping[str, Any]) -> Notification:
    if data["message_type"] not in MESSAGE_SPECS:
        raise ValueError(f"unknown notification message type {data['message_type']!r}")
    return Notification(
        message_type=data["message_type"],
        notification_date=parse_datetime(data["notification_date"]) if data.get("notification_date") else None,
        lrn=data.get("lrn"),
        mrn=data.get("mrn"),
        mbl=data.get("mbl"),
        hbl=data.get("hbl"),
        referral_reference=data.get("referral_reference"),
        errors=tuple(
            NotificationError(e["code"], e.get("pointer"), e.get("description")) for e in data.get("errors", [])
        ),
        missing_filers=tuple(data.get("missing_filers", [])),
        addressee=data.get("addressee_eori"),
        carrier_eori=data.get("carrier_eori"),
        deadline=parse_datetime(data["deadline"]) if data.get("deadline") else None,
        hbls=tuple(data.get("hbls", [])),
        referral_references=tuple(data.get("referral_references", [])),
        containers=tuple(data.get("containers", [])),
        functional_reference=data.get("functional_reference"),
        rejected_message=data.get("rejected_message"),
    )


def ens_event(mbl: str, kind: str, at: datetime, payload: Mapping[str, Any], source: str) -> dict[str, Any]:
    """``EnsEvent``; the id is derived from the source and content, so a replayed input gives the same id."""
    body = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return {
        "event_id": sha256(f"{source}|{kind}|{body}".encode())[:32],
        "mbl": mbl,
        "type": kind,
        "at": format_datetime(at),
        "payload": body,
    }
