"""The booking stage in process: what it remembers between bookings (compiled schemas, qualified tags, resolved XSD
paths, the records of one booking's filings) never leaks from one booking into the next."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from streams.contracts.avro import SchemaCatalogue
from streams.domain.model import Consolidation
from streams.errors import BookingError
from streams.pipeline.stage import Emit, Incoming
from streams.pipeline.stages.booking import BookingStage
from streams.topics import Catalogue
from tests.data import seed_json

NOW = datetime(2027, 6, 1, 9, 0, tzinfo=UTC)
TOPICS = Catalogue.for_prefix("t.")


def _stage(schemas: SchemaCatalogue) -> BookingStage:
    return BookingStage(schemas, TOPICS, lambda: NOW, {})


def _run(stage: BookingStage, schemas: SchemaCatalogue, booking: dict[str, Any], offset: int) -> list[Emit]:
    value = schemas.encode("BookingEvent", booking)
    return stage(Incoming(TOPICS.bookings.name, 0, offset, booking["master"]["mbl_number"].encode(), value))


def _other_booking() -> dict[str, Any]:
    """The seed under another MBL, with another container, carrier EORI and description: every record differs."""
    data = copy.deepcopy(seed_json())
    data["master"]["mbl_number"] = "OCLU26TYO0000999"
    data["event_id"] = "0b8f6c2e-2f7a-4d0e-9a61-5d3c1e7a9b99"
    data["master"]["containers"][0]["id"] = "MSKU1234565"
    for bill in data["house_bills"]:
        for item in bill.get("goods", ()):
            item["container"] = "MSKU1234565"
    data["house_bills"][0]["goods"][0]["description"] = "Tablet computers"
    for party in data["parties"]:
        if party["id"] == "CARRIER-A":
            party["eori"] = "NL999999999"
    return data


@pytest.fixture(scope="module")
def schemas() -> SchemaCatalogue:
    return SchemaCatalogue.load()


class TestBookingsInARow:
    def test_second_booking_gives_what_it_gives_alone(self, schemas: SchemaCatalogue) -> None:
        """A booking handled after another gives the same records, byte for byte, as through a stage of its own."""
        first, second = seed_json(), _other_booking()
        stage = _stage(schemas)
        emitted_first = _run(stage, schemas, first, 0)
        in_a_row = _run(stage, schemas, second, 1)
        alone = _run(_stage(schemas), schemas, second, 1)
        assert in_a_row == alone
        assert {e.value for e in emitted_first}.isdisjoint({e.value for e in in_a_row if e.topic != TOPICS.alerts.name})

    def test_second_booking_names_only_its_own_data(self, schemas: SchemaCatalogue) -> None:
        """The second booking's filings and ledger entries carry its MBL, container and EORI, none of the first's."""
        stage = _stage(schemas)
        _run(stage, schemas, seed_json(), 0)
        emits = _run(stage, schemas, _other_booking(), 1)
        filings = [schemas.decode(e.value).record for e in emits if e.topic == TOPICS.filings_outbound.name]
        assert filings and all(b"OCLU26TYO0000999" in f["xml"] for f in filings)
        assert not any(b"OCLU26TYO7781234" in f["xml"] or b"TCNU1234565" in f["xml"] for f in filings)
        ledger = [schemas.decode(e.value).record for e in emits if dict(e.headers).get("ics2-record") == b"LedgerEntry"]
        assert ledger and all(entry["mbl"] == "OCLU26TYO0000999" for entry in ledger)
        assert all(set(entry["containers"]) == {"MSKU1234565"} for entry in ledger)
        assert all("NL999999999" in entry["eoris"] for entry in ledger)


class TestLowestHbls:
    @pytest.mark.parametrize("remove", [None, "SKC26TYO0002", "AOB26OSA1002"])
    def test_lowest_are_those_with_nothing_below(self, remove: str | None) -> None:
        """``lowest_hbls`` keeps booking order and agrees with ``is_lowest`` for every HBL, also after a change."""
        data = seed_json()
        if remove is not None:
            data["house_bills"] = [h for h in data["house_bills"] if h.get("parent") != remove]
        consolidation = Consolidation.from_json(data)
        expected = tuple(h for h in consolidation.house_bills if consolidation.is_lowest(h))
        assert consolidation.lowest_hbls() == expected
        assert len(expected) < len(consolidation.house_bills)


class TestBookingText:
    """The booking reader reads most text fields on a short path; what it refuses, it still refuses by path."""

    @pytest.mark.parametrize(
        ("where", "text", "expected"),
        [
            (("parties", 0, "name"), "ACME\x01", r"\$\.parties\[0\]\.name holds the character U\+0001"),
            (("house_bills", 0, "goods", 0, "description"), "Laptops\ufffe", r"goods\[0\]\.description .*U\+FFFE"),
            (("master", "voyage"), "042W\x0b", r"\$\.master\.voyage holds the character U\+000B"),
        ],
    )
    def test_text_no_message_can_carry_is_refused_by_path(self, where: tuple[Any, ...], text: str, expected: str):
        data = seed_json()
        target: Any = data
        for step in where[:-1]:
            target = target[step]
        target[where[-1]] = text
        with pytest.raises(BookingError, match=expected):
            Consolidation.from_json(data)

    @pytest.mark.parametrize(("value", "expected"), [(42, "must be str, not int"), (None, "is missing")])
    def test_a_text_field_of_another_type_is_refused_by_path(self, value: Any, expected: str):
        data = seed_json()
        data["parties"][1]["name"] = value
        with pytest.raises(BookingError, match=rf"\$\.parties\[1\]\.name {expected}"):
            Consolidation.from_json(data)
