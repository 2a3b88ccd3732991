"""Avro schema resolution as a checker: can data written with one schema be read with another?

fastavro resolves a writer schema against a reader schema while decoding but has no way to ask, before anything is
deployed, whether every record a writer can produce will resolve. ``can_read`` answers that by following the
resolution rules of the Avro specification (section "Schema Resolution"), so a changed ``.avsc`` is checked in CI
against every earlier version instead of failing on the first old record a worker meets.

Schemas may be given as written in an ``.avsc`` file (short names, namespaces) or as fastavro parsed them (full
names, ``__fastavro_*`` keys); both are normalised to full names first. The checker never raises on odd input: a type
it cannot make sense of is reported as an ``Incompatibility`` of kind ``invalid_schema``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
NAMED = frozenset({"record", "error", "enum", "fixed"})

#: Writer type -> the reader types it can be promoted to (Avro specification, "Schema Resolution").
PROMOTIONS: Mapping[str, frozenset[str]] = {
    "int": frozenset({"long", "float", "double"}),
    "long": frozenset({"float", "double"}),
    "float": frozenset({"double"}),
    "string": frozenset({"bytes"}),
    "bytes": frozenset({"string"}),
}


class IncompatibilityKind(StrEnum):
    """Why a reader cannot read what a writer wrote."""

    TYPE_MISMATCH = "type_mismatch"
    NAME_MISMATCH = "name_mismatch"
    READER_FIELD_MISSING_DEFAULT = "reader_field_missing_default"
    MISSING_ENUM_SYMBOLS = "missing_enum_symbols"
    FIXED_SIZE_MISMATCH = "fixed_size_mismatch"
    MISSING_UNION_BRANCH = "missing_union_branch"
    INVALID_SCHEMA = "invalid_schema"


@dataclass(frozen=True, slots=True)
class Incompatibility:
    """One place where resolution fails; ``path`` names it in the reader's terms (field names, ``items``, ...)."""

    kind: IncompatibilityKind
    path: str
    message: str
    direction: str = ""
    """Set by ``full_compatibility``: ``backward`` (new reads old) or ``forward`` (old reads new)."""

    def __str__(self) -> str:
        prefix = f"{self.direction}: " if self.direction else ""
        return f"{prefix}{self.path or '/'}: {self.message}"


@dataclass(frozen=True, slots=True)
class _Invalid:
    """A type the normaliser could not understand; kept in the tree so the checker can report where it is."""

    description: str


def can_read(reader: Any, writer: Any) -> list[Incompatibility]:
    """Every reason why data written with ``writer`` cannot be read with ``reader``; empty when it always can."""
    found: list[Incompatibility] = []
    _Checker(found).check(_normalise(reader), _normalise(writer), "")
    return found


def full_compatibility(new: Any, old: Any) -> list[Incompatibility]:
    """FULL compatibility: the new schema reads old data (backward) and the old schema reads new data (forward)."""
    backward = [replace(i, direction="backward") for i in can_read(new, old)]
    forward = [replace(i, direction="forward") for i in can_read(old, new)]
    return backward + forward


def _normalise(schema: Any) -> Any:
    return _Normaliser().node(schema, "")


