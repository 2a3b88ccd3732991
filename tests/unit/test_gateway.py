"""The customs gateway without Kafka: the boundary's records, the file drop, the simulator connector, and the
connector loop on fake clients through a broker outage."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaTimeoutError, LeaderNotAvailableError, MessageSizeTooLargeError
from click.testing import CliRunner

from streams.cli.main import cli
from streams.contracts.avro import SchemaCatalogue
from streams.domain.drafts import drafts_for, make_lrn
from streams.domain.model import Consolidation
from streams.domain.planning import FilingDraft, FilingType, PlannedFiling, plan
from streams.errors import BrokerUnavailable, DecodeError, InputError
from streams.gateway import clients as clients_module
from streams.gateway import connector as connector_module
from streams.gateway import simulator as simulator_module
from streams.gateway.base import (
    HEADER_ADDRESSEE,
    HEADER_MESSAGE_ID,
    HEADER_MESSAGE_TYPE,
    Gateway,
    InboundMessage,
    OutboundFiling,
)
from streams.gateway.clients import stop_quietly
from streams.gateway.connector import GatewayConnector, decode_filing
from streams.gateway.files import FileDropGateway, outbox_name, write_atomically
from streams.gateway.simulator import (
    KafkaSnapshotStore,
    MemorySnapshotStore,
    SimulatorGateway,
    SnapshotTooLarge,
    decode_snapshot,
    encode_snapshot,
    load_script,
)
from streams.messages.parse import parse_notification
from streams.messages.render import render_filing
from streams.pipeline.stage import Emit
from streams.settings import Settings
from streams.simulator import Outcome, RiskRule, RiskScript
from streams.topics import TopicSpec
from tests.data import seed_json

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "xml"
NOW = datetime(2027, 6, 13, 8, tzinfo=UTC)
ML_TYO, CARRIER_A, COLOADER_A = "NL812345678000", "NL860123456", "DE993311220000"
OWN_HBL, COLOADED_HBL = "SKC26TYO0001", "AOB26OSA1001"

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<IE3R01 xmlns="urn:wco:datamodel:eu:ics2:2"><LRN>&lol3;</LRN></IE3R01>
"""


@pytest.fixture(scope="module")
def consolidation() -> Consolidation:
    data = seed_json()
    for party in data["parties"]:
        if party["id"] == "CARRIER-A":
            party["contact"] = {"email": "ops@carrier.example"}
    return Consolidation.from_json(data)


def filing_of(consolidation: Consolidation, draft: FilingDraft) -> OutboundFiling:
    """The gateway's view of one rendered draft, as the pipeline would hand it over."""
    filer = draft.planned.filer
    return OutboundFiling(
        message_id=f"msg-{draft.lrn}",
        message_type=f"IE3{draft.planned.filing.value}",
        lrn=draft.lrn,
        mbl=consolidation.mbl,
        hbl=draft.planned.hbl,
        filer_party_id=filer,
        filer_eori=consolidation.parties[filer].eori or "",
        xml=render_filing(draft),
    )


@pytest.fixture(scope="module")
def filings(consolidation: Consolidation) -> dict[str, OutboundFiling]:
    """The seed's filings by name: our planned ones, the carrier's F12 and co-loader A's F16."""
    ours = {(d.planned.filing, d.planned.hbl): d for d in drafts_for(consolidation, plan(consolidation), NOW)}

    def extra(filing: FilingType, hbl: str | None, filer: str) -> FilingDraft:
        lrn = make_lrn(consolidation.mbl, hbl, filing, filer, consolidation.version)
        return FilingDraft(consolidation, PlannedFiling(filing, hbl, filer), lrn, NOW)

    drafts = {
        "F12": extra(FilingType.F12, None, "CARRIER-A"),
        "F15": ours[(FilingType.F15, OWN_HBL)],
        "F14": ours[(FilingType.F14, COLOADED_HBL)],
        "F16": extra(FilingType.F16, COLOADED_HBL, "COLOADER-A"),
    }
    return {name: filing_of(consolidation, draft) for name, draft in drafts.items()}


def filing_record(filing: OutboundFiling, **changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "message_id": filing.message_id,
        "message_type": filing.message_type,
        "lrn": filing.lrn,
        "mbl": filing.mbl,
        "hbl": filing.hbl,
        "filer_party_id": filing.filer_party_id,
        "filer_eori": filing.filer_eori,
        "supplementary_declarant": None,
        "supplementary_declarant_eori": None,
        "booking_version": 1,
        "xml_sha256": hashlib.sha256(filing.xml).hexdigest(),
        "xml": filing.xml,
        "created_at": "2027-06-13T08:00:00Z",
    }
    record.update(changes)
    return record


