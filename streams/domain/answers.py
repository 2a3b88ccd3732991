"""Answers to customs' referrals: who may answer, which message each kind of answer is, and what the party is told.

The answer file's content becomes a typed message in ``streams.messages.answer_files``; the correlate stage
(``streams.pipeline.stages.answers``) completes it with the filing ledger and sends it; ``ics2 answer`` checks a
file alone first (``streams.cli.answer_checks``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from streams.domain.ledger import FilingRecord
from streams.domain.notifications import Action, Urgency
from streams.domain.routing import PartyAlert, alert_id
from streams.errors import InputError

#: The message each kind of answer is rendered as.
MESSAGE_TYPES: Mapping[str, str] = {"rfi": "IE3R02", "rfs": "IE3R03"}
#: Referral request reference an..17: printable, no spaces (it is also part of a Kafka key).
_REFERENCE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,16}")


class AnswerRejected(InputError):
    """An answer that will never be sent as it is: bad file, wrong party, wrong MBL, or XML customs would refuse."""


def check_reference(reference: str) -> str:
    """A reference that is not an..17 can never match a referral, and must not make a Kafka key of anything."""
    if not _REFERENCE.fullmatch(reference):
        raise AnswerRejected(f"referral reference {reference!r} is not an..17 without spaces")
    return reference


def check_answerer(request: Mapping[str, Any], record: FilingRecord) -> tuple[str, str]:
    """The request's reference and answering party, if that party may answer the referral about ``record``."""
    reference = check_reference(request["referral_reference"])
    party = request.get("requested_by") or record.filer
    if party != record.filer:
        raise AnswerRejected(f"only {record.filer}, the filer of the referred filing, may answer {reference}")
    if request.get("mbl") and request["mbl"] != record.mbl:
        raise AnswerRejected(f"referral {reference} is about MBL {record.mbl}, not {request['mbl']}")
    return reference, party


def sent_alert(
    request: Mapping[str, Any], record: FilingRecord, party: str, message_type: str, now: datetime
) -> PartyAlert:
    """Tells the answering party its answer went to customs."""
    reference = request["referral_reference"]
    kind = request["kind"].upper()
    return PartyAlert(
        alert_id=alert_id(f"answer|{request['request_id']}|sent", party),
        party=party, urgency=Urgency.INFO, action=Action.NONE,
        title=f"{message_type} answering {kind} {reference} sent for {record.hbl or record.mbl}",
        message=f"The answer to {kind} {reference} (MRN {record.mrn}) went to customs as {message_type}.",
        mbl=record.mbl, hbl=record.hbl, hbl_chain=record.hbl_chain, party_at_fault=None, lrn=record.lrn,
        mrn=record.mrn, referral_reference=reference, deadline=None, message_type=message_type, created_at=now,
    )  # fmt: skip


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
