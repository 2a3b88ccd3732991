"""The dead-letter envelope: building it from a failure, and reading the original input back intact."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.contracts.avro import SchemaCatalogue
from streams.contracts.dead_letter import (
    ERROR_HEADERS,
    MAX_REASON_CHARS,
    DeadLetter,
    DeadLetterError,
    dead_letter,
    error_headers,
)
from streams.errors import BrokerUnavailable, DecodeError, UnknownSchemaError

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas" / "avro"
WHEN = datetime(2026, 11, 20, 9, 0, 1, tzinfo=UTC)


def catalogue() -> SchemaCatalogue:
    return SchemaCatalogue.load(SCHEMAS)


def through_topic(record: dict) -> DeadLetter:
    """What a reader of ics2.dead-letters gets: encode with the catalogue, decode, read back."""
    codec = catalogue()
    return DeadLetter.from_record(codec.decode(codec.encode("DeadLetter", record), reader="DeadLetter").record)


class TestDeadLetter:
    def test_record_holds_every_fact(self):
        """The record names the stage, the error, the source position, the party and the original bytes."""
        error = UnknownSchemaError("no schema with fingerprint 0102030405060708 in the catalogue")
        envelope = dead_letter(
            "decode",
            error,
            key=b"OCLU26TYO7781234",
            value=b"\xc3\x01\x01\x02\x03\x04\x05\x06\x07\x08",
            topic="ics2.bookings",
            partition=2,
            offset=41,
            headers=[("trace", b"t-1")],
            responsible_party="ML-TYO",
            failed_at=WHEN,
        )
        assert envelope.record == {
            "stage": "decode",
            "reason": "no schema with fingerprint 0102030405060708 in the catalogue",
            "error_class": "streams.errors.UnknownSchemaError",
            "retriable": False,
            "source_topic": "ics2.bookings",
            "source_partition": 2,
            "source_offset": 41,
            "original_key": b"OCLU26TYO7781234",
            "original_value": b"\xc3\x01\x01\x02\x03\x04\x05\x06\x07\x08",
            "original_headers": [{"key": "trace", "value": b"t-1"}],
            "failed_at": "2026-11-20T09:00:01Z",
            "responsible_party": "ML-TYO",
        }
        assert envelope.key == b"OCLU26TYO7781234"

    def test_headers_follow_kip_1034_names(self):
        """The Kafka headers carry exception class, message, stage, topic, partition and offset as UTF-8 text."""
        envelope = dead_letter(
            "process", ValueError("bad HS code"), key=b"k", value=b"v", topic="ics2.bookings", partition=0, offset=7
        )
        assert envelope.headers == (
            ("__streams.errors.exception", b"builtins.ValueError"),
            ("__streams.errors.exception.message", b"bad HS code"),
            ("__streams.errors.stage", b"process"),
            ("__streams.errors.topic", b"ics2.bookings"),
            ("__streams.errors.partition", b"0"),
            ("__streams.errors.offset", b"7"),
        )
        assert error_headers(envelope.headers) == {
            "__streams.errors.exception": "builtins.ValueError",
            "__streams.errors.exception.message": "bad HS code",
            "__streams.errors.stage": "process",
            "__streams.errors.topic": "ics2.bookings",
            "__streams.errors.partition": "0",
            "__streams.errors.offset": "7",
        }

    def test_original_headers_are_not_copied_onto_the_dead_letter(self):
        """Original headers stay inside the record, so a content type cannot mislabel the dead-letter value."""
        envelope = dead_letter("decode", DecodeError("x"), key=None, value=b"v", headers=[("content-type", b"xml")])
        assert {name for name, _ in envelope.headers} <= set(ERROR_HEADERS)
        assert envelope.record["original_headers"] == [{"key": "content-type", "value": b"xml"}]

    def test_without_source_position_the_position_headers_are_left_out(self):
        """A failure outside a topic read (e.g. produce) has no topic, partition or offset headers."""
        envelope = dead_letter("produce", DecodeError("x"), key=None, value=None)
        assert [name for name, _ in envelope.headers] == [
            "__streams.errors.exception",
            "__streams.errors.exception.message",
            "__streams.errors.stage",
        ]

    def test_retriable_comes_from_the_error_class(self):
        """An error the project marks retriable is recorded as such; foreign errors never are."""
        assert dead_letter("produce", BrokerUnavailable("down"), key=None, value=None).record["retriable"] is True
        assert dead_letter("produce", DecodeError("bad"), key=None, value=None).record["retriable"] is False
        assert dead_letter("produce", TimeoutError("slow"), key=None, value=None).record["retriable"] is False

    def test_long_reason_is_bounded(self):
        """A huge exception message is cut to MAX_REASON_CHARS in the record and the header."""
        envelope = dead_letter("decode", DecodeError("x" * 100_000), key=None, value=None)
        assert len(envelope.record["reason"]) == MAX_REASON_CHARS
        assert envelope.record["reason"].endswith("…")
        assert dict(envelope.headers)["__streams.errors.exception.message"] == envelope.record["reason"].encode()

    def test_stage_may_give_its_own_reason(self):
        """A reason given by the stage replaces the exception's message in the record and the header."""
        envelope = dead_letter("produce", OSError("errno 32"), key=None, value=None, reason="could not produce")
        assert envelope.record["reason"] == "could not produce"
        assert dict(envelope.headers)["__streams.errors.exception.message"] == b"could not produce"

    def test_empty_message_falls_back_to_class_name(self):
        """An exception without a message still gives a reason."""
        assert dead_letter("decode", KeyError(), key=None, value=None).record["reason"] == "KeyError"

    def test_failed_at_defaults_to_now_in_utc(self):
        """Without failed_at the dead letter is stamped with the current UTC time."""
        before = datetime.now(UTC).replace(microsecond=0)
        stamped = through_topic(dead_letter("decode", DecodeError("x"), key=None, value=None).record).failed_at
        assert before <= stamped <= datetime.now(UTC)

    def test_offset_time_is_converted_to_utc(self):
        """A failed_at in another zone is written in UTC with a Z."""
        tokyo = WHEN.astimezone(timezone(timedelta(hours=9)))
        assert dead_letter("decode", DecodeError("x"), key=None, value=None, failed_at=tokyo).record["failed_at"] == (
            "2026-11-20T09:00:01Z"
        )

    def test_headers_as_mapping_or_pairs(self):
        """Headers may come as a dict or as (key, value) pairs with bytes keys; order and duplicates are kept."""
        as_dict = dead_letter("decode", DecodeError("x"), key=None, value=None, headers={"a": b"1", "b": None})
        assert as_dict.record["original_headers"] == [{"key": "a", "value": b"1"}, {"key": "b", "value": None}]
        pairs = [(b"a", b"1"), ("a", bytearray(b"2")), ("z", memoryview(b"3"))]
        as_pairs = dead_letter("decode", DecodeError("x"), key=None, value=None, headers=pairs)
        assert as_pairs.record["original_headers"] == [
            {"key": "a", "value": b"1"},
            {"key": "a", "value": b"2"},
            {"key": "z", "value": b"3"},
        ]

    @pytest.mark.parametrize(
        ("stage", "kwargs"),
        [
            ("", {}),
            ("decode", {"partition": -1}),
            ("decode", {"offset": True}),
            ("decode", {"offset": "7"}),
            ("decode", {"key": "text key"}),
            ("decode", {"value": {"not": "bytes"}}),
            ("decode", {"headers": [("only-key",)]}),
            ("decode", {"headers": [(7, b"v")]}),
            ("decode", {"headers": [("k", "text value")]}),
            ("decode", {"failed_at": datetime(2026, 11, 20, 9, 0)}),
        ],
        ids=[
            "no stage",
            "negative partition",
            "boolean offset",
            "text offset",
            "text key",
            "dict value",
            "header without value",
            "numeric header key",
            "text header value",
            "naive failed_at",
        ],
    )
    def test_bad_facts_are_refused(self, stage: str, kwargs: dict):
        """Facts that cannot describe a Kafka input raise DeadLetterError."""
        args = {"key": None, "value": None} | kwargs
        with pytest.raises(DeadLetterError):
            dead_letter(stage, DecodeError("x"), **args)


