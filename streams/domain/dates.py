"""Dates as ICS2 writes them (UTC, ``YYYY-MM-DDThh:mm:ssZ``) and the span a plausible date lies in."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache

from streams.errors import BookingError

EARLIEST_DATE = datetime(2000, 1, 1, tzinfo=UTC)
LATEST_DATE = datetime(2999, 12, 31, 23, 59, 59, tzinfo=UTC)
"""Dates of bookings and customs answers lie in this span; beyond it they are typos or garbage, and deadline
arithmetic on them (a lodging deadline 24 h before year 1) would overflow instead of failing clearly."""


def parse_datetime(value: str, path: str = "") -> datetime:
    """ICS2 dates are UTC with a ``Z``; offsets are accepted and converted, naive times are refused."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (TypeError, ValueError) as exc:
        raise BookingError(f"{path}: {value!r} is not a date-time like 2027-06-15T12:00:00Z") from exc
    if parsed.tzinfo is None:
        raise BookingError(f"{path}: {value!r} has no time zone; write it in UTC with a trailing Z")
    try:
        return parsed.astimezone(UTC)
    except OverflowError as exc:
        raise BookingError(f"{path}: {value!r} is out of the range of dates") from exc


def format_datetime(value: datetime) -> str:
    """The ICS2 form ``YYYY-MM-DDThh:mm:ssZ``."""
    if value.tzinfo is UTC:
        return _format_utc(value)
    return value.astimezone(UTC).strftime(_ICS2_FORMAT)


_ICS2_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


@lru_cache(maxsize=1024)
def _format_utc(value: datetime) -> str:
    """Cached for UTC times only (equal ones always write the same): a booking writes its own date about 20 times."""
    return value.strftime(_ICS2_FORMAT)
