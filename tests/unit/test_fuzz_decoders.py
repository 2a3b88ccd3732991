"""Fuzzing the decoders: whatever the bytes, the only outcomes are a value or an ``ICS2StreamsError``.

A stage dead-letters an ``ICS2StreamsError`` with its reason; any other exception would be a bug in a decoder
(the worker survives it too, but as an "unexpected error" no forwarder can act on). Inputs are arbitrary bytes
and mutations of valid ones (the XML fixtures, the seed booking as Avro, the seed's JSON form), so that the
fuzzer reaches past the first check of each decoder.

The run is bounded for CI (about half a minute); ``ICS2_FUZZ_EXAMPLES=5000 make fuzz`` runs longer locally.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from lxml import etree

from streams.contracts.avro import HEADER_SIZE, MARKER, SchemaCatalogue
from streams.domain.model import Consolidation
from streams.errors import ICS2StreamsError
from streams.messages.parse import parse_notification
from streams.messages.safe import read_xml
from streams.pipeline.stage import Incoming, StageFailure
from streams.pipeline.stages.booking import BookingStage
from streams.topics import Catalogue
from tests.data import seed_json

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "xml"
SCHEMAS = SchemaCatalogue.load()
CATALOGUE = Catalogue.for_prefix("")
SEED_AVRO = SCHEMAS.encode("BookingEvent", seed_json())
BOOKING_HEADER = MARKER + SCHEMAS.fingerprint("BookingEvent")
XML_FIXTURES = tuple(path.read_bytes() for path in sorted(FIXTURES.glob("*.xml")))
EXAMPLES = int(os.environ.get("ICS2_FUZZ_EXAMPLES", "600"))

fuzz = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

#: Fragments that steer mutations toward the parser's and the decoder's edge cases.
XML_TOKENS = (
    b"<",
    b">",
    b"</",
    b"/>",
    b"&",
    b"&amp;",
    b"&#0;",
    b"&#x10FFFF;",
    b"&#xD800;",
    b"<![CDATA[",
    b"]]>",
    b"<!--",
    b"-->",
    b"<!DOCTYPE x>",
    b'<!ENTITY e "x">',
    b"<?pi x?>",
    b' xmlns="urn:x"',
    b' xmlns:i="urn:wco:datamodel:eu:ics2:2"',
    b"\x00",
    b"\xff",
    b"\xef\xbb\xbf",
    b"\xc3\x28",
    b"T24:00:00Z",
    b"0001-01-01T00:00:00+01:00",
    b"9999-12-31T23:59:59-01:00",
    b"<a>" * 300,
)


def ics2_error_or_value(call: Callable[[], object]) -> None:
    """Run the decoder; an ``ICS2StreamsError`` is a clean rejection, anything else propagates and fails the test."""
    with contextlib.suppress(ICS2StreamsError):
        call()


@st.composite
def mutated(draw: st.DrawFn, originals: tuple[bytes, ...], tokens: tuple[bytes, ...], keep: int = 0) -> bytes:
    """One original with a few byte-level edits: deletions, insertions of tokens or random bytes, overwrites.

    ``keep`` leading bytes stay intact (the Avro header), so the mutations reach the body's decoder.
    """
    data = bytearray(draw(st.sampled_from(originals)))
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(keep, max(keep, len(data))))
        kind = draw(st.sampled_from(("delete", "insert", "token", "flip", "cut")))
        if kind == "delete":
            del data[at : at + draw(st.integers(1, 64))]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=32))
        elif kind == "token" and tokens:
            data[at:at] = draw(st.sampled_from(tokens))
        elif kind == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "cut":
            del data[at:]
    return bytes(data)


@st.composite
def rewritten_xml(draw: st.DrawFn) -> bytes:
    """A fixture kept well-formed, with one element's text replaced: reaches dates, keys and codes, not just syntax."""
    root = etree.fromstring(draw(st.sampled_from(XML_FIXTURES)))
    elements = [e for e in root.iter() if isinstance(e.tag, str) and len(e) == 0]
    element = draw(st.sampled_from(elements))
    text = draw(
        st.one_of(
            st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=40),
            st.sampled_from(["", " ", "2027-06-13T09:30:00", "0001-01-01T00:00:00Z", "27NL", "IE3Q01", "-1"]),
        )
    )
    element.text = text
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


