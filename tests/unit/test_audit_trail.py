"""The audit trail's hash chain, the entries derived from real records, and the two audit stages."""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.audit.entries import AuditEntry, EntryDeriver, Skipped, split_source
from streams.audit.signing import (
    Keyring,
    Signer,
    SigningKeyError,
    generate_key,
    load_public_key,
    load_signer,
    public_pem,
    signer_for,
)
from streams.audit.trail import (
    AUDIT_RECORD_FIELDS,
    BreakKind,
    ChainHead,
    TrailError,
    canonical_json,
    chain,
    examine,
    head_after,
    record_hash,
    sha256_hex,
    verify,
)
from streams.cli.audit import audit
from streams.contracts.avro import SchemaCatalogue
from streams.errors import DecodeError
from streams.pipeline.stage import Emit, Incoming
from streams.pipeline.stages.audit import AuditChainer, AuditCollector, BatchChainer, SendFirstChainer
from streams.pipeline.stages.booking import BookingStage
from streams.topics import Catalogue
from tests.data import seed_json

SCHEMAS = SchemaCatalogue.load()
CATALOGUE = Catalogue.for_prefix("p.")
NOW = datetime(2027, 6, 1, 9, 0, tzinfo=UTC)
SEED_MBL = "OCLU26TYO7781234"


SIGNER = Signer.of(Ed25519PrivateKey.generate())
KEYS = Keyring.of([SIGNER.public])


def build_chain(entries: list[tuple[str, str]], signer: Signer | None = None) -> list[dict[str, Any]]:
    """Records for (mbl, text) entries, interleaving the MBLs' chains as the audit topic does."""
    heads: dict[str, ChainHead] = {}
    records = []
    for index, (mbl, text) in enumerate(entries):
        record = chain(
            heads.get(mbl, ChainHead(mbl)),
            "note",
            {"mbl": mbl, "text": text, "n": index},
            f"2027-06-01T09:00:{index % 60:02d}Z",
            signer,
        )
        heads[mbl] = head_after(record)
        records.append(record)
    return records


class TestCanonicalJson:
    def test_sorted_keys_and_no_spaces(self):
        """Key order and spacing of the input never change the text, so the hash is reproducible."""
        assert canonical_json({"b": 1, "a": [1, {"d": None, "c": "é"}]}) == '{"a":[1,{"c":"é","d":null}],"b":1}'

    def test_not_a_number_is_refused(self):
        """NaN has no JSON form; it is refused rather than written as something a reader cannot parse."""
        with pytest.raises(TrailError):
            canonical_json({"x": float("nan")})


class TestChain:
    def test_first_record_opens_the_chain(self):
        """Sequence 0, no previous hash, and the hashes computed as AuditRecord.avsc documents."""
        record = chain(ChainHead("M1"), "booking", {"v": 1}, "2027-06-01T09:00:00Z")
        assert record["sequence"] == 0 and record["previous_hash"] is None
        assert record["payload"] == '{"v":1}' and record["payload_sha256"] == sha256_hex('{"v":1}')
        assert record["hash"] == sha256_hex(f"|0|booking|{record['payload_sha256']}|2027-06-01T09:00:00Z")

    def test_next_record_links_to_the_one_before(self):
        """The second record names the first's hash and takes the next sequence."""
        first = chain(ChainHead("M1"), "booking", {"v": 1}, "2027-06-01T09:00:00Z")
        second = chain(head_after(first), "draft", {"v": 2}, "2027-06-01T09:00:01Z")
        assert (second["sequence"], second["previous_hash"]) == (1, first["hash"])
        assert second["hash"] == record_hash(
            first["hash"], 1, "draft", second["payload_sha256"], "2027-06-01T09:00:01Z"
        )

    def test_records_fit_the_avro_contract(self):
        """A chained record encodes as an AuditRecord and decodes unchanged."""
        record = chain(ChainHead("M1"), "booking", {"v": 1}, "2027-06-01T09:00:00Z")
        assert SCHEMAS.decode(SCHEMAS.encode("AuditRecord", record), reader="AuditRecord").record == record


