"""A customs answer that matches no filing is parked, reported once as a dead letter with its bytes, and still
matched when its filing appears (before, it was parked for ever without an alert or a dead letter)."""

from __future__ import annotations

import json
from datetime import timedelta

from streams.pipeline.dead_letters import DeadLetterSink
from streams.pipeline.stage import Incoming
from streams.pipeline.stages.correlate import Correlator, report_unmatched, unmatched_due, unmatched_key
from tests.data import seed_json_with_carrier_contact
from tests.unit.test_handlers import NOW, Pump

WAIT = timedelta(minutes=15)


def parsed_records(pump: Pump, schema: str) -> list:
    topic = pump.catalogue.notifications_parsed.name
    return [e for e in pump.topics[topic] if dict(e.headers).get("ics2-record", b"").decode().endswith(schema)]


def a_registration_and_its_ledger_entry() -> tuple[Pump, object, object]:
    pump = Pump()
    pump.book(seed_json_with_carrier_contact())
    pump.run()
    answer = next(e for e in parsed_records(pump, "CustomsNotification") if e.key.startswith(b"lrn:"))
    entry = next(e for e in parsed_records(pump, "LedgerEntry") if e.key == answer.key)
    return pump, answer, entry


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self):
        return self.now


def test_an_unmatched_answer_is_reported_once_and_still_matched_later():
    pump, answer, entry = a_registration_and_its_ledger_entry()
    clock = Clock()
    ledger: dict[str, bytes] = {}
    parked: dict[str, bytes] = {}
    stage = Correlator(pump.schemas, pump.catalogue, clock, ledger, parked)
    topic = pump.catalogue.notifications_parsed.name
    assert stage(Incoming(topic, 0, 1, answer.key, answer.value, answer.headers)) == []
    key = answer.key.decode()
    assert unmatched_due(parked.items(), clock.now + WAIT - timedelta(seconds=1), WAIT) == []
    assert unmatched_due(parked.items(), clock.now + WAIT, WAIT) == [key]

    sink = DeadLetterSink(None, pump.catalogue.dead_letters.name, pump.schemas)  # type: ignore[arg-type]
    [letter] = report_unmatched(stage, [key], WAIT, sink)
    dead = pump.schemas.decode(letter.value, reader="DeadLetter").record
    assert dead["stage"] == "correlate/unmatched" and key in dead["reason"] and "matches no filing" in dead["reason"]
    assert pump.schemas.decode(dead["original_value"]).record["message_type"] == "IE3R01"
    assert unmatched_due(parked.items(), clock.now + 2 * WAIT, WAIT) == [], "reported once"

    released = stage(Incoming(topic, 0, 2, entry.key, entry.value, entry.headers))
    assert any(e.topic == pump.catalogue.ens_events.name for e in released), "matched once its filing is known"
    assert key not in parked and unmatched_key(key) not in parked
    assert json.loads(ledger[key])["lrn"] == key.removeprefix("lrn:")
