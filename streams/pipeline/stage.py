"""The one shape every stage has: an incoming Kafka message in, messages to emit out.

A stage's handler is a plain function (no Faust, no asyncio) so it is unit-tested without a broker; the engine
around it only feeds it messages, emits what it returns and routes what it cannot handle to the dead-letter topic.
Errors are handled per phase: ``decode`` and ``process`` failures of one message never stop the worker.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from streams.errors import ICS2StreamsError

Headers = tuple[tuple[str, bytes], ...]


@dataclass(frozen=True, slots=True)
class Incoming:
    """A consumed record as the stage sees it: bytes plus where it came from."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: Headers = ()
    timestamp_ms: int | None = None

    def header(self, name: str) -> bytes | None:
        return next((v for k, v in self.headers if k == name), None)

    @classmethod
    def from_record(cls, record: Any) -> Incoming:
        """From an aiokafka ``ConsumerRecord`` (key and value as bytes)."""
        return cls(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value if record.value is not None else b"",
            headers=tuple((k, v if isinstance(v, bytes) else str(v).encode()) for k, v in record.headers or ()),
            timestamp_ms=record.timestamp if record.timestamp and record.timestamp > 0 else None,
        )


@dataclass(frozen=True, slots=True)
class Emit:
    """A record a stage wants produced."""

    topic: str
    key: bytes | None
    value: bytes
    headers: Headers = field(default=())


class StageFailure(ICS2StreamsError):
    """Raised by a handler for input it will never handle; carries the phase and the party to tell."""

    def __init__(self, phase: str, reason: str, *, party: str | None = None, cause: BaseException | None = None):
        super().__init__(reason)
        self.phase = phase
        self.reason = reason
        self.party = party
        self.cause = cause


class Handler(Protocol):
    def __call__(self, message: Incoming, /) -> Sequence[Emit]: ...
