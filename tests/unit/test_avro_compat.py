"""Schema evolution: the resolution checker, and old and new schemas reading each other's records."""

from __future__ import annotations

import copy
import io
import json
import shutil
from pathlib import Path
from typing import Any

import fastavro
import pytest

from streams.contracts.avro import SchemaCatalogue, single_object_fingerprint
from streams.contracts.compat import Incompatibility, IncompatibilityKind, can_read, full_compatibility
from streams.errors import DecodeError, UnknownSchemaError
from tests.data import seed_json

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = REPO / "schemas" / "avro"

K = IncompatibilityKind


def record(name: str, *fields: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "record", "name": name, "fields": list(fields), **extra}


def field(name: str, schema: Any, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": schema, **extra}


def enum(name: str, *symbols: str, **extra: Any) -> dict[str, Any]:
    return {"type": "enum", "name": name, "symbols": list(symbols), **extra}


def fixed(name: str, size: int) -> dict[str, Any]:
    return {"type": "fixed", "name": name, "size": size}


LINKED = record("Node", field("value", "int"), field("next", ["null", "Node"], default=None))

#: (case, reader, writer, a datum of the writer that exercises the case): the reader can read everything.
GOOD = [
    ("same primitive", "string", "string", "x"),
    ("int promoted to long", "long", "int", 7),
    ("int promoted to double", "double", "int", 7),
    ("long promoted to float", "float", "long", 7),
    ("float promoted to double", "double", "float", 1.5),
    ("string read as bytes", "bytes", "string", "x"),
    ("bytes read as string", "string", "bytes", b"x"),
    ("logical type over its base type", {"type": "long", "logicalType": "timestamp-millis"}, "long", 5),
    (
        "field added with default",
        record("R", field("a", "int"), field("b", "string", default="")),
        record("R", field("a", "int")),
        {"a": 1},
    ),
    (
        "field removed",
        record("R", field("a", "int")),
        record("R", field("a", "int"), field("b", "string")),
        {"a": 1, "b": "x"},
    ),
    ("plain value into nullable", ["null", "string"], "string", "x"),
    ("union widened", ["null", "string", "long"], ["null", "string"], "x"),
    ("union branch promoted", ["null", "long"], ["null", "int"], 3),
    ("enum gains a symbol", enum("E", "A", "B", "C"), enum("E", "A", "B"), "B"),
    ("enum symbol removed, reader default", enum("E", "A", default="A"), enum("E", "A", "B"), "B"),
    ("array items promoted", {"type": "array", "items": "long"}, {"type": "array", "items": "int"}, [1, 2]),
    ("map values promoted", {"type": "map", "values": "double"}, {"type": "map", "values": "float"}, {"k": 1.0}),
    ("fixed of same name and size", fixed("F", 4), fixed("F", 4), b"abcd"),
    (
        "record renamed with alias",
        record("New", field("a", "int"), namespace="x", aliases=["x.Old"]),
        record("Old", field("a", "int"), namespace="x"),
        {"a": 1},
    ),
    (
        "field renamed with alias",
        record("R", field("b", "int", aliases=["a"])),
        record("R", field("a", "int")),
        {"a": 1},
    ),
    (
        "same unqualified name, other namespace",
        record("R", field("a", "int"), namespace="one"),
        record("R", field("a", "int"), namespace="two"),
        {"a": 1},
    ),
    ("recursive record", LINKED, LINKED, {"value": 1, "next": {"value": 2, "next": None}}),
    (
        "nested named type referenced by short name",
        record("Outer", field("p", fixed("F", 2)), field("q", "F"), namespace="n"),
        record("Outer", field("p", fixed("F", 2)), field("q", "n.F"), namespace="n"),
        {"p": b"ab", "q": b"cd"},
    ),
]

#: (case, reader, writer, datum, expected kind, expected path): the reader cannot read some of the writer's data.
BAD = [
    ("long narrowed to int", "int", "long", 7, K.TYPE_MISMATCH, ""),
    ("string changed to int", "int", "string", "x", K.TYPE_MISMATCH, ""),
    ("double narrowed to float", "float", "double", 1.5, K.TYPE_MISMATCH, ""),
    (
        "record read as array",
        {"type": "array", "items": "int"},
        record("R", field("a", "int")),
        {"a": 1},
        K.TYPE_MISMATCH,
        "",
    ),
    (
        "field added without default",
        record("R", field("a", "int"), field("b", "string")),
        record("R", field("a", "int")),
        {"a": 1},
        K.READER_FIELD_MISSING_DEFAULT,
        "/b",
    ),
    (
        "field type changed string to int",
        record("R", field("a", "int")),
        record("R", field("a", "string")),
        {"a": "x"},
        K.TYPE_MISMATCH,
        "/a",
    ),
    ("enum symbol removed", enum("E", "A"), enum("E", "A", "B"), "B", K.MISSING_ENUM_SYMBOLS, ""),
    ("nullable made required", "string", ["null", "string"], None, K.MISSING_UNION_BRANCH, ""),
    ("union branch removed", ["null", "string"], ["null", "string", "long"], 5, K.MISSING_UNION_BRANCH, ""),
    ("value not in reader union", ["null", "int"], "string", "x", K.MISSING_UNION_BRANCH, ""),
    (
        "record renamed without alias",
        record("New", field("a", "int")),
        record("Old", field("a", "int")),
        {"a": 1},
        K.NAME_MISMATCH,
        "",
    ),
    ("enum renamed", enum("F", "A"), enum("E", "A"), "A", K.NAME_MISMATCH, ""),
    ("fixed resized", fixed("F", 4), fixed("F", 8), b"abcdefgh", K.FIXED_SIZE_MISMATCH, ""),
    ("fixed renamed", fixed("G", 4), fixed("F", 4), b"abcd", K.NAME_MISMATCH, ""),
    (
        "array items changed",
        {"type": "array", "items": "string"},
        {"type": "array", "items": "int"},
        [1],
        K.TYPE_MISMATCH,
        "/items",
    ),
    (
        "map values narrowed",
        {"type": "map", "values": "int"},
        {"type": "map", "values": "long"},
        {"k": 1},
        K.TYPE_MISMATCH,
        "/values",
    ),
    (
        "nested field changed",
        record("R", field("inner", {"type": "array", "items": record("I", field("n", "int"))})),
        record("R", field("inner", {"type": "array", "items": record("I", field("n", "boolean"))})),
        {"inner": [{"n": True}]},
        K.TYPE_MISMATCH,
        "/inner/items/n",
    ),
]


def _roundtrip(writer: Any, reader: Any, datum: Any) -> Any:
    """What fastavro itself does with the pair: the referee for the checker's verdicts."""
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(writer), datum)
    buffer.seek(0)
    return fastavro.schemaless_reader(buffer, fastavro.parse_schema(writer), fastavro.parse_schema(reader))


