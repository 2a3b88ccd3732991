"""The project's XSDs: found by message code, compiled once, used to validate what goes out and what comes in.

The schemas live in ``schemas/xsd/`` beside the package (``schemas/xsd/IE3F15.xsd``,
``schemas/xsd/notifications/IE3N02.xsd``, ...), so the product validates from the repository alone. A deployment
that keeps them elsewhere sets ``ICS2_SCHEMAS_DIR`` to its ``schemas`` folder (or straight to the XSD folder).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from lxml import etree

from streams.errors import ICS2StreamsError, PlatformError
from streams.messages import NS
from streams.messages.safe import read_xml

#: Environment variable naming the folder that holds ``xsd/`` (or the XSD folder itself).
SCHEMAS_DIR_ENV = "ICS2_SCHEMAS_DIR"

#: The folder holding the ``streams`` package (``streams/messages/schemas.py`` -> two levels up); found from this
#: file rather than ``streams.__file__``, which an editable install can leave unset (namespace package).
_REPO = Path(__file__).resolve().parents[2]


class XsdUnavailable(PlatformError):
    """No XSD (or more than one) for a message code, or an XSD that does not compile: the install is broken."""


@dataclass(frozen=True, slots=True)
class SchemaIssue:
    """One XSD error, located in the validated document."""

    line: int
    column: int
    message: str
    path: str | None = None

    def __str__(self) -> str:
        where = f"line {self.line}" + (f" ({self.path})" if self.path else "")
        return f"{where}: {self.message}"


class XsdViolation(ICS2StreamsError):
    """A document that its message's XSD refuses; ``issues`` lists every error with its line number."""

    def __init__(self, message_type: str, issues: tuple[SchemaIssue, ...]) -> None:
        self.message_type = message_type
        self.issues = issues
        listed = "; ".join(str(i) for i in issues) or "no detail given"
        super().__init__(f"{message_type} does not conform to its schema: {listed}")


def schemas_dir() -> Path:
    """The folder holding the XSDs: ``$ICS2_SCHEMAS_DIR`` (or its ``xsd`` child), else ``<repo>/schemas/xsd``."""
    return _folder(os.environ.get(SCHEMAS_DIR_ENV))


def _folder(override: str | None) -> Path:
    root = Path(override) if override else _REPO / "schemas"
    return root / "xsd" if (root / "xsd").is_dir() else root


#: The folder per value of ``$ICS2_SCHEMAS_DIR``, found once: every filing sent is validated, and building and
#: checking the path cost as much as the look-up of its compiled schema.
_cached_folder = lru_cache(maxsize=16)(_folder)


def schema_path(message_type: str, directory: Path | None = None) -> Path:
    """The one ``<message_type>.xsd`` anywhere under the XSD folder."""
    return _schema_path(message_type, directory or schemas_dir())


@lru_cache(maxsize=256)
def _schema_path(message_type: str, base: Path) -> Path:
    """Found once per folder: searching the folder tree for every filing cost more than rendering it."""
    found = sorted(base.rglob(f"{message_type}.xsd"))
    if not found:
        raise XsdUnavailable(f"no schema {message_type}.xsd under {base}")
    if len(found) > 1:
        raise XsdUnavailable(f"several schemas for {message_type}: {', '.join(str(p) for p in found)}")
    return found[0]


@lru_cache(maxsize=64)
def _compiled(path: Path, mtime_ns: int) -> tuple[etree.XMLSchema, threading.Lock]:
    """Compile once per file version; the lock serialises use, as a compiled schema keeps its error log."""
    try:
        return etree.XMLSchema(etree.parse(str(path))), threading.Lock()
    except (etree.XMLSchemaParseError, etree.XMLSyntaxError, OSError) as exc:
        raise XsdUnavailable(f"schema {path} does not compile: {exc}") from exc


@lru_cache(maxsize=256)
def _resolved(message_type: str, base: Path) -> Path:
    """Resolved once per folder: resolving the path (a system call per component) cost as much as validating."""
    return _schema_path(message_type, base).resolve()


def _schema(message_type: str) -> tuple[etree.XMLSchema, threading.Lock]:
    path = _resolved(message_type, _cached_folder(os.environ.get(SCHEMAS_DIR_ENV)))
    return _compiled(path, path.stat().st_mtime_ns)


def schema_for(message_type: str) -> etree.XMLSchema:
    """The compiled XSD of a message code (``"IE3F15"``, ``"IE3N02"``), compiled on first use and cached."""
    return _schema(message_type)[0]


def conforms(root: etree._Element, message_type: str) -> bool:
    """Whether a tree built in memory is a valid ``message_type``, without serialising and parsing it again.

    Only says yes or no: a tree built in memory has no line numbers, so ``validate`` of its bytes names the errors.
    """
    if root.tag != etree.QName(NS, message_type).text:
        return False
    schema, lock = _schema(message_type)
    with lock:
        return bool(schema.validate(root))


def validate(document: bytes | etree._Element | etree._ElementTree, message_type: str) -> etree._Element:
    """Check a message against its XSD and return its root element.

    Bytes are read through ``safe.read_xml`` first. Raises ``XsdViolation`` listing every XSD error with
    its line, also when the root element is not ``message_type`` in the ICS2 namespace.
    """
    if isinstance(document, bytes | bytearray):
        root = read_xml(bytes(document))
    elif isinstance(document, etree._ElementTree):
        root = document.getroot()
    else:
        root = document
    expected = etree.QName(NS, message_type).text
    if root.tag != expected:
        issue = SchemaIssue(root.sourceline or 0, 0, f"root element is {root.tag}, expected {expected}")
        raise XsdViolation(message_type, (issue,))
    schema, lock = _schema(message_type)
    with lock:
        if schema.validate(root):
            return root
        issues = tuple(SchemaIssue(e.line, e.column, e.message, e.path) for e in schema.error_log)
    raise XsdViolation(message_type, issues)