class TestReadBack:
    def test_round_trip_through_the_codec(self):
        """A dead letter encoded as Avro reads back with every fact and the original bytes identical."""
        envelope = dead_letter(
            "render",
            BrokerUnavailable("broker did not answer"),
            key=b"\x00key",
            value=b"\xff\xfe value",
            topic="ics2.filing-drafts",
            partition=1,
            offset=2**40,
            headers=[("h", b"\x00"), ("h", None)],
            responsible_party="COLOADER-A",
            failed_at=WHEN,
        )
        back = through_topic(envelope.record)
        assert back == DeadLetter(
            stage="render",
            reason="broker did not answer",
            error_class="streams.errors.BrokerUnavailable",
            retriable=True,
            source_topic="ics2.filing-drafts",
            source_partition=1,
            source_offset=2**40,
            original_key=b"\x00key",
            original_value=b"\xff\xfe value",
            original_headers=(("h", b"\x00"), ("h", None)),
            failed_at=WHEN,
            responsible_party="COLOADER-A",
        )

    @settings(max_examples=150, deadline=None)
    @given(
        key=st.none() | st.binary(max_size=64),
        value=st.none() | st.binary(max_size=2048),
        headers=st.lists(st.tuples(st.text(max_size=20), st.none() | st.binary(max_size=32)), max_size=5),
        offset=st.none() | st.integers(0, 2**63 - 1),
        reason=st.text(max_size=300),
    )
    def test_any_input_survives_byte_for_byte(
        self, key: bytes | None, value: bytes | None, headers: list, offset: int | None, reason: str
    ):
        """Whatever bytes the failed input had, the dead letter gives them back unchanged."""
        envelope = dead_letter(
            "decode", DecodeError(reason), key=key, value=value, topic="t", partition=0, offset=offset, headers=headers
        )
        back = through_topic(envelope.record)
        assert (back.original_key, back.original_value, back.original_headers) == (key, value, tuple(headers))
        assert back.source_offset == offset
        assert back.reason == (reason or "DecodeError")

    @pytest.mark.parametrize(
        "record",
        [{}, {"stage": "decode"}, {"stage": "d", "reason": "r", "error_class": "c", "failed_at": "yesterday"}, None],
        ids=["empty", "stage only", "bad failed_at", "none"],
    )
    def test_a_non_dead_letter_is_refused(self, record: dict | None):
        """Reading something that is not a DeadLetter record raises DeadLetterError."""
        with pytest.raises(DeadLetterError):
            DeadLetter.from_record(record)  # type: ignore[arg-type]
