"""A trail that proves completeness: every record of every recorded topic chained once, each entry true to its record,
and nothing chained that the worker's collectors did not make.

The stages run in process (``AuditedPump``); the recorded topics, as a replay reads them from Kafka, are built from
what the pump's stages wrote (``sources_of``: one partition per topic, offsets from 0).
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.audit import parallel, reading
from streams.audit.archive import write_archive
from streams.audit.completeness import (
    LackKind,
    Reach,
    SourcePartition,
    Sources,
    Where,
    check,
    claims_of,
)
from streams.audit.entries import SKIPPED_KIND, UNATTRIBUTED, AuditEntry, EntryDeriver, canonical_json
from streams.audit.raw import RawTrail, replay_raw
from streams.audit.replay import ReplayFilter, build_report, report_json
from streams.audit.report import render_html
from streams.audit.signing import Signer
from streams.audit.trail import ChainHead, chain, head_after, verify
from streams.cli.replay import replay_command
from streams.errors import ExitCode
from streams.pipeline.stage import Emit, Incoming, StageFailure
from streams.pipeline.stages.audit import ENTRY_MAC_HEADER, AuditChainer, AuditCollector, audit_stages
from streams.simulator import Outcome, RiskRule, RiskScript
from tests.unit.test_audit_report import (
    KEYS,
    NOW,
    OTHER_MBL,
    SCHEMAS,
    SEED_MBL,
    SIGNER,
    AuditedPump,
    public_key_file,
    seed_json,
)

Kinds = list[tuple[str, str | None, int | None, int | None, int | None]]


@pytest.fixture(scope="module")
def pump() -> AuditedPump:
    """Two consolidations answered by customs (a DNL among them), plus an alert about no consolidation and a booking
    that does not decode: every kind of record a recorded topic can hold."""
    pump = AuditedPump(RiskScript(rules=(RiskRule(Outcome.DO_NOT_LOAD, hbl="DAI26NGO0077"),)))
    seed = seed_json()
    pump.book(seed)
    for party in ("COLOADER-A", "COLOADER-D", "CARRIER-A"):
        pump.book(dict(copy.deepcopy(seed), planning_party=party, event_id=f"e-{party}"))
    pump.book(seed_json(OTHER_MBL))
    pump.run()
    pump.advance(NOW + timedelta(hours=3))
    alert = {
        "alert_id": "a-none",
        "party_id": "ML-TYO",
        "urgency": "info",
        "action": "info",
        "title": "about no consolidation",
        "message": "m",
        "mbl": "",
        "created_at": "2027-06-01T12:00:00Z",
    }
    pump.queue.append(Emit(pump.catalogue.alerts.name, b"ML-TYO", SCHEMAS.encode("PartyAlert", alert)))
    pump.run()
    junk = Emit(pump.catalogue.bookings.name, b"junk", b"not avro at all")
    pump.topics[junk.topic].append(junk)
    incoming = Incoming(junk.topic, 0, len(pump.topics[junk.topic]) - 1, junk.key, junk.value, (), 1_780_000_000_000)
    for handler in pump.consumers[junk.topic]:
        if isinstance(handler, AuditCollector):  # the booking stage dead-letters it through its runner, not here
            pump.queue.extend(handler(incoming))
    pump.run()
    return pump


def recorded(pump: AuditedPump) -> tuple[str, ...]:
    return EntryDeriver(SCHEMAS, pump.catalogue).recorded_topics


def sources_of(
    pump: AuditedPump,
    reach: Reach = Reach.END,
    committed: Mapping[str, int] | None = None,
    start: Mapping[str, int] | None = None,
    pending: Mapping[Where, set[int]] | None = None,
) -> Sources:
    """The recorded topics as a replay reads them: every record's offset and value digest (one partition each), the
    bound (the partition's end, or ``committed`` per topic), records below ``start`` removed by retention."""
    sources = Sources(reach, "app" if reach is Reach.COMMITTED else None, topics=recorded(pump))
    for topic in recorded(pump):
        emits = pump.topics.get(topic, [])
        first = (start or {}).get(topic, 0)
        bound = len(emits) if reach is Reach.END else (committed or {}).get(topic, first)
        part = SourcePartition(topic, 0, first, len(emits), max(first, bound))
        for offset, emit in enumerate(emits[first:], start=first):
            part.offsets.append(offset)
            part.digests += hashlib.sha256(emit.value).digest()
        sources.partitions[(topic, 0)] = part
    sources.pending.update(pending or {})
    return sources


def lacks(report: dict[str, Any]) -> Kinds:
    """(kind, topic, partition, first, last) of every completeness finding."""
    found = report["integrity"]["completeness"]["lacks"]
    return [(f["kind"], f["topic"], f["partition"], f["first"], f["last"]) for f in found]


def covered(found: Kinds) -> set[tuple[str, int, int]]:
    """Every (topic, partition, offset) the findings' ranges cover (the pump's offsets have no holes)."""
    return {
        (t, p, o) for _, t, p, a, b in found if t is not None and p is not None for o in range(a or 0, (b or 0) + 1)
    }


def source_of(record: Mapping[str, Any]) -> tuple[str, int, int]:
    topic, partition, offset = json.loads(record["payload"])["source"].rsplit(":", 2)
    return topic, int(partition), int(offset)


def signed_extension(records: list[dict[str, Any]], mbl: str, kind: str, payload: str) -> dict[str, Any]:
    """A record appended to ``mbl``'s chain and signed with the worker's key: what the chain stage would write for an
    entry it chained (as it did for any entry on audit-entries before entries were authenticated)."""
    last = [r for r in records if r["mbl"] == mbl][-1]
    return chain(head_after(last), kind, payload, "2027-06-01T12:00:00Z", SIGNER)


class TestCompleteTrail:
    def test_every_record_of_every_recorded_topic_is_chained_once(self, pump: AuditedPump):
        """The story's trail holds each record of the recorded topics once, each with its value's SHA-256, the
        alert without an MBL and the undecodable booking on the unattributed chain, which is no consolidation."""
        trail = pump.trail()
        report = build_report(trail, keys=KEYS, sources=sources_of(pump))
        completeness = report["integrity"]["completeness"]
        assert report["integrity"]["intact"] and completeness["lacks"] == [] and completeness["pending"] == []
        total = sum(len(pump.topics.get(t, [])) for t in recorded(pump))
        assert completeness["records_checked"] == total == completeness["chained"] == len(trail)
        assert completeness["unattributed"] == 2
        assert {c["mbl"] for c in report["consolidations"]} == {SEED_MBL, OTHER_MBL}

    def test_unchecked_without_sources(self, pump: AuditedPump):
        """Without the recorded topics (an archive by default) the report says completeness was not checked."""
        assert build_report(pump.trail())["integrity"]["completeness"] == {"checked": False}

    def test_removed_tail_is_named_as_a_gap(self, pump: AuditedPump):
        """The trail's last records deleted: every chain still verifies (a cut tail shows in no chain), but the
        source records they were made of are named as gaps, by topic, partition and offsets."""
        trail = pump.trail()
        cut = trail[-3:]
        report = build_report(trail[:-3], keys=KEYS, sources=sources_of(pump))
        assert report["integrity"]["breaks"] == [] and not report["integrity"]["intact"]
        assert {kind for kind, *_ in lacks(report)} == {"gap"}
        assert covered(lacks(report)) == {source_of(r) for r in cut}

    def test_missing_middle_record_is_named_as_a_gap(self, pump: AuditedPump):
        """One record taken from the middle of the trail: its chain breaks, and the booking it was made of is named
        as a one-record gap."""
        trail = pump.trail()
        index = next(i for i, r in enumerate(trail) if r["kind"] == "booking" and r["mbl"] == OTHER_MBL)
        topic, partition, offset = source_of(trail[index])
        report = build_report(trail[:index] + trail[index + 1 :], keys=KEYS, sources=sources_of(pump))
        assert lacks(report) == [("gap", topic, partition, offset, offset)]
        assert report["integrity"]["completeness"]["lacks"][0]["records"] == 1
        assert {b["kind"] for b in report["integrity"]["breaks"]} == {"gap", "broken_link"}

    def test_record_chained_twice_is_named_as_a_double(self, pump: AuditedPump):
        """A source record chained again under a new sequence (the chain intact, the signature good) is named as a
        double with both records."""
        trail = pump.trail()
        again = next(r for r in trail if r["kind"] == "filing")
        extra = signed_extension(trail, again["mbl"], again["kind"], again["payload"])
        report = build_report([*trail, extra], keys=KEYS, sources=sources_of(pump))
        assert report["integrity"]["breaks"] == []
        (double,) = report["integrity"]["completeness"]["lacks"]
        assert double["kind"] == "double" and (double["topic"], double["partition"], double["first"]) == source_of(
            again
        )
        assert double["entries"] == [
            {"mbl": again["mbl"], "sequence": again["sequence"]},
            {"mbl": again["mbl"], "sequence": extra["sequence"]},
        ]

    def test_fabricated_entry_for_a_record_that_never_existed_is_named(self, pump: AuditedPump):
        """'Do Not Load lifted by customs' for a source record that never existed, chained and signed as a worker
        without entry authentication would have: the chains verify, the entry is named as an unknown source."""
        trail = pump.trail()
        dnl = next(r for r in trail if r["mbl"] == SEED_MBL and '"kind":"do_not_load"' in r["payload"])
        data = json.loads(dnl["payload"].replace("do_not_load", "assessment_complete"))
        topic, partition, offset = source_of(dnl)
        data.update(source=f"{topic}:{partition}:{offset + 1000}", source_sha256="ab" * 32)
        forged = signed_extension(trail, SEED_MBL, "notification", canonical_json(data))
        report = build_report([*trail, forged], keys=KEYS, sources=sources_of(pump))
        assert report["integrity"]["breaks"] == [] and not report["integrity"]["intact"]
        (unknown,) = report["integrity"]["completeness"]["lacks"]
        assert (unknown["kind"], unknown["first"]) == ("unknown_source", offset + 1000)
        assert unknown["entries"] == [{"mbl": SEED_MBL, "sequence": forged["sequence"]}]
        assert "ends at" in unknown["detail"]

    def test_entry_whose_record_differs_is_named(self, pump: AuditedPump):
        """An entry whose SHA-256 is not that of the record at its offset (the record on the topic differs from the
        one chained) is named as a digest mismatch with its MBL and sequence."""
        trail = pump.trail()
        victim = next(r for r in trail if r["kind"] == "alert")
        topic, partition, offset = source_of(victim)
        sources = sources_of(pump)
        part = sources.partitions[(topic, partition)]
        index = part.index(offset)
        assert index is not None
        part.digests[index * 32 : index * 32 + 32] = hashlib.sha256(b"another record").digest()
        report = build_report(trail, keys=KEYS, sources=sources)
        (mismatch,) = report["integrity"]["completeness"]["lacks"]
        assert (mismatch["kind"], mismatch["topic"], mismatch["first"]) == ("digest_mismatch", topic, offset)
        assert mismatch["entries"] == [{"mbl": victim["mbl"], "sequence": victim["sequence"]}]

    def test_entries_waiting_on_audit_entries_are_pending_not_gaps(self, pump: AuditedPump):
        """The trail behind the collectors (their entries not chained yet): pending, listed, and the trail intact."""
        trail = pump.trail()
        cut = trail[-2:]
        waiting: dict[Where, set[int]] = {}
        for record in cut:
            topic, partition, offset = source_of(record)
            waiting.setdefault((topic, partition), set()).add(offset)
        report = build_report(trail[:-2], keys=KEYS, sources=sources_of(pump, pending=waiting))
        completeness = report["integrity"]["completeness"]
        assert report["integrity"]["intact"] and completeness["lacks"] == []
        assert sum(p["records"] for p in completeness["pending"]) == 2

    def test_checked_up_to_the_committed_positions(self, pump: AuditedPump):
        """To the committed positions, records beyond them may be missing; to the ends, they may not."""
        trail = pump.trail()
        last = trail[-1]
        topic, _, offset = source_of(last)
        committed = {t: len(pump.topics.get(t, [])) for t in recorded(pump)} | {topic: offset}
        behind = build_report(trail[:-1], keys=KEYS, sources=sources_of(pump, Reach.COMMITTED, committed))
        assert behind["integrity"]["intact"] and behind["integrity"]["completeness"]["to"] == "committed"
        assert behind["integrity"]["completeness"]["uncommitted"] == []
        at_end = build_report(trail[:-1], keys=KEYS, sources=sources_of(pump, Reach.END))
        assert lacks(at_end) == [("gap", topic, 0, offset, offset)]

    def test_records_chained_from_offsets_retention_removed_are_counted(self, pump: AuditedPump):
        """A topic whose head retention removed: the records chained from it are counted as expired, not findings."""
        topic = pump.catalogue.ens_events.name
        report = build_report(pump.trail(), keys=KEYS, sources=sources_of(pump, start={topic: 5}))
        completeness = report["integrity"]["completeness"]
        assert report["integrity"]["intact"] and completeness["expired"] == 5

    def test_entries_without_source_or_digest_are_named(self):
        """Entries of before this check (no SHA-256) and records naming no source are named, each with its record."""
        legacy = {"mbl": "A", "occurred_at": "", "record": {}, "source": "t.bookings:0:0"}
        records = [
            chain(ChainHead("A"), "booking", canonical_json(legacy), "2027-06-01T09:00:00Z"),
        ]
        records.append(chain(head_after(records[0]), "note", {"mbl": "A", "text": "no source"}, "2027-06-01T09:00:01Z"))
        sources = Sources(Reach.END, None, topics=("t.bookings",))
        sources.partitions[("t.bookings", 0)] = partition_of("t.bookings", [(0, b"x")])
        report = build_report(records, sources=sources)
        assert [(f["kind"], f["entries"]) for f in report["integrity"]["completeness"]["lacks"]] == [
            ("no_source", [{"mbl": "A", "sequence": 1}]),
            ("undigested", [{"mbl": "A", "sequence": 0}]),
        ]

    def test_gaps_span_offsets_that_hold_no_record(self):
        """In a partition with offsets that hold no record (compaction, transaction markers), the unchained records
        at offsets 2, 5 and 6 are one gap 2..6 of three records; a claim on offset 3 names no record."""
        values = [(o, f"v{o}".encode()) for o in (0, 1, 2, 5, 6, 9)]
        sources = Sources(Reach.END, None, topics=("t.x",))
        sources.partitions[("t.x", 0)] = partition_of("t.x", values)
        records = chained([("A", "t.x:0:0", b"v0"), ("A", "t.x:0:1", b"v1"), ("B", "t.x:0:9", b"v9")])
        records += chained([("C", "t.x:0:3", b"v3")])
        found = check([claims_of(records)], sources)
        assert [(x.kind, x.first, x.last, x.records) for x in found.lacks] == [
            (LackKind.GAP, 2, 6, 3),
            (LackKind.UNKNOWN_SOURCE, 3, 3, 1),
        ]

    def test_sources_of_other_topics_or_partitions_are_unknown(self):
        sources = Sources(Reach.END, None, topics=("t.x",))
        sources.partitions[("t.x", 0)] = partition_of("t.x", [(0, b"v0")])
        records = chained([("A", "t.x:0:0", b"v0"), ("A", "t.x:7:0", b"v0"), ("B", "t.y:0:0", b"v0")])
        found = check([claims_of(records)], sources)
        assert [(x.kind, x.topic, x.partition, x.detail) for x in found.lacks] == [
            (LackKind.UNKNOWN_SOURCE, "t.x", 7, "partition 7 of t.x does not exist"),
            (LackKind.UNKNOWN_SOURCE, "t.y", 0, "not a recorded topic"),
        ]

    def test_found_the_same_in_forked_workers(self, pump: AuditedPump, monkeypatch: pytest.MonkeyPatch):
        """Decoded and checked over forked workers (the claims sent back as columns), a trail with a gap, a double
        and a forged entry gives the report of one process, byte for byte."""
        monkeypatch.setattr(parallel, "MIN_SHARE", 1)
        trail = pump.trail()
        again = next(r for r in trail if r["kind"] == "draft" and r["mbl"] == OTHER_MBL)
        records = [*trail[:-1], signed_extension(trail[:-1], again["mbl"], again["kind"], again["payload"])]
        sources = sources_of(pump)
        raw = RawTrail("ics2.audit", {0: [(o, SCHEMAS.encode("AuditRecord", r)) for o, r in enumerate(records)]})
        alone = build_report(records, ReplayFilter(), keys=KEYS, workers=1, sources=sources)
        for workers in (1, 2, 3):
            report, problems = replay_raw(raw, ReplayFilter(), KEYS, workers=workers, schemas=SCHEMAS, sources=sources)
            assert problems == [] and report_json(report) == report_json(alone)
        assert {k for k, *_ in lacks(alone)} == {"gap", "double"}


def partition_of(topic: str, values: list[tuple[int, bytes]]) -> SourcePartition:
    part = SourcePartition(topic, 0, values[0][0] if values else 0, values[-1][0] + 1 if values else 0, 0)
    part.bound = part.end
    for offset, value in values:
        part.offsets.append(offset)
        part.digests += hashlib.sha256(value).digest()
    return part


def chained(entries: list[tuple[str, str, bytes]]) -> list[dict[str, Any]]:
    """Records for (MBL, source, source value) entries, as the chain stage writes them."""
    heads: dict[str, Any] = {}
    records = []
    for mbl, source, value in entries:
        entry = AuditEntry(mbl, "note", {}, source, "", hashlib.sha256(value).hexdigest())
        record = chain(heads.get(mbl) or ChainHead(mbl), entry.kind, entry.payload, "2027-06-01T09:00:00Z")
        heads[mbl] = head_after(record)
        records.append(record)
    return records


PIECES = [*'ab7:",\\}{ \u00e9\u0663\n', '"source":"', ',"source_sha256":"', "0f" * 32, "9" * 19]
"""Characters and pieces that make text look like a payload's tail: quotes, backslashes, digits (one not ASCII)."""
JSON_TEXT = st.lists(st.sampled_from(PIECES)).map("".join)
SOURCE_TEXT = st.builds(
    lambda t, p, o: f"{t}:{p}:{o}", st.sampled_from(["t.x", ":", ""]), st.integers(0, 9), st.integers(0, 99)
)


class TestClaims:
    @settings(max_examples=300, deadline=None)
    @given(
        record=st.dictionaries(JSON_TEXT, st.one_of(JSON_TEXT, st.integers(), st.none()), max_size=4),
        source=st.one_of(
            st.none(), JSON_TEXT, st.builds(lambda p, o: f"t.x:{p}:{o}", st.integers(0, 9), st.integers(0, 99))
        ),
        digest=st.one_of(st.none(), st.just("0f" * 32), JSON_TEXT),
    )
    def test_a_payloads_tail_reads_as_parsing_it_does(self, record: dict[str, Any], source: Any, digest: Any):
        """Whatever a record holds (quotes, backslashes, text that looks like the tail), the claim read from the
        canonical payload's tail is the one parsing the whole payload gives."""
        data: dict[str, Any] = {"mbl": "A", "occurred_at": "", "record": record}
        if source is not None:
            data["source"] = source
        if digest is not None:
            data["source_sha256"] = digest
        payload = canonical_json(data)
        claims = claims_of([{"mbl": "A", "sequence": 0, "payload": payload}])
        named = data.get("source")
        parts = named.rsplit(":", 2) if isinstance(named, str) else []
        if len(parts) == 3 and parts[0] and all(p.isascii() and p.isdigit() and len(p) <= 18 for p in parts[1:]):
            where = f"{parts[0]}:{parts[1]}"
            assert list(claims.partitions) == [where] and claims.unsourced == []
            column = claims.partitions[where]
            assert list(column.offsets) == [int(parts[2])]
            valid = isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)
            assert (bytes(column.digests).hex() if not column.undigested else None) == (digest if valid else None)
        else:
            assert claims.partitions == {} and claims.unsourced == [(named if isinstance(named, str) else None, "A", 0)]