class TestVerify:
    def test_intact_chains_have_no_break(self):
        """Interleaved chains of several MBLs verify each on its own."""
        assert verify(build_chain([("A", "1"), ("B", "1"), ("A", "2"), ("B", "2"), ("A", "3")])) == []

    def test_changed_payload_is_found_at_its_sequence(self):
        """A payload edited in place breaks at that record only."""
        records = build_chain([("A", str(i)) for i in range(5)])
        records[2]["payload"] = records[2]["payload"].replace('"2"', '"9"')
        assert [(b.mbl, b.sequence, b.kind) for b in verify(records)] == [("A", 2, BreakKind.PAYLOAD_CHANGED)]

    def test_consistently_rewritten_record_breaks_the_next_link(self):
        """Recomputing the edited record's own hashes moves the break to the link that follows it."""
        records = build_chain([("A", str(i)) for i in range(4)])
        forged = chain(
            ChainHead("A", 1, records[0]["hash"]), "note", {"mbl": "A", "text": "forged"}, records[1]["recorded_at"]
        )
        records[1] = forged
        assert [(b.sequence, b.kind) for b in verify(records)] == [(2, BreakKind.BROKEN_LINK)]

    def test_removed_record_leaves_a_gap(self):
        """A record taken out of the middle shows as a gap and a broken link at the next record."""
        records = build_chain([("A", str(i)) for i in range(4)])
        del records[1]
        assert [(b.sequence, b.kind) for b in verify(records)] == [(2, BreakKind.GAP), (2, BreakKind.BROKEN_LINK)]

    def test_swapped_records_are_out_of_order(self):
        """Two records swapped show as a gap then an out-of-order sequence."""
        records = build_chain([("A", str(i)) for i in range(4)])
        records[1], records[2] = records[2], records[1]
        kinds = [(b.sequence, b.kind) for b in verify(records)]
        assert (2, BreakKind.GAP) in kinds and (1, BreakKind.OUT_OF_ORDER) in kinds

    def test_truncation_shows_only_against_a_kept_head(self):
        """Cutting the last record cannot show in the chain itself, but does against the head kept elsewhere."""
        records = build_chain([("A", str(i)) for i in range(3)])
        kept = {"A": head_after(records[-1])}
        assert verify(records[:-1]) == []
        assert [(b.mbl, b.sequence, b.kind) for b in verify(records[:-1], kept)] == [("A", 2, BreakKind.TRUNCATED)]


class TestRechainedAfterCrash:
    def test_byte_identical_rechain_is_a_duplicate_not_a_break(self):
        """Records written again from an older head after a crash (same entries, same head) are the same bytes:
        the trail stays intact, the copies are counted as duplicates and replayed once."""
        records = build_chain([("A", str(i)) for i in range(6)], SIGNER)
        stored = [*records[:5], *copy.deepcopy(records[3:5]), records[5]]
        found = examine(stored, keys=KEYS)
        assert found.breaks == []
        assert [(d.mbl, d.sequence, d.position) for d in found.duplicates] == [("A", 3, 5), ("A", 4, 6)]
        assert found.unique == records

    def test_different_record_at_a_sequence_already_seen_is_a_break(self):
        """A fork: another record chained from head 3 under sequence 4 (e.g. a later time) is not a duplicate."""
        records = build_chain([("A", str(i)) for i in range(5)], SIGNER)
        fork = chain(head_after(records[3]), "note", {"mbl": "A", "text": "4", "n": 4}, "2027-06-01T09:01:00Z", SIGNER)
        kinds = [(b.sequence, b.kind) for b in verify([*records, fork], keys=KEYS)]
        assert kinds == [(4, BreakKind.OUT_OF_ORDER), (4, BreakKind.BROKEN_LINK)]

    def test_chainer_gives_the_same_bytes_for_the_same_entry_and_head(self):
        """The chain stage's record depends on the entry and the stored head only, not on when it runs."""
        entry = TestAuditStages()._entries()[0]
        late = datetime(2031, 1, 1, tzinfo=UTC)
        first = AuditChainer(SCHEMAS, CATALOGUE, lambda: NOW, {}, SIGNER)(as_incoming(entry, 0))
        again = AuditChainer(SCHEMAS, CATALOGUE, lambda: late, {}, SIGNER)(as_incoming(entry, 0))
        assert [e.value for e in first] == [e.value for e in again]


