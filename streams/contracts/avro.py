"""Avro single-object encoding of the product's records, with a catalogue of every schema version it knows.

Every value on the product's Avro topics is one *single object* as the Avro specification defines it: the marker
``C3 01``, the 8-byte little-endian CRC-64-AVRO fingerprint of the writer schema's Parsing Canonical Form, then the
record in Avro binary. The fingerprint makes each message self-describing without a schema registry: a reader looks
the writer schema up in its catalogue (the current ``.avsc`` files plus their history) and resolves it against the
schema it wants, so old and new workers can share a topic during a rolling upgrade.

Schemas are parsed once, when the catalogue is built; ``SchemaCatalogue.load`` caches one catalogue per directory.
Decoding untrusted bytes raises only ``DecodeError`` (or its subclass ``UnknownSchemaError``), never an error of
fastavro or Python, so a stage can always send what it cannot read to the dead-letter topic.
"""

from __future__ import annotations

import io
import json
import os
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint as avro_fingerprint
from fastavro.schema import to_parsing_canonical_form
from fastavro.validation import validate

from streams.errors import DecodeError, ICS2StreamsError, InputError, UnknownSchemaError

MARKER = b"\xc3\x01"
"""The two bytes that open every single-object encoded message (format version 1)."""
FINGERPRINT_SIZE = 8
HEADER_SIZE = len(MARKER) + FINGERPRINT_SIZE
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
"""Largest message encoded or decoded; far above any ICS2 filing, low enough that garbage cannot exhaust memory."""
NAMESPACE = "eu.ics2streams"
SCHEMAS_DIR_ENV = "ICS2_SCHEMAS_DIR"
"""Points to a ``schemas`` folder; the catalogue reads its ``avro`` subfolder."""
DEFAULT_DIRECTORY = Path(__file__).resolve().parents[2] / "schemas" / "avro"
_HISTORY_FILE = re.compile(r"^v([1-9][0-9]*)\.avsc$")


class SchemaViolation(InputError):
    """A record that does not fit its schema (missing, unknown or mistyped fields); it can never be encoded."""


class SchemaNotFound(ICS2StreamsError, LookupError):
    """A schema name the catalogue does not hold: a programming or deployment error, not bad input."""


class SchemaDefinitionError(ICS2StreamsError):
    """An ``.avsc`` file or a registered schema that is not valid Avro, or a history file that contradicts it."""


@dataclass(frozen=True, slots=True)
class Decoded:
    """A decoded message: the writer schema's full name and the record (resolved to the reader schema if given)."""

    name: str
    record: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Entry:
    """One schema version as the catalogue keeps it."""

    name: str
    parsed: dict[str, Any]
    canonical: str
    fingerprint: bytes
    version: int | None
    hinted: dict[str, Any]
    """The same schema as fastavro's writer, reader and validator take it without parsing it again: ``parsed``
    lacks fastavro's parsed marker (it is the form the canonical form and the compatibility checks read), and
    fastavro re-parses such a schema on every call, the larger part of a record's encode or decode."""


def single_object_fingerprint(schema: Mapping[str, Any] | str | list[Any]) -> bytes:
    """CRC-64-AVRO of the schema's Parsing Canonical Form, in the little-endian byte order of the header."""
    try:
        parsed = parse_schema(schema if isinstance(schema, str | list) else dict(schema), _write_hint=False)
        canonical = to_parsing_canonical_form(parsed)
    except Exception as exc:
        raise SchemaDefinitionError(f"not a valid Avro schema: {exc}") from exc
    return bytes.fromhex(avro_fingerprint(canonical, "CRC-64-AVRO"))


def _entry(schema: Mapping[str, Any], version: int | None, origin: str) -> _Entry:
    if not isinstance(schema, Mapping) or schema.get("type") not in ("record", "error"):
        raise SchemaDefinitionError(f"{origin}: the catalogue holds records only")
    try:
        parsed = parse_schema(dict(schema), _write_hint=False)
        canonical = to_parsing_canonical_form(parsed)
        hinted = parse_schema(dict(schema))
    except Exception as exc:
        raise SchemaDefinitionError(f"{origin}: not a valid Avro schema: {exc}") from exc
    if not isinstance(parsed, dict) or not isinstance(hinted, dict):  # fastavro types the result as any schema
        raise SchemaDefinitionError(f"{origin}: not a record schema")
    return _Entry(
        name=parsed["name"],
        parsed=parsed,
        canonical=canonical,
        fingerprint=bytes.fromhex(avro_fingerprint(canonical, "CRC-64-AVRO")),
        version=version,
        hinted=hinted,
    )


