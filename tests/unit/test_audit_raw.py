"""A replay whose workers decode the raw messages gives the report and the problems of decoding in one process."""

from __future__ import annotations

import gc
import os
from typing import Any

import pytest

from streams.audit import parallel, raw
from streams.audit.decoding import BatchDecoder
from streams.audit.raw import RawTrail, collection_paused, peeked_mbl, replay_raw, replay_shares
from streams.audit.reading import decode_messages
from streams.audit.replay import ReplayFilter, build_report, report_json
from streams.audit.signing import Keyring
from streams.contracts.avro import SchemaCatalogue
from tests.unit.test_audit_trail import KEYS, SIGNER, build_chain

SCHEMAS = SchemaCatalogue.load()
MBLS = [f"OCLU27RAW{n:04d}" for n in range(10)]
TOPIC = "t.audit"


def records(count: int = 90) -> list[dict[str, Any]]:
    """Ten interleaved signed chains."""
    return build_chain([(MBLS[n % len(MBLS)], f"e{n}") for n in range(count)], SIGNER)


def raw_trail(values: list[bytes], trail: list[dict[str, Any]], partitions: int = 3) -> RawTrail:
    """The messages in partitions by MBL (the record key), offsets from 100."""
    raw = RawTrail(TOPIC, {p: [] for p in range(partitions)})
    for value, record in zip(values, trail, strict=True):
        messages = raw.partitions[MBLS.index(record["mbl"]) % partitions if record["mbl"] in MBLS else 0]
        messages.append((100 + len(messages), value))
    return raw


def key_of(raw: RawTrail, value: bytes) -> tuple[int, int]:
    return next((p, o) for p, messages in raw.partitions.items() for o, v in messages if v is value)


def in_one_process(
    raw: RawTrail, filters: ReplayFilter | None = None, keys: Keyring | None = KEYS
) -> tuple[str, list[str]]:
    """What the replay gave before: the reader decodes every partition (``read_trail``), then ``build_report``."""
    decoder = BatchDecoder(SCHEMAS)
    decoded, problems = [], []
    for partition, messages in raw.partitions.items():
        found, bad = decode_messages(TOPIC, partition, messages, decoder, SCHEMAS)
        decoded += found
        problems += bad
    return report_json(build_report(decoded, filters, keys=keys, workers=1)), problems


def from_raw(raw: RawTrail, workers: int, filters: ReplayFilter | None = None) -> tuple[str, list[str]]:
    report, problems = replay_raw(raw, filters, KEYS, workers=workers, schemas=SCHEMAS)
    return report_json(report), problems


def child_mbl(workers: int) -> str:
    """An MBL whose share a forked worker decodes (share 0 is the calling process's)."""
    return next(m for m in MBLS if parallel.share_of(m, workers) != 0)


@pytest.fixture(autouse=True)
def fork_small_trails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parallel, "MIN_SHARE", 1)


class TestPeek:
    def test_reads_the_mbl_of_every_current_message(self):
        prefix = BatchDecoder(SCHEMAS).prefix
        for record in records(10):
            assert peeked_mbl(SCHEMAS.encode("AuditRecord", record), prefix) == record["mbl"]

    @pytest.mark.parametrize("value", [b"", b"not avro", None, b"\xc3\x01" + b"\x00" * 8])
    def test_leaves_what_it_cannot_read_to_decoding(self, value: Any):
        assert peeked_mbl(value, BatchDecoder(SCHEMAS).prefix) is None

    def test_an_mbl_over_63_bytes_is_left_to_decoding(self):
        record = dict(records(1)[0], mbl="M" * 64)
        assert peeked_mbl(SCHEMAS.encode("AuditRecord", record), BatchDecoder(SCHEMAS).prefix) is None