def forged_extension(records: list[dict[str, Any]], signer: Signer | None) -> dict[str, Any]:
    """What a writer of the audit topic can append: the next sequence, the right link, every hash recomputed."""
    last = records[-1]
    return chain(head_after(last), "note", {"mbl": last["mbl"], "text": "forged"}, "2027-06-01T10:00:00Z", signer)


class TestSignatures:
    def test_signed_chain_verifies_with_the_stage_key(self):
        """Every record names the key id and carries a signature the public key verifies."""
        records = build_chain([("A", "1"), ("B", "1"), ("A", "2")], SIGNER)
        assert {r["key_id"] for r in records} == {SIGNER.key_id} and all(r["signature"] for r in records)
        assert verify(records, keys=KEYS) == []

    @pytest.mark.parametrize("forger", ["unsigned", "own key", "copied signature"])
    def test_forged_extension_with_recomputed_hashes_is_detected(self, forger: str):
        """An appended record whose hashes are all right but that the stage did not sign is named as a break."""
        records = build_chain([("A", str(i)) for i in range(3)], SIGNER)
        other = Signer.of(Ed25519PrivateKey.generate())
        forged = forged_extension(records, other if forger == "own key" else None)
        if forger == "copied signature":
            forged.update(key_id=records[-1]["key_id"], signature=records[-1]["signature"])
        assert verify([*records, forged]) == []
        kinds = [(b.sequence, b.kind) for b in verify([*records, forged], keys=KEYS)]
        expected = BreakKind.UNSIGNED if forger == "unsigned" else BreakKind.BAD_SIGNATURE
        assert kinds == [(3, expected)]

    def test_changed_byte_is_detected(self):
        """One byte of a signed payload changed: the payload no longer matches its hash."""
        records = build_chain([("A", str(i)) for i in range(3)], SIGNER)
        records[1]["payload"] = records[1]["payload"].replace('"1"', '"7"')
        assert [(b.sequence, b.kind) for b in verify(records, keys=KEYS)] == [(1, BreakKind.PAYLOAD_CHANGED)]

    def test_rehashed_and_resigned_record_with_another_key_is_detected(self):
        """A record rewritten with its hashes recomputed and signed by another key breaks its signature and link."""
        records = build_chain([("A", str(i)) for i in range(3)], SIGNER)
        other = Signer.of(Ed25519PrivateKey.generate())
        records[1] = chain(head_after(records[0]), "note", {"mbl": "A", "text": "x"}, records[1]["recorded_at"], other)
        kinds = [(b.sequence, b.kind) for b in verify(records, keys=KEYS)]
        assert kinds == [(1, BreakKind.BAD_SIGNATURE), (2, BreakKind.BROKEN_LINK)]

    def test_removed_record_is_detected(self):
        records = build_chain([("A", str(i)) for i in range(4)], SIGNER)
        del records[2]
        assert [(b.sequence, b.kind) for b in verify(records, keys=KEYS)] == [
            (3, BreakKind.GAP),
            (3, BreakKind.BROKEN_LINK),
        ]

    def test_reordering_is_detected(self):
        records = build_chain([("A", str(i)) for i in range(4)], SIGNER)
        records[1], records[2] = records[2], records[1]
        kinds = {(b.sequence, b.kind) for b in verify(records, keys=KEYS)}
        assert {(2, BreakKind.GAP), (1, BreakKind.OUT_OF_ORDER)} <= kinds

    def test_moved_to_another_chain_is_detected(self):
        """The MBL is in the signed text: a record moved to another chain's MBL no longer verifies."""
        records = build_chain([("A", "0"), ("B", "0")], SIGNER)
        records[1]["mbl"] = "A"
        assert BreakKind.BAD_SIGNATURE in {b.kind for b in verify(records, keys=KEYS)}

    def test_unsigned_legacy_records_pass_only_when_accepted_and_before_signing(self):
        """Records from before signing existed (the start of a chain) pass with accept_unsigned and are counted;
        an unsigned record after a signed one is still a break."""
        legacy = build_chain([("A", "0"), ("A", "1")])
        signed = chain(head_after(legacy[-1]), "note", {"mbl": "A", "text": "2"}, "2027-06-01T09:00:02Z", SIGNER)
        unsigned_after = forged_extension([*legacy, signed], None)
        assert [b.kind for b in verify([*legacy, signed], keys=KEYS)] == [BreakKind.UNSIGNED] * 2
        found = examine([*legacy, signed], keys=KEYS, accept_unsigned=True)
        assert found.breaks == [] and found.unsigned_accepted == 2
        later = examine([*legacy, signed, unsigned_after], keys=KEYS, accept_unsigned=True)
        assert [(b.sequence, b.kind) for b in later.breaks] == [(3, BreakKind.UNSIGNED)]

    def test_kept_head_must_be_signed_and_name_the_chains_record(self):
        """A head kept in a manifest carries the record's signature; a rewritten head does not verify."""
        records = build_chain([("A", str(i)) for i in range(3)], SIGNER)
        kept = head_after(records[-1])
        assert verify(records, {"A": kept}, KEYS) == []
        rewritten = ChainHead("A", 3, "f" * 64, kept.key_id, kept.signature)
        kinds = [b.kind for b in verify(records, {"A": rewritten}, KEYS)]
        assert kinds == [BreakKind.HEAD_MISMATCH, BreakKind.HEAD_MISMATCH]