class TestCollectorAccountsForEveryRecord:
    def test_record_without_mbl_goes_to_the_unattributed_chain(self, pump: AuditedPump):
        """An alert about no consolidation becomes a skipped entry on the unattributed chain, with the alert, the
        reason and its value's SHA-256; a booking that does not decode too, with its key and size."""
        skipped = [r for r in pump.trail() if r["mbl"] == UNATTRIBUTED]
        assert [r["kind"] for r in skipped] == [SKIPPED_KIND, SKIPPED_KIND] and verify(skipped, keys=KEYS) == []
        alert, junk = (json.loads(r["payload"]) for r in skipped)
        assert alert["record"]["reason"] == "no_mbl" and alert["record"]["record"]["alert_id"] == "a-none"
        assert alert["source_sha256"] == hashlib.sha256(pump.topics["ics2.alerts"][-1].value).hexdigest()
        assert junk["record"]["reason"].startswith("undecodable") and junk["record"]["key"] == "junk"
        assert junk["record"]["value_bytes"] == len(b"not avro at all") and junk["record"]["record"] is None

    def test_topic_not_recorded_gives_no_entry(self):
        collector = AuditCollector(SCHEMAS, AuditedPump().catalogue)
        assert collector(Incoming("ics2.notifications.parsed", 0, 0, b"k", b"v")) == []
        assert collector.skipped["topic_not_recorded"] == 1


