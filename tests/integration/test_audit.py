"""The audit trail on the real broker: the demo's story through real worker and gateway processes, then ``ics2 replay``
and ``ics2 archive`` as a user runs them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from fastavro import reader as avro_reader
from fastavro import writer as avro_writer
from rich.console import Console

from streams.admin import apply_topics, delete_topics, list_topics
from streams.audit import parallel
from streams.audit.parallel import share_of, walk_shares
from streams.audit.reading import read_trail, replay_trail, share_trail, trusted_keys
from streams.audit.replay import ReplayFilter, build_report, comparable_state, report_json
from streams.audit.trail import chain, head_after
from streams.client import produce, publish_bookings, read_topic
from streams.contracts.avro import SchemaCatalogue
from streams.demo import DEMO_SCRIPT, DemoResult, tell_story
from streams.scenarios import SECOND_MBL, SEED_MBL, bookings
from streams.settings import Settings
from streams.topics import Catalogue
from tests.integration.services import ICS2, Service, gateway, service_env, worker

SCHEMAS = SchemaCatalogue.load()
MBLS = (SEED_MBL, SECOND_MBL)
#: Answers that show customs has dealt with both consolidations: registrations, the DNL, the RFI, the rejection.
ANSWERED = frozenset({"IE3R01", "IE3Q01", "IE3Q02", "IE3N99"})


@dataclass
class Run:
    settings: Settings
    tmp: Path
    live: dict[str, dict[str, Any]]


def ics2(run: Run, *args: str) -> subprocess.CompletedProcess[str]:
    env = service_env(run.settings, run.tmp / "state")
    return subprocess.run([ICS2, *args], env=env, capture_output=True, text=True, timeout=180, check=False)


@contextlib.asynccontextmanager
async def trail_copy(story: Run, name: str, keyed: list[tuple[bytes, bytes]]) -> AsyncIterator[Settings]:
    """The settings of a copy of the audit topic, under a prefix of its own, holding the messages ``keyed`` (the
    story's trail, tampered with); the copy's topics are deleted on the way out."""
    prefix = f"{story.settings.topic_prefix}{name}."
    settings = replace(story.settings, topic_prefix=prefix)
    catalogue = Catalogue.for_prefix(prefix)
    await apply_topics(settings, catalogue)
    try:
        await produce(settings, catalogue.audit.name, keyed)
        yield settings
    finally:
        await delete_topics(settings, await list_topics(settings, prefix), wait=False)


def forked_workers() -> int:
    """The fewest workers that put ``SECOND_MBL``'s chain in a forked worker's share, not the reader's."""
    return next(n for n in range(2, 9) if share_of(SECOND_MBL, n) != 0)


def record_index(records: list[dict[str, Any]], mbl: str, sequence: int) -> int:
    return next(i for i, r in enumerate(records) if r["mbl"] == mbl and r["sequence"] == sequence)


async def committed_offsets(settings: Settings) -> dict[str, dict[Any, Any]]:
    """Every consumer group of the cluster with its committed offsets."""
    admin = AIOKafkaAdminClient(**settings.kafka_client_kwargs())
    await admin.start()
    try:
        groups = sorted(g[0] for g in await admin.list_consumer_groups())
        return {g: dict(await admin.list_consumer_group_offsets(g)) for g in groups}
    finally:
        await admin.close()


async def replayed_states(settings: Settings) -> dict[str, Any]:
    read = await read_trail(settings)
    report = build_report(read.records)
    return {c["mbl"]: comparable_state(c["ens_state"]) for c in report["consolidations"]}


def state_diff(live: dict[str, Any], rebuilt: dict[str, Any]) -> dict[str, Any]:
    """The top-level fields whose values differ, per MBL, live value first."""
    diff: dict[str, Any] = {}
    for mbl in MBLS:
        ours, theirs = comparable_state(live.get(mbl)) or {}, rebuilt.get(mbl) or {}
        for key in sorted(set(ours) | set(theirs)):
            if ours.get(key) != theirs.get(key):
                diff[f"{mbl}.{key}"] = (ours.get(key), theirs.get(key))
    return diff


async def until_replay_matches(service: Service, settings: Settings, timeout: float) -> dict[str, dict[str, Any]]:
    """Poll until the trail, replayed, gives the live ENS state of every MBL; returns the live states."""
    deadline = time.monotonic() + timeout
    live: dict[str, dict[str, Any]] = {}
    rebuilt: dict[str, Any] = {}
    while time.monotonic() < deadline:
        live = {m: (await asyncio.to_thread(service.get, f"/ens/{m}"))[1] for m in MBLS}
        rebuilt = await replayed_states(settings)
        if all(rebuilt.get(m) == comparable_state(live[m]) for m in MBLS):
            return live
        await asyncio.sleep(2)
    raise AssertionError(f"replay never matched the live state: {state_diff(live, rebuilt)}")


@pytest.fixture(scope="module")
async def story(kafka_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Run]:
    """The demo's bookings and customs script on real worker and gateway processes, stopped once settled."""
    prefix = f"t{uuid.uuid4().hex[:8]}."
    settings = replace(kafka_settings, topic_prefix=prefix, app_id=f"{prefix}app")
    tmp = tmp_path_factory.mktemp("audit")
    books = bookings(datetime.now(UTC))
    parties = sorted({p["id"] for b in books for p in b["parties"] if p["role"] != "shipper"})
    await apply_topics(settings, Catalogue.for_prefix(prefix), parties)
    script = tmp / "risk-script.json"
    script.write_text(json.dumps(DEMO_SCRIPT.to_json()))
    customs = gateway(settings, tmp, "--script", str(script), "--poll-interval", "1").start()
    live_worker = worker(settings, tmp, ICS2_WATCHDOG_INTERVAL_S="2").start()
    try:
        await asyncio.to_thread(live_worker.wait_healthy, 120)
        await publish_bookings(settings, books)

        def answered(records: list) -> bool:
            kinds = {SCHEMAS.decode(r.value, reader="PartyAlert").record["notification_message_type"] for r in records}
            return kinds >= ANSWERED

        alerts_topic = Catalogue.for_prefix(prefix).alerts.name
        await read_topic(settings, alerts_topic, until=answered, timeout=180)
        live = await until_replay_matches(live_worker, settings, 180)
    finally:
        live_worker.stop()
        customs.stop()
    yield Run(settings, tmp, live)
    await delete_topics(settings, await list_topics(settings, prefix), wait=False)


@pytest.mark.timeout(900)
class TestReplay:
    async def test_replayed_state_equals_the_workers(self, story: Run):
        """For every MBL, the ENS state rebuilt from the trail equals the worker's GET /ens/<mbl> (the fixture
        polls for it); the seed ENS is held by the Do Not Load, as the worker says."""
        assert story.live[SEED_MBL]["state"] == "held_dnl"
        rebuilt = await replayed_states(story.settings)
        assert rebuilt[SEED_MBL]["state"] == "held_dnl"
        assert {f["hbl"]: f["state"] for f in rebuilt[SECOND_MBL]["filings"] if f["ours"]} == {
            f["hbl"]: f["state"] for f in story.live[SECOND_MBL]["filings"] if f["ours"]
        }

    async def test_cli_replay_is_deterministic_and_intact(self, story: Run):
        """Two `ics2 replay --mbl` runs give byte-equal JSON, an intact verdict and an HTML report."""
        out = story.tmp / "replay"
        first = ics2(story, "replay", "--mbl", SEED_MBL, "--out", str(out / "a.json"), "--html", str(out / "a.html"))
        second = ics2(story, "replay", "--mbl", SEED_MBL, "--out", str(out / "b.json"))
        assert first.returncode == 0, first.stderr
        assert second.returncode == 0, second.stderr
        assert (out / "a.json").read_bytes() == (out / "b.json").read_bytes()
        report = json.loads((out / "a.json").read_text())
        assert report["integrity"]["intact"] and [c["mbl"] for c in report["consolidations"]] == [SEED_MBL]
        assert "trail intact" in first.stderr
        assert "<svg" in (out / "a.html").read_text()

    async def test_replay_leaves_no_consumer_group(self, story: Run):
        """The replay reader joins no group and commits nothing: the groups and their offsets are the same after it."""
        before = await committed_offsets(story.settings)
        assert story.settings.app_id in before
        assert ics2(story, "replay", "--out", str(story.tmp / "groups.json")).returncode == 0
        assert await committed_offsets(story.settings) == before

    async def test_archive_replays_like_kafka(self, story: Run):
        """`ics2 archive` then `ics2 replay --archive` gives the same JSON as the replay from Kafka."""
        archive = story.tmp / "archive"
        made = ics2(story, "archive", "--out", str(archive))
        assert made.returncode == 0, made.stderr
        again = ics2(story, "archive", "--out", str(archive))
        assert again.returncode == 0 and "nothing new" in again.stderr
        from_kafka = ics2(story, "replay", "--out", str(story.tmp / "kafka.json"))
        from_archive = ics2(story, "replay", "--archive", str(archive), "--out", str(story.tmp / "archive.json"))
        assert from_kafka.returncode == 0 and from_archive.returncode == 0, from_archive.stderr
        assert (story.tmp / "kafka.json").read_bytes() == (story.tmp / "archive.json").read_bytes()

    async def test_tampered_archive_is_detected_with_mbl_and_sequence(self, story: Run):
        """A notification record altered in an archive file makes replay exit 1 naming its MBL and sequence."""
        archive = story.tmp / "tampered"
        assert ics2(story, "archive", "--out", str(archive)).returncode == 0
        path = archive / "audit-000001.avro"
        with path.open("rb") as stream:
            records = [dict(r) for r in avro_reader(stream)]
        victim = next(r for r in records if r["mbl"] == SEED_MBL and '"kind":"do_not_load"' in r["payload"])
        victim["payload"] = victim["payload"].replace("do_not_load", "assessment_complete", 1)
        with path.open("wb") as out:
            avro_writer(out, SCHEMAS.schema("AuditRecord"), records, codec="deflate")
        result = ics2(story, "replay", "--archive", str(archive), "--out", str(story.tmp / "tampered.json"))
        assert result.returncode == 1
        breaks = json.loads((story.tmp / "tampered.json").read_text())["integrity"]["breaks"]
        assert [(b["mbl"], b["sequence"], b["kind"]) for b in breaks] == [
            (SEED_MBL, victim["sequence"], "payload_changed")
        ]
        assert f"MBL {SEED_MBL} sequence {victim['sequence']}" in result.stderr

    async def test_forged_record_on_kafka_is_detected(self, story: Run):
        """An AuditRecord re-produced with changed content into a copy of the audit topic breaks the chain there."""
        records = (await read_trail(story.settings)).records
        index = record_index(records, SECOND_MBL, 3)
        forged = dict(records[index], recorded_at="2020-01-01T00:00:00Z")
        keyed = [(r["mbl"].encode(), SCHEMAS.encode("AuditRecord", forged if i == index else r))
                 for i, r in enumerate(records)]  # fmt: skip
        async with trail_copy(story, "copy", keyed) as copy_settings:
            report = build_report((await read_trail(copy_settings)).records, ReplayFilter(mbl=SECOND_MBL))
        assert [(b["mbl"], b["sequence"], b["kind"]) for b in report["integrity"]["breaks"]] == [
            (SECOND_MBL, 3, "hash_mismatch")
        ]

    async def test_forged_extension_on_kafka_is_named_unsigned(self, story: Run):
        """A writer of the audit topic appends a record with the right link and every hash recomputed: replayed from
        Kafka and verified with the worker's public key, it is named as a record the audit stage did not sign."""
        records = (await read_trail(story.settings)).records
        keys = trusted_keys(replace(story.settings, state_dir=story.tmp / "state"))
        assert keys is not None, "the worker keeps its signing key in its state folder"
        last = [r for r in records if r["mbl"] == SECOND_MBL][-1]
        forged = chain(head_after(last), "note", {"mbl": SECOND_MBL, "text": "forged"}, last["recorded_at"])
        keyed = [(r["mbl"].encode(), SCHEMAS.encode("AuditRecord", r)) for r in [*records, forged]]
        async with trail_copy(story, "ext", keyed) as copy_settings:
            replayed = (await read_trail(copy_settings)).records
        assert build_report(replayed, ReplayFilter(mbl=SECOND_MBL))["integrity"]["breaks"] == [], "hashes all right"
        report = build_report(replayed, ReplayFilter(mbl=SECOND_MBL), keys=keys)
        assert [(b["mbl"], b["sequence"], b["kind"]) for b in report["integrity"]["breaks"]] == [
            (SECOND_MBL, forged["sequence"], "unsigned")
        ]

    async def test_forged_record_found_by_a_forked_worker_is_reported_as_in_one_process(
        self, story: Run, monkeypatch: pytest.MonkeyPatch
    ):
        """Read back from Kafka with a forged record, the trail verified over worker processes (the forged chain in a
        forked one) gives the report of one process, byte for byte, signatures checked."""
        records = (await read_trail(story.settings)).records
        keys = trusted_keys(replace(story.settings, state_dir=story.tmp / "state"))
        workers = forked_workers()
        index = record_index(records, SECOND_MBL, 2)
        forged = dict(records[index], kind="note")
        keyed = [(r["mbl"].encode(), SCHEMAS.encode("AuditRecord", forged if i == index else r))
                 for i, r in enumerate(records)]  # fmt: skip
        async with trail_copy(story, "par", keyed) as copy_settings:
            replayed = (await read_trail(copy_settings)).records
        parts = walk_shares(replayed, None, keys, False, workers)
        assert [p.walker != os.getpid() for p in parts if p.breaks] == [True]
        monkeypatch.setattr(parallel, "MIN_SHARE", 1)
        alone = build_report(replayed, keys=keys, workers=1)
        assert report_json(build_report(replayed, keys=keys, workers=workers)) == report_json(alone)
        assert [(b["mbl"], b["sequence"], b["kind"]) for b in alone["integrity"]["breaks"]] == [
            (SECOND_MBL, 2, "hash_mismatch")
        ]

    async def test_corrupt_message_decoded_by_a_forked_worker_is_reported_as_the_reader_reported_it(
        self, story: Run, monkeypatch: pytest.MonkeyPatch
    ):
        """Replayed from Kafka with the messages shared out as fetched and decoded in forked workers, a message cut
        short gives the problem (topic, partition, offset) and the report of the reader decoding everything."""
        records = (await read_trail(story.settings)).records
        keys = trusted_keys(replace(story.settings, state_dir=story.tmp / "state"))
        workers = forked_workers()
        index = record_index(records, SECOND_MBL, 2)
        values = [SCHEMAS.encode("AuditRecord", r) for r in records]
        values[index] = values[index][:-5]
        keyed = [(r["mbl"].encode(), v) for r, v in zip(records, values, strict=True)]
        async with trail_copy(story, "raw", keyed) as copy_settings:
            read = await read_trail(copy_settings)
            monkeypatch.setattr(parallel, "MIN_SHARE", 1)
            parts, _ = await share_trail(copy_settings, ReplayFilter(), keys, workers=workers)
            report, problems = await replay_trail(copy_settings, keys=keys, workers=workers)
        audit_topic = Catalogue.for_prefix(copy_settings.topic_prefix).audit.name
        assert len(parts) == workers and [p.walker != os.getpid() for p in parts if p.problems] == [True]
        assert problems == read.problems and len(problems) == 1
        assert problems[0].startswith(f"{audit_topic}:") and ": not an AuditRecord: " in problems[0]
        assert report_json(report) == report_json(build_report(read.records, keys=keys, workers=1))
        breaks = [(b["mbl"], b["sequence"], b["kind"]) for b in report["integrity"]["breaks"]]
        assert breaks == [(SECOND_MBL, 3, "gap"), (SECOND_MBL, 3, "broken_link")]


@pytest.fixture(scope="module")
async def demo_run(kafka_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[DemoResult]:
    """The demo's own story function, which ends by replaying the trail into its HTML report."""
    prefix = f"d{uuid.uuid4().hex[:8]}."
    settings = replace(kafka_settings, topic_prefix=prefix, app_id=f"{prefix}app")
    with open(os.devnull, "w") as devnull:
        console = Console(file=devnull)
        yield await asyncio.to_thread(tell_story, settings, console, 120.0, tmp_path_factory.mktemp("demo"))
    await delete_topics(settings, await list_topics(settings, prefix), wait=False)


@pytest.mark.timeout(900)
class TestDemoReport:
    async def test_demo_report_equals_the_live_state(self, demo_run: DemoResult):
        """`make demo` writes an intact HTML report under its state folder, whose ENS states are the worker's."""
        assert demo_run.audit_report is not None and demo_run.audit_report.parent == demo_run.workdir / "state"
        page = demo_run.audit_report.read_text()
        assert "Trail intact" in page and page.count("<svg") == 2
        report = json.loads(demo_run.audit_report.with_suffix(".json").read_text())
        rebuilt = {c["mbl"]: comparable_state(c["ens_state"]) for c in report["consolidations"]}
        live = {m: comparable_state(demo_run.states[m]) for m in MBLS}
        differing = {m: sorted(k for k in live[m] if live[m][k] != (rebuilt.get(m) or {}).get(k)) for m in MBLS}
        assert rebuilt == live, f"fields that differ: {differing}"