class TestKeys:
    def test_duplicates_compare_every_field_of_the_schema(self):
        """A field added to AuditRecord later must take part in telling a duplicate from a fork."""
        assert tuple(f["name"] for f in SCHEMAS.schema("AuditRecord")["fields"]) == AUDIT_RECORD_FIELDS

    def test_cli_keygen_then_public_key_verify_a_signed_record(self, tmp_path: Any):
        """`ics2 audit keygen --out` prints the key id; `ics2 audit public-key --key` prints the PEM that verifies."""
        key = tmp_path / "k.pem"
        made = CliRunner().invoke(audit, ["keygen", "--out", str(key), "--json"])
        assert made.exit_code == 0, made.output
        key_id = json.loads(made.output)["key_id"]
        again = CliRunner().invoke(audit, ["keygen", "--out", str(key)])
        assert isinstance(again.exception, SigningKeyError)
        exported = CliRunner().invoke(audit, ["public-key", "--key", str(key), "--json"])
        assert json.loads(exported.output)["key_id"] == key_id
        public = tmp_path / "k.pub.pem"
        public.write_text(json.loads(exported.output)["public_key"])
        records = build_chain([("A", "0")], load_signer(key))
        assert records[0]["key_id"] == key_id
        assert verify(records, keys=Keyring.of([load_public_key(public)])) == []

    def test_keygen_writes_an_owner_only_key_and_never_overwrites(self, tmp_path: Any):
        path = tmp_path / "audit" / "signing-key.pem"
        signer = generate_key(path)
        assert path.stat().st_mode & 0o777 == 0o600
        assert load_signer(path).key_id == signer.key_id and signer.key_id.startswith("ed25519:")
        with pytest.raises(SigningKeyError):
            generate_key(path)
        assert signer_for(path).key_id == signer.key_id

    def test_public_key_exports_and_loads(self, tmp_path: Any):
        """The exported public key verifies what the private key signed; a private key file gives its public half."""
        private = tmp_path / "k.pem"
        signer = generate_key(private)
        public = tmp_path / "k.pub.pem"
        public.write_text(public_pem(signer.public))
        records = build_chain([("A", "0")], signer)
        for path in (public, private):
            assert verify(records, keys=Keyring.of([load_public_key(path)])) == []

    def test_not_a_key_is_refused(self, tmp_path: Any):
        path = tmp_path / "x.pem"
        path.write_text("not a key")
        with pytest.raises(SigningKeyError):
            load_public_key(path)

    def test_only_keeps_the_named_keys_and_refuses_unknown_ids(self):
        other = Signer.of(Ed25519PrivateKey.generate())
        ring = Keyring.of([SIGNER.public, other.public])
        assert set(ring.only([other.key_id]).keys) == {other.key_id}
        with pytest.raises(SigningKeyError):
            ring.only(["ed25519:0000000000000000"])


FIELDS = AUDIT_RECORD_FIELDS


def _tampered(value: Any) -> Any:
    if isinstance(value, int):
        return value + 1
    if value is None:
        return "0" * 64
    return value + "x" if not value or value[-1] != "x" else value[:-1] + "y"