def entry_incoming(emit: Emit, offset: int = 0) -> Incoming:
    return Incoming(emit.topic, 0, offset, emit.key, emit.value, emit.headers, 1_780_000_000_000)


class TestEntryAuthentication:
    def stages(self) -> tuple[AuditCollector, AuditChainer]:
        stages = audit_stages(SCHEMAS, AuditedPump().catalogue, lambda: NOW, {}, signer=SIGNER)
        collector = stages["audit-collect-bookings"][1]
        chainer = stages["audit-chain"][1]
        assert isinstance(collector, AuditCollector) and isinstance(chainer, AuditChainer)
        return collector, chainer

    def booking_entry(self, collector: AuditCollector) -> Emit:
        booking = Emit("ics2.bookings", SEED_MBL.encode(), SCHEMAS.encode("BookingEvent", seed_json()))
        (entry,) = collector(entry_incoming(booking, 4))
        return entry

    def test_collectors_entries_are_chained(self):
        collector, chainer = self.stages()
        entry = self.booking_entry(collector)
        assert dict(entry.headers)[ENTRY_MAC_HEADER]
        (record,) = chainer(entry_incoming(entry))
        assert SCHEMAS.decode(record.value, reader="AuditRecord").record["mbl"] == SEED_MBL

    @pytest.mark.parametrize("forger", ["no MAC", "another key", "changed entry"])
    def test_entry_the_collector_did_not_make_is_refused_for_the_dead_letters(self, forger: str):
        """Written to audit-entries by anyone else: no MAC, a MAC of another key, or the collector's entry changed
        after it was tagged (its DNL turned into a release): the chain stage refuses it (phase audit), unchained."""
        collector, chainer = self.stages()
        entry = self.booking_entry(collector)
        headers = dict(entry.headers)
        value = entry.value
        if forger == "no MAC":
            del headers[ENTRY_MAC_HEADER]
        elif forger == "another key":
            headers[ENTRY_MAC_HEADER] = Signer.of(Ed25519PrivateKey.generate()).entry_key().tag(value)
        else:
            value = value.replace(b"booking", b"bookinG", 1)
        forged = Emit(entry.topic, entry.key, value, tuple(headers.items()))
        with pytest.raises(StageFailure) as failed:
            chainer(entry_incoming(forged))
        assert failed.value.phase == "audit" and "not authenticated" in failed.value.reason
        assert chainer.chains == {}

    def test_the_entry_key_is_derived_from_the_signing_key(self):
        """Workers sharing the key file share the entry key; another key file gives another entry key."""
        same = Signer.of(SIGNER.key)
        assert same.entry_key().tag(b"x") == SIGNER.entry_key().tag(b"x")
        assert Signer.of(Ed25519PrivateKey.generate()).entry_key().tag(b"x") != SIGNER.entry_key().tag(b"x")


