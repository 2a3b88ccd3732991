"""What an ``EnsEvent`` payload costs as JSON inside Avro, against the same content as typed Avro records.

Why: #12 asked for an ``EnsEvent`` v2 with typed payloads instead of a JSON string inside Avro, to cut the
per-record cost. This measures the largest payload, a correlated notification (its ``CustomsNotification`` and
``LedgerEntry``), made in process by the real stages from the seed booking and the customs simulator: reading it
from its JSON string against decoding the two typed records it holds, and the canonical JSON the event id is
derived from. Run ``python -m bench.payloads``; no broker is needed.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from fastavro import parse_schema, schemaless_reader

from streams.contracts.avro import DEFAULT_DIRECTORY, HEADER_SIZE, SchemaCatalogue
from streams.logs import configure_logging
from streams.pipeline.stage import Emit, Incoming
from streams.pipeline.stages.booking import BookingStage
from streams.pipeline.stages.correlate import Correlator
from streams.pipeline.stages.parse import NotificationParser
from streams.scenarios import seed_booking
from streams.simulator import CustomsSimulator
from streams.topics import Catalogue

NOW = datetime(2027, 6, 1, 9, 0, tzinfo=UTC)
#: The typed records a notification event's payload holds, decoded also by fastavro alone (no catalogue lookup).
RAW = ("CustomsNotification", "LedgerEntry")


def seed_records(schemas: SchemaCatalogue) -> dict[str, list[bytes]]:
    """Every record the booking, parse and correlate stages write for the seed booking and customs' answers."""
    catalogue = Catalogue.for_prefix("")
    clock = lambda: NOW  # noqa: E731
    stages: dict[str, Callable[[Incoming], list[Emit]]] = {
        catalogue.bookings.name: BookingStage(schemas, catalogue, clock, {}),
        catalogue.notifications_inbound.name: NotificationParser(schemas, catalogue, clock),
        catalogue.notifications_parsed.name: Correlator(schemas, catalogue, clock, {}, {}),
    }
    simulator = CustomsSimulator(seed=7)
    written: dict[str, list[bytes]] = {}
    booking = seed_booking()
    key = booking["master"]["mbl_number"].encode()
    queue = deque([Emit(catalogue.bookings.name, key, schemas.encode("BookingEvent", booking))])
    while queue:
        emit = queue.popleft()
        offset = len(written.setdefault(emit.topic, []))
        written[emit.topic].append(emit.value)
        if emit.topic == catalogue.filings_outbound.name:
            filing = schemas.decode(emit.value, reader="Filing").record
            for answer in simulator.submit(filing["xml"], NOW):
                queue.append(Emit(catalogue.notifications_inbound.name, b"x", answer.xml))
        stage = stages.get(emit.topic)
        if stage is not None:
            queue.extend(stage(Incoming(emit.topic, 0, offset, emit.key, emit.value, emit.headers, 0)))
    return written


def per_call_us(calls: int, work: Callable[[], object]) -> float:
    """Microseconds per call of ``work``, the best of three rounds."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(calls):
            work()
        best = min(best, time.perf_counter() - started)
    return best / calls * 1e6


def measure(calls: int) -> dict[str, Any]:
    schemas = SchemaCatalogue.load()
    written = seed_records(schemas)
    events = [schemas.decode(v, reader="EnsEvent").record for v in written["ics2.ens-events"]]
    notification = next(e for e in events if e["type"] == "notification")
    payload = json.loads(notification["payload"])
    parsed = [schemas.decode(v) for v in written["ics2.notifications.parsed"]]
    typed_notification = next(
        v for v, d in zip(written["ics2.notifications.parsed"], parsed, strict=True) if d.name.endswith("Notification")
    )
    typed_entry = next(
        v for v, d in zip(written["ics2.notifications.parsed"], parsed, strict=True) if d.name.endswith("LedgerEntry")
    )
    text = notification["payload"]
    raw = {name: parse_schema(json.loads((DEFAULT_DIRECTORY / f"{name}.avsc").read_text())) for name in RAW}
    bodies = [typed_notification[HEADER_SIZE:], typed_entry[HEADER_SIZE:]]
    return {
        "payload_json_bytes": len(text),
        "typed_avro_bytes": len(typed_notification) + len(typed_entry),
        "json_loads_us": per_call_us(calls, lambda: json.loads(text)),
        "typed_decode_us": per_call_us(
            calls,
            lambda: (
                schemas.decode(typed_notification, reader="CustomsNotification"),
                schemas.decode(typed_entry, reader="LedgerEntry"),
            ),
        ),
        "typed_decode_raw_us": per_call_us(
            calls, lambda: [schemaless_reader(io.BytesIO(b), raw[n], None) for n, b in zip(RAW, bodies, strict=True)]
        ),
        "event_id_json_us": per_call_us(calls, lambda: json.dumps(payload, sort_keys=True, separators=(",", ":"))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    # The stages log what they process: on standard error, warnings only. Standard output is the result as JSON;
    # the sentence that sums it up goes to standard error.
    configure_logging("auto", level="WARNING")
    result = measure(parser.parse_args().calls)
    print(json.dumps(result, indent=2))
    print(
        f"notification payload: JSON {result['payload_json_bytes']} B read in {result['json_loads_us']:.1f} us;"
        f" as typed Avro ({result['typed_avro_bytes']} B) {result['typed_decode_us']:.1f} us"
        f" ({result['typed_decode_us'] / result['json_loads_us']:.1f}x), by fastavro alone"
        f" {result['typed_decode_raw_us']:.1f} us ({result['typed_decode_raw_us'] / result['json_loads_us']:.1f}x);"
        f" event id JSON {result['event_id_json_us']:.1f} us",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