def _string_bytes(text: str) -> bytes:
    """An Avro string: its UTF-8 length as a zig-zag varint, then its UTF-8 bytes."""
    data = text.encode("utf-8")
    length = len(data) << 1
    out = bytearray()
    while length > 0x7F:
        out.append((length & 0x7F) | 0x80)
        length >>= 7
    out.append(length)
    return bytes(out) + data


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SchemaDefinitionError(f"{path}: cannot read the schema: {exc}") from exc
    if not isinstance(data, dict):
        raise SchemaDefinitionError(f"{path}: a schema file holds one JSON object")
    return data


def _default_directory() -> Path:
    override = os.environ.get(SCHEMAS_DIR_ENV)
    return Path(override) / "avro" if override else DEFAULT_DIRECTORY


_cache: dict[Path, SchemaCatalogue] = {}
_cache_lock = threading.Lock()


class SchemaCatalogue:
    """Every Avro schema of the product: the current version of each record and the versions it replaced.

    Encoding always uses the current version. Decoding finds the writer schema by the message's fingerprint among
    all versions (current, history and registered ones) and, given a ``reader``, resolves the record to it.
    """

    def __init__(self, entries: list[_Entry], history: list[_Entry], directory: Path | None = None) -> None:
        self.directory = directory
        self._current: dict[str, _Entry] = {}
        self._short: dict[str, str] = {}
        self._by_fingerprint: dict[bytes, _Entry] = {}
        self._history: dict[str, dict[int, _Entry]] = {}
        self._readers: dict[str, _Entry] = {}
        for entry in entries:
            short = entry.name.rpartition(".")[2]
            if short in self._short:
                raise SchemaDefinitionError(f"two schemas are named {short}")
            self._current[entry.name] = entry
            self._short[short] = entry.name
            self._add(entry)
        for entry in history:
            if entry.name not in self._current:
                raise SchemaDefinitionError(f"history version {entry.version} of {entry.name} has no current schema")
            self._history.setdefault(entry.name, {})[entry.version or 0] = entry
            self._add(entry)

    @classmethod
    def load(cls, directory: Path | None = None) -> SchemaCatalogue:
        """The catalogue of ``directory`` (default: the repository's ``schemas/avro``), parsed once and cached."""
        key = (directory if directory is not None else _default_directory()).resolve()
        with _cache_lock:
            catalogue = _cache.get(key)
            if catalogue is None:
                catalogue = _cache[key] = cls.read(key)
        return catalogue

    @classmethod
    def read(cls, directory: Path) -> SchemaCatalogue:
        """Parse every ``*.avsc`` of ``directory`` and ``history/<Name>/v<N>.avsc`` below it, without caching."""
        if not directory.is_dir():
            raise SchemaDefinitionError(f"{directory} is not a folder of Avro schemas")
        entries = [_entry(_read_json(path), None, str(path)) for path in sorted(directory.glob("*.avsc"))]
        history: list[_Entry] = []
        for folder in sorted(p for p in (directory / "history").glob("*") if p.is_dir()):
            for path in sorted(folder.glob("*.avsc")):
                match = _HISTORY_FILE.match(path.name)
                if match is None:
                    raise SchemaDefinitionError(f"{path}: history files are named v<N>.avsc")
                entry = _entry(_read_json(path), int(match.group(1)), str(path))
                if entry.name.rpartition(".")[2] != folder.name:
                    raise SchemaDefinitionError(f"{path}: defines {entry.name}, not {folder.name}")
                history.append(entry)
        return cls(entries, history, directory)

    def _add(self, entry: _Entry) -> None:
        known = self._by_fingerprint.get(entry.fingerprint)
        if known is not None and known.name != entry.name:
            raise SchemaDefinitionError(f"{entry.name} and {known.name} have the same fingerprint")
        if known is None:
            self._by_fingerprint[entry.fingerprint] = entry

    def _lookup(self, name: str) -> _Entry:
        entry = self._current.get(self._short.get(name, name))
        if entry is None:
            raise SchemaNotFound(f"no Avro schema named {name!r}; known: {', '.join(sorted(self._short))}")
        return entry

    def names(self) -> tuple[str, ...]:
        """Full names of the current schemas."""
        return tuple(sorted(self._current))

    def schema(self, name: str) -> dict[str, Any]:
        """The current parsed schema, by short name (``BookingEvent``) or full name."""
        return self._lookup(name).parsed

    def fingerprint(self, name: str) -> bytes:
        """The 8 header bytes that identify the current version of ``name``."""
        return self._lookup(name).fingerprint

    def versions(self, name: str) -> dict[int, dict[str, Any]]:
        """The parsed schemas of ``history/<Name>/``, by version number."""
        entry = self._lookup(name)
        return {version: e.parsed for version, e in sorted(self._history.get(entry.name, {}).items())}

    def register(self, schema: Mapping[str, Any]) -> None:
        """Add a writer schema (e.g. an older version) so that messages written with it can be decoded."""
        self._add(_entry(schema, None, "registered schema"))

    def encode(self, name: str, record: Mapping[str, Any]) -> bytes:
        """The record as one single-object message written with the current schema of ``name``.

        Fields with a default may be left out; unknown fields are refused rather than silently dropped.
        """
        entry = self._lookup(name)
        if not isinstance(record, Mapping):
            raise SchemaViolation(f"a {entry.name} record is a mapping, not {type(record).__name__}")
        try:
            # Checked without raising first: with raise_errors fastavro builds a ValidationError for every union
            # branch a value does not take (each optional field), a cost paid by every valid record.
            if not validate(record, entry.hinted, raise_errors=False):
                validate(record, entry.hinted, raise_errors=True)
            body = io.BytesIO()
            body.write(MARKER)
            body.write(entry.fingerprint)
            schemaless_writer(body, entry.hinted, record, strict_allow_default=True)
        except Exception as exc:
            raise SchemaViolation(f"record does not fit {entry.name}: {exc}") from exc
        data = body.getvalue()
        if len(data) > MAX_MESSAGE_BYTES:
            raise SchemaViolation(f"{entry.name} message of {len(data)} bytes is over the limit of {MAX_MESSAGE_BYTES}")
        return data

    def encode_each(self, name: str, record: Mapping[str, Any], field: str, values: Sequence[str]) -> list[bytes]:
        """``encode(name, {**record, field: value})`` for each value, the record checked and written once.

        For a string field that its schema writes first (a ledger entry under each of its correlation keys): its
        bytes open the body, so every message is the same header, the value's bytes, then the same rest. Any other
        field is encoded record by record.
        """
        entry = self._lookup(name)
        if not isinstance(record, Mapping):
            raise SchemaViolation(f"a {entry.name} record is a mapping, not {type(record).__name__}")
        fields = entry.hinted.get("fields") or ()
        if not values or not fields or fields[0]["name"] != field or fields[0]["type"] != "string":
            return [self.encode(name, {**record, field: value}) for value in values]
        first = self.encode(name, {**record, field: values[0]})
        rest = first[HEADER_SIZE + len(_string_bytes(values[0])) :]
        encoded = [first]
        for value in values[1:]:
            try:
                data = first[:HEADER_SIZE] + _string_bytes(value) + rest
            except (AttributeError, UnicodeEncodeError):  # not a string: encode says why it does not fit
                data = self.encode(name, {**record, field: value})
            if len(data) > MAX_MESSAGE_BYTES:
                raise SchemaViolation(
                    f"{entry.name} message of {len(data)} bytes is over the limit of {MAX_MESSAGE_BYTES}"
                )
            encoded.append(data)
        return encoded

    def decode(self, data: bytes, reader: str | Mapping[str, Any] | None = None) -> Decoded:
        """Decode one single-object message; with ``reader`` (a name or a schema) resolve the record to it.

        Raises ``DecodeError`` for anything that is not a whole message, ``UnknownSchemaError`` for a writer
        schema the catalogue does not know.
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise DecodeError(f"an Avro message is bytes, not {type(data).__name__}")
        data = bytes(data)
        if len(data) < HEADER_SIZE or not data.startswith(MARKER):
            raise DecodeError(
                f"not an Avro single-object message: {len(data)} bytes starting {data[:HEADER_SIZE].hex() or '(none)'}"
            )
        if len(data) > MAX_MESSAGE_BYTES:
            raise DecodeError(f"message of {len(data)} bytes is over the limit of {MAX_MESSAGE_BYTES}")
        fingerprint = data[len(MARKER) : HEADER_SIZE]
        writer = self._by_fingerprint.get(fingerprint)
        if writer is None:
            raise UnknownSchemaError(f"no schema with fingerprint {fingerprint.hex()} in the catalogue")
        target = self._reader(reader)
        resolve = None if target is None or target.fingerprint == writer.fingerprint else target.hinted
        body = io.BytesIO(data[HEADER_SIZE:])
        try:
            record = schemaless_reader(body, writer.hinted, resolve)
        except EOFError as exc:
            raise DecodeError(
                f"corrupt {writer.name} body: the message ends before the record does (cut short, or its body was"
                f" written with another schema than its header names)"
            ) from exc
        except Exception as exc:
            raise DecodeError(f"corrupt {writer.name} body: {type(exc).__name__}: {exc}") from exc
        left = len(data) - HEADER_SIZE - body.tell()
        if left:
            raise DecodeError(f"{left} bytes left over after the {writer.name} record")
        if not isinstance(record, dict):
            raise DecodeError(f"{writer.name} did not decode to a record")
        return Decoded(name=writer.name, record=record)

    def _reader(self, reader: str | Mapping[str, Any] | None) -> _Entry | None:
        if reader is None:
            return None
        if isinstance(reader, str):
            return self._lookup(reader)
        key = json.dumps({k: v for k, v in reader.items() if not k.startswith("__")}, sort_keys=True, default=str)
        entry = self._readers.get(key)
        if entry is None:
            entry = self._readers[key] = _entry(reader, None, "reader schema")
        return entry
