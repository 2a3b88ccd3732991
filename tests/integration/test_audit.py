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
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from fastavro import reader as avro_reader
from fastavro import writer as avro_writer
from rich.console import Console

from streams.admin import apply_topics, delete_topics, list_topics
from streams.audit import parallel
from streams.audit.completeness import Reach
from streams.audit.entries import EntryDeriver
from streams.audit.parallel import share_of, walk_shares
from streams.audit.reading import collector_group, read_trail, replay_trail, share_trail, stage_group, trusted_keys
from streams.audit.replay import ReplayFilter, build_report, comparable_state, report_json
from streams.audit.signing import key_path, load_signer
from streams.audit.trail import canonical_json, chain, head_after
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
        assert stage_group(story.settings, "track-ens") in before, "the worker's stages committed in their groups"
        assert ics2(story, "replay", "--out", str(story.tmp / "groups.json")).returncode == 0
        assert await committed_offsets(story.settings) == before

    async def test_archive_replays_like_kafka(self, story: Run):
        """`ics2 archive` then `ics2 replay --archive` gives the same JSON as the replay from Kafka (the archive's
        completeness checked against the same topics, as the replay from Kafka checks it by default)."""
        archive = story.tmp / "archive"
        made = ics2(story, "archive", "--out", str(archive))
        assert made.returncode == 0, made.stderr
        again = ics2(story, "archive", "--out", str(archive))
        assert again.returncode == 0 and "nothing new" in again.stderr
        from_kafka = ics2(story, "replay", "--out", str(story.tmp / "kafka.json"))
        from_archive = ics2(
            story,
            "replay",
            "--archive",
            str(archive),
            "--completeness",
            "committed",
            "--out",
            str(story.tmp / "archive.json"),
        )
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


def source_of(record: dict[str, Any]) -> tuple[str, int, int]:
    topic, partition, offset = json.loads(record["payload"])["source"].rsplit(":", 2)
    return topic, int(partition), int(offset)


def covered(lacks: list[dict[str, Any]], kind: str = "gap") -> set[tuple[str, int, int]]:
    """Every (topic, partition, offset) that findings of ``kind`` cover (the story's topics have no offset holes)."""
    return {
        (f["topic"], f["partition"], o) for f in lacks if f["kind"] == kind for o in range(f["first"], f["last"] + 1)
    }


async def commit_worker_positions(settings: Settings, group: str, positions: dict[TopicPartition, int]) -> None:
    """Commit positions for a group of the (stopped) worker, as a worker that took those records would have."""
    consumer = AIOKafkaConsumer(group_id=group, enable_auto_commit=False, **settings.kafka_client_kwargs())
    await consumer.start()
    try:
        consumer.assign(list(positions))
        await consumer.commit(positions)
    finally:
        await consumer.stop()