class TestReplayRaw:
    @pytest.mark.parametrize("workers", [1, 2, 3])
    def test_intact_trail_gives_the_one_process_report(self, workers: int):
        raw = raw_trail([SCHEMAS.encode("AuditRecord", r) for r in records()], records())
        report, problems = from_raw(raw, workers)
        assert (report, problems) == in_one_process(raw)
        assert '"intact": true' in report and problems == []

    @pytest.mark.parametrize("workers", [1, 2, 3])
    def test_tamper_duplicate_gap_and_bad_signature_as_in_one_process(self, workers: int):
        trail = records()
        trail[20] = dict(trail[20], payload=trail[20]["payload"].replace('"e', '"E'))
        trail.insert(40, dict(trail[31]))
        del trail[60]
        trail[70] = dict(trail[70], signature=trail[71]["signature"])
        raw = raw_trail([SCHEMAS.encode("AuditRecord", r) for r in trail], trail)
        expected = in_one_process(raw)
        assert from_raw(raw, workers) == expected
        kinds = {k for k in ("payload_changed", "gap", "bad_signature", "duplicates") if k in expected[0]}
        assert kinds == {"payload_changed", "gap", "bad_signature", "duplicates"}

    @pytest.mark.parametrize("filters", [ReplayFilter(mbl=MBLS[3]), ReplayFilter(hbl="none"), ReplayFilter(party="x")])
    def test_filters_as_in_one_process(self, filters: ReplayFilter):
        raw = raw_trail([SCHEMAS.encode("AuditRecord", r) for r in records()], records())
        assert from_raw(raw, 3, filters) == in_one_process(raw, filters)

    def test_a_corrupt_message_decoded_in_a_forked_worker_is_reported_as_the_reader_reported_it(self):
        workers = 2
        trail = records()
        values = [SCHEMAS.encode("AuditRecord", r) for r in trail]
        index = next(i for i, r in enumerate(trail) if r["mbl"] == child_mbl(workers) and r["sequence"] == 4)
        values[index] = values[index][:-7]
        raw = raw_trail(values, trail)
        report, problems = from_raw(raw, workers)
        expected_report, expected_problems = in_one_process(raw)
        assert (report, problems) == (expected_report, expected_problems)
        partition, offset = key_of(raw, values[index])
        assert len(problems) == 1 and problems[0].startswith(f"{TOPIC}:{partition}:{offset}: not an AuditRecord: ")
        parts, reader_problems = replay_shares(raw, SCHEMAS, KEYS, False, None, workers)
        (finder,) = [p for p in parts if p.problems]
        assert finder.walker != os.getpid() and reader_problems == []
        assert [text for _, text in finder.problems] == expected_problems
        assert '"kind": "gap"' in report

    def test_messages_the_reader_must_decode_are_reported_or_shared_out_as_in_one_process(self):
        trail = records()
        values = [SCHEMAS.encode("AuditRecord", r) for r in trail]
        values[5] = b"not avro at all"
        values[17] = SCHEMAS.encode("AuditRecord", dict(trail[17], mbl="M" * 70))
        raw = raw_trail(values, trail)
        report, problems = from_raw(raw, 3)
        assert (report, problems) == in_one_process(raw)
        assert len(problems) == 1 and "M" * 70 in report

    def test_a_worker_that_dies_has_its_share_done_here(self, monkeypatch: pytest.MonkeyPatch):
        trail = records()
        trail[33] = dict(trail[33], kind="forged")
        stream = raw_trail([SCHEMAS.encode("AuditRecord", r) for r in trail], trail)
        monkeypatch.setattr(raw, "_stream_worker", lambda pipe, share: os._exit(3))
        parts, _ = replay_shares(stream, SCHEMAS, KEYS, False, None, 3)
        assert [p.walker for p in parts] == [os.getpid()] * 3
        assert from_raw(stream, 3) == in_one_process(stream)
        assert "hash_mismatch" in from_raw(stream, 3)[0]

    def test_problems_in_stored_order_across_shares(self):
        trail = records()
        values = [SCHEMAS.encode("AuditRecord", r) for r in trail]
        for index in (4, 13, 50, 51):
            values[index] = values[index][:-3]
        raw = raw_trail(values, trail, partitions=1)
        report, problems = from_raw(raw, 3)
        assert (report, problems) == in_one_process(raw)
        assert [p.split(":")[2] for p in problems] == ["104", "113", "150", "151"]


class TestCollectionPaused:
    def test_pauses_then_restores_even_on_error(self):
        assert gc.isenabled()
        with pytest.raises(KeyError), collection_paused():
            assert not gc.isenabled()
            raise KeyError("x")
        assert gc.isenabled()

    def test_leaves_a_pause_of_the_caller_in_place(self):
        gc.disable()
        try:
            with collection_paused():
                pass
            assert not gc.isenabled()
        finally:
            gc.enable()