class TestFuzzXml:
    @fuzz
    @given(data=st.binary(max_size=2048))
    def test_arbitrary_bytes(self, data: bytes):
        """Arbitrary bytes are parsed or rejected with an ICS2StreamsError, never another exception."""
        ics2_error_or_value(lambda: parse_notification(data))

    @fuzz
    @given(data=mutated(XML_FIXTURES, XML_TOKENS))
    def test_mutated_fixtures(self, data: bytes):
        """Byte-level mutations of valid notifications are parsed or cleanly rejected."""
        ics2_error_or_value(lambda: parse_notification(data))

    @fuzz
    @given(data=rewritten_xml(), label=st.one_of(st.none(), st.sampled_from(["IE3Q01", "IE3R01", "X"])))
    def test_well_formed_fixtures_with_odd_values(self, data: bytes, label: str | None):
        """Well-formed notifications with any text in any element are parsed or cleanly rejected."""
        ics2_error_or_value(lambda: parse_notification(data, expected_type=label))

    @fuzz
    @given(data=st.binary(max_size=512), namespace=st.one_of(st.none(), st.text(max_size=20)))
    def test_reader_with_any_namespace(self, data: bytes, namespace: str | None):
        """The safe reader rejects cleanly whatever namespace is demanded of whatever bytes."""
        ics2_error_or_value(lambda: read_xml(b"<r>" + data + b"</r>", namespace=namespace))


def decode_and_build(data: bytes) -> Consolidation:
    return Consolidation.from_json(SCHEMAS.decode(data, reader="BookingEvent").record)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=10,
)


def _nodes(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path (keys and indexes) into a JSON value, the root excluded."""
    found: list[tuple[Any, ...]] = []
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in children:
        found.append((*path, key))
        found.extend(_nodes(child, (*path, key)))
    return found


SEED_PATHS = tuple(_nodes(seed_json()))


def _replaced(data: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    result = copy.deepcopy(data)
    node: Any = result
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return result


def _same_type(original: Any) -> st.SearchStrategy[Any]:
    """A random value the Avro schema still accepts where ``original`` was, so the record encodes."""
    if isinstance(original, bool):
        return st.booleans()
    if isinstance(original, int):
        return st.integers(-(2**31), 2**31 - 1)
    if isinstance(original, float):
        return st.floats(width=64)
    if isinstance(original, str):
        return st.one_of(
            st.text(max_size=30),
            st.sampled_from(["", "2027-02-30T00:00:00Z", "0001-01-01T00:00:00Z", "SKC26TYO0001", "ML-TYO"]),
        )
    return st.nothing()


def _value_at(path: tuple[Any, ...]) -> Any:
    node: Any = seed_json()
    for key in path:
        node = node[key]
    return node


SCALAR_PATHS = tuple(p for p in SEED_PATHS if isinstance(_value_at(p), bool | int | float | str))


class TestFuzzAvro:
    @fuzz
    @given(data=st.binary(max_size=1024))
    def test_arbitrary_bytes(self, data: bytes):
        """Arbitrary bytes are decoded or rejected with an ICS2StreamsError."""
        ics2_error_or_value(lambda: decode_and_build(data))

    @fuzz
    @given(body=st.binary(max_size=1024))
    def test_random_body_behind_a_known_header(self, body: bytes):
        """Garbage behind the BookingEvent header reaches the Avro codec and is rejected cleanly."""
        ics2_error_or_value(lambda: decode_and_build(BOOKING_HEADER + body))

    @fuzz
    @given(data=mutated((SEED_AVRO,), (b"\x00", b"\x01", b"\x7f", b"\xff\xff\xff\xff\x0f", b"\x80" * 10), HEADER_SIZE))
    def test_mutated_seed(self, data: bytes):
        """Byte-level mutations of the seed booking's Avro body are decoded or cleanly rejected."""
        ics2_error_or_value(lambda: decode_and_build(data))

    @fuzz
    @given(st.data())
    def test_booking_json_with_a_value_of_any_type(self, data: st.DataObject):
        """Any JSON value anywhere in the seed's JSON form gives a consolidation or a BookingError."""
        path = data.draw(st.sampled_from(SEED_PATHS))
        ics2_error_or_value(lambda: Consolidation.from_json(_replaced(seed_json(), path, data.draw(JSON))))


class TestFuzzBookingStage:
    @fuzz
    @given(st.data())
    def test_schema_valid_booking_with_odd_values(self, data: st.DataObject):
        """A booking that fits the Avro schema but holds odd values is planned or rejected, never a stage bug."""
        path = data.draw(st.sampled_from(SCALAR_PATHS))
        booking = _replaced(seed_json(), path, data.draw(_same_type(_value_at(path))))
        try:
            value = SCHEMAS.encode("BookingEvent", booking)
        except ICS2StreamsError:
            assume(False)
        stage = BookingStage(SCHEMAS, CATALOGUE, lambda: datetime(2027, 6, 1, 9, tzinfo=UTC), {})
        with contextlib.suppress(StageFailure, ICS2StreamsError):
            stage(Incoming(CATALOGUE.bookings.name, 0, 0, None, value))
