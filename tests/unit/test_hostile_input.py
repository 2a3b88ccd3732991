"""Hostile and broken input at each decoder, at the stage handlers and through a stage runner to its dead letter.

The catalogue is ``tests/hostile.py``; tests/integration/test_hostile_input.py sends the same records through a
worker on the real broker.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from lxml import etree

from streams.contracts.avro import SchemaCatalogue
from streams.contracts.dead_letter import DeadLetter
from streams.domain.model import Consolidation
from streams.errors import BookingError, DecodeError, ICS2StreamsError, XMLRejected
from streams.messages.parse import parse_notification
from streams.pipeline.dead_letters import DeadLetterSink, rejection_alert, rejection_emits
from streams.pipeline.runner import StageRunner, StageStats
from streams.pipeline.stage import Emit, Incoming, StageFailure
from streams.pipeline.stages.booking import BookingStage
from streams.pipeline.stages.parse import NotificationParser
from streams.topics import Catalogue
from tests.data import seed_json
from tests.hostile import (
    ADDRESSEE,
    PLANNER,
    Flagged,
    Hostile,
    booking_cases,
    fixture,
    flagged_bookings,
    xml_cases,
)

SCHEMAS = SchemaCatalogue.load()
CATALOGUE = Catalogue.for_prefix("")
NOW = datetime(2027, 6, 1, 9, 0, tzinfo=UTC)
XML = xml_cases()
BOOKINGS = booking_cases()
FLAGGED = flagged_bookings()


def incoming(topic: str, case: Hostile, offset: int = 7) -> Incoming:
    return Incoming(topic, 0, offset, b"key", case.value, case.headers)


def label(case: Hostile) -> str | None:
    value = dict(case.headers).get("ics2-message-type")
    return None if value is None else value.decode()


def decode_booking(value: bytes) -> Consolidation:
    return Consolidation.from_json(SCHEMAS.decode(value, reader="BookingEvent").record)


def booking_stage() -> BookingStage:
    return BookingStage(SCHEMAS, CATALOGUE, lambda: NOW, {})


class TestHostileXml:
    @pytest.mark.timeout(10)
    @pytest.mark.parametrize("case", XML, ids=[c.name for c in XML])
    def test_parser_rejects_with_a_reason(self, case: Hostile):
        """Each hostile notification is an XMLRejected whose message says what is wrong with it."""
        with pytest.raises(XMLRejected) as caught:
            parse_notification(case.value, expected_type=label(case))
        assert re.search(case.reason, str(caught.value)), str(caught.value)

    @pytest.mark.parametrize(
        "name", ["billion-laughs", "quadratic-blowup", "external-entity-file", "external-dtd", "several-megabytes"]
    )
    def test_bombs_are_refused_before_lxml_sees_them(self, name: str, monkeypatch: pytest.MonkeyPatch):
        """Entity bombs, external references and oversize documents never reach the XML parser, so cannot expand."""

        def no_parsing(*args: object, **kwargs: object) -> None:
            raise AssertionError("the document reached lxml")

        monkeypatch.setattr(etree, "fromstring", no_parsing)
        case = next(c for c in XML if c.name == name)
        with pytest.raises(XMLRejected):
            parse_notification(case.value)

    def test_label_that_matches_is_accepted(self):
        """A gateway label equal to the document's own message code lets the notification through."""
        assert parse_notification(fixture("IE3Q01"), expected_type="IE3Q01").message_type == "IE3Q01"

    def test_xinclude_is_never_resolved(self):
        """An XInclude in place of the MRN stays an element: the MRN is missing, no file content appears."""
        case = next(c for c in XML if c.name == "xinclude-left-inert")
        with pytest.raises(XMLRejected) as caught:
            parse_notification(case.value)
        assert "root:" not in str(caught.value)

    @pytest.mark.parametrize("offset", ["+01:00", "-01:00"])
    def test_dates_at_the_edge_of_the_calendar_are_refused(self, offset: str):
        """A date whose conversion to UTC leaves the calendar is a clear rejection, not an overflow."""
        date = ("0001-01-01T00:00:00" if offset == "+01:00" else "9999-12-31T23:59:59") + offset
        data = fixture("IE3Q01").replace(b"2027-06-13T09:30:00Z", date.encode())
        with pytest.raises(XMLRejected, match="out of the range of dates"):
            parse_notification(data)


