"""The Faust worker as a subprocess on the real broker: bookings in, filings, ENS state and alerts out.

Customs' answers are produced here straight to the inbound topic, built by the simulator's builders, so these
tests do not depend on the gateway connector; tests/integration/test_end_to_end.py runs the gateway too.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from streams.admin import apply_topics
from streams.client import produce, publish_bookings, read_topic
from streams.contracts.avro import SchemaCatalogue
from streams.contracts.dead_letter import DeadLetter
from streams.domain.drafts import make_lrn
from streams.domain.notifications import mrn_check_character
from streams.messages.build import build_ie3q01, build_ie3r01
from streams.settings import Settings
from streams.topics import Catalogue
from tests.data import seed_json
from tests.integration.services import Service, worker

SCHEMAS = SchemaCatalogue.load()
MBL = "OCLU26TYO7781234"


def mrn(serial: int) -> str:
    body = f"27NL{serial:013d}"
    return body + mrn_check_character(body)


def booking(mbl: str, **changes: object) -> dict:
    data = seed_json()
    data["master"]["mbl_number"] = mbl
    data.update(changes)
    return data


@pytest.fixture
def settings(kafka_settings: Settings, catalogue: Catalogue) -> Settings:
    return replace(kafka_settings, topic_prefix=catalogue.prefix, app_id=f"{catalogue.prefix}app")


@pytest.fixture
async def running_worker(settings: Settings, tmp_path: Path) -> AsyncIterator[Service]:
    service = worker(settings, tmp_path, ICS2_WATCHDOG_INTERVAL_S="1").start()
    await asyncio.to_thread(service.wait_healthy)
    yield service
    service.stop()


async def records_of(settings: Settings, topic: str, count: int, timeout: float = 45.0) -> list:
    records = await read_topic(settings, topic, until=lambda rs: len(rs) >= count, timeout=timeout)
    assert len(records) >= count, f"{topic}: {len(records)} of {count} records"
    return records


class TestBookingThroughWorker:
    async def test_booking_becomes_drafts_and_outbound_filings(self, settings, catalogue, running_worker):
        """A seed booking produced to the input topic comes out of the worker as 4 drafts and 4 filings with headers."""
        await publish_bookings(settings, [seed_json()])
        drafts = await records_of(settings, catalogue.filing_drafts.name, 4)
        assert sorted(SCHEMAS.decode(r.value).record["filing"] for r in drafts) == ["F14", "F14", "F15", "F15"]
        filings = await records_of(settings, catalogue.filings_outbound.name, 4)
        for record in filings:
            filing = SCHEMAS.decode(record.value, reader="Filing").record
            assert record.header("ics2-message-type") == filing["message_type"].encode()
            assert record.header("ics2-lrn") == filing["lrn"].encode()
            assert record.header("ics2-mbl") == MBL.encode()
            assert record.header("ics2-filer") == b"ML-TYO"
            assert filing["xml"].startswith(b"<?xml")

        async def all_sent() -> bool:
            status, state = await asyncio.to_thread(running_worker.get, f"/ens/{MBL}")
            return status == 200 and {f["state"] for f in state["filings"] if f["ours"]} == {"sent"}

        await eventually(all_sent)

    async def test_corrupt_records_are_dead_lettered_and_the_worker_goes_on(self, settings, catalogue, running_worker):
        """Garbage and an unusable booking go to the dead-letter topic with reason and bytes; a good one flows on."""
        bad = seed_json()
        bad["occurred_at"] = "yesterday"
        garbage = b"\x00not an avro booking"
        await produce(settings, catalogue.bookings.name, [(b"X", garbage)])
        await produce(settings, catalogue.bookings.name, [(MBL.encode(), SCHEMAS.encode("BookingEvent", bad))])
        await publish_bookings(settings, [booking("OCLU26TYO0000002")])
        letters = await records_of(settings, catalogue.dead_letters.name, 2)
        decoded = [DeadLetter.from_record(SCHEMAS.decode(r.value, reader="DeadLetter").record) for r in letters]
        by_value = {d.original_value: d for d in decoded}
        assert garbage in by_value
        assert by_value[garbage].stage == "plan-bookings/decode"
        assert by_value[garbage].source_topic == catalogue.bookings.name
        assert "marker" in by_value[garbage].reason.lower() or "avro" in by_value[garbage].reason.lower()
        unusable = next(d for d in decoded if d.original_value != garbage)
        assert "occurred_at" in unusable.reason and unusable.responsible_party == "ML-TYO"
        drafts = await records_of(settings, catalogue.filing_drafts.name, 4)
        assert {SCHEMAS.decode(r.value).record["mbl"] for r in drafts} == {"OCLU26TYO0000002"}

    async def test_count_in_equals_count_out_plus_dead_letters(self, settings, catalogue, running_worker):
        """Every booking offset appears as the source of an output record or of exactly one dead letter."""
        good = [booking(f"OCLU26TYO{i:07d}") for i in range(6)]
        await publish_bookings(settings, good[:3])
        await produce(settings, catalogue.bookings.name, [(b"bad", b"\xc3\x01garbage") for _ in range(2)])
        await publish_bookings(settings, good[3:])
        inputs = await records_of(settings, catalogue.bookings.name, 8)
        letters = await records_of(settings, catalogue.dead_letters.name, 2)
        drafts = await records_of(settings, catalogue.filing_drafts.name, 6 * 4)
        sources_out = {r.header("ics2-source") for r in drafts}
        sources_dead = Counter(
            f"{d.source_topic}:{d.source_partition}:{d.source_offset}".encode()
            for d in (DeadLetter.from_record(SCHEMAS.decode(r.value).record) for r in letters)
        )
        all_inputs = {f"{r.topic}:{r.partition}:{r.offset}".encode() for r in inputs}
        assert len(all_inputs) == 8
        assert all_inputs == sources_out | set(sources_dead)
        assert not sources_out & set(sources_dead)
        assert all(n == 1 for n in sources_dead.values())


class TestCorrelation:
    async def test_registration_before_its_filing_is_parked_then_correlated(self, settings, catalogue, running_worker):
        """An IE3R01 for an LRN the worker has not sent yet waits, and registers the filing once it is sent."""
        data = seed_json()
        lrn = make_lrn(MBL, "SKC26TYO0001", "F15", "ML-TYO", 1)
        r01 = build_ie3r01(
            lrn=lrn,
            mrn=mrn(1),
            registered_at=datetime(2026, 11, 20, 9, 5, tzinfo=UTC),
            circumstance="F15",
        )
        await produce(settings, catalogue.notifications_inbound.name, [(b"NL812345678000", r01)])
        await records_of(settings, catalogue.notifications_parsed.name, 1)
        await asyncio.sleep(1.0)
        await publish_bookings(settings, [data])

        async def registered() -> bool:
            status, state = await asyncio.to_thread(running_worker.get, f"/ens/{MBL}")
            if status != 200:
                return False
            filing = next(f for f in state["filings"] if f["hbl"] == "SKC26TYO0001" and f["filing"] == "F15")
            return filing["state"] == "registered" and filing["mrn"] == mrn(1)

        await eventually(registered)

    async def test_duplicate_notification_yields_one_alert(self, settings, catalogue, running_worker):
        """The same DNL delivered twice gives each party one alert."""
        await publish_bookings(settings, [seed_json()])
        lrn = make_lrn(MBL, "SKC26TYO0001", "F15", "ML-TYO", 1)
        registered_at = datetime(2026, 11, 20, 9, 5, tzinfo=UTC)
        r01 = build_ie3r01(lrn=lrn, mrn=mrn(2), registered_at=registered_at, circumstance="F15")
        dnl = build_ie3q01(mrn=mrn(2), issued_at=registered_at, member_state="NL", hbl="SKC26TYO0001", mbl=MBL)
        await produce(settings, catalogue.notifications_inbound.name, [(b"NL812345678000", r01)])
        await produce(settings, catalogue.notifications_inbound.name, [(b"NL812345678000", dnl)] * 2)

        def dnl_alerts(records: list) -> list[dict]:
            decoded = [SCHEMAS.decode(r.value, reader="PartyAlert").record for r in records]
            return [a for a in decoded if a["notification_message_type"] == "IE3Q01"]

        await read_topic(settings, catalogue.alerts.name, until=lambda rs: len(dnl_alerts(rs)) >= 2, timeout=30)
        parsed = await records_of(settings, catalogue.notifications_parsed.name, 3)
        assert sum(r.header("ics2-message-type") == b"IE3Q01" for r in parsed) == 2
        await asyncio.sleep(2.0)
        alerts = dnl_alerts(await read_topic(settings, catalogue.alerts.name, timeout=10))
        assert sorted(a["party_id"] for a in alerts) == ["CARRIER-A", "ML-TYO"]
        assert all(a["urgency"] == "critical" and a["hbl"] == "SKC26TYO0001" for a in alerts)


class TestAlertsFollowTheState:
    """A party's queue on the real broker says when an alert no longer stands."""

    @pytest.fixture
    async def watching_worker(self, settings: Settings, tmp_path: Path) -> AsyncIterator[Service]:
        """A worker whose widest margin (a year) puts the seed's deadline in reach: every missing filing is chased."""
        service = worker(settings, tmp_path, ICS2_WATCHDOG_INTERVAL_S="1", ICS2_DEADLINE_MARGINS="9000h,0h").start()
        await asyncio.to_thread(service.wait_healthy)
        yield service
        service.stop()

    async def test_blocked_and_missing_alerts_are_resolved_on_the_party_queues(
        self, settings, catalogue, watching_worker
    ):
        """Version 1 is blocked on COLOADER-A's HS code and the watchdog chases ML-TYO's F15; version 2 fixes
        the code and customs registers the F15: each party's queue gets a RESOLVED record naming its alert."""
        await apply_topics(settings, catalogue, ["ML-TYO", "COLOADER-A"])
        ml_tyo, coloader = (catalogue.party_queue(p).name for p in ("ML-TYO", "COLOADER-A"))
        first = seed_json()
        first["house_bills"][4]["goods"][0]["hs_code"] = "52"
        await publish_bookings(settings, [first])

        blocked = (await queue_alerts(settings, coloader, lambda a: a["title"].startswith("Filing blocked")))[0]
        chased = (
            await queue_alerts(
                settings, ml_tyo, lambda a: a["notification_message_type"] == "DEADLINE" and a["hbl"] == "SKC26TYO0001"
            )
        )[0]
        assert chased["title"].startswith("F15 for SKC26TYO0001 not lodged")

        await publish_bookings(settings, [{**seed_json(), "version": 2}])
        resolved = await queue_alerts(settings, coloader, lambda a: a["closes_alert_id"] == blocked["alert_id"])
        assert [a["notification_message_type"] for a in resolved] == ["RESOLVED"]
        assert "fixed version was filed" in resolved[0]["message"]

        lrn = make_lrn(MBL, "SKC26TYO0001", "F15", "ML-TYO", 1)
        registered_at = datetime(2026, 11, 20, 9, 5, tzinfo=UTC)
        r01 = build_ie3r01(lrn=lrn, mrn=mrn(3), registered_at=registered_at, circumstance="F15")
        await produce(settings, catalogue.notifications_inbound.name, [(b"NL812345678000", r01)])
        closed = await queue_alerts(settings, ml_tyo, lambda a: a["closes_alert_id"] == chased["alert_id"])
        assert closed[0]["notification_message_type"] == "RESOLVED" and mrn(3) in closed[0]["message"]