class TestCanRead:
    @pytest.mark.parametrize(("case", "reader", "writer", "datum"), GOOD, ids=[c[0] for c in GOOD])
    def test_compatible_pair_has_no_incompatibility(self, case: str, reader: Any, writer: Any, datum: Any):
        """Pairs the Avro resolution rules allow are reported compatible, and fastavro indeed reads them."""
        assert can_read(reader, writer) == []
        _roundtrip(writer, reader, datum)

    @pytest.mark.parametrize(("case", "reader", "writer", "datum", "kind", "path"), BAD, ids=[c[0] for c in BAD])
    def test_incompatible_pair_is_reported(
        self, case: str, reader: Any, writer: Any, datum: Any, kind: IncompatibilityKind, path: str
    ):
        """Pairs the rules forbid are reported with the right kind and place, and fastavro indeed fails on them."""
        found = can_read(reader, writer)
        assert [(i.kind, i.path) for i in found] == [(kind, path)]
        with pytest.raises(Exception, match=r"(?i)schema|symbol|default|mismatch|not found|missing"):
            _roundtrip(writer, reader, datum)

    def test_every_missing_field_is_listed(self):
        """All problems of a pair are reported, not only the first."""
        reader = record("R", field("a", "int"), field("b", "int"), field("c", "int", default=0), field("d", "string"))
        found = can_read(reader, record("R", field("c", "int"), field("d", "long")))
        assert sorted((i.kind, i.path) for i in found) == sorted(
            [(K.READER_FIELD_MISSING_DEFAULT, "/a"), (K.READER_FIELD_MISSING_DEFAULT, "/b"), (K.TYPE_MISMATCH, "/d")]
        )

    def test_enum_message_names_the_missing_symbols(self):
        """The message of a removed enum symbol says which symbols the reader lacks."""
        [found] = can_read(enum("Urgency", "critical", "high"), enum("Urgency", "critical", "high", "normal", "info"))
        assert "normal, info" in found.message
        assert str(found) == f"/: {found.message}"

    def test_undefined_reference_is_invalid_not_an_exception(self):
        """A schema naming a type it never defines is reported, not raised."""
        [found] = can_read(record("R", field("a", "Missing")), record("R", field("a", "int")))
        assert (found.kind, found.path) == (K.INVALID_SCHEMA, "/a")

    def test_full_compatibility_labels_directions(self):
        """FULL compatibility checks both directions and says which one fails."""
        old = record("R", field("a", "int"))
        new = record("R", field("a", "int"), field("b", "int"))
        found = full_compatibility(new, old)
        assert [(i.direction, i.kind) for i in found] == [("backward", K.READER_FIELD_MISSING_DEFAULT)]
        assert str(found[0]).startswith("backward: /b")

    def test_accepts_fastavro_parsed_schemas(self):
        """Schemas as fastavro parsed them (full names, private keys) are checked like raw ones."""
        raw_new = record("R", field("a", enum("E", "A")), namespace="ns")
        raw_old = record("R", field("a", enum("E", "A", "B")), namespace="ns")
        parsed = [fastavro.parse_schema(copy.deepcopy(s)) for s in (raw_new, raw_old)]
        assert can_read(*parsed) == can_read(raw_new, raw_old) != []

    def test_incompatibility_is_a_value(self):
        """Incompatibilities compare by value, so tests and CI output can list them."""
        assert Incompatibility(K.TYPE_MISMATCH, "/a", "m") == Incompatibility(K.TYPE_MISMATCH, "/a", "m")