class TestHostileAvro:
    @pytest.mark.timeout(10)
    @pytest.mark.parametrize("case", BOOKINGS, ids=[c.name for c in BOOKINGS])
    def test_decoder_rejects_with_a_reason(self, case: Hostile):
        """Each hostile booking record fails to decode or to become a consolidation, with the expected error class."""
        with pytest.raises(ICS2StreamsError) as caught:
            decode_booking(case.value)
        assert type(caught.value) is case.error
        assert re.search(case.reason, str(caught.value)), str(caught.value)

    def test_corrupt_body_error_chains_the_codec_failure(self):
        """The fastavro failure under a corrupt body is kept as the cause, for whoever debugs the producer."""
        case = next(c for c in BOOKINGS if c.name == "truncated")
        with pytest.raises(DecodeError) as caught:
            SCHEMAS.decode(case.value, reader="BookingEvent")
        assert caught.value.__cause__ is not None


def _wrong(path: str, value: object) -> dict[str, Any]:
    data = seed_json()
    *parents, last = path.split(".")
    node: Any = data
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    node[int(last) if last.isdigit() else last] = value
    return data


#: Booking JSON with values of the wrong type (what a JSON producer can send; Avro's schema already stops most).
WRONG_TYPES = [
    ("house_bills", {"SKC26TYO0001": {}}, r"\$\.house_bills must be list, not dict"),
    ("house_bills.0", "SKC26TYO0001", r"\$\.house_bills\[0\] must be an object"),
    ("house_bills.0.goods.0.gross_mass_kg", "heavy", r"gross_mass_kg must be int or float, not str"),
    ("house_bills.0.goods.0.gross_mass_kg", True, r"gross_mass_kg must be a number, not a boolean"),
    ("house_bills.0.goods.0.packages.count", 1.5, r"packages\.count must be int, not float"),
    ("master.containers.0.seals", "JPS0098812", r"seals must be list, not str"),
    ("master.containers.0.seals.0", 42, r"seals\[0\] must be str, not int"),
    ("master.mode", "by_air", r"'by_air' is not a known mode"),
    ("master.loading_at", 20270615, r"loading_at must be str, not int"),
    ("parties.0.role", "pirate", r"'pirate' is not a known role"),
    ("parties.0.address", None, r"parties\[0\]\.address is missing"),
    ("version", True, r"\$\.version must be a number, not a boolean"),
    ("version", 100_000_000, r"\$\.version: 100000000 is not a booking version"),
    ("occurred_at", "2027-02-30T00:00:00Z", r"occurred_at: .* is not a date-time"),
    ("master.loading_at", "3000-01-01T00:00:00Z", "not a plausible date"),
]


class TestWrongTypesInBookingJson:
    @pytest.mark.parametrize(("path", "value", "reason"), WRONG_TYPES, ids=[f"{p}={v!r}" for p, v, _ in WRONG_TYPES])
    def test_from_json_names_the_field(self, path: str, value: object, reason: str):
        """A value of the wrong type or out of range is a BookingError naming the field's path."""
        with pytest.raises(BookingError, match=reason):
            Consolidation.from_json(_wrong(path, value))

    def test_the_plausible_span_includes_its_edges(self):
        """The first second of 2000 and the last one of 2999 are still accepted."""
        data = _wrong("occurred_at", "2000-01-01T00:00:00Z")
        data["master"]["loading_at"] = "2999-12-31T23:59:59Z"
        assert Consolidation.from_json(data).master.loading_at.year == 2999


