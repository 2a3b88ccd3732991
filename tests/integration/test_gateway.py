"""The gateway connector on the session's real broker: filings in, customs' answers and dead letters out,
and restarts that neither lose an answer nor give one LRN two MRNs."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord

from streams.contracts.avro import SchemaCatalogue
from streams.contracts.dead_letter import DeadLetter, error_headers
from streams.domain.drafts import drafts_for, make_lrn
from streams.domain.model import Consolidation
from streams.domain.planning import FilingDraft, FilingType, PlannedFiling, plan
from streams.gateway.base import (
    HEADER_ADDRESSEE,
    HEADER_MESSAGE_ID,
    HEADER_MESSAGE_TYPE,
    Gateway,
    InboundMessage,
    InDoubt,
    OutboundFiling,
)
from streams.gateway.connector import STAGE_DECODE, GatewayConnector
from streams.gateway.files import FileDropGateway
from streams.gateway.simulator import KafkaSnapshotStore, SimulatorGateway, simulator_state_topic
from streams.messages.parse import parse_notification
from streams.messages.render import render_filing
from streams.settings import Settings
from streams.topics import Catalogue
from tests.data import seed_json

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "xml"
ML_TYO, CARRIER_A = "NL812345678000", "NL860123456"
OWN_HBL, OTHER_OWN_HBL, COLOADED_HBL = "SKC26TYO0001", "SKC26TYO0003", "AOB26OSA1001"
POLL_S = 0.2
WAIT_S = 20.0

Record = ConsumerRecord[bytes, bytes]


class SimulatedCrash(Exception):
    """Stands for the process dying at a chosen point."""


@pytest.fixture(scope="module")
def filings() -> dict[str, tuple[OutboundFiling, bytes]]:
    """The seed's filings rendered as the pipeline renders them, with their Avro ``Filing`` values."""
    data = seed_json()
    for party in data["parties"]:
        if party["id"] == "CARRIER-A":
            party["contact"] = {"email": "ops@carrier.example"}
    consolidation = Consolidation.from_json(data)
    now = datetime.now(UTC)
    ours = {(d.planned.filing, d.planned.hbl): d for d in drafts_for(consolidation, plan(consolidation), now)}

    def extra(filing: FilingType, hbl: str | None, filer: str) -> FilingDraft:
        lrn = make_lrn(consolidation.mbl, hbl, filing, filer, consolidation.version)
        return FilingDraft(consolidation, PlannedFiling(filing, hbl, filer), lrn, now)

    drafts = {
        "F12": extra(FilingType.F12, None, "CARRIER-A"),
        "F15": ours[(FilingType.F15, OWN_HBL)],
        "F15b": ours[(FilingType.F15, OTHER_OWN_HBL)],
        "F14": ours[(FilingType.F14, COLOADED_HBL)],
        "F16": extra(FilingType.F16, COLOADED_HBL, "COLOADER-A"),
    }
    schemas = SchemaCatalogue.load()
    out = {}
    for name, draft in drafts.items():
        xml = render_filing(draft)
        filer = draft.planned.filer
        record = {
            "message_id": f"it-{draft.lrn}",
            "message_type": f"IE3{draft.planned.filing.value}",
            "lrn": draft.lrn,
            "mbl": consolidation.mbl,
            "hbl": draft.planned.hbl,
            "filer_party_id": filer,
            "filer_eori": consolidation.parties[filer].eori,
            "booking_version": consolidation.version,
            "xml_sha256": hashlib.sha256(xml).hexdigest(),
            "xml": xml,
            "created_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        out[name] = (OutboundFiling.from_record(record), schemas.encode("Filing", record))
    return out


@pytest.fixture
def settings(kafka_settings: Settings, topic_prefix: str) -> Settings:
    """The session's broker with this test's prefix and its own application id (so its own consumer group)."""
    return kafka_settings.with_(topic_prefix=topic_prefix, app_id=f"gw-{topic_prefix.rstrip('.')}")


async def produce(settings: Settings, topic: str, records: Sequence[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(**settings.kafka_client_kwargs(), acks="all")
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, key=key, value=value, headers=[("ics2-test", b"1")])
    finally:
        await producer.stop()


async def consume(
    settings: Settings, topic: str, done: Callable[[list[Record]], bool], timeout: float = WAIT_S
) -> list[Record]:
    """Every record of ``topic`` from the beginning, read until ``done`` says enough or the time is up."""
    consumer = AIOKafkaConsumer(
        topic, **settings.kafka_client_kwargs(), group_id=None, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    seen: list[Record] = []
    deadline = time.monotonic() + timeout
    try:
        while not done(seen) and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            seen += [r for records in batch.values() for r in records]
    finally:
        await consumer.stop()
    return seen


def header(record: Record, name: str) -> bytes | None:
    return next((v for k, v in record.headers if k == name), None)


def registrations(records: list[Record]) -> list[tuple[str, str]]:
    """(LRN, MRN) of every IE3R01 on the inbound topic, repeats included."""
    out = []
    for record in records:
        if header(record, HEADER_MESSAGE_TYPE) == b"IE3R01":
            notification = parse_notification(record.value)
            out.append((notification.lrn, notification.mrn))
    return out


def simulator(settings: Settings, catalogue: Catalogue) -> SimulatorGateway:
    store = KafkaSnapshotStore(settings, simulator_state_topic(catalogue), key=settings.app_id)
    return SimulatorGateway(store, seed=11)


class CrashingGateway:
    """Wraps a gateway and dies in ``checkpoint`` once ``armed`` says so: answers produced, nothing confirmed."""

    name = "crashing"

    def __init__(self, inner: Gateway, armed: Callable[[], bool]) -> None:
        self.inner = inner
        self.armed = armed
        self.submitted: list[str] = []

    async def start(self) -> None:
        await self.inner.start()

    async def stop(self) -> None:
        await self.inner.stop()

    async def submit(self, filing: OutboundFiling, now: datetime) -> Sequence[InboundMessage]:
        self.submitted.append(filing.lrn)
        return await self.inner.submit(filing, now)

    async def poll(self, now: datetime) -> Sequence[InboundMessage]:
        return await self.inner.poll(now)

    async def checkpoint(self) -> None:
        if self.armed():
            raise SimulatedCrash
        await self.inner.checkpoint()

    async def in_doubt(self) -> InDoubt:
        return await self.inner.in_doubt()


async def run_until(connector: GatewayConnector, settings: Settings, done: Callable[[list[Record]], bool]) -> list:
    """Run the connector until the inbound topic satisfies ``done``, stop it, and return the inbound records."""
    task = asyncio.create_task(connector.run())
    try:
        records = await consume(settings, connector.inbound_topic, lambda seen: done(seen) or task.done())
    finally:
        connector.request_stop()
        await asyncio.wait_for(task, WAIT_S)
    return records


class TestSimulatorConnector:
    async def test_rendered_filing_comes_back_as_registration(self, settings, catalogue, filings):
        """A seed F15 on the outbound topic comes back as IE3R01 for the filer, keyed and headed by its EORI."""
        f15, value = filings["F15"]
        await produce(settings, catalogue.filings_outbound.name, [(f15.mbl.encode(), value)])
        connector = GatewayConnector(simulator(settings, catalogue), settings, catalogue, poll_interval=POLL_S)

        def registered(seen: list[Record]) -> bool:
            return any(r.key == ML_TYO.encode() and header(r, HEADER_MESSAGE_TYPE) == b"IE3R01" for r in seen)

        records = await run_until(connector, settings, registered)
        [answer] = [r for r in records if r.key == ML_TYO.encode() and header(r, HEADER_MESSAGE_TYPE) == b"IE3R01"]
        assert header(answer, HEADER_ADDRESSEE) == ML_TYO.encode()
        assert header(answer, HEADER_MESSAGE_ID)
        assert parse_notification(answer.value).lrn == f15.lrn
        assert {r.key for r in records} == {ML_TYO.encode(), CARRIER_A.encode()}
        assert (connector.counters.consumed, connector.counters.dead_lettered) == (1, 0)

    async def test_corrupt_record_goes_to_dead_letters_and_the_next_is_answered(self, settings, catalogue, filings):
        """Undecodable bytes land in the dead-letter topic with stage, reason and original bytes; the loop goes on."""
        f12, value = filings["F12"]
        corrupt = b"\xc3\x01not-a-filing"
        await produce(settings, catalogue.filings_outbound.name, [(b"MBL-X", corrupt), (f12.mbl.encode(), value)])
        connector = GatewayConnector(simulator(settings, catalogue), settings, catalogue, poll_interval=POLL_S)
        await run_until(connector, settings, lambda seen: bool(seen))
        [letter] = await consume(settings, catalogue.dead_letters.name, lambda seen: bool(seen))
        dead = DeadLetter.from_record(SchemaCatalogue.load().decode(letter.value, reader="DeadLetter").record)
        assert (dead.stage, dead.original_value, dead.original_key) == (STAGE_DECODE, corrupt, b"MBL-X")
        assert (dead.source_topic, dead.source_offset) == (catalogue.filings_outbound.name, 0)
        assert "fingerprint" in dead.reason and dead.error_class == "streams.errors.UnknownSchemaError"
        assert dead.original_headers == (("ics2-test", b"1"),)
        assert error_headers(letter.headers)["__streams.errors.stage"] == STAGE_DECODE
        assert (connector.counters.consumed, connector.counters.dead_lettered) == (2, 1)

    async def test_restart_mid_stream_loses_nothing_and_keeps_mrns(self, settings, catalogue, filings):
        """A crash after producing answers but before the snapshot: after restart every LRN has one MRN, none lost."""
        names = ("F12", "F15", "F15b", "F14", "F16")
        await produce(
            settings, catalogue.filings_outbound.name, [(f.mbl.encode(), v) for f, v in map(filings.get, names)]
        )
        crash_lrn = filings["F15b"][0].lrn
        crashing = CrashingGateway(
            simulator(settings, catalogue),
            armed=lambda: bool(crashing.submitted) and crashing.submitted[-1] == crash_lrn,
        )
        first = GatewayConnector(crashing, settings, catalogue, poll_interval=POLL_S, max_records=1)
        with pytest.raises(SimulatedCrash):
            await asyncio.wait_for(first.run(), WAIT_S)
        assert crashing.submitted == [filings[n][0].lrn for n in ("F12", "F15", "F15b")]

        lrns = {filings[n][0].lrn for n in names}
        second = GatewayConnector(simulator(settings, catalogue), settings, catalogue, poll_interval=POLL_S)
        records = await run_until(second, settings, lambda seen: {lrn for lrn, _ in registrations(seen)} >= lrns)
        assert second.counters.consumed == 3
        pairs = registrations(records)
        mrns: dict[str, set[str]] = {}
        for lrn, mrn in pairs:
            mrns.setdefault(lrn, set()).add(mrn)
        assert set(mrns) == lrns
        assert all(len(found) == 1 for found in mrns.values()), mrns
        assert len({next(iter(m)) for m in mrns.values()}) == len(lrns)
        assert sum(1 for lrn, _ in pairs if lrn == crash_lrn) > sum(
            1 for lrn, _ in pairs if lrn == filings["F15"][0].lrn
        )
        assert not [r for r in records if header(r, HEADER_MESSAGE_TYPE) in (b"IE3N01", b"IE3N99")]


class TestFileDropConnector:
    async def test_filings_reach_the_outbox_and_dropped_answers_the_inbound_topic(
        self, settings, catalogue, filings, tmp_path
    ):
        """A filing is written to the outbox; a dropped IE3R01 is produced once and moved to processed/."""
        f15, value = filings["F15"]
        await produce(settings, catalogue.filings_outbound.name, [(f15.mbl.encode(), value)])
        gateway = FileDropGateway(tmp_path / "out", tmp_path / "in")
        await gateway.start()
        dropped = (FIXTURES / "IE3R01.xml").read_bytes()
        (gateway.inbox / "answer.xml").write_bytes(dropped)
        connector = GatewayConnector(gateway, settings, catalogue, poll_interval=POLL_S)
        written = tmp_path / "out" / f"IE3F15_{f15.lrn}.xml"
        records = await run_until(connector, settings, lambda seen: bool(seen) and written.exists())
        assert written.read_bytes() == f15.xml
        assert [(r.key, r.value) for r in records] == [(ML_TYO.encode(), dropped)]
        assert [p.name for p in gateway.processed.iterdir()] == ["answer.xml"]

    async def test_crash_between_produce_and_move_produces_each_file_once(self, settings, catalogue, tmp_path):
        """Files produced before a crash are not produced again; a claimed file never produced is produced."""
        gateway = FileDropGateway(tmp_path / "out", tmp_path / "in")
        await gateway.start()
        for name in ("IE3R01", "IE3N03"):
            (gateway.inbox / f"{name}.xml").write_bytes((FIXTURES / f"{name}.xml").read_bytes())
        crashing = CrashingGateway(gateway, armed=lambda: True)
        first = GatewayConnector(crashing, settings, catalogue, poll_interval=POLL_S)
        with pytest.raises(SimulatedCrash):
            await asyncio.wait_for(first.run(), WAIT_S)
        assert len(list(gateway.processing.iterdir())) == 2

        (gateway.inbox / "IE3Q02.xml").write_bytes((FIXTURES / "IE3Q02.xml").read_bytes())
        claimed_only = FileDropGateway(tmp_path / "out", tmp_path / "in")
        assert len(await claimed_only.poll(datetime.now(UTC))) == 1

        restarted = FileDropGateway(tmp_path / "out", tmp_path / "in")
        second = GatewayConnector(restarted, settings, catalogue, poll_interval=POLL_S)
        await run_until(second, settings, lambda seen: len(seen) >= 3)
        records = await consume(settings, catalogue.notifications_inbound.name, lambda seen: False, timeout=1.0)
        assert sorted(header(r, HEADER_MESSAGE_TYPE) for r in records) == [b"IE3N03", b"IE3Q02", b"IE3R01"]
        assert second.counters.recovered == 1
        assert sorted(p.name for p in restarted.processed.iterdir()) == ["IE3N03.xml", "IE3Q02.xml", "IE3R01.xml"]
        assert not list(restarted.processing.iterdir())