class TestWatchdogAfterRecovery:
    async def test_a_worker_without_local_state_chases_what_it_recovered(self, settings, catalogue, tmp_path):
        """The watchdog reads a schedule the tracker keeps as it stores states; a worker that got its states from
        the changelog (an empty state folder) stored none of them, and must still tick them: it rebuilds the
        schedule from the recovered table."""
        watch = {"ICS2_WATCHDOG_INTERVAL_S": "1", "ICS2_DEADLINE_MARGINS": "9000h,0h"}
        await apply_topics(settings, catalogue, ["ML-TYO"])
        for name in ("first", "fresh"):
            (tmp_path / name).mkdir()
        first = worker(settings, tmp_path / "first", **watch).start()
        try:
            await asyncio.to_thread(first.wait_healthy)
            await publish_bookings(settings, [seed_json()])
            chased = await queue_alerts(
                settings, catalogue.party_queue("ML-TYO").name, lambda a: a["notification_message_type"] == "DEADLINE"
            )
            assert chased, "the first worker's watchdog chased nothing"
        finally:
            assert first.stop() == 0
        fresh = worker(settings, tmp_path / "fresh", **watch).start()
        try:
            await asyncio.to_thread(fresh.wait_healthy)
            started_ms = int(time.time() * 1000)

            def ticks(records: list) -> list:
                decoded = [(r, SCHEMAS.decode(r.value, reader="EnsEvent").record) for r in records]
                return [e for r, e in decoded if e["type"] == "tick" and r.timestamp_ms >= started_ms]

            events = await read_topic(settings, catalogue.ens_events.name, until=lambda rs: bool(ticks(rs)), timeout=60)
        finally:
            fresh.stop()
        assert {e["mbl"] for e in ticks(events)} == {MBL}, "the fresh worker's watchdog ticked nothing"


async def queue_alerts(settings: Settings, topic: str, wanted, timeout: float = 60.0) -> list[dict]:
    """The alerts on a party queue that ``wanted`` accepts, once there is at least one."""

    def matching(records: list) -> list[dict]:
        decoded = [SCHEMAS.decode(r.value, reader="PartyAlert").record for r in records]
        return [a for a in decoded if wanted(a)]

    records = await read_topic(settings, topic, until=lambda rs: bool(matching(rs)), timeout=timeout)
    found = matching(records)
    assert found, f"{topic}: no matching alert among {len(records)} records"
    return found


async def eventually(check, timeout: float = 30.0, interval: float = 0.5) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if await check():
            return
        await asyncio.sleep(interval)
    raise AssertionError(f"{check.__name__} did not hold within {timeout}s")