class TestOutboundFiling:
    def test_reads_the_essentials_of_a_filing_record(self, filings):
        """A Filing record becomes the gateway's filing with the same keys and XML."""
        f15 = filings["F15"]
        assert OutboundFiling.from_record(filing_record(f15)) == f15

    def test_xml_that_does_not_match_its_hash_is_refused(self, filings):
        """XML altered after rendering (hash mismatch) is a decode error, not something to send to customs."""
        record = filing_record(filings["F15"], xml=filings["F15"].xml.replace(b"SKC26", b"XXX26"))
        with pytest.raises(DecodeError, match="xml_sha256"):
            OutboundFiling.from_record(record)

    @pytest.mark.parametrize(
        ("change", "message"),
        [
            ({"message_type": "F15"}, "not an ICS2 message code"),
            ({"lrn": ""}, "message id and an LRN"),
            ({"xml_sha256": "abc"}, "xml_sha256"),
        ],
    )
    def test_unusable_fields_are_refused(self, filings, change, message):
        """A record with an unusable message type, LRN or hash is a decode error that says why."""
        with pytest.raises(DecodeError, match=message):
            OutboundFiling.from_record(filing_record(filings["F15"], **change))

    def test_missing_field_is_a_decode_error(self, filings):
        """A record without an LRN field is a decode error, not a KeyError."""
        record = filing_record(filings["F15"])
        del record["lrn"]
        with pytest.raises(DecodeError):
            OutboundFiling.from_record(record)


class TestDecodeFiling:
    def test_avro_value_decodes_to_the_filing(self, filings):
        """A single-object encoded Filing value decodes to the gateway's filing."""
        schemas = SchemaCatalogue.load()
        value = schemas.encode("Filing", filing_record(filings["F12"]))
        assert decode_filing(value, schemas) == filings["F12"]

    @pytest.mark.parametrize("value", [None, b"", b"<IE3F15/>", b"\xc3\x01" + b"\x00" * 8 + b"junk"])
    def test_anything_else_is_a_decode_error(self, value):
        """Tombstones, raw XML and unknown Avro are DecodeErrors, which the loop dead-letters."""
        with pytest.raises(DecodeError):
            decode_filing(value, SchemaCatalogue.load())


class TestInboundMessage:
    def test_headers_name_type_addressee_and_id(self):
        """An addressed message carries its type, addressee and id as headers and the addressee as key."""
        message = InboundMessage("NL812345678000", "IE3R01", b"<x/>", message_id="abc")
        assert message.key == b"NL812345678000"
        assert dict(message.headers()) == {
            HEADER_MESSAGE_TYPE: b"IE3R01",
            HEADER_ADDRESSEE: b"NL812345678000",
            HEADER_MESSAGE_ID: b"abc",
        }

    def test_unknown_addressee_has_empty_key_and_no_addressee_header(self):
        """A message for nobody known gets an empty key and no ics2-addressee header."""
        message = InboundMessage("", "IE3N10", b"<x/>")
        assert message.key == b""
        assert [name for name, _ in message.headers()] == [HEADER_MESSAGE_TYPE]


class TestAtomicWrite:
    def test_target_holds_the_bytes_and_no_temporary_file_is_left(self, tmp_path):
        """After the write the target has exactly the bytes and the folder holds nothing else."""
        write_atomically(tmp_path, "a.xml", b"<a/>")
        assert [p.name for p in tmp_path.iterdir()] == ["a.xml"]
        assert (tmp_path / "a.xml").read_bytes() == b"<a/>"

    def test_failed_write_leaves_old_content_and_no_temporary(self, tmp_path, monkeypatch):
        """If the data cannot reach the disk, the previous file is untouched and the temporary name is removed."""
        (tmp_path / "a.xml").write_bytes(b"old")

        def broken(descriptor: int) -> None:
            raise OSError("disk full")

        monkeypatch.setattr(os, "fsync", broken)
        with pytest.raises(OSError, match="disk full"):
            write_atomically(tmp_path, "a.xml", b"new")
        assert [p.name for p in tmp_path.iterdir()] == ["a.xml"]
        assert (tmp_path / "a.xml").read_bytes() == b"old"

    def test_writes_go_through_a_temporary_name_in_the_same_folder(self, tmp_path, monkeypatch):
        """The rename is from a hidden temporary name in the target's folder (so it is atomic)."""
        renames: list[tuple[Path, Path]] = []
        real = os.replace

        def spy(src: Any, dst: Any) -> None:
            renames.append((Path(src), Path(dst)))
            real(src, dst)

        monkeypatch.setattr(os, "replace", spy)
        write_atomically(tmp_path, "IE3F15_X.xml", b"<a/>")
        (source, target) = renames[0]
        assert source.parent == target.parent == tmp_path
        assert source.name.startswith(".IE3F15_X.xml.") and source.name.endswith(".tmp")
        assert target.name == "IE3F15_X.xml"


class TestFileDropOutbox:
    async def test_filing_is_written_as_type_and_lrn(self, tmp_path, filings):
        """submit writes <message_type>_<lrn>.xml in the outbox, byte for byte, and customs answers later."""
        gateway = FileDropGateway(tmp_path / "out", tmp_path / "in")
        await gateway.start()
        f15 = filings["F15"]
        assert (await gateway.submit(f15, NOW)) == ()
        written = tmp_path / "out" / f"IE3F15_{f15.lrn}.xml"
        assert written.read_bytes() == f15.xml
        assert [p.name for p in (tmp_path / "out").iterdir()] == [written.name]

    async def test_redelivered_filing_rewrites_the_same_file(self, tmp_path, filings):
        """Submitting the same filing twice leaves one file with the same bytes."""
        gateway = FileDropGateway(tmp_path / "out", tmp_path / "in")
        await gateway.start()
        await gateway.submit(filings["F12"], NOW)
        await gateway.submit(filings["F12"], NOW)
        assert len(list((tmp_path / "out").iterdir())) == 1

    @pytest.mark.parametrize("lrn", ["../escape", "a/b", "", "x" * 70])
    def test_lrn_that_cannot_name_a_file_is_refused(self, lrn):
        """An LRN that would leave the folder, or is empty or too long, cannot name an outbox file."""
        with pytest.raises(DecodeError):
            outbox_name("IE3F15", lrn)

    def test_gateway_satisfies_the_boundary(self, tmp_path):
        """The file drop is a Gateway as the loop sees it."""
        assert isinstance(FileDropGateway(tmp_path, tmp_path), Gateway)


