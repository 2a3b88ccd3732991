"""The demo's story as a test: worker and customs simulator as subprocesses, every party's queue checked."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from rich.console import Console

from streams.admin import apply_topics, delete_topics, list_topics
from streams.client import publish_bookings, read_topic
from streams.contracts.avro import SchemaCatalogue
from streams.demo import DemoResult, tell_story, unique_alerts
from streams.scenarios import SECOND_MBL, SEED_MBL, seed_booking
from streams.settings import Settings
from tests.data import SEED_PARTIES
from tests.integration.services import gateway, worker

SCHEMAS = SchemaCatalogue.load()


@pytest.fixture(scope="module")
async def story(kafka_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[DemoResult]:
    """One run of the demo's story, shared by the tests that read it."""
    prefix = f"t{uuid.uuid4().hex[:8]}."
    settings = replace(kafka_settings, topic_prefix=prefix, app_id=f"{prefix}app")
    with open(os.devnull, "w") as devnull:
        yield await asyncio.to_thread(tell_story, settings, Console(file=devnull), 90.0, tmp_path_factory.mktemp("e2e"))
    await delete_topics(settings, await list_topics(settings, prefix), wait=False)


def of(result: DemoResult, message_type: str) -> list[dict]:
    return [a for a in result.alerts if a["notification_message_type"] == message_type]


class TestStory:
    async def test_every_party_hears_what_it_must_act_on(self, story):
        """Seed co-load + second consolidation: DNL, RFI, rejection, missing F16 and deadline reach the right queues."""
        dnl = of(story, "IE3Q01")
        assert {a["party_id"] for a in dnl} == {"COLOADER-A", "CARRIER-A", "COLOADER-D"}, "filer, carrier, HBL issuer"
        assert all(a["urgency"] == "critical" and a["party_at_fault"] == "COLOADER-D" for a in dnl)
        assert [link["issuer"] for link in dnl[0]["hbl_chain"]] == ["ML-TYO", "COLOADER-A", "COLOADER-D"]

        rfi = of(story, "IE3Q02")
        assert [a["party_id"] for a in rfi] == ["ML-TYO"] and rfi[0]["deadline"] and rfi[0]["referral_reference"]
        assert [a["party_id"] for a in of(story, "IE3N04")] == ["CARRIER-A"]

        rejected = of(story, "IE3N99")
        assert [(a["party_id"], a["hbl"]) for a in rejected] == [("ML-TYO", "KSN26TYO0102")]
        assert "code 12" in rejected[0]["message"]

        assert {a["party_id"] for a in of(story, "IE3N11")} == {"COLOADER-C"}
        assert {(a["party_id"], a["hbl"]) for a in of(story, "IE3N02")} == {("ML-TYO", "CHY26YOK0501")}

        deadline = of(story, "DEADLINE")
        assert {a["party_id"] for a in deadline if a["title"].startswith("F12")} == {"CARRIER-A", "ML-TYO"}

    async def test_ens_states_follow_the_answers(self, story):
        """The seed ENS is held by the DNL with one HBL incomplete; the second has one rejected filing."""
        seed = story.states[SEED_MBL]
        houses = {h["hbl"]: h["state"] for h in seed["houses"]}
        assert seed["state"] == "held_dnl"
        assert houses == {
            "SKC26TYO0001": "assessed",
            "SKC26TYO0003": "referral_open",
            "AOB26OSA1001": "assessed",
            "CHY26YOK0501": "incomplete",
            "DAI26NGO0077": "held_dnl",
        }
        second = {f["hbl"]: f["state"] for f in story.states[SECOND_MBL]["filings"] if f["ours"]}
        assert second == {"KSN26TYO0101": "registered", "KSN26TYO0102": "rejected"}


def distinct_bookings(count: int, mbl_prefix: str) -> list[dict]:
    """The seed co-load ``count`` times, each under its own MBL number."""
    books = []
    for i in range(count):
        booking = seed_booking()
        booking["master"]["mbl_number"] = f"{mbl_prefix}{i:07d}"
        books.append(booking)
    return books


def registrations(records: list) -> set[str]:
    """LRNs of the filings whose registration (IE3R01) reached the alerts topic."""
    alerts = [SCHEMAS.decode(r.value, reader="PartyAlert").record for r in records]
    return {a["lrn"] for a in alerts if a["notification_message_type"] == "IE3R01"}


def takeover(records: list, killed_at_ms: int) -> float:
    """Seconds from the kill to the first record stamped after it."""
    after = [r.timestamp_ms for r in records if r.timestamp_ms > killed_at_ms]
    assert after, "the replacement wrote no alert"
    return (min(after) - killed_at_ms) / 1000