class TestStagesDeadLetterHostileInput:
    @pytest.mark.parametrize("case", XML, ids=[c.name for c in XML])
    def test_notification_parser_fails_the_decode_phase_and_names_the_addressee(self, case: Hostile):
        """The parse stage turns every hostile notification into a decode failure for the addressee."""
        stage = NotificationParser(SCHEMAS, CATALOGUE, lambda: NOW)
        with pytest.raises(StageFailure) as caught:
            stage(incoming(CATALOGUE.notifications_inbound.name, case))
        assert caught.value.phase == "decode"
        assert caught.value.party == ADDRESSEE
        assert isinstance(caught.value.cause, XMLRejected)
        assert re.search(case.reason, caught.value.reason)

    @pytest.mark.parametrize("case", BOOKINGS, ids=[c.name for c in BOOKINGS])
    def test_booking_stage_fails_and_names_the_planner_when_it_is_known(self, case: Hostile):
        """Undecodable bytes name no one; a decodable but unusable booking names its planning party."""
        with pytest.raises((StageFailure, DecodeError)) as caught:
            booking_stage()(incoming(CATALOGUE.bookings.name, case))
        party = caught.value.party if isinstance(caught.value, StageFailure) else None
        assert party == case.party

    def test_unreadable_addressee_header_still_fails_cleanly(self):
        """An addressee header that is not UTF-8 does not turn a rejection into a crash."""
        case = XML[0]
        hostile = Incoming(CATALOGUE.notifications_inbound.name, 0, 1, None, case.value, (("ics2-addressee", b"\xff"),))
        with pytest.raises(StageFailure) as caught:
            NotificationParser(SCHEMAS, CATALOGUE, lambda: NOW)(hostile)
        assert caught.value.party == "\ufffd"


class TestFlaggedBookings:
    @pytest.mark.parametrize("case", FLAGGED, ids=[c.name for c in FLAGGED])
    def test_processed_with_an_alert_to_the_party_at_fault(self, case: Flagged):
        """A booking whose data is wrong but readable is planned, and its party is alerted with the rule it breaks."""
        emits = booking_stage()(Incoming(CATALOGUE.bookings.name, 0, 1, case.mbl.encode(), case.value))
        alerts = [SCHEMAS.decode(e.value).record for e in emits if e.topic == CATALOGUE.alerts.name]
        assert any(a["party_id"] == case.party and case.rule in a["message"] for a in alerts), alerts
        assert all(a["mbl"] == case.mbl for a in alerts)

    def test_planning_party_that_cannot_name_a_queue_is_alerted_on_the_shared_topic(self):
        """A planning party id no topic can carry still gets its alerts on the alerts topic, and nothing crashes."""
        data = seed_json()
        data["planning_party"] = "no such/party"
        emits = booking_stage()(Incoming(CATALOGUE.bookings.name, 0, 1, None, SCHEMAS.encode("BookingEvent", data)))
        alerts = [SCHEMAS.decode(e.value).record for e in emits if e.topic == CATALOGUE.alerts.name]
        assert [a["party_id"] for a in alerts] == ["no such/party"]
        assert not [e for e in emits if ".party." in e.topic]

    def test_a_clean_booking_raises_no_alert(self):
        """The seed itself alerts no one, so the alerts above come from the hostile change."""
        value = SCHEMAS.encode("BookingEvent", seed_json())
        emits = booking_stage()(Incoming(CATALOGUE.bookings.name, 0, 1, None, value))
        assert not [e for e in emits if e.topic == CATALOGUE.alerts.name]


class FakeProducer:
    """Stands in for the worker's producer: keeps what would be sent, knows the catalogue."""

    def __init__(self) -> None:
        self.catalogue = CATALOGUE
        self.sent: list[Emit] = []

    async def send_all(self, emits: Sequence[Emit]) -> None:
        self.sent.extend(emits)


