"""The latest time the ENS may be lodged, by mode of transport (Delegated Regulation 2015/2446, Art. 105 ff.).

In multiple filing the ENS is lodged only when it is complete, so every partial filing must be in by this time.

Approximation: bulk (4 h before arrival) and short sea (2 h before arrival) count from the arrival at the first EU
port, which the booking does not carry. Without ``arrival_at`` we use the departure (``loading_at``) as the
deadline: it is earlier than the real one whenever the voyage lasts longer than 4 h (bulk) or 2 h (short sea),
so acting on it is never late, only early. The result says so with ``approximate=True``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from streams.domain.model import MasterBill, Mode
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