class TestFileDropInbox:
    @pytest.fixture
    async def gateway(self, tmp_path) -> FileDropGateway:
        gateway = FileDropGateway(tmp_path / "out", tmp_path / "in")
        await gateway.start()
        return gateway

    def drop(self, gateway: FileDropGateway, fixture: str, name: str | None = None) -> bytes:
        data = (FIXTURES / f"{fixture}.xml").read_bytes()
        (gateway.inbox / (name or f"{fixture}.xml")).write_bytes(data)
        return data

    @pytest.mark.parametrize(
        ("fixture", "message_type", "addressee"),
        [
            ("IE3R01", "IE3R01", ML_TYO),
            ("IE3N04", "IE3N04", CARRIER_A),
            ("IE3N11-official", "IE3N11", COLOADER_A),
            ("IE3N99-official", "IE3N99", ML_TYO),
        ],
    )
    async def test_picks_up_type_addressee_and_bytes(self, gateway, fixture, message_type, addressee):
        """A dropped notification comes back with its root name as type, the right addressee and its exact bytes."""
        data = self.drop(gateway, fixture)
        [message] = await gateway.poll(NOW)
        assert (message.message_type, message.addressee, message.xml) == (message_type, addressee, data)
        assert message.message_id == hashlib.sha256(data).hexdigest()

    async def test_without_declarant_or_carrier_the_addressee_is_empty(self, gateway):
        """A notification naming no declarant, supplementary declarant or carrier has the empty addressee."""
        xml = b'<IE3N10 xmlns="urn:wco:datamodel:eu:ics2:2"><MRN>27NLA1B2C3D4E5F6G7</MRN></IE3N10>'
        (gateway.inbox / "n10.xml").write_bytes(xml)
        [message] = await gateway.poll(NOW)
        assert message.addressee == ""

    async def test_claimed_until_checkpoint_then_processed(self, gateway):
        """A picked-up file waits in processing/ until checkpoint, then lies in processed/, and is not taken again."""
        self.drop(gateway, "IE3R01")
        assert len(await gateway.poll(NOW)) == 1
        assert [p.name for p in gateway.processing.iterdir()] == ["IE3R01.xml"]
        assert not list(gateway.inbox.glob("*.xml"))
        await gateway.checkpoint()
        assert not list(gateway.processing.iterdir())
        assert [p.name for p in gateway.processed.iterdir()] == ["IE3R01.xml"]
        assert (await gateway.poll(NOW)) == []

    async def test_same_name_again_is_kept_beside_the_first(self, gateway):
        """A second file of the same name does not overwrite the first in processed/."""
        self.drop(gateway, "IE3R01", "answer.xml")
        await gateway.poll(NOW)
        await gateway.checkpoint()
        self.drop(gateway, "IE3N03", "answer.xml")
        await gateway.poll(NOW)
        await gateway.checkpoint()
        assert sorted(p.name for p in gateway.processed.iterdir()) == ["answer.1.xml", "answer.xml"]

    async def test_xml_bomb_is_rejected_with_its_reason(self, gateway):
        """An entity-expansion bomb goes to rejected/ with a reason file, and good files beside it still pass."""
        (gateway.inbox / "bomb.xml").write_bytes(BILLION_LAUGHS)
        self.drop(gateway, "IE3R01")
        messages = await gateway.poll(NOW)
        assert [m.message_type for m in messages] == ["IE3R01"]
        assert (gateway.rejected / "bomb.xml").read_bytes() == BILLION_LAUGHS
        reason = (gateway.rejected / "bomb.xml.reason.txt").read_text()
        assert "DTD" in reason or "DOCTYPE" in reason
        assert not (gateway.inbox / "bomb.xml").exists()

    @pytest.mark.parametrize(
        ("data", "reason"),
        [
            (b"<IE3R01 xmlns='urn:wco:datamodel:eu:ics2:2'><LRN>", "not well-formed"),
            (b"<IE3R01 xmlns='urn:other'/>", "namespace"),
            (b"<Hello xmlns='urn:wco:datamodel:eu:ics2:2'/>", "not an ICS2 message"),
            (b"", "empty"),
        ],
    )
    async def test_unusable_files_are_rejected_never_raised(self, gateway, data, reason):
        """Malformed, foreign, unknown or empty files are moved aside with the reader's reason."""
        (gateway.inbox / "bad.xml").write_bytes(data)
        assert (await gateway.poll(NOW)) == []
        assert reason in (gateway.rejected / "bad.xml.reason.txt").read_text()

    async def test_oversize_file_is_rejected(self, tmp_path):
        """A file above the size limit is rejected without being parsed."""
        gateway = FileDropGateway(tmp_path / "out", tmp_path / "in", max_bytes=100)
        await gateway.start()
        self.drop(gateway, "IE3R01")
        assert (await gateway.poll(NOW)) == []
        assert "exceeds the limit" in (gateway.rejected / "IE3R01.xml.reason.txt").read_text()

    async def test_hidden_and_other_files_are_left_alone(self, gateway):
        """Temporary names of a writer (hidden, not .xml) are neither taken nor rejected."""
        (gateway.inbox / ".IE3R01.xml.part").write_bytes(b"<half")
        (gateway.inbox / "IE3R01.xml.tmp").write_bytes(b"<half")
        assert (await gateway.poll(NOW)) == []
        assert not list(gateway.rejected.iterdir())
        assert len(list(gateway.inbox.glob("*IE3R01*"))) == 2

    async def test_file_claimed_before_a_crash_is_in_doubt_after_restart(self, gateway, tmp_path):
        """A file taken but never confirmed is in doubt for the next run, with its id and claim time, once."""
        data = self.drop(gateway, "IE3Q02")
        await gateway.poll(NOW)
        restarted = FileDropGateway(tmp_path / "out", tmp_path / "in")
        await restarted.start()
        doubt = await restarted.in_doubt()
        assert [(m.message_type, m.message_id) for m in doubt.messages] == [
            ("IE3Q02", hashlib.sha256(data).hexdigest())
        ]
        assert doubt.since is not None and abs(doubt.since - datetime.now(UTC)) < timedelta(minutes=1)
        assert (await restarted.poll(NOW)) == []
        await restarted.checkpoint()
        assert [p.name for p in restarted.processed.iterdir()] == ["IE3Q02.xml"]
        assert (await restarted.in_doubt()).messages == ()

    async def test_nothing_in_doubt_after_a_clean_run(self, gateway):
        """With every picked-up file confirmed there is nothing in doubt."""
        self.drop(gateway, "IE3R01")
        await gateway.poll(NOW)
        await gateway.checkpoint()
        doubt = await gateway.in_doubt()
        assert doubt.messages == () and doubt.since is None