class TestHtmlReport:
    def test_findings_are_tabled_under_the_verdict(self, pump: AuditedPump):
        """A broken trail's page lists each completeness finding (kind, topic, partition, offsets); an intact one
        says how many records were checked to which positions, or that completeness was not checked."""
        trail = pump.trail()
        broken = render_html(build_report(trail[:-1], keys=KEYS, sources=sources_of(pump)))
        topic, partition, offset = source_of(trail[-1])
        assert "Trail BROKEN: 0 breaks" in broken and "1 completeness findings" in broken
        assert f"<td>gap</td><td>{topic}</td><td>{partition}</td><td>{offset}</td>" in broken
        intact = render_html(build_report(trail, keys=KEYS, sources=sources_of(pump)))
        assert "Trail intact" in intact and "checked to the topics&#x27; ends, each chained once" in intact
        assert "Completeness not checked" in render_html(build_report(trail, keys=KEYS))


class TestReplayCommand:
    def test_gap_exits_with_findings_and_names_topic_partition_and_offsets(
        self, pump: AuditedPump, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ):
        """`ics2 replay --archive DIR --completeness end` of a trail whose tail was removed: exit 1 (FINDINGS), the
        gap printed with its topic, partition and offsets, and the report says the same."""
        trail = pump.trail()
        write_archive(tmp_path / "a", "ics2.audit", trail[:-1], {0: (0, len(trail) - 1)}, SCHEMAS)
        wanted: list[Reach] = []

        async def sources_now(settings: Any, reach: Reach) -> Sources:
            wanted.append(reach)
            return sources_of(pump, reach)

        monkeypatch.setattr(reading, "sources_now", sources_now)
        key = str(public_key_file(tmp_path))
        args = ["--archive", str(tmp_path / "a"), "--public-key", key, "--out", str(tmp_path / "r.json")]
        result = CliRunner().invoke(replay_command, [*args, "--completeness", "end"])
        assert result.exit_code == ExitCode.FINDINGS, result.output
        topic, partition, offset = source_of(trail[-1])
        printed = " ".join(result.output.split())
        assert f"gap: {topic} partition {partition} offset {offset}" in printed
        assert "trail BROKEN" in printed and wanted == [Reach.END]
        report = json.loads((tmp_path / "r.json").read_text())
        assert lacks(report) == [("gap", topic, partition, offset, offset)]
        whole = CliRunner().invoke(replay_command, args)
        assert whole.exit_code == 0 and "completeness unchecked" in " ".join(whole.output.split())
        assert wanted == [Reach.END]
