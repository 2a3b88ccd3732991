"""Customs' answers as one typed value: what happened, to which filing, and what the trader must do now.

Every per-message fact (kind, action due, urgency, who must act) lives in the ``MESSAGE_SPECS`` table, so that a
new message or a changed policy is one row, never a branch somewhere in the pipeline.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType


class NotificationKind(StrEnum):
    """What a notification means, in the domain's words rather than message codes."""

    REGISTERED = "registered"
    REJECTED = "rejected"
    LIFECYCLE_ERROR = "lifecycle_error"
    NOT_COMPLETE = "not_complete"
    PENDING = "pending"
    ASSESSMENT_COMPLETE = "assessment_complete"
    DO_NOT_LOAD = "do_not_load"
    RFI = "rfi"
    RFI_NOTICE_TO_CARRIER = "rfi_notice_to_carrier"
    RFS = "rfs"
    RFS_NOTICE_TO_CARRIER = "rfs_notice_to_carrier"
    CONTROL = "control"
    CONTROL_AEO = "control_aeo"
    AMENDMENT_ACCEPTED = "amendment_accepted"
    ARRIVAL_REGISTERED = "arrival_registered"
    ARRIVAL_REJECTED = "arrival_rejected"
    INVALIDATION_ACCEPTED = "invalidation_accepted"
    CONSULTATION_RESULTS = "consultation_results"


class Action(StrEnum):
    """What the receiving party has to do about a notification."""

    NONE = "none"
    FIX_AND_REFILE = "fix_and_refile"
    CHASE_MISSING_FILER = "chase_missing_filer"
    FILE_MISSING_FILING = "file_missing_filing"
    ANSWER_RFI = "answer_rfi"
    ANSWER_RFS = "answer_rfs"
    STOP_LOADING = "stop_loading"
    PRESENT_GOODS = "present_goods"
    INFO = "info"


class Urgency(StrEnum):
    """How fast a human must look: a DNL stops a container from being loaded."""

    CRITICAL = "critical"
    HIGH = "high"
    NORMAL = "normal"
    INFO = "info"


class Actor(StrEnum):
    """Who must act on a notification."""

    FILER = "filer"
    CARRIER = "carrier"
    SUPPLEMENTARY_DECLARANT = "supplementary_declarant"


@dataclass(frozen=True, slots=True)
class MessageSpec:
    """The fixed facts of one customs-to-trader message."""

    kind: NotificationKind
    action: Action
    urgency: Urgency
    actors: tuple[Actor, ...] = ()


#: Answers whose refusal quotes the referral request reference they answered.
REFERRAL_ANSWERS = frozenset({"IE3R02", "IE3R03"})

_F, _C, _S = Actor.FILER, Actor.CARRIER, Actor.SUPPLEMENTARY_DECLARANT

#: Message code -> its facts. IE3N09, IE3R04 and IE3N07 have no public HTI digest; they follow IE3N08, IE3R01, IE3N01.
MESSAGE_SPECS: Mapping[str, MessageSpec] = MappingProxyType(
    {
        "IE3R01": MessageSpec(NotificationKind.REGISTERED, Action.NONE, Urgency.INFO),
        "IE3N99": MessageSpec(NotificationKind.REJECTED, Action.FIX_AND_REFILE, Urgency.HIGH, (_F,)),
        "IE3N01": MessageSpec(NotificationKind.LIFECYCLE_ERROR, Action.FIX_AND_REFILE, Urgency.HIGH, (_F,)),
        "IE3N02": MessageSpec(NotificationKind.NOT_COMPLETE, Action.CHASE_MISSING_FILER, Urgency.NORMAL, (_F,)),
        "IE3N11": MessageSpec(NotificationKind.PENDING, Action.FILE_MISSING_FILING, Urgency.HIGH, (_S,)),
        "IE3N03": MessageSpec(NotificationKind.ASSESSMENT_COMPLETE, Action.INFO, Urgency.INFO),
        "IE3Q01": MessageSpec(NotificationKind.DO_NOT_LOAD, Action.STOP_LOADING, Urgency.CRITICAL, (_F, _C)),
        "IE3Q02": MessageSpec(NotificationKind.RFI, Action.ANSWER_RFI, Urgency.HIGH, (_F,)),
        "IE3N04": MessageSpec(NotificationKind.RFI_NOTICE_TO_CARRIER, Action.INFO, Urgency.HIGH, (_C,)),
        "IE3Q03": MessageSpec(NotificationKind.RFS, Action.ANSWER_RFS, Urgency.HIGH, (_F,)),
        "IE3N05": MessageSpec(NotificationKind.RFS_NOTICE_TO_CARRIER, Action.INFO, Urgency.HIGH, (_C,)),
        "IE3N08": MessageSpec(NotificationKind.CONTROL, Action.PRESENT_GOODS, Urgency.HIGH, (_F, _C)),
        "IE3N09": MessageSpec(NotificationKind.CONTROL_AEO, Action.PRESENT_GOODS, Urgency.HIGH, (_F, _C)),
        "IE3N10": MessageSpec(NotificationKind.AMENDMENT_ACCEPTED, Action.NONE, Urgency.INFO),
        "IE3R04": MessageSpec(NotificationKind.ARRIVAL_REGISTERED, Action.NONE, Urgency.INFO),
        "IE3N07": MessageSpec(NotificationKind.ARRIVAL_REJECTED, Action.FIX_AND_REFILE, Urgency.HIGH, (_F,)),
        "IE3R07": MessageSpec(NotificationKind.INVALIDATION_ACCEPTED, Action.NONE, Urgency.INFO),
        "IE3R08": MessageSpec(NotificationKind.CONSULTATION_RESULTS, Action.NONE, Urgency.INFO),
    }
)


