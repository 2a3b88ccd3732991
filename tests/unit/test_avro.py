"""The Avro contracts: schemas, single-object encoding and the schema catalogue."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import shutil
import struct
from pathlib import Path
from typing import Any

import fastavro
import pytest
from fastavro.schema import to_parsing_canonical_form
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.contracts.avro import (
    HEADER_SIZE,
    MARKER,
    MAX_MESSAGE_BYTES,
    Decoded,
    SchemaCatalogue,
    SchemaDefinitionError,
    SchemaNotFound,
    SchemaViolation,
    single_object_fingerprint,
)
from streams.domain.model import Consolidation
from streams.errors import DecodeError, InputError, UnknownSchemaError
from tests.data import seed_json

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = REPO / "schemas" / "avro"

SCHEMA_NAMES = (
    "BookingEvent",
    "PartyReference",
    "FilingDraft",
    "Filing",
    "CustomsNotification",
    "PartyAlert",
    "DeadLetter",
    "AuditRecord",
    "LedgerEntry",
    "EnsEvent",
    "AnswerRequest",
    "AuditEntry",
    "FilingChange",
)

SHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

#: One valid record per schema, written out by hand so that each reads as an example of its contract.
SAMPLES: dict[str, dict[str, Any]] = {
    "PartyReference": {
        "party_id": "COLOADER-A",
        "name": "Aoba Forwarding Co., Ltd.",
        "eori": "DE993311220000",
        "role": "co_loader",
        "type_of_person": 2,
        "address": {"street": "3-1 Nakanoshima", "city": "Osaka", "postcode": "530-0005", "country": "JP"},
        "automated_filer": True,
        "contact": {"email": "ens@aoba-fwd.example", "phone": None},
        "updated_at": "2026-11-01T00:00:00Z",
    },
    "FilingDraft": {
        "mbl": "OCLU26TYO7781234",
        "version": 2,
        "filing": "F14",
        "hbl": "AOB26OSA1001",
        "filer": "ML-TYO",
        "supplementary_declarant": "COLOADER-A",
        "lrn": "MLTYO-26-000123",
        "ours": True,
        "reason": "COLOADER-A is automated: F14 by the master loader, F16 by COLOADER-A",
        "findings": [
            {
                "rule_id": "HS-6",
                "severity": "error",
                "path": "$.house_bills[4].goods[0].hs_code",
                "message": "HS code must have 6 characters",
                "party": "COLOADER-A",
                "hbl": "AOB26OSA1001",
                "filing": "F14",
            }
        ],
        "status": "blocked",
        "created_at": "2026-11-20T09:00:05Z",
    },
    "Filing": {
        "message_id": "5f0c3c1e-8f61-4a43-9d55-0d8f2c9a7b11",
        "message_type": "IE3F15",
        "lrn": "MLTYO-26-000124",
        "mbl": "OCLU26TYO7781234",
        "hbl": "SKC26TYO0001",
        "filer_party_id": "ML-TYO",
        "filer_eori": "NL812345678000",
        "supplementary_declarant": None,
        "supplementary_declarant_eori": None,
        "booking_version": 1,
        "xml_sha256": SHA,
        "xml": b'<?xml version="1.0" encoding="UTF-8"?><IE3F15 xmlns="urn:wco:datamodel:eu:ics2:2"/>',
        "created_at": "2026-11-20T09:01:00Z",
    },
    "CustomsNotification": {
        "message_id": "NOT-000987",
        "message_type": "IE3N99",
        "kind": "rejected",
        "lrn": "MLTYO-26-000124",
        "mrn": None,
        "mbl": "OCLU26TYO7781234",
        "hbl": "SKC26TYO0001",
        "referral_reference": None,
        "notification_date": "2026-11-20T09:02:00Z",
        "errors": [{"code": "13", "pointer": "/IE3F15/Consignment/GoodsShipment", "description": None}],
        "hbls": ["SKC26TYO0001"],
        "referral_references": [],
        "carrier_eori": "NL860123456",
        "missing_filers": [],
        "addressee_eori": "NL812345678000",
        "deadline": "2027-06-14T12:00:00Z",
        "action": "correct and re-file",
        "urgency": "high",
        "raw_sha256": SHA,
        "containers": ["MSKU1234565"],
        "functional_reference": "MLTYO-26-000124",
        "rejected_message": "IE3F15",
    },
    "LedgerEntry": {
        "key": "lrn:F14V1CQVAYKVEQCG2NVGC6",
        "mbl": "OCLU26TYO7781234",
        "hbl": "DAI26NGO0077",
        "filing": "F14",
        "filer": "COLOADER-A",
        "planning_party": "COLOADER-A",
        "carrier": "CARRIER-A",
        "lrn": "F14V1CQVAYKVEQCG2NVGC6",
        "mrn": None,
        "supplementary_declarant": "COLOADER-D",
        "hbl_chain": [
            {"hbl": "SKC26TYO0002", "issuer": "ML-TYO"},
            {"hbl": "AOB26OSA1002", "issuer": "COLOADER-A"},
            {"hbl": "DAI26NGO0077", "issuer": "COLOADER-D"},
        ],
        "eoris": {"DE993311220000": "COLOADER-A", "FR40303265045": "COLOADER-D"},
        "containers": {"MSKU1234565": ["DAI26NGO0077", "SKC26TYO0001"]},
    },
    "EnsEvent": {
        "event_id": "5d41402abc4b2a76b9719d911017c592",
        "mbl": "OCLU26TYO7781234",
        "type": "tick",
        "at": "2027-06-14T06:00:00Z",
        "payload": "{}",
    },
    "PartyAlert": {
        "alert_id": "a1b2c3",
        "party_id": "COLOADER-D",
        "urgency": "critical",
        "action": "stop_loading",
        "title": "Do Not Load for DAI26NGO0077",
        "message": "Customs issued a Do Not Load for the goods of HBL DAI26NGO0077.",
        "mbl": "OCLU26TYO7781234",
        "hbl": "DAI26NGO0077",
        "hbl_chain": [
            {"hbl": "SKC26TYO0002", "issuer": "ML-TYO"},
            {"hbl": "AOB26OSA1002", "issuer": "COLOADER-A"},
            {"hbl": "DAI26NGO0077", "issuer": "COLOADER-D"},
        ],
        "party_at_fault": "COLOADER-D",
        "lrn": "DAI-26-77",
        "mrn": "26NL1234567890ABC1",
        "referral_reference": None,
        "deadline": None,
        "notification_message_type": "IE3Q01",
        "created_at": "2026-11-20T10:00:00Z",
        "acknowledged": False,
        "closes_alert_id": None,
    },
    "DeadLetter": {
        "stage": "decode",
        "reason": "not an Avro single-object message",
        "error_class": "streams.errors.DecodeError",
        "retriable": False,
        "source_topic": "ics2.bookings",
        "source_partition": 3,
        "source_offset": 12345678901,
        "original_key": b"OCLU26TYO7781234",
        "original_value": b"\x00\xff garbage",
        "original_headers": [{"key": "trace", "value": b"\x01\x02"}, {"key": "empty", "value": None}],
        "failed_at": "2026-11-20T09:00:01Z",
        "responsible_party": None,
    },
    "AnswerRequest": {
        "request_id": "0d9e6f0a-3c1b-4f7e-9a51-2b8c7d6e5f40",
        "kind": "rfi",
        "referral_reference": "RFI27000000AB",
        "mbl": "OCLU26TYO7781234",
        "requested_by": "ML-TYO",
        "answer": '{"texts":[{"text":"Office laptops, invoice attached"}]}',
        "requested_at": "2026-11-20T11:00:00Z",
    },
    "FilingChange": {
        "change_id": "5d41402abc4b2a76b9719d911017c592",
        "kind": "replace",
        "mbl": "OCLU26TYO7781234",
        "hbl": "CHY26YOK0501",
        "lrn": "F14V1TLUPZVWP23IJI4W6V",
        "filing": "F14",
        "filer": "ML-TYO",
        "version": 2,
        "reason": "booking version 2 files the house consignment CHY26YOK0501 as F15 by ML-TYO",
        "amendment_lrn": None,
        "amendment": None,
        "filings": [b"\xc3\x01filing"],
        "records": ['{"mbl":"OCLU26TYO7781234"}'],
        "requested_at": "2026-11-20T11:00:00Z",
    },
    "AuditEntry": {
        "mbl": "OCLU26TYO7781234",
        "kind": "booking",
        "payload": '{"mbl":"OCLU26TYO7781234","record":{},"source":"ics2.bookings:0:7"}',
        "source": "ics2.bookings:0:7",
        "occurred_at": "2026-11-20T09:00:00Z",
    },
    "AuditRecord": {
        "mbl": "OCLU26TYO7781234",
        "sequence": 0,
        "kind": "booking",
        "payload": '{"event_id":"0b8f6c2e"}',
        "payload_sha256": SHA,
        "previous_hash": None,
        "hash": SHA,
        "recorded_at": "2026-11-20T09:00:02Z",
        "key_id": "ed25519:0123456789abcdef",
        "signature": "c2lnbmF0dXJl",
    },
}


def sample(name: str) -> dict[str, Any]:
    return seed_json() if name == "BookingEvent" else copy.deepcopy(SAMPLES[name])


def crc64_avro(data: bytes) -> int:
    """The Rabin fingerprint of the Avro specification, written out here to check fastavro's against."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


