"""``python -m bench``: measure, print the table, write ``bench/results/<UTC timestamp>.json`` and ``latest.json``.

Broker: ``ICS2_BOOTSTRAP_SERVERS``, when set and answering, is reused (the run works under its own topic prefix
and deletes its topics afterwards); otherwise a LocalBroker is started on free loopback ports in a temporary
folder and stopped at the end. Every process the run starts is stopped by its pid before it returns.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import click
from rich.console import Console

from bench.harness import Parameters, run
from bench.report import RESULTS_DIR, measures_table, results_table, write_results
from streams.errors import ICS2StreamsError
from streams.logs import configure_logging


@click.command()
@click.option("--quick", is_flag=True, help="Smoke run: 40 bookings and 30 notifications (well under 2 minutes).")
@click.option("--bookings", type=click.IntRange(2, 5000), help="Bookings pre-loaded for the throughput phase.")
@click.option("--notifications", type=click.IntRange(2, 2000), help="Notifications timed in the latency phase.")
@click.option("--interval-ms", type=click.FloatRange(1.0, 5000.0), help="Pause between two timed notifications.")
@click.option("--burst", type=click.IntRange(2, 100_000), help="DNLs pre-loaded at once for the notification rate.")
@click.option("--open-loop", type=click.IntRange(2, 100_000), help="DNLs sent open loop at the offered rate.")
@click.option("--offered-rate", type=click.FloatRange(1.0, 100_000.0), help="Notifications/s offered open loop.")
@click.option("--audit-records", type=click.IntRange(100, 10_000_000), help="Records of the audit replay measure.")
@click.option("--results-dir", type=click.Path(file_okay=False, path_type=Path), default=RESULTS_DIR, show_default=True)
def main(
    quick: bool,
    bookings: int | None,
    notifications: int | None,
    interval_ms: float | None,
    burst: int | None,
    open_loop: int | None,
    offered_rate: float | None,
    audit_records: int | None,
    results_dir: Path,
) -> None:
    """Pipeline throughput and latency beside a raw aiokafka passthrough, on the same broker in the same run.

    Reuses the broker at ICS2_BOOTSTRAP_SERVERS when it answers (deleting the run's topics afterwards), else starts
    a local one on free ports in a temporary folder and stops it at the end.
    """
    configure_logging("auto", level="INFO")
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    preset = Parameters.preset(quick)
    try:
        params = replace(
            preset,
            bookings=bookings or preset.bookings,
            notifications=notifications or preset.notifications,
            interval_ms=interval_ms or preset.interval_ms,
            burst=burst or preset.burst,
            open_loop=open_loop or preset.open_loop,
            offered_rate=offered_rate or preset.offered_rate,
            audit_records=audit_records or preset.audit_records,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    try:
        document = run(params)
    except ICS2StreamsError as exc:
        raise click.ClickException(str(exc)) from exc
    path = write_results(document, datetime.fromisoformat(document["started_at"]), results_dir)
    console = Console(width=200)
    console.print(results_table(document))
    console.print(measures_table(document))
    console.print(f"results: {path} (and {path.with_name('latest.json')})")


if __name__ == "__main__":
    main()