@pytest.mark.timeout(900)
class TestCompleteness:
    """The trail as a proof: the story's recorded topics, read back by the replay, against its trail."""

    async def test_story_is_complete_to_the_workers_positions(self, story: Run):
        """Every record of the story's recorded topics up to the positions the worker committed is chained once, each
        entry with the SHA-256 of its record; the report names the group and how many records it checked."""
        keys = trusted_keys(replace(story.settings, state_dir=story.tmp / "state"))
        catalogue = Catalogue.for_prefix(story.settings.topic_prefix)
        report, problems = await replay_trail(story.settings, keys=keys, reach=Reach.COMMITTED)
        completeness = report["integrity"]["completeness"]
        assert problems == [] and report["integrity"]["intact"], completeness["lacks"][:5]
        groups = {collector_group(story.settings, t) for t in EntryDeriver(SCHEMAS, catalogue).recorded_topics}
        assert completeness["group"] == ", ".join(sorted(groups)) and completeness["to"] == "committed"
        assert completeness["records_checked"] > 0 and completeness["chained"] >= completeness["records_checked"]
        assert completeness["uncommitted"] == [], "every partition holding records has its collector's position"

    async def test_removed_tail_on_kafka_is_named_as_gaps(self, story: Run):
        """The trail copied without its last three records, replayed against the story's topics: the chains all
        verify, but the records those three were made of are named as gaps (topic, partition, offsets)."""
        records = (await read_trail(story.settings)).records
        keys = trusted_keys(replace(story.settings, state_dir=story.tmp / "state"))
        keyed = [(r["mbl"].encode(), SCHEMAS.encode("AuditRecord", r)) for r in records[:-3]]
        whole, _ = await replay_trail(story.settings, keys=keys, reach=Reach.END)
        async with trail_copy(story, "tail", keyed) as copy_settings:
            report, _ = await replay_trail(copy_settings, keys=keys, reach=Reach.END, sources_of=story.settings)
        assert report["integrity"]["breaks"] == [] and not report["integrity"]["intact"]
        before = covered(whole["integrity"]["completeness"]["lacks"])
        assert covered(report["integrity"]["completeness"]["lacks"]) - before == {source_of(r) for r in records[-3:]}

    async def test_forged_signed_entry_is_named_as_an_unknown_source(self, story: Run):
        """'Do Not Load lifted' for a record that never existed, chained and signed with the worker's own key (what a
        worker that chained anything written to audit-entries did): every signature verifies, and the replay names
        the entry, MBL and sequence, as made of no record."""
        records = (await read_trail(story.settings)).records
        keys = trusted_keys(replace(story.settings, state_dir=story.tmp / "state"))
        signer = load_signer(key_path(replace(story.settings, state_dir=story.tmp / "state")))
        dnl = next(r for r in records if r["mbl"] == SEED_MBL and '"kind":"do_not_load"' in r["payload"])
        topic, partition, offset = source_of(dnl)
        data = json.loads(dnl["payload"].replace("do_not_load", "assessment_complete"))
        data["source"] = f"{topic}:{partition}:{offset + 100_000}"
        last = [r for r in records if r["mbl"] == SEED_MBL][-1]
        forged = chain(head_after(last), "notification", canonical_json(data), last["recorded_at"], signer)
        keyed = [(r["mbl"].encode(), SCHEMAS.encode("AuditRecord", r)) for r in [*records, forged]]
        async with trail_copy(story, "dnl", keyed) as copy_settings:
            report, _ = await replay_trail(copy_settings, keys=keys, reach=Reach.END, sources_of=story.settings)
        assert report["integrity"]["breaks"] == []
        named = [f for f in report["integrity"]["completeness"]["lacks"] if f["kind"] == "unknown_source"]
        assert [(f["topic"], f["first"], f["entries"]) for f in named] == [
            (topic, offset + 100_000, [{"mbl": SEED_MBL, "sequence": forged["sequence"]}])
        ]

    async def test_entry_injected_into_audit_entries_is_dead_lettered_not_chained(self, story: Run):
        """With the worker running again, the story's DNL entry rewritten as 'Do Not Load lifted' for a record that
        never existed and written to audit-entries (with the tag of the real entry, then with none): the chain stage
        chains neither, dead-letters both (phase audit) into the MBL's chain, and `ics2 replay` finds the trail
        intact and complete, the ENS still held by the Do Not Load."""
        catalogue = Catalogue.for_prefix(story.settings.topic_prefix)
        entries = await read_topic(story.settings, catalogue.audit_entries.name, timeout=30, idle=0.5)
        decoded = [(e, SCHEMAS.decode(e.value, reader="AuditEntry").record) for e in entries]
        real, entry = next(
            (e, d) for e, d in decoded if d["mbl"] == SEED_MBL and '"kind":"do_not_load"' in d["payload"]
        )
        data = json.loads(entry["payload"].replace("do_not_load", "assessment_complete"))
        topic, partition, offset = data["source"].rsplit(":", 2)
        data["source"] = f"{topic}:{partition}:{int(offset) + 100_000}"
        forged = SCHEMAS.encode("AuditEntry", dict(entry, payload=canonical_json(data), source=data["source"]))
        marker = f"{int(offset) + 100_000}".encode()
        running = worker(story.settings, story.tmp, ICS2_WATCHDOG_INTERVAL_S="2").start()
        try:
            await asyncio.to_thread(running.wait_healthy, 120)
            await produce(story.settings, catalogue.audit_entries.name, [(SEED_MBL.encode(), forged)], real.headers)
            await produce(story.settings, catalogue.audit_entries.name, [(SEED_MBL.encode(), forged)])
            deadline = time.monotonic() + 120
            while True:
                records = (await read_trail(story.settings)).records
                letters = [
                    r for r in records if r["kind"] == "dead_letter" and "audit entry not authenticated" in r["payload"]
                ]
                if len(letters) >= 2 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(1)
        finally:
            running.stop()
        assert len(letters) == 2 and {r["mbl"] for r in letters} == {SEED_MBL}, running.tail()
        dead = [json.loads(r["payload"])["record"] for r in letters]
        assert [(d["stage"], d["source_topic"]) for d in dead] == [
            ("audit-chain/audit", catalogue.audit_entries.name)
        ] * 2
        chained = [r for r in records if r["kind"] != "dead_letter" and marker in r["payload"].encode()]
        assert chained == []
        out = story.tmp / "injected.json"
        result = ics2(story, "replay", "--out", str(out))
        assert result.returncode == 0, result.stderr
        report = json.loads(out.read_text())
        assert report["integrity"]["intact"] and report["integrity"]["completeness"]["checked"]
        seed = next(c for c in report["consolidations"] if c["mbl"] == SEED_MBL)
        assert seed["ens_state"]["state"] == "held_dnl"

    async def test_cli_names_a_committed_record_never_chained(self, story: Run):
        """An alert the worker's group has committed but the trail never chained (the loss the issue reported):
        `ics2 replay` exits 1 naming the gap by topic, partition and offset; to the topics' ends too."""
        catalogue = Catalogue.for_prefix(story.settings.topic_prefix)
        alert = {
            "alert_id": "lost-1",
            "party_id": "ML-TYO",
            "urgency": "info",
            "action": "info",
            "title": "never chained",
            "message": "m",
            "mbl": SEED_MBL,
            "created_at": "2027-06-01T12:00:00Z",
        }
        await produce(story.settings, catalogue.alerts.name, [(b"ML-TYO", SCHEMAS.encode("PartyAlert", alert))])
        lost = next(
            r
            for r in await read_topic(story.settings, catalogue.alerts.name, timeout=30, idle=0.5)
            if r.key == b"ML-TYO" and b"lost-1" in r.value
        )
        tp = TopicPartition(lost.topic, lost.partition)
        group = collector_group(story.settings, lost.topic)
        before = (await committed_offsets(story.settings))[group][tp].offset
        assert before == lost.offset, "the stopped worker had taken every alert before it"
        to_end = ics2(story, "replay", "--completeness", "end", "--out", str(story.tmp / "end.json"))
        await commit_worker_positions(story.settings, group, {tp: lost.offset + 1})
        try:
            committed = ics2(story, "replay", "--out", str(story.tmp / "lost.json"))
        finally:
            await commit_worker_positions(story.settings, group, {tp: before})
        for result in (to_end, committed):
            assert result.returncode == 1, result.stderr
            printed = " ".join(result.stderr.split())
            assert f"gap: {lost.topic} partition {lost.partition} offset {lost.offset}" in printed
            assert "trail BROKEN" in printed
        lacks = json.loads((story.tmp / "lost.json").read_text())["integrity"]["completeness"]["lacks"]
        assert [(f["kind"], f["topic"], f["partition"], f["first"], f["last"]) for f in lacks] == [
            ("gap", lost.topic, lost.partition, lost.offset, lost.offset)
        ]


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
