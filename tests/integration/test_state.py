"""Tables and bounded retention, on the real broker: a closed ENS evicted with tombstones on its changelogs, a late
notification about it parked without harm, and a worker stopped, then killed, and restarted finding its state
again from the changelogs."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from streams.client import produce, publish_bookings, read_topic
from streams.contracts.avro import SchemaCatalogue
from streams.contracts.records import ens_event
from streams.messages.build import build_ie3n03, build_ie3r01
from streams.pipeline.tables import key_partition
from streams.settings import Settings
from streams.topics import Catalogue
from tests.integration.services import Service, worker
from tests.integration.test_pipeline import booking, eventually, mrn

#: A retention of about 2 s (in days), and a timer looking every second.
FAST_EVICTION = {"ICS2_CLOSED_ENS_RETENTION_DAYS": str(2 / 86400), "ICS2_EVICTION_INTERVAL_S": "1"}
REGISTERED_AT = datetime(2026, 1, 10, 9, 0, tzinfo=UTC)


@pytest.fixture
def settings(kafka_settings: Settings, catalogue: Catalogue) -> Settings:
    return replace(kafka_settings, topic_prefix=catalogue.prefix, app_id=f"{catalogue.prefix}app")


def loaded_long_ago(mbl: str) -> dict:
    """The seed booked for a vessel that loaded in January: its lodging deadline has passed."""
    data = booking(mbl)
    data["master"]["loading_at"] = "2026-01-15T12:00:00Z"
    return data


async def ens_view(service: Service, mbl: str) -> tuple[int, dict]:
    return await asyncio.to_thread(service.get, f"/ens/{mbl}")


async def register_and_assess(settings: Settings, catalogue: Catalogue, service: Service, mbl: str) -> list[str]:
    """Customs registers each of our filings once sent, then assesses every house consignment; returns the LRNs."""

    async def all_sent() -> bool:
        status, state = await ens_view(service, mbl)
        return status == 200 and {f["state"] for f in state["filings"] if f["ours"]} == {"sent"}

    await eventually(all_sent, timeout=60)
    _, state = await ens_view(service, mbl)
    ours = [f for f in state["filings"] if f["ours"]]
    answers = [
        build_ie3r01(lrn=f["lrn"], mrn=mrn(900 + i), registered_at=REGISTERED_AT, circumstance=f["filing"])
        for i, f in enumerate(ours)
    ]
    await produce(settings, catalogue.notifications_inbound.name, [(b"NL812345678000", xml) for xml in answers])

    async def registered() -> bool:
        _, state = await ens_view(service, mbl)
        return all(f["state"] == "registered" for f in state["filings"] if f["ours"])

    await eventually(registered, timeout=60)
    houses = [h["hbl"] for h in state["houses"]]
    assessed = build_ie3n03(mrn=mrn(900), completed_at=REGISTERED_AT, member_state="NL", hbls=houses, mbl=mbl)
    await produce(settings, catalogue.notifications_inbound.name, [(b"NL812345678000", assessed)])
    return [f["lrn"] for f in ours]


def metrics(service: Service) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{service.web_port}/metrics", timeout=5) as response:
        return response.read().decode()


@pytest.fixture
async def evicting_worker(settings: Settings, tmp_path: Path) -> AsyncIterator[Service]:
    service = worker(settings, tmp_path, **FAST_EVICTION).start()
    await asyncio.to_thread(service.wait_healthy)
    yield service
    service.stop()


async def test_a_closed_ens_is_evicted_with_tombstones_and_a_late_answer_is_parked(
    settings: Settings, catalogue: Catalogue, evicting_worker: Service
) -> None:
    """Registered and assessed, past its deadline and quiet: the ENS, its ledger entries and plan memory get
    tombstones; an open ENS booked beside it stays; a late IE3R01 for an evicted LRN waits in ``parked``."""
    closed, still_open = "OCLU26TYO7700001", "OCLU26TYO7700002"
    await publish_bookings(settings, [loaded_long_ago(closed), loaded_long_ago(still_open)])
    lrns = await register_and_assess(settings, catalogue, evicting_worker, closed)

    async def evicted() -> bool:
        status, _ = await ens_view(evicting_worker, closed)
        return status == 404

    await eventually(evicted, timeout=60)
    status, state = await ens_view(evicting_worker, still_open)
    assert status == 200 and state["mbl"] == still_open

    def tombstones(topic: str, keys: set[bytes]) -> set[bytes]:
        return {r.key for r in records[topic] if r.value is None and r.key in keys}

    wanted = {
        catalogue.ens_state_changelog.name: {closed.encode()},
        catalogue.filing_ledger_changelog.name: {f"lrn:{lrn}".encode() for lrn in lrns},
        catalogue.plans_changelog.name: {f"{closed}|ML-TYO".encode()},
    }
    records = {
        topic: await read_topic(settings, topic, until=lambda rs, k=keys: {r.key for r in rs if r.value is None} >= k)
        for topic, keys in wanted.items()
    }
    for topic, keys in wanted.items():
        assert tombstones(topic, keys) == keys, topic
    assert not tombstones(catalogue.ens_state_changelog.name, {still_open.encode()})
    # The tracker stores an ENS after its batch, whatever record is current then: each state on its key's partition.
    states = records[catalogue.ens_state_changelog.name]
    assert states and all(r.partition == key_partition(r.key, settings.default_partitions) for r in states)
    text = await asyncio.to_thread(metrics, evicting_worker)
    assert 'ics2_evicted_ens_total{reason="lodged"} 1.0' in text

    late = build_ie3r01(lrn=lrns[0], mrn=mrn(900), registered_at=REGISTERED_AT, circumstance="F15")
    await produce(settings, catalogue.notifications_inbound.name, [(b"NL812345678000", late)])
    parked_key = f"lrn:{lrns[0]}".encode()
    parked = await read_topic(
        settings,
        catalogue.parked_changelog.name,
        until=lambda rs: any(r.key == parked_key and r.value for r in rs),
        timeout=30,
    )
    assert any(r.key == parked_key and r.value for r in parked)
    evicting_worker.check_running("after the late answer")
    assert (await ens_view(evicting_worker, closed))[0] == 404


async def test_a_restarted_worker_finds_its_state_after_a_stop_and_after_a_kill(
    settings: Settings, catalogue: Catalogue, tmp_path: Path
) -> None:
    """Stopped cleanly or killed, the next worker reads the tables' changelogs when its groups assign it the
    partitions, and the ENS goes on from where it was each time."""
    mbl = "OCLU26TYO7700003"

    def same_worker() -> Service:
        return worker(settings, tmp_path, ICS2_WORKER_ID="w1").start()

    async def assessed(service: Service, start: int) -> dict:
        """Once the tracker's ``start``-th assignment is recovered (the view answers from the changelog before)."""

        async def ready() -> bool:
            lines = service.log_path.read_text(errors="replace").splitlines()
            return sum("partitions_assigned" in line and "track-ens" in line for line in lines) >= start

        await eventually(ready, timeout=90)

        async def check() -> bool:
            status, state = await ens_view(service, mbl)
            return status == 200 and state["state"] == "assessed"

        await eventually(check, timeout=60)
        return (await ens_view(service, mbl))[1]

    first = same_worker()
    try:
        await asyncio.to_thread(first.wait_healthy)
        await publish_bookings(settings, [loaded_long_ago(mbl)])
        lrns = await register_and_assess(settings, catalogue, first, mbl)
        await assessed(first, 1)
    finally:
        first.stop()

    second = same_worker()
    try:
        await asyncio.to_thread(second.wait_healthy)
        state = await assessed(second, 2)
        assert sorted(f["lrn"] for f in state["filings"] if f["ours"]) == sorted(lrns)
    finally:
        second.kill()
    third = same_worker()
    try:
        await asyncio.to_thread(third.wait_healthy)
        state = await assessed(third, 3)
        assert sorted(f["lrn"] for f in state["filings"] if f["ours"]) == sorted(lrns)
    finally:
        third.stop()