def _history() -> list[tuple[str, int]]:
    catalogue = SchemaCatalogue.load(SCHEMAS)
    return [(name.rpartition(".")[2], v) for name in catalogue.names() for v in catalogue.versions(name)]


def _example(schema: Any, named: dict[str, Any] | None = None) -> Any:
    """A minimal valid datum of a parsed schema: defaults where there are, else the simplest value of the type."""
    named = {} if named is None else named
    if isinstance(schema, list):
        return _example(schema[0], named)
    if isinstance(schema, str):
        if schema in named:
            return _example(named[schema], named)
        return {"null": None, "boolean": True, "int": 1, "long": 1, "float": 1.0, "double": 1.0}.get(
            schema, b"b" if schema == "bytes" else "s"
        )
    kind = schema["type"]
    if kind == "record":
        named[schema["name"]] = schema
        return {f["name"]: _example(f["type"], named) for f in schema["fields"]}
    if kind == "enum":
        named[schema["name"]] = schema
        return schema["symbols"][0]
    if kind == "array":
        return [_example(schema["items"], named)]
    if kind == "map":
        return {"k": _example(schema["values"], named)}
    return _example(kind, named)


def _public(schema: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in schema.items() if not k.startswith("__")}


class TestHistory:
    @pytest.mark.parametrize(("name", "version"), _history())
    def test_current_schema_is_fully_compatible_with_history(self, name: str, version: int):
        """Every current schema reads each earlier version's data, and each earlier version reads current data."""
        catalogue = SchemaCatalogue.load(SCHEMAS)
        assert full_compatibility(catalogue.schema(name), catalogue.versions(name)[version]) == []

    def test_booking_event_v2_added_defaulted_fields(self):
        """BookingEvent v2 is v1 plus version and house_bills[].f15_requested, both with defaults."""
        catalogue = SchemaCatalogue.load(SCHEMAS)
        v1, v2 = catalogue.versions("BookingEvent")[1], catalogue.versions("BookingEvent")[2]
        assert [f["name"] for f in v2["fields"] if f["name"] not in {g["name"] for g in v1["fields"]}] == ["version"]
        assert can_read(v1, v2) == []
        assert [(i.kind, i.path) for i in can_read(_strip_defaults(v2), v1)] == [
            (K.READER_FIELD_MISSING_DEFAULT, "/version"),
            (K.READER_FIELD_MISSING_DEFAULT, "/house_bills/items/f15_requested"),
        ]

    def test_history_versions_have_distinct_fingerprints(self):
        """The catalogue can tell BookingEvent v1 from v2 by the message header."""
        v1 = json.loads((SCHEMAS / "history" / "BookingEvent" / "v1.avsc").read_text(encoding="utf-8"))
        assert single_object_fingerprint(v1) != SchemaCatalogue.load(SCHEMAS).fingerprint("BookingEvent")