class TestRestart:
    async def test_killed_worker_loses_nothing_and_duplicates_no_alert(
        self, kafka_settings, catalogue, tmp_path, record_property
    ):
        """SIGKILL mid-stream, restart: every booking's filings are registered and every alert id arrives once.

        Reports the takeover time: from the kill to the first alert the replacement writes (the killed worker
        writes nothing after its kill, so every alert stamped later is the replacement's)."""
        settings = replace(kafka_settings, topic_prefix=catalogue.prefix, app_id=f"{catalogue.prefix}app")
        count = 16
        books = distinct_bookings(count, "OCLU26TYO")
        await apply_topics(settings, catalogue, SEED_PARTIES)
        customs = gateway(settings, tmp_path, "--poll-interval", "1").start()
        first = worker(settings, tmp_path).start()
        try:
            await asyncio.to_thread(first.wait_healthy)
            await publish_bookings(settings, books)
            await read_topic(settings, catalogue.filings_outbound.name, until=lambda rs: len(rs) >= 6, timeout=60)
            first.kill()
            killed_at = time.monotonic()
            killed_at_ms = time.time_ns() // 1_000_000
            second = worker(settings, tmp_path)
            second.log_path = tmp_path / "worker-restarted.log"
            second.start()
            try:
                await asyncio.to_thread(second.wait_healthy)
                expected = count * 4  # four filings of ML-TYO per booking, each registered once

                records = await read_topic(
                    settings, catalogue.alerts.name, until=lambda rs: len(registrations(rs)) >= expected, timeout=120
                )
                if len(registrations(records)) < expected and second.proc is not None:
                    second.proc.send_signal(signal.SIGUSR1)
                    await asyncio.sleep(2)
                assert len(registrations(records)) == expected, f"not all registered:\n{second.tail()}"
                await asyncio.sleep(3)
                records = await read_topic(settings, catalogue.alerts.name, timeout=30)
            finally:
                second.stop()
        finally:
            first.stop(signal.SIGKILL)
            customs.stop()
        alerts = [SCHEMAS.decode(r.value, reader="PartyAlert").record for r in records]
        unique = unique_alerts(alerts)
        registered = [a for a in unique if a["notification_message_type"] == "IE3R01"]
        assert len(registered) == expected
        assert not [a for a in unique if a["notification_message_type"] in ("IE3N01", "IE3N99")], "no duplicate filing"
        outbound = await read_topic(settings, catalogue.filings_outbound.name, timeout=30)
        lrns = [r.header("ics2-lrn") for r in outbound]
        assert len(set(lrns)) == expected, "one LRN per filing, even if a replay sent one twice"
        raw_duplicates = len(alerts) - len(unique)
        takeover_s = takeover(records, killed_at_ms)
        record_property("takeover_s", takeover_s)
        print(
            f"takeover: first alert {takeover_s:.1f}s after the SIGKILL; all registered "
            f"{time.monotonic() - killed_at:.1f}s after it; raw duplicate alert records: {raw_duplicates}"
        )


class TestScaleOut:
    async def test_second_worker_joining_mid_stream_loses_nothing(self, kafka_settings, catalogue, tmp_path):
        """A second worker joins mid-stream: partitions move, both stay healthy, every filing registers once."""
        settings = replace(kafka_settings, topic_prefix=catalogue.prefix, app_id=f"{catalogue.prefix}app")
        count = 16
        books = distinct_bookings(count, "OCLU26OSA")
        await apply_topics(settings, catalogue, SEED_PARTIES)
        customs = gateway(settings, tmp_path, "--poll-interval", "1").start()
        first = worker(settings, tmp_path).start()
        second = worker(settings, tmp_path)
        second.log_path = tmp_path / "worker-joined.log"
        try:
            await asyncio.to_thread(first.wait_healthy)
            await publish_bookings(settings, books)
            await read_topic(settings, catalogue.filings_outbound.name, until=lambda rs: len(rs) >= 6, timeout=60)
            second.start()
            await asyncio.to_thread(second.wait_healthy)
            expected = count * 4

            records = await read_topic(
                settings, catalogue.alerts.name, until=lambda rs: len(registrations(rs)) >= expected, timeout=150
            )
            assert len(registrations(records)) == expected, f"not all registered:\n{first.tail()}\n{second.tail()}"
            for service in (first, second):
                assert service.proc is not None and service.proc.poll() is None, f"{service.name} died"
                service.wait_healthy(timeout=10)
        finally:
            second.stop()
            first.stop()
            customs.stop()
        alerts = unique_alerts(SCHEMAS.decode(r.value, reader="PartyAlert").record for r in records)
        assert not [a for a in alerts if a["notification_message_type"] in ("IE3N01", "IE3N99")], "no duplicate filing"
        outbound = await read_topic(settings, catalogue.filings_outbound.name, timeout=30)
        assert len({r.header("ics2-lrn") for r in outbound}) == expected