async def test_each_ens_state_is_stored_on_its_own_partition(
    settings: Settings, catalogue: Catalogue, tmp_path: Path
) -> None:
    """The tracker stores a batch's states after its alerts are acknowledged, when the current record may be of
    another partition: every state must still reach its key's changelog partition, where the
    worker that owns the MBL recovers it. Ticks for 200 MBLs waiting on every partition before the worker starts
    make its batches span partitions."""
    schemas = SchemaCatalogue.load()
    now = datetime.now(UTC)
    mbls = [f"OCLU26TYO78{i:05d}" for i in range(200)]
    ticks = [(m.encode(), schemas.encode("EnsEvent", ens_event(m, "tick", now, {}, f"test:{m}"))) for m in mbls]
    await produce(settings, catalogue.ens_events.name, ticks)
    wanted = {mbl.encode() for mbl in mbls}
    service = worker(settings, tmp_path).start()
    try:
        states = await read_topic(
            settings,
            catalogue.ens_state_changelog.name,
            until=lambda rs: {r.key for r in rs} >= wanted,
            timeout=120,
        )
        service.check_running("after the ticks")
    finally:
        service.stop()
    assert {r.key for r in states} >= wanted
    assert len({r.partition for r in states}) == settings.default_partitions > 1
    misplaced = [
        (r.key, r.partition) for r in states if r.partition != key_partition(r.key, settings.default_partitions)
    ]
    assert misplaced == []