def mrns(messages) -> dict[str, str]:
    """LRN -> MRN of the IE3R01 answers."""
    return {(n := parse_notification(m.xml)).lrn: n.mrn for m in messages if m.message_type == "IE3R01"}


class TestSimulatorGateway:
    async def test_answers_come_with_addressee_and_stable_ids(self, filings):
        """F12 then F15: registrations and assessment complete, each with an id derived from the filing."""
        gateway = SimulatorGateway(MemorySnapshotStore(), seed=1)
        await gateway.start()
        first = await gateway.submit(filings["F12"], NOW)
        second = await gateway.submit(filings["F15"], NOW)
        assert [(m.addressee, m.message_type) for m in first] == [(CARRIER_A, "IE3R01")]
        assert [(m.addressee, m.message_type) for m in second] == [
            (ML_TYO, "IE3R01"),
            (CARRIER_A, "IE3R01"),
            (ML_TYO, "IE3N03"),
            (CARRIER_A, "IE3N03"),
        ]
        ids = [m.message_id for m in (*first, *second)]
        assert len(set(ids)) == len(ids) and all(ids)

    async def test_same_message_id_is_answered_once(self, filings):
        """A redelivered filing (same message id) gets no second answer, not even a duplicate-LRN rejection."""
        gateway = SimulatorGateway(MemorySnapshotStore(), seed=1)
        await gateway.start()
        assert await gateway.submit(filings["F12"], NOW)
        assert (await gateway.submit(filings["F12"], NOW)) == ()

    async def test_checkpoint_saves_only_after_a_change(self, filings):
        """checkpoint writes a snapshot when state changed since the last one, and only then."""
        store = MemorySnapshotStore()
        gateway = SimulatorGateway(store, seed=1)
        await gateway.start()
        await gateway.checkpoint()
        assert store.saves == 0
        await gateway.submit(filings["F12"], NOW)
        await gateway.checkpoint()
        await gateway.checkpoint()
        assert store.saves == 1
        assert store.state is not None and store.state["answered"] == [filings["F12"].message_id]

    async def test_a_snapshot_too_large_is_logged_and_answering_goes_on(self, filings):
        """A state over the record limit must not stop the connector (a 10-minute soak crashed it): the checkpoint
        is refused with a clear error, the gateway answers the next filing, and the state stays to be saved."""

        class FullStore(MemorySnapshotStore):
            async def save(self, state: dict[str, Any]) -> None:
                raise SnapshotTooLarge("the simulator's snapshot is 9000000 bytes, over the 8388608 a record may hold")

        store = FullStore()
        gateway = SimulatorGateway(store, seed=1)
        await gateway.start()
        await gateway.submit(filings["F12"], NOW)
        await gateway.checkpoint()
        assert store.saves == 0 and gateway._dirty
        assert await gateway.submit(filings["F15"], NOW)

    async def test_the_kafka_store_refuses_a_snapshot_over_the_limit_before_sending(self, monkeypatch):
        monkeypatch.setattr(simulator_module, "SNAPSHOT_MAX_BYTES", 64)
        store = KafkaSnapshotStore(Settings(), TopicSpec("s", "p", "k", "v"), key="app")
        store._producer = object()  # type: ignore[assignment]
        state = {"simulator": {"filings": [hashlib.sha256(bytes([i])).hexdigest() for i in range(50)]}}
        with pytest.raises(SnapshotTooLarge, match="over the 64"):
            await store.save(state)

    def test_snapshots_are_deflated_and_plain_json_ones_still_load(self):
        state = {"simulator": {"seed": 1, "filings": ["F15V1" + "A" * 17] * 500}, "answered": ["m-1"]}
        packed = encode_snapshot(state)
        plain = json.dumps(state).encode()
        assert len(packed) < len(plain) // 10
        assert decode_snapshot(packed) == state
        assert decode_snapshot(plain) == state

    async def test_crash_before_snapshot_repeats_the_same_mrn(self, filings):
        """A filing answered but not snapshotted is answered again after restart with the same MRN."""
        store = MemorySnapshotStore()
        gateway = SimulatorGateway(store, seed=7)
        await gateway.start()
        await gateway.submit(filings["F12"], NOW)
        await gateway.checkpoint()
        before = mrns(await gateway.submit(filings["F15"], NOW))
        restarted = SimulatorGateway(store, seed=7)
        await restarted.start()
        again = await restarted.submit(filings["F15"], NOW)
        assert mrns(again) == before and filings["F15"].lrn in before
        assert "IE3N01" not in [m.message_type for m in again]

    async def test_crash_after_snapshot_skips_the_filing(self, filings):
        """A filing whose answers were snapshotted is not answered again after restart."""
        store = MemorySnapshotStore()
        gateway = SimulatorGateway(store, seed=7)
        await gateway.start()
        await gateway.submit(filings["F12"], NOW)
        await gateway.checkpoint()
        restarted = SimulatorGateway(store, seed=7)
        await restarted.start()
        assert (await restarted.submit(filings["F12"], NOW)) == ()
        registered = await restarted.submit(filings["F15"], NOW)
        assert [m.message_type for m in registered][:2] == ["IE3R01", "IE3R01"]

    async def test_restored_seed_wins_and_configured_script_applies(self, filings):
        """After restart the snapshot's seed is kept (MRNs), and the configured risk script decides outcomes."""
        store = MemorySnapshotStore()
        gateway = SimulatorGateway(store, seed=3)
        await gateway.start()
        await gateway.submit(filings["F12"], NOW)
        await gateway.checkpoint()
        script = RiskScript(rules=(RiskRule(Outcome.DO_NOT_LOAD, hbl=OWN_HBL),))
        restarted = SimulatorGateway(store, script, seed=99)
        await restarted.start()
        assert restarted.seed == 3
        out = await restarted.submit(filings["F15"], NOW)
        assert "IE3Q01" in [m.message_type for m in out]

    async def test_poll_chases_a_missing_f16_once(self, filings):
        """After the grace period poll sends IE3N02 to the F14 filer and IE3N11 to the co-loader, only once."""
        store = MemorySnapshotStore()
        gateway = SimulatorGateway(store, RiskScript(grace=timedelta(hours=2)), seed=1)
        await gateway.start()
        await gateway.submit(filings["F12"], NOW)
        await gateway.submit(filings["F14"], NOW)
        await gateway.checkpoint()
        assert (await gateway.poll(NOW + timedelta(hours=1))) == []
        chased = await gateway.poll(NOW + timedelta(hours=3))
        assert [(m.addressee, m.message_type) for m in chased] == [(ML_TYO, "IE3N02"), (COLOADER_A, "IE3N11")]
        assert (await gateway.poll(NOW + timedelta(hours=4))) == []
        await gateway.checkpoint()
        assert store.saves == 2

    async def test_f16_in_time_means_no_chase(self, filings):
        """When the F16 arrives within the grace period, poll sends nothing."""
        gateway = SimulatorGateway(MemorySnapshotStore(), seed=1)
        await gateway.start()
        for name in ("F12", "F14", "F16"):
            await gateway.submit(filings[name], NOW)
        assert (await gateway.poll(NOW + timedelta(hours=5))) == []

    def test_gateway_satisfies_the_boundary(self):
        """The simulator connector is a Gateway as the loop sees it."""
        assert isinstance(SimulatorGateway(MemorySnapshotStore()), Gateway)


