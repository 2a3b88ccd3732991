"""The whole hostile catalogue through a worker on the real broker: one dead letter each, and the worker goes on.

Every record of ``tests/hostile.py`` is produced to ``ics2.bookings`` or ``ics2.notifications.inbound`` between
valid ones, all on one key so that they share a partition and its order: a valid record after the hostile ones
is only processed if the worker kept going. Each input must then have exactly one outcome, outputs or one dead
letter (count in = count out + dead letters), and the party responsible for a rejected booking gets an alert.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError

from streams.admin import apply_topics
from streams.client import Record, read_topic
from streams.contracts.avro import SchemaCatalogue
from streams.contracts.dead_letter import DeadLetter
from streams.domain.notifications import mrn_check_character
from streams.messages.build import build_ie3r01
from streams.settings import Settings
from streams.topics import INBOUND_MAX_MESSAGE_BYTES, Catalogue
from tests.hostile import PLANNER, Flagged, Hostile, booking, booking_cases, flagged_bookings, xml_cases
from tests.integration.services import Service, worker

SCHEMAS = SchemaCatalogue.load()
TIMEOUT = 120.0
"""Generous: the machine may be shared with other test runs."""

Outgoing = tuple[bytes, bytes, Sequence[tuple[str, bytes]]]


@pytest.fixture
def settings(kafka_settings: Settings, catalogue: Catalogue) -> Settings:
    return replace(kafka_settings, topic_prefix=catalogue.prefix, app_id=f"{catalogue.prefix}app")


@pytest.fixture
async def running_worker(settings: Settings, catalogue: Catalogue, tmp_path: Path) -> AsyncIterator[Service]:
    await apply_topics(settings, catalogue, [PLANNER])
    service = worker(settings, tmp_path).start()
    await asyncio.to_thread(service.wait_healthy, 120.0)
    yield service
    service.stop()


async def send(settings: Settings, topic: str, records: Sequence[Outgoing]) -> None:
    """Produce in order, each record with its own headers; large enough requests for the several-MB case."""
    producer = AIOKafkaProducer(
        acks="all",
        enable_idempotence=True,
        max_request_size=INBOUND_MAX_MESSAGE_BYTES,
        **settings.kafka_client_kwargs(),
    )
    await producer.start()
    try:
        for key, value, headers in records:
            await (await producer.send(topic, value=value, key=key, headers=list(headers)))
    finally:
        await producer.stop()


async def read(settings: Settings, topic: str, count: int) -> list[Record]:
    records = await read_topic(settings, topic, until=lambda rs: len(rs) >= count, timeout=TIMEOUT)
    assert len(records) >= count, f"{topic}: {len(records)} of {count} records"
    return sorted(records, key=lambda r: (r.partition, r.offset))


def where(record: Record) -> str:
    return f"{record.topic}:{record.partition}:{record.offset}"


def letters_by_source(records: list[Record]) -> dict[str, list[DeadLetter]]:
    found: dict[str, list[DeadLetter]] = {}
    for record in records:
        letter = DeadLetter.from_record(SCHEMAS.decode(record.value, reader="DeadLetter").record)
        found.setdefault(f"{letter.source_topic}:{letter.source_partition}:{letter.source_offset}", []).append(letter)
    return found


def registration(serial: int) -> bytes:
    body = f"27NL{serial:013d}"
    return build_ie3r01(
        lrn=f"F15V1HOSTILE{serial:010d}",
        mrn=body + mrn_check_character(body),
        registered_at=datetime(2027, 6, 1, 9, 5, tzinfo=UTC),
        circumstance="F15",
    )


def assert_dead_letter(letters: list[DeadLetter], case: Hostile, record: Record, stage: str) -> None:
    assert len(letters) == 1, f"{case.name}: {len(letters)} dead letters"
    letter = letters[0]
    assert letter.original_value == case.value, case.name
    assert letter.stage == stage, case.name
    assert letter.error_class.rpartition(".")[2] == case.error.__name__, (case.name, letter.error_class)
    assert re.search(case.reason, letter.reason), (case.name, letter.reason)
    assert letter.responsible_party == case.party, case.name
    assert (letter.source_partition, letter.source_offset) == (record.partition, record.offset), case.name
    assert dict(letter.original_headers) == dict(case.headers), case.name


class TestHostileInputThroughWorker:
    async def test_every_hostile_record_is_dead_lettered_and_the_rest_flows(
        self, settings: Settings, catalogue: Catalogue, running_worker: Service
    ):
        """Each hostile record gets one dead letter with its bytes and reason; the valid records after them flow on."""
        bookings, xml, flagged = booking_cases(), xml_cases(), flagged_bookings()
        first = booking(lambda d: None, mbl="VALID0000001")
        last = booking(lambda d: None, mbl="VALID0000002")
        booking_records: list[Outgoing] = [
            (b"one-partition", SCHEMAS.encode("BookingEvent", first), ()),
            *((b"one-partition", c.value, c.headers) for c in bookings),
            *((b"one-partition", f.value, ()) for f in flagged),
            (b"one-partition", SCHEMAS.encode("BookingEvent", last), ()),
        ]
        inbound_records: list[Outgoing] = [
            (b"one-partition", registration(1), ()),
            *((b"one-partition", c.value, c.headers) for c in xml),
            (b"one-partition", registration(2), ()),
        ]
        await send(settings, catalogue.bookings.name, booking_records)
        await send(settings, catalogue.notifications_inbound.name, inbound_records)

        booking_inputs = await read(settings, catalogue.bookings.name, len(booking_records))
        inbound_inputs = await read(settings, catalogue.notifications_inbound.name, len(inbound_records))
        assert [r.value for r in booking_inputs] == [value for _, value, _ in booking_records]
        assert [r.value for r in inbound_inputs] == [value for _, value, _ in inbound_records]

        dead = letters_by_source(await read(settings, catalogue.dead_letters.name, len(bookings) + len(xml)))
        for case, record in zip(bookings, booking_inputs[1 : 1 + len(bookings)], strict=True):
            assert_dead_letter(dead.get(where(record), []), case, record, "plan-bookings/decode")
        for case, record in zip(xml, inbound_inputs[1:-1], strict=True):
            assert_dead_letter(dead.get(where(record), []), case, record, "parse-notifications/decode")

        valid_notifications = {where(inbound_inputs[0]), where(inbound_inputs[-1])}

        def sources(records: list[Record]) -> set[str]:
            return {(r.header("ics2-source") or b"").decode() for r in records}

        parsed = await read_topic(
            settings,
            catalogue.notifications_parsed.name,
            until=lambda rs: valid_notifications <= sources(rs),
            timeout=TIMEOUT,
        )
        assert valid_notifications <= sources(parsed), "a valid notification after the hostile ones was not parsed"

        valid_mbls = {"VALID0000001", "VALID0000002"} | {f.mbl for f in flagged}

        def planned(records: list[Record]) -> set[str]:
            events = (SCHEMAS.decode(r.value, reader="EnsEvent").record for r in records)
            return {e["mbl"] for e in events if e["type"] == "planned"}

        events = await read_topic(
            settings, catalogue.ens_events.name, until=lambda rs: planned(rs) >= valid_mbls, timeout=TIMEOUT
        )
        assert planned(events) >= valid_mbls, f"planned: {sorted(planned(events))}"

        outputs = set()
        for topic in (catalogue.ens_events.name, catalogue.notifications_parsed.name, catalogue.filing_drafts.name):
            outputs |= {r.header("ics2-source").decode() for r in await read_topic(settings, topic, timeout=30)}
        inputs = {where(r) for r in (*booking_inputs, *inbound_inputs)}
        dead_sources = Counter({source: len(found) for source, found in dead.items()})
        assert set(dead_sources) <= inputs
        assert inputs - set(dead_sources) <= outputs, "an input has neither outputs nor a dead letter"
        assert not outputs & set(dead_sources), "an input has both outputs and a dead letter"
        assert all(n == 1 for n in dead_sources.values())

    async def test_parties_are_told(self, settings: Settings, catalogue: Catalogue, running_worker: Service):
        """A rejected booking alerts its planning party on its queue; a flagged one alerts the party at fault."""
        rejected = [c for c in booking_cases() if c.party == PLANNER]
        flagged: tuple[Flagged, ...] = flagged_bookings()
        await send(settings, catalogue.bookings.name, [(b"k", c.value, ()) for c in rejected])
        await send(settings, catalogue.bookings.name, [(b"k", f.value, ()) for f in flagged])

        def rejections(records: list[Record]) -> list[Record]:
            return [r for r in records if r.header("ics2-rejected") is not None]

        queue = catalogue.party_queue(PLANNER).name
        told = await read_topic(settings, queue, until=lambda rs: len(rejections(rs)) >= len(rejected), timeout=TIMEOUT)
        alerts = [SCHEMAS.decode(r.value, reader="PartyAlert").record for r in rejections(told)]
        assert len(alerts) == len(rejected)
        assert all(a["party_id"] == PLANNER and a["action"] == "fix_and_refile" for a in alerts)
        for case in rejected:
            assert any(re.search(case.reason, a["message"]) for a in alerts), case.name

        def alerted(records: list[Record]) -> set[str]:
            """The flagged cases whose party has been alerted with the rule their booking breaks."""
            decoded = [SCHEMAS.decode(r.value, reader="PartyAlert").record for r in records]
            return {
                case.name
                for case in flagged
                for a in decoded
                if a["mbl"] == case.mbl and a["party_id"] == case.party and case.rule in a["message"]
            }

        everything = await read_topic(
            settings, catalogue.alerts.name, until=lambda rs: len(alerted(rs)) == len(flagged), timeout=TIMEOUT
        )
        assert alerted(everything) == {case.name for case in flagged}
        status, health = await asyncio.to_thread(running_worker.get, "/health")
        assert status == 200 and health["stages"]["dead_lettered"]["plan-bookings"] == len(rejected)

    async def test_record_above_the_topic_limit_is_refused_to_its_producer(
        self, settings: Settings, catalogue: Catalogue
    ):
        """Beyond the inbound topic's max.message.bytes the broker refuses the record, so its producer is told."""
        too_big = b"<x>" + b"." * (INBOUND_MAX_MESSAGE_BYTES + 1024) + b"</x>"
        producer = AIOKafkaProducer(max_request_size=2 * INBOUND_MAX_MESSAGE_BYTES, **settings.kafka_client_kwargs())
        await producer.start()
        try:
            with pytest.raises(MessageSizeTooLargeError):
                await (await producer.send(catalogue.notifications_inbound.name, value=too_big, key=b"k"))
        finally:
            await producer.stop()