@pytest.fixture(scope="module")
def catalogue() -> SchemaCatalogue:
    return SchemaCatalogue.load()


#: Known fingerprints from the Avro project's schema test data (signed 64-bit values).
AVRO_VECTORS = [
    ("null", 7195948357588979594),
    ("boolean", -6970731678124411036),
    ("int", 8247732601305521295),
    ("string", -8142146995180207161),
    ({"fields": [], "type": "record", "name": "foo"}, -4824392279771201922),
    ({"fields": [], "type": "record", "name": "foo", "namespace": "x.y"}, 5916914534497305771),
    ({"type": "enum", "name": "foo", "symbols": ["A1"]}, -6342190197741309591),
    ({"type": "array", "items": {"type": "null"}}, -589620603366471059),
    ({"type": "map", "values": "string"}, -8732877298790414990),
]


class TestFingerprint:
    @pytest.mark.parametrize(("schema", "expected"), AVRO_VECTORS)
    def test_matches_avro_test_vectors_little_endian(self, schema: Any, expected: int):
        """The header fingerprint is the Avro project's CRC-64-AVRO value written little-endian."""
        assert single_object_fingerprint(schema) == struct.pack("<q", expected)

    @pytest.mark.parametrize(("schema", "expected"), AVRO_VECTORS)
    def test_reference_crc_reproduces_vectors(self, schema: Any, expected: int):
        """The test's own CRC-64-AVRO agrees with the Avro vectors, so it can judge the catalogue's."""
        canonical = to_parsing_canonical_form(fastavro.parse_schema(schema))
        assert struct.pack("<Q", crc64_avro(canonical.encode())) == struct.pack("<q", expected)

    def test_invalid_schema_is_refused(self):
        """A schema fastavro cannot parse raises SchemaDefinitionError, not fastavro's error."""
        with pytest.raises(SchemaDefinitionError):
            single_object_fingerprint({"type": "record", "name": "x", "fields": [{"name": "a", "type": "nope"}]})