class _Normaliser:
    """Rewrites a schema with full names and references replaced by the definitions they name.

    A recursive type becomes a cyclic structure (the record dict contains itself); the checker guards against the
    cycle. Primitives become their name (``{"type": "long", "logicalType": ...}`` is ``"long"``): logical types
    resolve as their underlying type.
    """

    def __init__(self) -> None:
        self.names: dict[str, dict[str, Any]] = {}

    def node(self, schema: Any, namespace: str) -> Any:
        if isinstance(schema, str):
            return self._reference(schema, namespace)
        if isinstance(schema, list):
            return [self.node(branch, namespace) for branch in schema]
        if not isinstance(schema, Mapping):
            return _Invalid(f"{schema!r} is not a schema")
        kind = schema.get("type")
        if isinstance(kind, list | Mapping):
            return self.node(kind, namespace)
        if kind in PRIMITIVES:
            return kind
        if kind == "array":
            return {"type": "array", "items": self.node(schema.get("items"), namespace)}
        if kind == "map":
            return {"type": "map", "values": self.node(schema.get("values"), namespace)}
        if kind in NAMED:
            return self._named(schema, namespace)
        if isinstance(kind, str):
            return self._reference(kind, namespace)
        return _Invalid(f"type {kind!r} is not an Avro type")

    def _reference(self, name: str, namespace: str) -> Any:
        if name in PRIMITIVES:
            return name
        candidates = [name] if "." in name else [f"{namespace}.{name}", name] if namespace else [name]
        for candidate in candidates:
            if candidate in self.names:
                return self.names[candidate]
        return _Invalid(f"{name!r} names no type defined before it")

    def _named(self, schema: Mapping[str, Any], enclosing: str) -> Any:
        name = schema.get("name")
        if not isinstance(name, str) or not name:
            return _Invalid(f"a {schema.get('type')} without a name")
        if "." in name:
            full = name
        else:
            namespace = schema.get("namespace", enclosing)
            full = f"{namespace}.{name}" if isinstance(namespace, str) and namespace else name
        namespace = full.rpartition(".")[0]
        aliases = [
            alias if "." in alias or not namespace else f"{namespace}.{alias}"
            for alias in schema.get("aliases", ())
            if isinstance(alias, str)
        ]
        kind = "record" if schema["type"] == "error" else schema["type"]
        node: dict[str, Any] = {"type": kind, "name": full, "aliases": aliases}
        self.names[full] = node
        if kind == "enum":
            node["symbols"] = list(schema.get("symbols", ()))
            if "default" in schema:
                node["default"] = schema["default"]
        elif kind == "fixed":
            node["size"] = schema.get("size")
        else:
            node["fields"] = [self._field(f, namespace) for f in schema.get("fields", ())]
        return node

    def _field(self, field: Any, namespace: str) -> dict[str, Any]:
        if not isinstance(field, Mapping):
            return {"name": "?", "aliases": [], "type": _Invalid(f"field {field!r} is not an object")}
        normalised: dict[str, Any] = {
            "name": field.get("name"),
            "aliases": [a for a in field.get("aliases", ()) if isinstance(a, str)],
            "type": self.node(field.get("type"), namespace),
        }
        if "default" in field:
            normalised["default"] = field["default"]
        return normalised


def _kind(node: Any) -> str:
    if isinstance(node, str):
        return node
    if isinstance(node, list):
        return "union"
    if isinstance(node, dict):
        return str(node["type"])
    return "invalid"


def _label(node: Any) -> str:
    """A short name for a type in messages: ``string``, ``array``, ``eu.ics2streams.Party``."""
    if isinstance(node, dict) and "name" in node:
        return str(node["name"])
    return _kind(node)


def _unqualified(name: str) -> str:
    return name.rpartition(".")[2]


def _names_match(reader: dict[str, Any], writer: dict[str, Any]) -> bool:
    """Same unqualified name (as the specification says), or the writer's full name is one of the reader's aliases."""
    return _unqualified(reader["name"]) == _unqualified(writer["name"]) or writer["name"] in reader["aliases"]


def _matches(reader: Any, writer: Any, promote: bool) -> bool:
    """The shallow "match" of the specification that picks a reader union branch; ``promote`` allows promotions."""
    r, w = _kind(reader), _kind(writer)
    if r in PRIMITIVES and w in PRIMITIVES:
        return r == w or (promote and r in PROMOTIONS.get(w, frozenset()))
    if r != w:
        return False
    if r in ("record", "enum", "fixed"):
        return _names_match(reader, writer)
    return r in ("array", "map")


def _select(branches: list[Any], writer: Any) -> Any | None:
    """The reader branch a writer value resolves to: the first exact match, else the first by promotion."""
    for promote in (False, True):
        for branch in branches:
            if _matches(branch, writer, promote):
                return branch
    return None