class TestLoadScript:
    def test_default_without_a_file(self):
        """No --script means the built-in default script."""
        assert load_script(None) == RiskScript()

    def test_reads_rules_from_json(self, tmp_path):
        """A script file gives its rules and timings."""
        path = tmp_path / "script.json"
        path.write_text(json.dumps({"rules": [{"outcome": "rfi", "hbl": OWN_HBL}], "grace_seconds": 60}))
        script = load_script(path)
        assert script.rules == (RiskRule(Outcome.RFI, hbl=OWN_HBL),) and script.grace == timedelta(seconds=60)

    @pytest.mark.parametrize("text", ["not json", "[1, 2]", '{"rules": [{"outcome": "maybe"}]}'])
    def test_unusable_file_is_an_input_error(self, tmp_path, text):
        """A script that is not JSON, not an object or names an unknown outcome is an InputError."""
        path = tmp_path / "script.json"
        path.write_text(text)
        with pytest.raises(InputError):
            load_script(path)


class TestGatewayCommand:
    def test_files_connector_needs_both_folders(self, tmp_path):
        """``ics2 gateway --connector files`` without --inbox is a usage error, before any connection is tried."""
        result = CliRunner().invoke(cli, ["gateway", "--connector", "files", "--outbox", str(tmp_path)])
        assert result.exit_code == 2
        assert "--outbox and --inbox" in result.output

    def test_command_is_registered(self):
        """The gateway command is listed by the ics2 entry point."""
        result = CliRunner().invoke(cli, ["gateway", "--help"])
        assert result.exit_code == 0 and "--poll-interval" in result.output


