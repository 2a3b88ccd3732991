"""The latest time the ENS may be lodged, by mode of transport (Delegated Regulation 2015/2446, Art. 105 ff.).

In multiple filing the ENS is lodged only when it is complete, so every partial filing must be in by this time.

Approximation: bulk (4 h before arrival) and short sea (2 h before arrival) count from the arrival at the first EU
port, which the booking does not carry. Without ``arrival_at`` we use the departure (``loading_at``) as the
deadline: it is earlier than the real one whenever the voyage lasts longer than 4 h (bulk) or 2 h (short sea),
so acting on it is never late, only early. The result says so with ``approximate=True``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from types import MappingProxyType

from streams.domain.model import MasterBill, Mode
from streams.domain.notifications import Notification, NotificationKind
from streams.errors import InputError

#: Hours before loading (containerised deep sea) or before arrival (bulk, short sea).
HOURS_BEFORE: dict[Mode, int] = {
    Mode.DEEP_SEA_CONTAINER: 24,
    Mode.DEEP_SEA_BULK: 4,
    Mode.SHORT_SEA: 2,
}

#: Default margin before the deadline from which the validator warns.
DEFAULT_MARGIN = timedelta(hours=12)


class DeadlineStatus(StrEnum):
    OPEN = "open"
    APPROACHING = "approaching"
    PASSED = "passed"


@dataclass(frozen=True, slots=True)
class Deadline:
    """When the ENS must be complete, and on what basis (for the forwarder reading a finding)."""

    latest: datetime
    basis: str
    approximate: bool = False

    def status(self, now: datetime, margin: timedelta = DEFAULT_MARGIN) -> DeadlineStatus:
        """Past the deadline, within ``margin`` of it, or still open."""
        if now.tzinfo is None:
            raise InputError("the current time must carry a time zone")
        if now >= self.latest:
            return DeadlineStatus.PASSED
        if now >= self.latest - margin:
            return DeadlineStatus.APPROACHING
        return DeadlineStatus.OPEN


def lodging_deadline(master: MasterBill, arrival_at: datetime | None = None) -> Deadline:
    """The lodging deadline of the master B/L's ENS; ``arrival_at`` (first EU port) makes bulk and short sea exact."""
    hours = HOURS_BEFORE[master.mode]
    if master.mode is Mode.DEEP_SEA_CONTAINER:
        basis = f"{hours} h before loading at {master.port_of_loading}"
        return Deadline(master.loading_at - timedelta(hours=hours), basis)
    if arrival_at is not None:
        if arrival_at.tzinfo is None:
            raise InputError("the arrival time must carry a time zone")
        return Deadline(
            arrival_at.astimezone(UTC) - timedelta(hours=hours), f"{hours} h before arrival at the first EU port"
        )
    return Deadline(
        master.loading_at,
        f"{master.mode.value}: {hours} h before arrival, approximated by the departure from {master.port_of_loading}",
        approximate=True,
    )


#: Time to answer assumed per request type when customs gives none: the IE3Q02 (RFI) and IE3Q03 (RFS) message
#: tables have no deadline element, so real requests arrive without one. Settings override these
#: (``ICS2_RFI_RESPONSE_TIME``, ``ICS2_RFS_RESPONSE_TIME``).
DEFAULT_RESPONSE_TIMES: Mapping[str, timedelta] = MappingProxyType(
    {"rfi": timedelta(hours=48), "rfs": timedelta(hours=24)}
)

#: The request type behind each notification that asks for an answer (the carrier's notices share the filer's).
REQUEST_TYPE_OF: Mapping[NotificationKind, str] = MappingProxyType(
    {
        NotificationKind.RFI: "rfi",
        NotificationKind.RFI_NOTICE_TO_CARRIER: "rfi",
        NotificationKind.RFS: "rfs",
        NotificationKind.RFS_NOTICE_TO_CARRIER: "rfs",
    }
)


@dataclass(frozen=True, slots=True)
class AnswerDeadline:
    """When a referral must be answered, and whether customs said so or the product assumed it."""

    latest: datetime
    assumed: bool
    response_time: timedelta | None = None

    @property
    def note(self) -> str:
        """What a forwarder reads beside the date: ``no deadline given: 48 h assumed``, or nothing."""
        if not self.assumed or self.response_time is None:
            return ""
        return f"no deadline given: {_duration(self.response_time)} assumed"


def answer_deadline(
    notification: Notification,
    received_at: datetime,
    response_times: Mapping[str, timedelta] = DEFAULT_RESPONSE_TIMES,
) -> AnswerDeadline | None:
    """The deadline customs gave, else the configured response time from the request's issue date (else from
    ``received_at``); None for notifications that ask for no answer."""
    if notification.deadline is not None:
        return AnswerDeadline(notification.deadline, assumed=False)
    request_type = REQUEST_TYPE_OF.get(notification.kind)
    if request_type is None:
        return None
    response_time = response_times.get(request_type, DEFAULT_RESPONSE_TIMES[request_type])
    issued = notification.notification_date or received_at
    return AnswerDeadline(issued + response_time, assumed=True, response_time=response_time)


def _duration(delta: timedelta) -> str:
    seconds = delta.total_seconds()
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 60:.0f} min"