class TestTamperProperty:
    @settings(max_examples=150, deadline=None)
    @given(
        mbls=st.lists(st.sampled_from(["A", "B", "C"]), min_size=2, max_size=12),
        data=st.data(),
    )
    def test_any_single_field_tamper_removal_or_swap_is_detected(self, mbls: list[str], data: st.DataObject):
        """Changing one field of one record, removing a record that is not a chain's last, or swapping two records
        of the same MBL always gives at least one break naming the MBL concerned."""
        records = build_chain([(m, f"e{i}") for i, m in enumerate(mbls)], SIGNER)
        assert verify(records, keys=KEYS) == []
        operation = data.draw(st.sampled_from(["field", "remove", "swap"]))
        tampered = copy.deepcopy(records)
        if operation == "field":
            index = data.draw(st.integers(0, len(records) - 1))
            name = data.draw(st.sampled_from(FIELDS))
            tampered[index][name] = _tampered(tampered[index][name])
            concerned = {records[index]["mbl"], tampered[index]["mbl"]}
        elif operation == "remove":
            last = {r["mbl"]: i for i, r in enumerate(records)}
            candidates = [i for i in range(len(records)) if i != last[records[i]["mbl"]]]
            if not candidates:
                return
            index = data.draw(st.sampled_from(candidates))
            concerned = {tampered.pop(index)["mbl"]}
        else:
            pairs = [(i, j) for i in range(len(records)) for j in range(i + 1, len(records)) if mbls[i] == mbls[j]]
            if not pairs:
                return
            i, j = data.draw(st.sampled_from(pairs))
            tampered[i], tampered[j] = tampered[j], tampered[i]
            concerned = {mbls[i]}
        breaks = verify(tampered, keys=KEYS)
        assert breaks, f"{operation} went unnoticed"
        assert {b.mbl for b in breaks} & concerned


def booking_emits() -> tuple[Incoming, list[Emit]]:
    """The seed booking through the real booking stage: drafts, filings, ENS events and alerts as written."""
    data = seed_json()
    value = SCHEMAS.encode("BookingEvent", data)
    incoming = Incoming(CATALOGUE.bookings.name, 2, 41, SEED_MBL.encode(), value, (), 1_780_000_000_000)
    return incoming, BookingStage(SCHEMAS, CATALOGUE, lambda: NOW, {})(incoming)


def as_incoming(emit: Emit, offset: int) -> Incoming:
    return Incoming(emit.topic, 0, offset, emit.key, emit.value, emit.headers, 1_780_000_000_000)