SETTINGS = Settings(topic_prefix="g.")
OUTBOUND = TopicPartition("g.ics2.filings.outbound", 0)


@dataclass
class FakeRecord:
    """What the loop reads of a ``ConsumerRecord``."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)


class FakeConsumer:
    """The loop's view of its aiokafka consumer: hands out ``records`` from the committed offset after each
    subscription (as a group rejoined after an outage does), takes commits; ``hang`` makes commit and stop wait
    for a broker that never comes back."""

    def __init__(self, records: list[FakeRecord], *, hang: bool = False) -> None:
        self.records = records
        self.hang = hang
        self.position = 0
        self.committed = 0
        self.commits: list[int] = []
        self.subscribed = True
        self.subscriptions = 0
        self.unsubscriptions = 0
        self.polled_at: int | None = None

    async def getmany(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[TopicPartition, list[Any]]:
        assert self.subscribed, "read while not subscribed"
        if self.position < len(self.records):
            batch, self.position = self.records[self.position :], len(self.records)
            return {OUTBOUND: batch}
        await asyncio.sleep(max(timeout_ms, 10) / 1000)
        return {}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        assert self.subscribed, "commit while not subscribed"
        if self.hang:
            await asyncio.Event().wait()
        self.committed = offsets[OUTBOUND]
        self.commits.append(self.committed)

    def assignment(self) -> set[TopicPartition]:
        return {OUTBOUND} if self.subscribed else set()

    def last_poll_timestamp(self, partition: TopicPartition) -> int | None:
        return self.polled_at

    def subscribe(self, topics: list[str]) -> None:
        self.subscribed = True
        self.subscriptions += 1

    def unsubscribe(self) -> None:
        self.subscribed = False
        self.unsubscriptions += 1
        self.position = self.committed

    async def stop(self) -> None:
        if self.hang:
            await asyncio.Event().wait()


class FakeProducer:
    """``streams.pipeline.runner.Producer`` on a broker that refuses the first ``failures`` deliveries; ``hang``:
    one that never answers."""

    def __init__(self, failures: Sequence[Exception] = (), *, hang: bool = False) -> None:
        self.failures = list(failures)
        self.hang = hang
        self.attempts = 0
        self.acknowledged: list[Emit] = []
        self.stopped = False

    async def send_all(self, emits: Sequence[Emit], retry_s: float | None = None) -> None:
        self.attempts += 1
        if self.hang:
            await asyncio.Event().wait()
        if self.failures:
            raise self.failures.pop(0)
        self.acknowledged.extend(emits)

    async def stop(self) -> None:
        self.stopped = True


def connector_with(consumer: FakeConsumer, producer: FakeProducer, store: MemorySnapshotStore) -> GatewayConnector:
    """A connector on the simulator whose clients are the fakes (``_start`` makes real ones)."""
    connector = GatewayConnector(SimulatorGateway(store, seed=1), SETTINGS, poll_interval=60.0)

    async def start() -> None:
        connector._consumer = consumer  # type: ignore[assignment]
        connector._producer = producer  # type: ignore[assignment]
        await connector.gateway.start()

    connector._start = start  # type: ignore[method-assign]
    return connector


def outbound_record(filing: OutboundFiling, offset: int = 0) -> FakeRecord:
    value = SchemaCatalogue.load().encode("Filing", filing_record(filing))
    return FakeRecord(OUTBOUND.topic, OUTBOUND.partition, offset, filing.mbl.encode(), value)


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


@pytest.fixture
def broker_answers(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether the broker answers the connector's direct question (``reach_broker``); a list of answers to come,
    then yes."""
    answers: list[bool] = []

    async def reach_broker(settings: Settings, timeout: float = 15.0) -> None:
        if answers and not answers.pop(0):
            raise BrokerUnavailable("no Kafka broker answers")

    monkeypatch.setattr(connector_module, "reach_broker", reach_broker)
    monkeypatch.setattr(connector_module, "backoff", lambda attempt: 0.01)
    return answers