class TestSingleObjectLayout:
    @pytest.mark.parametrize("name", SCHEMA_NAMES)
    def test_layout_byte_by_byte(self, catalogue: SchemaCatalogue, name: str):
        """A message is C3 01, the little-endian CRC-64-AVRO of the canonical form, then the plain Avro body."""
        record = sample(name)
        data = catalogue.encode(name, record)
        parsed = catalogue.schema(name)
        canonical = to_parsing_canonical_form(parsed)
        assert data[0] == 0xC3
        assert data[1] == 0x01
        assert data[2:10] == struct.pack("<Q", crc64_avro(canonical.encode("utf-8")))
        assert data[2:10] == catalogue.fingerprint(name)
        body = io.BytesIO()
        fastavro.schemaless_writer(body, parsed, record)
        assert data[10:] == body.getvalue()

    def test_fingerprints_differ_between_schemas(self, catalogue: SchemaCatalogue):
        """Each record type has its own fingerprint, so a message can never be read as another type."""
        fingerprints = {catalogue.fingerprint(name) for name in SCHEMA_NAMES}
        assert len(fingerprints) == len(SCHEMA_NAMES)
        assert all(len(fp) == 8 for fp in fingerprints)


class TestSeedRoundTrip:
    def test_seed_decodes_as_the_model_writes_it(self, catalogue: SchemaCatalogue):
        """The seed encodes as is and decodes to exactly the model's to_json() of the same booking."""
        decoded = catalogue.decode(catalogue.encode("BookingEvent", seed_json()))
        assert decoded.name == "eu.ics2streams.BookingEvent"
        assert decoded.record == Consolidation.from_json(seed_json()).to_json()

    def test_seed_reads_back_equal_with_defaults_filled(self, catalogue: SchemaCatalogue):
        """Fields absent from the seed read back as their defaults; everything else is unchanged."""
        expected = seed_json()
        expected["version"] = 1
        for house_bill in expected["house_bills"]:
            house_bill.setdefault("notify_party", None)
            house_bill.setdefault("f15_requested", False)
            house_bill.setdefault("shipper", None)
            house_bill.setdefault("consignee", None)
            house_bill.setdefault("seller", None)
            house_bill.setdefault("buyer", None)
            house_bill.setdefault("place_of_acceptance", None)
            house_bill.setdefault("place_of_delivery", None)
            house_bill.setdefault("goods", [])
            house_bill.setdefault("freight_payment", None)
            for goods in house_bill["goods"]:
                goods.setdefault("un_number", None)
        for party in expected["parties"]:
            party.setdefault("automated_filer", False)
            party.setdefault("contact", None)
            party.setdefault("representative", None)
            for part in ("number", "po_box", "sub_division", "postcode"):
                party["address"].setdefault(part, None)
            if party["contact"] is not None:
                party["contact"].setdefault("phone", None)
                party["contact"].setdefault("email", None)
        assert catalogue.decode(catalogue.encode("BookingEvent", seed_json())).record == expected

    def test_model_json_with_every_optional_field_round_trips(self, catalogue: SchemaCatalogue):
        """A booking using version, f15_requested, notify_party and un_number survives the codec unchanged."""
        data = seed_json()
        data["version"] = 4
        lowest = data["house_bills"][7]
        lowest["f15_requested"] = True
        lowest["notify_party"] = "CONSIGNEE-3"
        lowest["goods"][0]["un_number"] = "1263"
        record = Consolidation.from_json(data).to_json()
        decoded = catalogue.decode(catalogue.encode("BookingEvent", record)).record
        assert decoded == record
        assert Consolidation.from_json(decoded).house_bill("DAI26NGO0077").f15_requested is True