class TestEntries:
    def test_booking_entry_holds_the_booking_and_its_coordinates(self):
        """A booking is recorded whole, under its MBL, with topic:partition:offset and its own time."""
        incoming, _ = booking_emits()
        entry = EntryDeriver(SCHEMAS, CATALOGUE).derive(incoming)
        assert isinstance(entry, AuditEntry)
        assert (entry.mbl, entry.kind, entry.source) == (SEED_MBL, "booking", "p.ics2.bookings:2:41")
        assert entry.record["house_bills"][0]["hbl_number"] and entry.occurred_at.endswith("Z")
        assert json.loads(entry.payload)["record"]["master"]["mbl_number"] == SEED_MBL

    def test_every_output_of_the_booking_stage_is_recorded_by_kind(self):
        """Drafts, filings (with the XML and its hash), plan and filing events, alerts; party queues are skipped."""
        _, emits = booking_emits()
        deriver = EntryDeriver(SCHEMAS, CATALOGUE)
        derived = [deriver.derive(as_incoming(e, i)) for i, e in enumerate(emits)]
        kinds = {d.kind for d in derived if isinstance(d, AuditEntry)}
        assert {"draft", "filing", "plan", "filing_sent"} <= kinds
        filings = [d for d in derived if isinstance(d, AuditEntry) and d.kind == "filing"]
        assert all(sha256_hex(f.record["xml"]) == f.record["xml_sha256"] for f in filings)
        queued = [d for d, e in zip(derived, emits, strict=True) if ".party." in e.topic]
        ledger = [d for d, e in zip(derived, emits, strict=True) if e.topic == CATALOGUE.notifications_parsed.name]
        assert all(isinstance(d, Skipped) and d.reason == "topic_not_recorded" for d in queued + ledger)

    def test_undecodable_record_is_skipped_with_its_reason(self):
        """Bytes that are not Avro never raise: they are skipped and say why."""
        incoming = Incoming(CATALOGUE.bookings.name, 0, 7, b"M", b"not avro")
        skipped = EntryDeriver(SCHEMAS, CATALOGUE).derive(incoming)
        assert isinstance(skipped, Skipped) and skipped.reason.startswith("undecodable")

    def test_alert_without_mbl_is_skipped(self):
        """An alert about no consolidation cannot join a chain; it is counted as no_mbl."""
        record = {
            "alert_id": "a1",
            "party_id": "ML-TYO",
            "urgency": "info",
            "action": "info",
            "title": "t",
            "message": "m",
            "mbl": "",
            "created_at": "2027-06-01T09:00:00Z",
        }
        incoming = Incoming(CATALOGUE.alerts.name, 0, 3, b"ML-TYO", SCHEMAS.encode("PartyAlert", record))
        assert EntryDeriver(SCHEMAS, CATALOGUE).derive(incoming) == Skipped("no_mbl", "p.ics2.alerts:0:3")

    def test_dead_letter_of_a_booking_is_recorded_under_its_mbl(self):
        """A dead letter from the bookings topic joins the chain of the MBL it was keyed by."""
        letter = {
            "stage": "plan-bookings",
            "reason": "bad",
            "error_class": "streams.errors.BookingError",
            "source_topic": CATALOGUE.bookings.name,
            "source_partition": 0,
            "source_offset": 5,
            "original_key": SEED_MBL.encode(),
            "original_value": b"\x00",
            "failed_at": "2027-06-01T09:00:00Z",
        }
        incoming = Incoming(CATALOGUE.dead_letters.name, 0, 0, SEED_MBL.encode(), SCHEMAS.encode("DeadLetter", letter))
        entry = EntryDeriver(SCHEMAS, CATALOGUE).derive(incoming)
        assert isinstance(entry, AuditEntry) and (entry.mbl, entry.kind) == (SEED_MBL, "dead_letter")
        assert entry.record["original_value"] == {"base64": "AA=="}

    def test_source_splits_back_into_its_parts(self):
        """Topic names may hold dots and dashes; the last two fields are partition and offset."""
        assert split_source("p.ics2.filing-drafts:3:120") == ("p.ics2.filing-drafts", 3, 120)


