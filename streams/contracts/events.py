"""Lifecycle events that ride on an ``EnsEvent`` ``tick``: acknowledgements, answers sent, filing changes sent.

The ``EnsEvent`` Avro contract's ``type`` enum has no default, so a new ``ack`` symbol would break FULL
compatibility with its v1 (``schemas/avro/README.md``, rule 3): a worker of the previous release could not read the
topic any more. An ack therefore travels as a ``tick`` whose payload carries ``{"ack": {...}}``. A worker that
knows acks turns it into the lifecycle's ``ack`` event; an older one reads a harmless watchdog tick. The audit
replays these events too, so they live in the contracts, below both the pipeline and the audit.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from streams.contracts.records import ens_event, notification_from_record
from streams.domain.dates import format_datetime
from streams.domain.events import EventType, LifecycleEvent, event_from_json

#: The payload key that makes a ``tick`` record an acknowledgement.
ACK = "ack"
#: The payload key that makes a ``tick`` record the answer to a referral (``streams.pipeline.stages.answers``). The
#: ``EnsEvent`` type enum has no default, so a new symbol would break FULL compatibility; it rides on a tick too.
ANSWER_SENT = "answer_sent"
#: Payload key of a ``tick`` saying a filing change (amendment, invalidation) went out
#: (``streams.pipeline.stages.changes``).
CHANGE_SENT = "change_sent"


def ack_record(mbl: str, alert_id: str, by: str, at: datetime) -> dict[str, Any]:
    """The ``EnsEvent`` record acknowledging ``alert_id`` of the ENS of ``mbl``."""
    payload = {ACK: {"alert_id": alert_id, "by": by, "at": format_datetime(at)}}
    return ens_event(mbl, "tick", at, payload, f"ack:{alert_id}:{by}")


def lifecycle_event(kind: str, mbl: str, payload: Mapping[str, Any]) -> dict[str, Any]:
    """An ``EnsEvent``'s type and payload as the lifecycle's event, an ack carried by a tick made an ``ack``."""
    if kind == "tick" and isinstance(payload.get(ACK), Mapping):
        ack = payload[ACK]
        return {"type": "ack", "mbl": mbl, "alert_id": str(ack["alert_id"]), "by": ack.get("by"), "at": ack.get("at")}
    if kind == "tick" and isinstance(payload.get(ANSWER_SENT), Mapping):
        return {"type": ANSWER_SENT, "mbl": mbl, **payload[ANSWER_SENT]}
    if kind == "tick" and isinstance(payload.get(CHANGE_SENT), Mapping):
        return {"type": CHANGE_SENT, "mbl": mbl, **payload[CHANGE_SENT]}
    return {"type": kind, "mbl": mbl, **payload}


def decode_lifecycle_event(kind: str, mbl: str, payload: Mapping[str, Any]) -> LifecycleEvent:
    """An ``EnsEvent``'s type and payload as the lifecycle's typed event, a notification's contract decoded.

    Raises ``KeyError``, ``TypeError``, ``ValueError`` (or the contract's ``InputError``) for a malformed payload.
    """
    data = lifecycle_event(kind, mbl, payload)
    if data["type"] == EventType.NOTIFICATION:
        return event_from_json(data, notification_from_record(payload["notification"]))
    return event_from_json(data)