@dataclass(frozen=True, slots=True)
class NotificationError:
    """One error of an IE3N99/IE3N01/IE3N07: a CL723 code and the XPath of the element at fault."""

    code: str
    pointer: str | None
    description: str | None = None


@dataclass(frozen=True, slots=True)
class Notification:
    """A parsed customs notification, keyed by the correlation values the pipeline joins on."""

    message_type: str
    notification_date: datetime | None
    lrn: str | None = None
    mrn: str | None = None
    mbl: str | None = None
    hbl: str | None = None
    referral_reference: str | None = None
    errors: tuple[NotificationError, ...] = ()
    missing_filers: tuple[str, ...] = ()
    addressee: str | None = None
    """The declarant (or, for IE3N11, the supplementary declarant) the message names."""
    carrier_eori: str | None = None
    deadline: datetime | None = None
    hbls: tuple[str, ...] = ()
    """Every house document the message names (an IE3N03 can clear several); ``hbl`` is the first."""
    referral_references: tuple[str, ...] = ()
    containers: tuple[str, ...] = ()
    """Containers the message names (a Do Not Load, an assessment or a control of whole containers); the
    correlation turns them into the HBLs stuffed in them."""
    functional_reference: str | None = None
    """IE3N99's ``functionalReference`` as sent; ``lrn``, ``mrn`` or ``referral_reference`` says what it named."""
    rejected_message: str | None = None
    """The message an IE3N99/IE3N01 refuses (root of its error pointers, e.g. ``IE3F15``, ``IE3R02``), if known."""

    @property
    def refuses_a_filing(self) -> bool:
        """Whether a rejection is about a filing (IE3F..), rather than an answer, amendment or request."""
        return self.rejected_message is None or self.rejected_message.startswith("IE3F")

    @property
    def spec(self) -> MessageSpec:
        return MESSAGE_SPECS[self.message_type]

    @property
    def kind(self) -> NotificationKind:
        return self.spec.kind

    @property
    def action(self) -> Action:
        return self.spec.action

    @property
    def urgency(self) -> Urgency:
        return self.spec.urgency

    @property
    def actors(self) -> tuple[Actor, ...]:
        return self.spec.actors


_MRN_SHAPE = re.compile(r"^[0-9]{2}[A-Z]{2}[A-Z0-9]{13}[0-9]$")


def _iso6346_value(char: str) -> int:
    """Letter values of ISO 6346 (A=10, skipping multiples of 11), the check the Union Customs Code uses for MRNs."""
    if char.isdigit():
        return int(char)
    value = 10
    for letter in "ABCDEFGHIJKLMNOPQRSTUVWXYZ":
        if value % 11 == 0:
            value += 1
        if letter == char:
            return value
        value += 1
    raise ValueError(f"{char!r} cannot appear in an MRN")


def mrn_check_character(body: str) -> str:
    """The 18th character of an MRN computed over its first 17."""
    total = sum(_iso6346_value(c) * (2**i) for i, c in enumerate(body.upper()))
    return str(total % 11 % 10)


def is_well_formed_mrn(mrn: str) -> bool:
    """an18: year (2 digits), country (2 letters), 13 alphanumerics, check character."""
    return bool(_MRN_SHAPE.match(mrn)) and mrn_check_character(mrn[:17]) == mrn[17]