class TestConnectorRidesOutAnOutage:
    async def test_answers_are_sent_again_until_acknowledged_then_committed(self, filings, broker_answers):
        """An outage longer than the send's own retries (LeaderNotAvailable, then timeouts): the connector neither
        dies nor drops the answers; it pauses reading, sends the same answers again until acknowledged, then
        checkpoints. The filing, read again after reading resumes, is not answered twice, and is committed."""
        broker_answers.extend([False, False])
        consumer = FakeConsumer([outbound_record(filings["F12"])])
        producer = FakeProducer([LeaderNotAvailableError(), KafkaTimeoutError(), KafkaTimeoutError()])
        store = MemorySnapshotStore()
        connector = connector_with(consumer, producer, store)
        running = asyncio.create_task(connector.run())
        await until(lambda: consumer.commits == [1])
        connector.request_stop()
        counters = await asyncio.wait_for(running, 5)
        assert [e.topic for e in producer.acknowledged] == [connector.inbound_topic]
        assert producer.attempts == 4
        assert store.saves == 1
        assert (consumer.unsubscriptions, consumer.subscriptions) == (1, 1)
        assert counters.consumed == 2 and counters.answered == 1 and producer.stopped

    async def test_a_checkpoint_that_fails_is_tried_again(self, filings, broker_answers):
        """The simulator's snapshot goes to the broker too: while it is away the checkpoint is tried again, and
        nothing is committed before it is saved."""

        class AwayStore(MemorySnapshotStore):
            failures = 2

            async def save(self, state: dict[str, Any]) -> None:
                if self.failures:
                    self.failures -= 1
                    raise KafkaTimeoutError()
                await super().save(state)

        consumer = FakeConsumer([outbound_record(filings["F12"])])
        store = AwayStore()
        connector = connector_with(consumer, FakeProducer(), store)
        running = asyncio.create_task(connector.run())
        await until(lambda: bool(consumer.commits))
        connector.request_stop()
        await asyncio.wait_for(running, 5)
        assert store.saves == 1 and store.failures == 0

    async def test_a_send_that_waits_without_failing_pauses_reading(self, filings, broker_answers, monkeypatch):
        """aiokafka retries the records an idempotent producer has sent once until they are delivered, so a send
        may wait for the whole outage without failing: after ``QUIET_FETCH_S`` the broker is asked, and reading
        pauses when it does not answer; the same send goes on."""
        monkeypatch.setattr(connector_module, "QUIET_FETCH_S", 0.05)
        broker_answers.append(False)
        consumer = FakeConsumer([outbound_record(filings["F12"])])
        producer = FakeProducer(hang=True)
        connector = connector_with(consumer, producer, MemorySnapshotStore())
        running = asyncio.create_task(connector.run())
        await until(lambda: connector.reading_paused)
        assert producer.attempts == 1 and consumer.unsubscriptions == 1
        connector.request_stop()
        await asyncio.wait_for(running, 2)

    async def test_an_idle_connector_pauses_reading_while_fetches_go_unanswered(self, broker_answers):
        """No fetch answered for a while and no answer to a direct question: reading pauses (aiokafka's fetcher
        would ask for metadata in a loop); it resumes once the broker answers."""
        consumer = FakeConsumer([])
        connector = connector_with(consumer, FakeProducer(), MemorySnapshotStore())
        connector._consumer = consumer  # type: ignore[assignment]
        consumer.polled_at = int((time.time() - connector_module.QUIET_FETCH_S - 1) * 1000)
        broker_answers.append(False)
        await connector._check_fetching(consumer)  # type: ignore[arg-type]
        assert connector.reading_paused and consumer.unsubscriptions == 1
        assert await connector._reading() is consumer
        assert not connector.reading_paused and consumer.subscriptions == 1

    async def test_fetches_answered_lately_need_no_question(self, broker_answers):
        consumer = FakeConsumer([])
        connector = connector_with(consumer, FakeProducer(), MemorySnapshotStore())
        consumer.polled_at = int(time.time() * 1000)
        broker_answers.append(False)
        await connector._check_fetching(consumer)  # type: ignore[arg-type]
        assert not connector.reading_paused and broker_answers == [False]

    async def test_an_error_waiting_cannot_mend_still_stops_the_loop(self, filings, broker_answers):
        """A record the broker refuses for good is not retried without end."""
        consumer = FakeConsumer([outbound_record(filings["F12"])])
        connector = connector_with(consumer, FakeProducer([MessageSizeTooLargeError()]), MemorySnapshotStore())
        with pytest.raises(MessageSizeTooLargeError):
            await asyncio.wait_for(connector.run(), 5)
        assert consumer.commits == []


