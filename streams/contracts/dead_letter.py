"""The dead-letter envelope: what a stage writes when it gives up on an input, and how to read it back.

A stage that cannot decode, process or produce an input sends it to ``ics2.dead-letters`` instead of stopping the
partition. The value is a ``DeadLetter`` Avro record holding the input's key, value and headers byte for byte
(so it can be inspected and replayed), plus where it came from and why it failed. The same facts go into Kafka
headers named as Kafka Streams names them for its dead-letter queue (KIP-1034, ``__streams.errors.*``), so generic
tooling can filter dead letters without decoding Avro.

The original headers are kept inside the record, not copied onto the dead-letter message: a header such as a
content type describes the original value, and would mislabel the ``DeadLetter`` value it travelled with.

Pure: no Kafka client, no Avro codec; ``SchemaCatalogue.encode("DeadLetter", envelope.record)`` writes the value.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from streams.domain.dates import format_datetime, parse_datetime
from streams.errors import BookingError, ICS2StreamsError, InputError

HEADER_EXCEPTION = "__streams.errors.exception"
HEADER_MESSAGE = "__streams.errors.exception.message"
HEADER_STAGE = "__streams.errors.stage"
HEADER_TOPIC = "__streams.errors.topic"
HEADER_PARTITION = "__streams.errors.partition"
HEADER_OFFSET = "__streams.errors.offset"
ERROR_HEADERS = (HEADER_EXCEPTION, HEADER_MESSAGE, HEADER_STAGE, HEADER_TOPIC, HEADER_PARTITION, HEADER_OFFSET)

MAX_REASON_CHARS = 4000
"""An exception message is cut to this length: a parser quoting a megabyte of input must not bloat the topic."""

Header = tuple[str, bytes | None]
Headers = Iterable[tuple[str | bytes, bytes | bytearray | memoryview | None]] | Mapping[str, bytes | None]


class DeadLetterError(InputError):
    """A dead letter that cannot be built from the given facts, or a record that is not a dead letter."""


@dataclass(frozen=True, slots=True)
class DeadLetterEnvelope:
    """What goes to the dead-letter topic: the original key as the key, the ``DeadLetter`` record, error headers."""

    key: bytes | None
    record: dict[str, Any]
    headers: tuple[tuple[str, bytes], ...]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A dead letter read back: the failed input exactly as it was read, and why it failed."""

    stage: str
    reason: str
    error_class: str
    retriable: bool
    source_topic: str | None
    source_partition: int | None
    source_offset: int | None
    original_key: bytes | None
    original_value: bytes | None
    original_headers: tuple[Header, ...]
    failed_at: datetime
    responsible_party: str | None

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> DeadLetter:
        """The inverse of ``dead_letter``: read a decoded ``DeadLetter`` record."""
        try:
            return cls(
                stage=record["stage"],
                reason=record["reason"],
                error_class=record["error_class"],
                retriable=bool(record.get("retriable", False)),
                source_topic=record.get("source_topic"),
                source_partition=record.get("source_partition"),
                source_offset=record.get("source_offset"),
                original_key=record.get("original_key"),
                original_value=record.get("original_value"),
                original_headers=tuple((h["key"], h.get("value")) for h in record.get("original_headers", ())),
                failed_at=parse_datetime(record["failed_at"], "$.failed_at"),
                responsible_party=record.get("responsible_party"),
            )
        except (KeyError, TypeError, AttributeError, BookingError) as exc:
            raise DeadLetterError(f"not a DeadLetter record: {exc!r}") from exc


def dead_letter(
    stage: str,
    error: BaseException,
    *,
    key: bytes | None,
    value: bytes | None,
    topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
    headers: Headers = (),
    responsible_party: str | None = None,
    failed_at: datetime | None = None,
    reason: str | None = None,
) -> DeadLetterEnvelope:
    """Build the dead letter of an input that ``stage`` could not handle because of ``error``.

    ``reason`` replaces the exception's message when the stage can say more plainly what went wrong.
    """
    if not isinstance(stage, str) or not stage:
        raise DeadLetterError("a dead letter needs the name of the stage that failed")
    for name, number in (("partition", partition), ("offset", offset)):
        if number is not None and (isinstance(number, bool) or not isinstance(number, int) or number < 0):
            raise DeadLetterError(f"source {name} must be a non-negative integer, not {number!r}")
    when = datetime.now(UTC) if failed_at is None else failed_at
    if when.tzinfo is None:
        raise DeadLetterError("failed_at must carry a time zone")
    error_class = f"{type(error).__module__}.{type(error).__qualname__}"
    reason = _bounded(reason or str(error) or type(error).__name__)
    record: dict[str, Any] = {
        "stage": stage,
        "reason": reason,
        "error_class": error_class,
        "retriable": bool(getattr(error, "retriable", False)) if isinstance(error, ICS2StreamsError) else False,
        "source_topic": topic,
        "source_partition": partition,
        "source_offset": offset,
        "original_key": _bytes(key, "key"),
        "original_value": _bytes(value, "value"),
        "original_headers": [{"key": k, "value": v} for k, v in _headers(headers)],
        "failed_at": format_datetime(when),
        "responsible_party": responsible_party,
    }
    error_headers = [
        (HEADER_EXCEPTION, error_class),
        (HEADER_MESSAGE, reason),
        (HEADER_STAGE, stage),
        (HEADER_TOPIC, topic),
        (HEADER_PARTITION, None if partition is None else str(partition)),
        (HEADER_OFFSET, None if offset is None else str(offset)),
    ]
    return DeadLetterEnvelope(
        key=record["original_key"],
        record=record,
        headers=tuple((name, text.encode("utf-8")) for name, text in error_headers if text is not None),
    )


def error_headers(headers: Headers) -> dict[str, str]:
    """The ``__streams.errors.*`` headers of a dead-letter message as text, for tools that do not decode Avro."""
    return {
        k: v.decode("utf-8", errors="replace") for k, v in _headers(headers) if k in ERROR_HEADERS and v is not None
    }


def _bounded(text: str) -> str:
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 1] + "…"


def _bytes(data: bytes | bytearray | memoryview | None, what: str) -> bytes | None:
    if data is None:
        return None
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DeadLetterError(f"the original {what} must be bytes as read from Kafka, not {type(data).__name__}")
    return bytes(data)


def _headers(headers: Headers) -> list[Header]:
    """Kafka headers as (text key, bytes or None) pairs in their order; clients hand them over as pairs or a dict."""
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    normalised: list[Header] = []
    for pair in pairs:
        try:
            k, v = pair
        except (TypeError, ValueError) as exc:
            raise DeadLetterError(f"a header is a (key, value) pair, not {pair!r}") from exc
        key = k.decode("utf-8", errors="replace") if isinstance(k, bytes | bytearray) else k
        if not isinstance(key, str):
            raise DeadLetterError(f"header key {k!r} is not text")
        normalised.append((key, _bytes(v, f"header {key!r}")))
    return normalised
