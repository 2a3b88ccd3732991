"""What docker-compose.yml's one-shot ``book`` service runs: the demo's bookings, published once the worker is up.

``python -m streams.deploy.compose book`` publishes the same bookings as ``make demo`` (the seed co-load booked by
each party that files for it, and the second consolidation loading 30 hours from now) to the broker of
``ICS2_BOOTSTRAP_SERVERS``. The second booking depends on the clock, so it cannot be a file ``ics2 book`` reads.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

from aiokafka.errors import KafkaError

from streams.client import publish_bookings
from streams.errors import ICS2StreamsError
from streams.scenarios import bookings
from streams.settings import Settings

EXIT_OK = 0
EXIT_BROKER = 1
EXIT_USAGE = 2
USAGE = "usage: python -m streams.deploy.compose book"


def book_demo(settings: Settings, now: datetime) -> int:
    """Publish the demo's bookings; returns how many were published."""
    books = bookings(now)
    asyncio.run(publish_bookings(settings, books))
    for book in books:
        print(f"booked {book['master']['mbl_number']} as {book['planning_party']}", flush=True)
    return len(books)


def main(argv: Sequence[str] | None = None) -> int:
    """One line on error, with the exit code the compose service ends with."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args != ["book"]:
        print(USAGE, file=sys.stderr)
        return EXIT_USAGE
    settings = Settings.from_env()
    try:
        book_demo(settings, datetime.now(UTC))
    except (ICS2StreamsError, KafkaError) as exc:
        print(f"error: cannot book the demo on {settings.bootstrap_servers}: {exc}", file=sys.stderr)
        return EXIT_BROKER
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