def runner(name: str, handler: Any) -> tuple[StageRunner, FakeProducer]:
    producer = FakeProducer()
    sink = DeadLetterSink(producer, CATALOGUE.dead_letters.name, SCHEMAS)  # type: ignore[arg-type]
    return StageRunner(name, handler, producer, sink, StageStats()), producer  # type: ignore[arg-type]


class TestRunnerDeadLetters:
    async def test_every_hostile_record_gives_one_dead_letter_with_its_bytes(self):
        """Through a stage runner, each hostile record yields exactly one dead letter holding its exact bytes."""
        for topic, stage, cases in (
            (CATALOGUE.notifications_inbound.name, NotificationParser(SCHEMAS, CATALOGUE, lambda: NOW), XML),
            (CATALOGUE.bookings.name, booking_stage(), BOOKINGS),
        ):
            run, producer = runner("stage", stage)
            for offset, case in enumerate(cases):
                await run.process(incoming(topic, case, offset))
            letters = [e for e in producer.sent if e.topic == CATALOGUE.dead_letters.name]
            decoded = [DeadLetter.from_record(SCHEMAS.decode(e.value).record) for e in letters]
            assert [d.original_value for d in decoded] == [c.value for c in cases]
            assert [d.source_offset for d in decoded] == list(range(len(cases)))
            assert [d.error_class.rpartition(".")[2] for d in decoded] == [c.error.__name__ for c in cases]
            assert [d.responsible_party for d in decoded] == [c.party for c in cases]
            assert run.stats.dead_lettered["stage"] == len(cases)

    async def test_the_responsible_party_is_alerted_on_its_queue(self):
        """A dead letter that names a party also sends that party an alert on the alerts topic (which the delivery
        stage puts on its queue)."""
        case = next(c for c in BOOKINGS if c.name == "date-not-a-date")
        run, producer = runner("plan-bookings", booking_stage())
        await run.process(incoming(CATALOGUE.bookings.name, case))
        topics = sorted(e.topic for e in producer.sent)
        assert topics == sorted([CATALOGUE.dead_letters.name, CATALOGUE.alerts.name])
        alert = SCHEMAS.decode(next(e for e in producer.sent if e.topic == CATALOGUE.alerts.name).value).record
        assert alert["party_id"] == PLANNER and "next tuesday" in alert["message"]
        assert alert["action"] == "fix_and_refile"

    async def test_no_alert_when_no_party_is_known(self):
        """Bytes that name no one produce the dead letter alone."""
        case = next(c for c in BOOKINGS if c.name == "random-bytes")
        run, producer = runner("plan-bookings", booking_stage())
        await run.process(incoming(CATALOGUE.bookings.name, case))
        assert [e.topic for e in producer.sent] == [CATALOGUE.dead_letters.name]


class TestRejectionAlert:
    def test_same_input_gives_the_same_alert_id(self):
        """A replayed rejection repeats its alert id, so the party sees one alert."""
        source = Incoming("t", 1, 5, None, b"")
        first = rejection_alert("ML-TYO", stage="s", reason="r", incoming=source, now=NOW)
        again = rejection_alert("ML-TYO", stage="s", reason="other words", incoming=source, now=NOW)
        other = rejection_alert("ML-TYO", stage="s", reason="r", incoming=replace(source, offset=6), now=NOW)
        assert first.alert_id == again.alert_id != other.alert_id

    def test_party_that_cannot_name_a_queue_is_told_on_the_alerts_topic_only(self):
        """A party id no topic can carry (from a hostile header) still gets the alert on the shared topic."""
        source = Incoming("t", 0, 1, None, b"")
        alert = rejection_alert("no/such party", stage="s", reason="r", incoming=source, now=NOW)
        emits = rejection_emits(alert, CATALOGUE, SCHEMAS, source)
        assert [e.topic for e in emits] == [CATALOGUE.alerts.name]
        assert dict(emits[0].headers)["ics2-rejected"] == b"t:0:1"