class _Checker:
    def __init__(self, found: list[Incompatibility]) -> None:
        self.found = found
        self.seen: set[tuple[int, int]] = set()

    def report(self, kind: IncompatibilityKind, path: str, message: str) -> None:
        self.found.append(Incompatibility(kind, path, message))

    def check(self, reader: Any, writer: Any, path: str) -> None:
        for side, node in (("reader", reader), ("writer", writer)):
            if isinstance(node, _Invalid):
                self.report(IncompatibilityKind.INVALID_SCHEMA, path, f"{side} schema: {node.description}")
                return
        if isinstance(writer, list):
            self._writer_union(reader, writer, path)
        elif isinstance(reader, list):
            branch = _select(reader, writer)
            if branch is None:
                labels = ", ".join(_label(b) for b in reader)
                self.report(
                    IncompatibilityKind.MISSING_UNION_BRANCH,
                    path,
                    f"writer type {_label(writer)} matches no branch of the reader union [{labels}]",
                )
            else:
                self.check(branch, writer, path)
        else:
            self._single(reader, writer, path)

    def _writer_union(self, reader: Any, writer: list[Any], path: str) -> None:
        """Every branch the writer may have chosen must resolve, or some records cannot be read."""
        for branch in writer:
            if isinstance(branch, _Invalid):
                self.check(reader, branch, path)
                continue
            target = _select(reader, branch) if isinstance(reader, list) else reader
            if target is None or not _matches(target, branch, promote=True):
                shown = "[" + ", ".join(_label(b) for b in reader) + "]" if isinstance(reader, list) else _label(reader)
                self.report(
                    IncompatibilityKind.MISSING_UNION_BRANCH,
                    path,
                    f"writer union branch {_label(branch)} cannot be read as {shown}",
                )
            else:
                self.check(target, branch, path)

    def _single(self, reader: Any, writer: Any, path: str) -> None:
        r, w = _kind(reader), _kind(writer)
        if r in PRIMITIVES and w in PRIMITIVES:
            if r != w and r not in PROMOTIONS.get(w, frozenset()):
                self.report(IncompatibilityKind.TYPE_MISMATCH, path, f"writer type {w} cannot be read as {r}")
            return
        if r != w:
            message = f"writer type {_label(writer)} cannot be read as {_label(reader)}"
            self.report(IncompatibilityKind.TYPE_MISMATCH, path, message)
            return
        if r == "array":
            self.check(reader["items"], writer["items"], f"{path}/items")
        elif r == "map":
            self.check(reader["values"], writer["values"], f"{path}/values")
        elif not _names_match(reader, writer):
            self.report(
                IncompatibilityKind.NAME_MISMATCH,
                path,
                f"writer {r} {writer['name']} is not reader {r} {reader['name']} nor one of its aliases",
            )
        elif r == "enum":
            self._enum(reader, writer, path)
        elif r == "fixed":
            if reader["size"] != writer["size"]:
                self.report(
                    IncompatibilityKind.FIXED_SIZE_MISMATCH,
                    path,
                    f"fixed {reader['name']} has size {reader['size']} in the reader, {writer['size']} in the writer",
                )
        else:
            self._record(reader, writer, path)

    def _enum(self, reader: dict[str, Any], writer: dict[str, Any], path: str) -> None:
        missing = [s for s in writer["symbols"] if s not in reader["symbols"]]
        if missing and "default" not in reader:
            self.report(
                IncompatibilityKind.MISSING_ENUM_SYMBOLS,
                path,
                f"enum {reader['name']} lacks writer symbols {', '.join(missing)} and has no default",
            )

    def _record(self, reader: dict[str, Any], writer: dict[str, Any], path: str) -> None:
        key = (id(reader), id(writer))
        if key in self.seen:
            return
        self.seen.add(key)
        writer_fields = {f["name"]: f for f in writer["fields"]}
        for field in reader["fields"]:
            source = writer_fields.get(field["name"])
            if source is None:
                source = next((writer_fields[a] for a in field["aliases"] if a in writer_fields), None)
            field_path = f"{path}/{field['name']}"
            if source is not None:
                self.check(field["type"], source["type"], field_path)
            elif "default" not in field:
                self.report(
                    IncompatibilityKind.READER_FIELD_MISSING_DEFAULT,
                    field_path,
                    f"reader field {field['name']} of {reader['name']} is not written and has no default",
                )