class TestAuditStages:
    def _entries(self) -> list[Emit]:
        incoming, emits = booking_emits()
        collector = AuditCollector(SCHEMAS, CATALOGUE)
        out = collector(incoming)
        for i, e in enumerate(emits):
            out.extend(collector(as_incoming(e, i)))
        assert collector.skipped["topic_not_recorded"] > 0
        return out

    def test_collector_keys_entries_by_mbl(self):
        """Every entry goes to audit_entries keyed by its MBL, as an AuditEntry record."""
        entries = self._entries()
        assert entries and {e.topic for e in entries} == {CATALOGUE.audit_entries.name}
        assert {e.key for e in entries} == {SEED_MBL.encode()}
        assert SCHEMAS.decode(entries[0].value).name == "eu.ics2streams.AuditEntry"

    def test_chainer_writes_one_intact_chain(self):
        """Entries become AuditRecords 0..n-1 on the audit topic, linked, and the table remembers the head."""
        table: dict[str, bytes] = {}
        chainer = AuditChainer(SCHEMAS, CATALOGUE, lambda: NOW, table)
        records = []
        for offset, emit in enumerate(self._entries()):
            for out in chainer(as_incoming(emit, offset)):
                assert out.topic == CATALOGUE.audit.name and out.key == SEED_MBL.encode()
                records.append(SCHEMAS.decode(out.value, reader="AuditRecord").record)
        assert [r["sequence"] for r in records] == list(range(len(records)))
        assert verify(records) == []
        assert json.loads(table[SEED_MBL])["last_hash"] == records[-1]["hash"]

    def test_redelivered_entry_is_never_chained_twice(self):
        """An entry whose source offset was already chained (a redelivery after restart) emits nothing."""
        table: dict[str, bytes] = {}
        chainer = AuditChainer(SCHEMAS, CATALOGUE, lambda: NOW, table)
        entries = self._entries()
        first = [o for i, e in enumerate(entries[:3]) for o in chainer(as_incoming(e, i))]
        again = [o for i, e in enumerate(entries[:3]) for o in chainer(as_incoming(e, 10 + i))]
        assert len(first) == 3 and again == []
        assert json.loads(table[SEED_MBL])["next_sequence"] == 3

    def test_undecodable_entry_fails_to_decode(self):
        """Garbage on audit_entries raises DecodeError, which the runner sends to the dead-letter topic."""
        chainer = AuditChainer(SCHEMAS, CATALOGUE, lambda: NOW, {})
        with pytest.raises(DecodeError):
            chainer(Incoming(CATALOGUE.audit_entries.name, 0, 0, b"M", b"garbage"))

    async def test_worker_chainer_writes_the_record_before_storing_the_state(self):
        """The worker's chain stage sends each record itself and stores the head only once the send succeeded."""
        table: dict[str, bytes] = {}
        sent: list[Emit] = []

        async def send(emits: Sequence[Emit]) -> None:
            assert SEED_MBL not in table or json.loads(table[SEED_MBL])["next_sequence"] == len(sent)
            sent.extend(emits)

        chainer = SendFirstChainer(AuditChainer(SCHEMAS, CATALOGUE, lambda: NOW, table), send)
        entries = self._entries()
        for offset, emit in enumerate(entries[:4]):
            assert await chainer(as_incoming(emit, offset)) == []
        assert [SCHEMAS.decode(e.value, reader="AuditRecord").record["sequence"] for e in sent] == [0, 1, 2, 3]
        assert json.loads(table[SEED_MBL])["next_sequence"] == 4

    def test_batch_chainer_stores_each_mbl_once_after_the_batch_is_acknowledged(self):
        """A batch is chained in memory (one intact chain) and the head is stored once, on acknowledgement."""
        writes: list[str] = []

        class Table(dict[str, bytes]):
            def __setitem__(self, key: str, value: bytes) -> None:
                writes.append(key)
                super().__setitem__(key, value)

        table = Table()
        chainer = BatchChainer(AuditChainer(SCHEMAS, CATALOGUE, lambda: NOW, table))
        entries = self._entries()
        out = [o for i, e in enumerate(entries[:5]) for o in chainer(as_incoming(e, i))]
        assert table == {} and len(out) == 5
        chainer.acknowledged()
        assert writes == [SEED_MBL] and json.loads(table[SEED_MBL])["next_sequence"] == 5
        records = [SCHEMAS.decode(o.value, reader="AuditRecord").record for o in out]
        assert [r["sequence"] for r in records] == [0, 1, 2, 3, 4] and verify(records) == []
        assert [o for i, e in enumerate(entries[:5]) for o in chainer(as_incoming(e, i))] == []

    def test_batch_chainer_forgets_an_abandoned_batch(self):
        """A batch whose records were not acknowledged is chained again, from the stored head, when redelivered."""
        table: dict[str, bytes] = {}
        chainer = BatchChainer(AuditChainer(SCHEMAS, CATALOGUE, lambda: NOW, table))
        entries = self._entries()
        first = [o for i, e in enumerate(entries[:3]) for o in chainer(as_incoming(e, i))]
        chainer.abandoned()
        again = [o for i, e in enumerate(entries[:3]) for o in chainer(as_incoming(e, i))]
        assert table == {} and [o.value for o in again] == [o.value for o in first]

    async def test_failed_send_leaves_the_entry_to_be_chained_again(self):
        """When the record cannot be written the state is not stored, so the redelivered entry is not lost."""
        table: dict[str, bytes] = {}

        async def broken(emits: Sequence[Emit]) -> None:
            raise ConnectionError("broker gone")

        entry = as_incoming(self._entries()[0], 0)
        with pytest.raises(ConnectionError):
            await SendFirstChainer(AuditChainer(SCHEMAS, CATALOGUE, lambda: NOW, table), broken)(entry)
        assert table == {}
        assert len(AuditChainer(SCHEMAS, CATALOGUE, lambda: NOW, table)(entry)) == 1