class TestConnectorStopsWhileTheBrokerIsAway:
    async def test_sigterm_ends_a_send_that_waits_for_the_broker(self, filings, broker_answers, monkeypatch):
        """SIGTERM while answers wait for their acknowledgement, and while the consumer cannot leave its group: the
        connector stops within seconds, with nothing checkpointed or committed (read again after the restart)."""
        monkeypatch.setattr(clients_module, "CLOSE_WAIT_S", 0.2)
        consumer = FakeConsumer([outbound_record(filings["F12"])], hang=True)
        producer = FakeProducer(hang=True)
        store = MemorySnapshotStore()
        connector = connector_with(consumer, producer, store)
        running = asyncio.create_task(connector.run(handle_signals=True))
        await until(lambda: producer.attempts == 1)
        started = time.monotonic()
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(running, 5)
        assert time.monotonic() - started < 2.0
        assert store.saves == 0 and consumer.commits == []

    async def test_stop_ends_a_backoff(self, filings, broker_answers, monkeypatch):
        """Between two attempts the connector waits, capped at 10 s and more: a stop does not wait for the next."""
        monkeypatch.setattr(connector_module, "backoff", lambda attempt: 60.0)
        consumer = FakeConsumer([outbound_record(filings["F12"])])
        producer = FakeProducer([KafkaTimeoutError()] * 5)
        connector = connector_with(consumer, producer, MemorySnapshotStore())
        running = asyncio.create_task(connector.run())
        await until(lambda: producer.attempts == 1)
        await asyncio.sleep(0.05)
        connector.request_stop()
        await asyncio.wait_for(running, 2)
        assert producer.attempts == 1

    async def test_a_commit_that_hangs_is_given_up_and_a_stop_ends_it(self, filings, broker_answers, monkeypatch):
        """aiokafka's commit waits for the group's coordinator without end: the loop gives it up after
        ``COMMIT_WAIT_S`` (the answers are acknowledged and checkpointed), and a stop ends it at once."""
        monkeypatch.setattr(connector_module, "COMMIT_WAIT_S", 0.05)
        monkeypatch.setattr(clients_module, "CLOSE_WAIT_S", 0.2)
        consumer = FakeConsumer([outbound_record(filings["F12"])], hang=True)
        store = MemorySnapshotStore()
        connector = connector_with(consumer, FakeProducer(), store)
        running = asyncio.create_task(connector.run())
        await until(lambda: store.saves == 1)
        await asyncio.sleep(0.2)
        assert not running.done(), "a commit given up must not end the loop"
        monkeypatch.setattr(connector_module, "COMMIT_WAIT_S", 60.0)
        consumer.position = 0
        await until(lambda: consumer.position == 1)
        connector.request_stop()
        await asyncio.wait_for(running, 2)

    async def test_a_commit_given_up_pauses_reading_when_the_broker_is_away(self, filings, broker_answers, monkeypatch):
        """A commit not done in time while the broker does not answer either: reading pauses (see ``_pause``),
        and resumes once the broker answers; the filing read again is not answered twice."""
        monkeypatch.setattr(connector_module, "COMMIT_WAIT_S", 0.05)
        consumer = FakeConsumer([outbound_record(filings["F12"])], hang=True)
        producer = FakeProducer()
        connector = connector_with(consumer, producer, MemorySnapshotStore())
        broker_answers.extend([False, False])
        running = asyncio.create_task(connector.run())
        await until(lambda: consumer.unsubscriptions == 1)
        consumer.hang = False
        await until(lambda: consumer.commits == [1])
        connector.request_stop()
        await asyncio.wait_for(running, 2)
        assert consumer.subscriptions == 1 and len(producer.acknowledged) == 1

    async def test_a_stop_during_a_submit_retry_dead_letters_nothing(self, filings, broker_answers):
        """A stop that ends the wait between two submits of a filing customs did not take is no failure of that
        filing: it is read again after the restart, not dead-lettered."""

        class Unreachable(SimulatorGateway):
            async def submit(self, filing: OutboundFiling, now: datetime) -> list[InboundMessage]:
                raise BrokerUnavailable("customs does not answer")

        consumer = FakeConsumer([outbound_record(filings["F12"])])
        producer = FakeProducer()
        connector = connector_with(consumer, producer, MemorySnapshotStore())
        connector.gateway = Unreachable(MemorySnapshotStore())
        running = asyncio.create_task(connector.run())
        await until(lambda: connector.counters.consumed == 1)
        connector.request_stop()
        counters = await asyncio.wait_for(running, 2)
        assert counters.dead_lettered == 0 and producer.acknowledged == [] and consumer.commits == []

    async def test_a_start_during_an_outage_waits_for_the_broker(self, broker_answers):
        """The broker goes away while the connector starts (the simulator reads its snapshot): the start is tried
        again with backoff, instead of the connector exiting on the first timeout."""

        class LateStore(MemorySnapshotStore):
            failures = 2
            loaded = False

            async def load(self) -> dict[str, Any] | None:
                if self.failures:
                    self.failures -= 1
                    raise KafkaTimeoutError()
                self.loaded = True
                return await super().load()

        store = LateStore()
        connector = GatewayConnector(SimulatorGateway(store, seed=1), SETTINGS, poll_interval=60.0)
        connector._consumer = FakeConsumer([])  # type: ignore[assignment]
        running = asyncio.create_task(connector.run())
        await until(lambda: store.loaded)
        connector.request_stop()
        await asyncio.wait_for(running, 2)
        assert store.failures == 0


class TestStopQuietly:
    async def test_a_cancelled_error_from_inside_a_client_stop_is_not_ours(self):
        """aiokafka's consumer stop can raise the CancelledError of a fetch task it cancelled: logged, not
        mistaken for a cancellation of the caller (the connector exited on it in an outage)."""

        async def leaky_stop() -> None:
            sleeping = asyncio.create_task(asyncio.sleep(10))
            await asyncio.sleep(0)
            sleeping.cancel()
            await sleeping

        await stop_quietly(leaky_stop(), "consumer")

    async def test_a_stop_that_hangs_is_given_up(self):
        started = time.monotonic()
        await stop_quietly(asyncio.Event().wait(), "producer", timeout=0.05)
        assert time.monotonic() - started < 1.0

    async def test_the_callers_own_cancellation_still_cancels(self):
        waiting = asyncio.create_task(stop_quietly(asyncio.Event().wait(), "consumer", timeout=10))
        await asyncio.sleep(0.01)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