class TestCatalogue:
    def test_knows_every_record(self, catalogue: SchemaCatalogue):
        """The catalogue holds the eight records of the product under the eu.ics2streams namespace."""
        assert catalogue.names() == tuple(sorted(f"eu.ics2streams.{n}" for n in SCHEMA_NAMES))

    def test_short_and_full_names_give_the_same_schema(self, catalogue: SchemaCatalogue):
        """A schema can be named by its short or full name."""
        assert catalogue.schema("PartyAlert") is catalogue.schema("eu.ics2streams.PartyAlert")

    def test_load_is_cached_per_directory(self):
        """Schemas are parsed once: loading the same folder twice gives the same catalogue."""
        assert SchemaCatalogue.load() is SchemaCatalogue.load(SCHEMAS)

    def test_environment_points_to_another_folder(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
        """ICS2_SCHEMAS_DIR names a schemas folder whose avro subfolder is read instead of the repository's."""
        (tmp_path / "avro").mkdir()
        shutil.copy(SCHEMAS / "AuditRecord.avsc", tmp_path / "avro")
        monkeypatch.setenv("ICS2_SCHEMAS_DIR", str(tmp_path))
        assert SchemaCatalogue.load().names() == ("eu.ics2streams.AuditRecord",)

    def test_unknown_name_is_refused(self, catalogue: SchemaCatalogue):
        """Asking for a schema the catalogue lacks raises SchemaNotFound naming the known ones."""
        with pytest.raises(SchemaNotFound, match="BookingEvent"):
            catalogue.encode("Booking", {})

    def test_broken_avsc_is_refused(self, tmp_path: Path):
        """A folder with an unreadable schema file fails to load with SchemaDefinitionError."""
        (tmp_path / "Broken.avsc").write_text('{"type": "record", "name": "Broken", "fields": [')
        with pytest.raises(SchemaDefinitionError, match=r"Broken\.avsc"):
            SchemaCatalogue.read(tmp_path)

    def test_history_must_match_its_folder(self, tmp_path: Path):
        """A history file defining another record than its folder's name is refused."""
        shutil.copy(SCHEMAS / "AuditRecord.avsc", tmp_path)
        (tmp_path / "history" / "Filing").mkdir(parents=True)
        shutil.copy(SCHEMAS / "AuditRecord.avsc", tmp_path / "history" / "Filing" / "v1.avsc")
        with pytest.raises(SchemaDefinitionError, match="not Filing"):
            SchemaCatalogue.read(tmp_path)

    def test_history_files_are_numbered(self, tmp_path: Path):
        """History files must be named v<N>.avsc so their order is known."""
        shutil.copy(SCHEMAS / "AuditRecord.avsc", tmp_path)
        (tmp_path / "history" / "AuditRecord").mkdir(parents=True)
        shutil.copy(SCHEMAS / "AuditRecord.avsc", tmp_path / "history" / "AuditRecord" / "old.avsc")
        with pytest.raises(SchemaDefinitionError, match="v<N>"):
            SchemaCatalogue.read(tmp_path)


def _fields(schema: Any, where: str) -> list[tuple[str, dict[str, Any]]]:
    """Every field of every record defined in a raw schema, with its location."""
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(schema, list):
        for branch in schema:
            found += _fields(branch, where)
    elif isinstance(schema, dict):
        if schema.get("type") == "record":
            for field in schema["fields"]:
                found.append((f"{where}.{field['name']}", field))
                found += _fields(field["type"], f"{where}.{field['name']}")
        for key in ("items", "values"):
            if key in schema:
                found += _fields(schema[key], where)
    return found


class TestSchemaFiles:
    @pytest.mark.parametrize("name", SCHEMA_NAMES)
    def test_one_documented_record_per_file(self, name: str):
        """Each file defines the record it is named after, in eu.ics2streams, with a doc on it and every field."""
        raw = json.loads((SCHEMAS / f"{name}.avsc").read_text(encoding="utf-8"))
        assert (raw["type"], raw["name"], raw["namespace"]) == ("record", name, "eu.ics2streams")
        assert raw["doc"].strip()
        fields = _fields(raw, name)
        assert fields
        undocumented = [path for path, field in fields if not str(field.get("doc", "")).strip()]
        assert undocumented == []

    @pytest.mark.parametrize("name", SCHEMA_NAMES)
    def test_nullable_fields_default_to_null(self, name: str):
        """Every ["null", T] field lists null first and defaults to null, so producers may leave it out."""
        raw = json.loads((SCHEMAS / f"{name}.avsc").read_text(encoding="utf-8"))
        for path, field in _fields(raw, name):
            if isinstance(field["type"], list) and "null" in field["type"]:
                assert field["type"][0] == "null", path
                assert "default" in field and field["default"] is None, path

    @pytest.mark.parametrize("name", SCHEMA_NAMES)
    def test_current_schema_is_the_latest_history_version(self, catalogue: SchemaCatalogue, name: str):
        """The current .avsc equals the highest v<N>.avsc of its history, so every published version is kept."""
        versions = catalogue.versions(name)
        assert versions, f"{name} has no history"
        latest = versions[max(versions)]
        assert to_parsing_canonical_form(latest) == to_parsing_canonical_form(catalogue.schema(name))

    def test_timestamps_are_iso_strings(self, catalogue: SchemaCatalogue):
        """Every timestamp field (…_at, deadline, notification_date) is an ISO 8601 UTC string, as ICS2 writes them."""
        stamped = 0
        for name in SCHEMA_NAMES:
            raw = json.loads((SCHEMAS / f"{name}.avsc").read_text(encoding="utf-8"))
            for path, field in _fields(raw, name):
                if field["name"].endswith("_at") or field["name"] in ("deadline", "notification_date"):
                    stamped += 1
                    assert field["type"] in ("string", ["null", "string"]), path
                    assert "ISO 8601 UTC" in field["doc"], path
        assert stamped >= 10


def _set(record: dict[str, Any], path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    target: Any = record
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return record


def _drop(record: dict[str, Any], path: tuple[str | int, ...]) -> dict[str, Any]:
    target: Any = record
    for step in path[:-1]:
        target = target[step]
    del target[path[-1]]
    return record


BAD_RECORDS = [
    ("BookingEvent", "missing event_id", lambda r: _drop(r, ("event_id",))),
    ("BookingEvent", "version as text", lambda r: _set(r, ("version",), "2")),
    ("BookingEvent", "unknown mode", lambda r: _set(r, ("master", "mode"), "air")),
    ("BookingEvent", "unknown field", lambda r: _set(r, ("carrier_eori",), "NL1")),
    ("BookingEvent", "null hbl number", lambda r: _set(r, ("house_bills", 0, "hbl_number"), None)),
    (
        "BookingEvent",
        "package count as float",
        lambda r: _set(r, ("house_bills", 0, "goods", 0, "packages", "count"), 1.5),
    ),
    ("BookingEvent", "unknown role", lambda r: _set(r, ("parties", 0, "role"), "customs")),
    ("BookingEvent", "house bills as object", lambda r: _set(r, ("house_bills",), {})),
    ("PartyReference", "missing updated_at", lambda r: _drop(r, ("updated_at",))),
    ("FilingDraft", "unknown filing type", lambda r: _set(r, ("filing",), "F18")),
    ("FilingDraft", "unknown status", lambda r: _set(r, ("status",), "sent")),
    ("FilingDraft", "unknown severity", lambda r: _set(r, ("findings", 0, "severity"), "fatal")),
    ("Filing", "xml as text", lambda r: _set(r, ("xml",), "<IE3F15/>")),
    ("Filing", "missing filer eori", lambda r: _drop(r, ("filer_eori",))),
    ("CustomsNotification", "unknown urgency", lambda r: _set(r, ("urgency",), "panic")),
    ("CustomsNotification", "error without code", lambda r: _drop(r, ("errors", 0, "code"))),
    ("PartyAlert", "chain link without issuer", lambda r: _drop(r, ("hbl_chain", 0, "issuer"))),
    ("PartyAlert", "acknowledged as text", lambda r: _set(r, ("acknowledged",), "yes")),
    ("DeadLetter", "key as text", lambda r: _set(r, ("original_key",), "OCLU")),
    ("DeadLetter", "partition too large for int", lambda r: _set(r, ("source_partition",), 2**40)),
    ("AuditRecord", "sequence as text", lambda r: _set(r, ("sequence",), "0")),
]


class TestEncode:
    @pytest.mark.parametrize("name", SCHEMA_NAMES)
    def test_good_record_round_trips(self, catalogue: SchemaCatalogue, name: str):
        """A valid record of each schema decodes back equal, under the writer's full name."""
        record = sample(name)
        decoded = catalogue.decode(catalogue.encode(name, record))
        assert decoded == Decoded(name=f"eu.ics2streams.{name}", record=decoded.record)
        if name != "BookingEvent":
            assert decoded.record == record

    def test_defaulted_fields_may_be_left_out(self, catalogue: SchemaCatalogue):
        """A producer may leave out fields with defaults; they read back as the defaults."""
        record = sample("PartyAlert")
        for name in ("urgency", "hbl", "hbl_chain", "acknowledged", "lrn"):
            del record[name]
        decoded = catalogue.decode(catalogue.encode("PartyAlert", record)).record
        assert (decoded["urgency"], decoded["hbl"], decoded["hbl_chain"], decoded["acknowledged"]) == (
            "normal",
            None,
            [],
            False,
        )

    @pytest.mark.parametrize("name", SCHEMA_NAMES)
    def test_bytes_are_those_of_the_schema_as_read(self, catalogue: SchemaCatalogue, name: str):
        """The schema kept parsed for fastavro writes and reads exactly as the schema read from its file."""
        record = sample(name)
        body = io.BytesIO()
        fastavro.schemaless_writer(body, catalogue.schema(name), record, strict_allow_default=True)
        encoded = catalogue.encode(name, record)
        assert encoded == _header(catalogue, name) + body.getvalue()
        expected = fastavro.schemaless_reader(io.BytesIO(body.getvalue()), catalogue.schema(name), None)
        assert catalogue.decode(encoded).record == expected

    @pytest.mark.parametrize(
        "keys",
        [("lrn:A",), ("lrn:F15V1ABC", "party:OCLU|NL1", "party:OCLU|DE2"), ("k" * 200, "é€𝄞", "")],
        ids=["one", "three", "long-and-non-ascii"],
    )
    def test_encode_each_is_encode_per_value(self, catalogue: SchemaCatalogue, keys: tuple[str, ...]):
        """A record under several values of its first field gives, byte for byte, what encoding each one gives."""
        record = sample("LedgerEntry")
        expected = [catalogue.encode("LedgerEntry", {**record, "key": key}) for key in keys]
        assert catalogue.encode_each("LedgerEntry", record, "key", keys) == expected
        assert [catalogue.decode(d).record["key"] for d in expected] == list(keys)

    def test_encode_each_of_another_field_encodes_each_record(self, catalogue: SchemaCatalogue):
        record = sample("LedgerEntry")
        expected = [catalogue.encode("LedgerEntry", {**record, "mbl": m}) for m in ("OCLU1", "OCLU2")]
        assert catalogue.encode_each("LedgerEntry", record, "mbl", ("OCLU1", "OCLU2")) == expected

    @pytest.mark.parametrize("bad", [7, None, b"lrn:A", "\ud800"])
    def test_encode_each_refuses_a_value_that_does_not_fit(self, catalogue: SchemaCatalogue, bad: Any):
        """A value after the first is checked too: one that is not a string is a SchemaViolation."""
        with pytest.raises(SchemaViolation):
            catalogue.encode_each("LedgerEntry", sample("LedgerEntry"), "key", ("lrn:A", bad))

    @pytest.mark.parametrize(("name", "case", "spoil"), BAD_RECORDS, ids=[c for _, c, _ in BAD_RECORDS])
    def test_bad_record_is_a_schema_violation(self, catalogue: SchemaCatalogue, name: str, case: str, spoil: Any):
        """A record that does not fit its schema raises SchemaViolation, an InputError, never fastavro's error."""
        with pytest.raises(SchemaViolation) as raised:
            catalogue.encode(name, spoil(sample(name)))
        assert isinstance(raised.value, InputError)

    @pytest.mark.parametrize("record", [None, [], "text", b"bytes"])
    def test_non_mapping_is_a_schema_violation(self, catalogue: SchemaCatalogue, record: Any):
        """Only mappings are records."""
        with pytest.raises(SchemaViolation):
            catalogue.encode("AuditRecord", record)

    def test_oversize_record_is_refused(self, catalogue: SchemaCatalogue):
        """A record whose message would exceed the size limit is refused, since no reader would accept it."""
        record = sample("Filing")
        record["xml"] = b"x" * MAX_MESSAGE_BYTES
        with pytest.raises(SchemaViolation, match="over the limit"):
            catalogue.encode("Filing", record)


def _header(catalogue: SchemaCatalogue, name: str) -> bytes:
    return MARKER + catalogue.fingerprint(name)


def _long(value: int) -> bytes:
    """Avro's zig-zag varint, to forge bodies with chosen lengths and counts."""
    n = (value << 1) ^ (value >> 63)
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _string(text: str) -> bytes:
    raw = text.encode("utf-8")
    return _long(len(raw)) + raw


def _bad_message(catalogue: SchemaCatalogue, case: str) -> Any:
    audit = catalogue.encode("AuditRecord", sample("AuditRecord"))
    booking = catalogue.encode("BookingEvent", seed_json())
    notification_up_to_errors = (
        _header(catalogue, "CustomsNotification") + _string("m") + _string("IE3N99") + _long(0) * 6 + _string("d")
    )
    return dict(
        [
            ("empty", b""),
            ("marker only", MARKER),
            ("short fingerprint", MARKER + b"\x00" * 7),
            ("wrong marker", b"\xc3\x02" + audit[2:]),
            ("json text", b'{"mbl": "OCLU26TYO7781234", "sequence": 0}'),
            ("confluent framing", b"\x00\x00\x00\x00\x01" + audit[10:]),
            ("header without body", audit[:HEADER_SIZE]),
            ("truncated body", audit[:-5]),
            ("truncated booking", booking[: len(booking) // 2]),
            ("trailing bytes", audit + b"\x00"),
            ("huge string length", _header(catalogue, "AuditRecord") + _long(2**62) + b"abc"),
            ("negative string length", _header(catalogue, "AuditRecord") + _long(-5) + b"abcdef"),
            ("huge array count", notification_up_to_errors + _long(2**40) + _string("13") + b"\x00"),
            ("huge negative block", notification_up_to_errors + _long(-(2**40)) + _long(2**50) + _string("13")),
            ("endless varint", _header(catalogue, "AuditRecord") + b"\xff" * 64),
            ("bad utf-8", _header(catalogue, "AuditRecord") + _long(2) + b"\xc3\x28" + audit[10:]),
            ("enum index out of range", _header(catalogue, "FilingDraft") + _long(1) + b"M" + _long(1) + _long(99)),
            ("oversize", MARKER + catalogue.fingerprint("AuditRecord") + b"\x00" * MAX_MESSAGE_BYTES),
            ("text not bytes", "C3 01"),
            ("none", None),
        ]
    )[case]


BAD_MESSAGES = [
    "empty",
    "marker only",
    "short fingerprint",
    "wrong marker",
    "json text",
    "confluent framing",
    "header without body",
    "truncated body",
    "truncated booking",
    "trailing bytes",
    "huge string length",
    "negative string length",
    "huge array count",
    "huge negative block",
    "endless varint",
    "bad utf-8",
    "enum index out of range",
    "oversize",
    "text not bytes",
    "none",
]


class TestDecodeErrors:
    @pytest.mark.parametrize("case", BAD_MESSAGES)
    def test_bad_message_is_a_decode_error(self, catalogue: SchemaCatalogue, case: str):
        """Empty, short, foreign, truncated, padded or forged input raises DecodeError and nothing else."""
        data = _bad_message(catalogue, case)
        with pytest.raises(DecodeError):
            catalogue.decode(data)

    def test_unknown_fingerprint_names_it(self, catalogue: SchemaCatalogue):
        """A message from a writer schema the catalogue lacks raises UnknownSchemaError quoting the fingerprint."""
        data = MARKER + bytes.fromhex("0102030405060708") + b"\x00"
        with pytest.raises(UnknownSchemaError, match="0102030405060708"):
            catalogue.decode(data)

    def test_registered_writer_becomes_readable(self):
        """Registering a writer schema lets the catalogue decode what it wrote."""
        writer = {
            "type": "record",
            "name": "Ping",
            "namespace": "eu.ics2streams",
            "fields": [{"name": "n", "type": "int"}],
        }
        body = io.BytesIO()
        fastavro.schemaless_writer(body, fastavro.parse_schema(writer), {"n": 7})
        data = MARKER + single_object_fingerprint(writer) + body.getvalue()
        catalogue = SchemaCatalogue.read(SCHEMAS)
        with pytest.raises(UnknownSchemaError):
            catalogue.decode(data)
        catalogue.register(writer)
        assert catalogue.decode(data) == Decoded(name="eu.ics2streams.Ping", record={"n": 7})

    def test_accepts_bytearray_and_memoryview(self, catalogue: SchemaCatalogue):
        """Kafka clients may hand over any bytes-like object."""
        data = catalogue.encode("AuditRecord", sample("AuditRecord"))
        assert catalogue.decode(bytearray(data)) == catalogue.decode(memoryview(data))

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(data=st.binary(max_size=512))
    def test_random_bytes_only_raise_decode_error(self, catalogue: SchemaCatalogue, data: bytes):
        """Arbitrary bytes either decode or raise DecodeError."""
        with contextlib.suppress(DecodeError):
            catalogue.decode(data)

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(name=st.sampled_from(SCHEMA_NAMES), body=st.binary(max_size=512))
    def test_random_body_behind_a_known_header_only_raises_decode_error(
        self, catalogue: SchemaCatalogue, name: str, body: bytes
    ):
        """Garbage behind a real fingerprint either decodes to a record or raises DecodeError."""
        try:
            decoded = catalogue.decode(_header(catalogue, name) + body)
        except DecodeError:
            return
        assert decoded.name == f"eu.ics2streams.{name}"

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(
        name=st.sampled_from(SCHEMA_NAMES),
        edits=st.lists(
            st.tuples(
                st.sampled_from(["flip", "cut", "insert"]), st.integers(0, 10_000), st.binary(min_size=1, max_size=9)
            ),
            min_size=1,
            max_size=6,
        ),
    )
    def test_mutated_messages_only_raise_decode_error(
        self, catalogue: SchemaCatalogue, name: str, edits: list[tuple[str, int, bytes]]
    ):
        """A valid message with bytes flipped, cut or inserted either decodes or raises DecodeError."""
        data = bytearray(catalogue.encode(name, sample(name)))
        for op, position, chunk in edits:
            at = position % (len(data) + 1)
            if op == "flip" and at < len(data):
                data[at] ^= chunk[0]
            elif op == "cut":
                del data[at : at + len(chunk)]
            else:
                data[at:at] = chunk
        with contextlib.suppress(DecodeError):
            catalogue.decode(bytes(data))