def _strip_defaults(schema: Any) -> Any:
    """The schema with every field default removed, to show the defaults are what makes v2 compatible."""
    if isinstance(schema, list):
        return [_strip_defaults(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strip_defaults(v) for k, v in schema.items() if not k.startswith("__")}
    if "fields" in schema:
        out["fields"] = [{k: _strip_defaults(v) for k, v in f.items() if k != "default"} for f in schema["fields"]]
    return out


def _written_before_v3(booking: dict[str, Any]) -> dict[str, Any]:
    """The booking as a writer before BookingEvent v3 sends it: no address parts, representative, freight payment."""
    for party in booking["parties"]:
        party.pop("representative", None)
        for part in ("number", "po_box", "sub_division"):
            party["address"].pop(part, None)
    for house_bill in booking["house_bills"]:
        house_bill.pop("freight_payment", None)
    return booking


@pytest.fixture
def old_deployment(tmp_path: Path) -> SchemaCatalogue:
    """A catalogue as a worker built before BookingEvent v2 would have it: v1 is its current schema."""
    shutil.copy(SCHEMAS / "history" / "BookingEvent" / "v1.avsc", tmp_path / "BookingEvent.avsc")
    return SchemaCatalogue.read(tmp_path)


class TestEvolutionThroughCodec:
    def test_new_reader_reads_old_writer(self, old_deployment: SchemaCatalogue):
        """A v1 message read with the current schema gets version 1, f15_requested false and the v3 fields null."""
        data = old_deployment.encode("BookingEvent", _written_before_v3(seed_json()))
        current = SchemaCatalogue.load(SCHEMAS)
        decoded = current.decode(data, reader="BookingEvent")
        assert decoded.record["version"] == 1
        assert {h["f15_requested"] for h in decoded.record["house_bills"]} == {False}
        assert {h["freight_payment"] for h in decoded.record["house_bills"]} == {None}
        assert {p["address"]["number"] for p in decoded.record["parties"]} == {None}
        assert {p["representative"] for p in decoded.record["parties"]} == {None}
        assert "version" not in current.decode(data).record

    def test_old_reader_reads_new_writer(self, old_deployment: SchemaCatalogue):
        """A current message read by a v1 worker drops the added fields and keeps everything else."""
        booking = seed_json()
        booking["version"] = 3
        booking["house_bills"][0]["f15_requested"] = True
        current = SchemaCatalogue.load(SCHEMAS)
        data = current.encode("BookingEvent", booking)
        with pytest.raises(UnknownSchemaError):
            old_deployment.decode(data)
        old_deployment.register(current.schema("BookingEvent"))
        decoded = old_deployment.decode(data, reader="BookingEvent").record
        assert "version" not in decoded
        assert "f15_requested" not in decoded["house_bills"][0]
        assert decoded["house_bills"][0]["hbl_number"] == booking["house_bills"][0]["hbl_number"]

    def test_reader_given_as_schema(self):
        """decode accepts a reader schema itself, e.g. a history version, not only a catalogue name."""
        current = SchemaCatalogue.load(SCHEMAS)
        v1 = current.versions("BookingEvent")[1]
        decoded = current.decode(current.encode("BookingEvent", seed_json()), reader=v1)
        assert decoded.name == "eu.ics2streams.BookingEvent"
        assert "version" not in decoded.record

    def test_incompatible_reader_is_a_decode_error(self):
        """A reader that needs a field the writer never wrote fails as DecodeError."""
        current = SchemaCatalogue.load(SCHEMAS)
        reader = copy.deepcopy(_public(current.schema("AuditRecord")))
        reader["fields"].append({"name": "signature", "type": "string"})
        data = current.encode("AuditRecord", _example(current.schema("AuditRecord")))
        with pytest.raises(DecodeError):
            current.decode(data, reader=reader)

    @pytest.mark.parametrize("name", sorted(p.stem for p in SCHEMAS.glob("*.avsc")))
    def test_added_defaulted_field_reads_both_ways(self, name: str, tmp_path: Path):
        """For every schema, a next version with one more defaulted field is FULL compatible, in the codec too."""
        current = SchemaCatalogue.load(SCHEMAS)
        raw = json.loads((SCHEMAS / f"{name}.avsc").read_text(encoding="utf-8"))
        raw["fields"].append({"name": "added_later", "type": ["null", "string"], "default": None, "doc": "test"})
        (tmp_path / f"{name}.avsc").write_text(json.dumps(raw))
        future = SchemaCatalogue.read(tmp_path)
        assert full_compatibility(future.schema(name), current.schema(name)) == []

        datum = _example(current.schema(name))
        newer = dict(datum, added_later="set by the new writer")
        future.register(current.schema(name))
        current_copy = SchemaCatalogue.read(SCHEMAS)
        current_copy.register(future.schema(name))
        assert future.decode(current.encode(name, datum), reader=name).record == dict(datum, added_later=None)
        assert current_copy.decode(future.encode(name, newer), reader=name).record == datum
