"""What every stage shares around its handler: the producer that waits for acknowledgements, error handling that
turns input the stage cannot handle into a dead letter, the per-stage counters, and a batch's bookkeeping.

The processing loop itself (poll, handle, produce, save, commit) is ``streams.pipeline.engine``.
"""

from __future__ import annotations

import asyncio
import inspect
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, KafkaTimeoutError, OutOfOrderSequenceNumber

from streams.errors import BrokerUnavailable, ICS2StreamsError, InputError
from streams.pipeline.dead_letters import DeadLetterSink
from streams.pipeline.stage import Emit, Handler, Incoming, StageFailure
from streams.settings import Settings
from streams.topics import DEAD_LETTER_MAX_MESSAGE_BYTES, Catalogue

log = structlog.get_logger(__name__)

#: How long one send is tried again while the broker does not answer, before the caller is told (the engine then
#: reads the batch again, later: nothing is dead-lettered or committed for a broker that is away).
PRODUCE_RETRY_S = 30.0
#: Waits between two attempts while the broker is away: capped exponential, each with up to half of it as jitter.
BACKOFF_FIRST_S = 0.5
BACKOFF_CAP_S = 10.0
#: How long a stop waits for records the producer still holds. aiokafka's own stop waits until each is delivered or
#: expires (40 s request timeout), so with the broker away SIGTERM was ignored for that long; what is not acknowledged
#: by then was never committed as processed, and is read again after the restart.
STOP_FLUSH_S = 5.0

#: A batch holds at most this many records (what one poll may bring).
BATCH_MAX_RECORDS = 500

AsyncHandler = Callable[[Incoming], Awaitable[Sequence[Emit]]]


@dataclass
class StageStats:
    """Per-stage counters: what came in, what went out, what went to the dead-letter topic.

    The balance: every record consumed ends with outputs (``with_output``), with none (``without_output``: a
    duplicate suppressed, a notification parked, an alert kept for a queue to come) or as a dead letter, so
    ``consumed == with_output + without_output + dead_lettered`` per stage (records read again after a failed batch
    count again)."""

    consumed: Counter[str] = field(default_factory=Counter)
    emitted: Counter[str] = field(default_factory=Counter)
    dead_lettered: Counter[str] = field(default_factory=Counter)
    with_output: Counter[str] = field(default_factory=Counter)
    without_output: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "consumed": dict(self.consumed),
            "emitted": dict(self.emitted),
            "dead_lettered": dict(self.dead_lettered),
            "with_output": dict(self.with_output),
            "without_output": dict(self.without_output),
        }


def broker_away(exc: BaseException) -> bool:
    """Whether an error says the broker or a partition leader does not answer now, so that sending later can work.

    aiokafka marks a request that timed out as not retriable, but with the broker restarting or frozen that is
    exactly what a timeout means; a record too large or a closed producer stays final. An out-of-order sequence
    number is what an outage leaves behind in an idempotent producer (``Producer._replace``): a new one can send.
    """
    if isinstance(exc, BrokerUnavailable | KafkaTimeoutError | OutOfOrderSequenceNumber):
        return True
    return isinstance(exc, KafkaError) and bool(exc.retriable)


def backoff(attempt: int, first: float = BACKOFF_FIRST_S, cap: float = BACKOFF_CAP_S) -> float:
    """The wait before attempt ``attempt + 1``: doubling from ``first`` up to ``cap``, plus up to half as jitter, so
    that workers and clients that lost the broker together do not all come back in the same instant."""
    base = min(cap, first * 2.0 ** min(attempt, 30))
    return base + random.uniform(0, base / 2)


class Producer:
    """Sends records with its own idempotent aiokafka producer (``acks=all``) and waits for every acknowledgement."""

    def __init__(self, settings: Settings, catalogue: Catalogue) -> None:
        self.settings = settings
        self.catalogue = catalogue
        self._kafka: AIOKafkaProducer | None = None
        self._starting = asyncio.Lock()
        self._retired: set[asyncio.Task[None]] = set()
        self.stopping = False
        """Set when the worker stops: a send waiting for the broker gives up at once instead of retrying."""

    async def _producer(self) -> AIOKafkaProducer:
        async with self._starting:
            if self._kafka is None:
                producer = AIOKafkaProducer(
                    acks="all",
                    enable_idempotence=True,
                    # A batch's outputs are handed over together, so no record needs to linger for others.
                    linger_ms=0,
                    max_request_size=DEAD_LETTER_MAX_MESSAGE_BYTES,
                    **self.settings.kafka_client_kwargs(),
                )
                await producer.start()
                self._kafka = producer
        return self._kafka

    async def stop(self) -> None:
        self.stopping = True
        if self._kafka is not None:
            kafka, self._kafka = self._kafka, None
            try:
                await asyncio.wait_for(kafka.stop(), STOP_FLUSH_S)
            except TimeoutError:
                log.warning("producer_stopped_unflushed", waited_s=STOP_FLUSH_S)

    def _replace(self, broken: AIOKafkaProducer) -> None:
        """Retire a producer the broker refuses with an out-of-order sequence number; the next send starts a new one.

        Why: aiokafka numbers a batch when it first sends it and does not take the number back when it gives the
        batch up (expired while the broker was away), so after an outage every later batch to that partition leaves
        a gap and is refused, for good (aio-libs/aiokafka#1017); the stages dead-lettered everything they sent. A
        new producer has a new producer id and numbers from 0. Sends in flight on the old one end there (and are
        sent again by their callers); it is closed in the background.
        """
        kafka = self._kafka
        if kafka is None or kafka is not broken:
            return
        self._kafka = None
        log.warning("producer_replaced", reason="out-of-order sequence number after an outage")
        closing = asyncio.create_task(kafka.stop())
        self._retired.add(closing)
        closing.add_done_callback(self._retired.discard)

    async def send_all(self, emits: Sequence[Any]) -> None:
        """Send and wait until the broker has acknowledged every record (at-least-once needs it).

        ``emits`` are ``Emit``s or ``ChangelogRecord``s (which name their partition and may be tombstones). While
        the broker does not answer (a restart, a partition without a leader) the whole lot is sent again, with
        backoff, for up to ``PRODUCE_RETRY_S``; then the error goes to the caller. Records acknowledged before the
        failure are repeated; consumers deduplicate them by their ids.
        """
        if not emits:
            return
        deadline = time.monotonic() + PRODUCE_RETRY_S
        attempt = 0
        while True:
            try:
                await self._send_once(emits)
                return
            except Exception as exc:
                if not broker_away(exc) or self.stopping or time.monotonic() >= deadline:
                    raise
                delay = backoff(attempt)
                attempt += 1
                log.warning("produce_retry", error=repr(exc), attempt=attempt, delay_s=round(delay, 2))
                await asyncio.sleep(delay)

    async def _send_once(self, emits: Sequence[Any]) -> None:
        producer = await self._producer()
        pending = [
            await producer.send(
                e.topic, value=e.value, key=e.key, headers=list(e.headers), partition=getattr(e, "partition", None)
            )
            for e in emits
        ]
        try:
            await asyncio.gather(*pending)
        except OutOfOrderSequenceNumber:
            self._replace(producer)
            raise


async def skip_when_broker_away(timer: str, look: Callable[[], Awaitable[object]]) -> bool:
    """Run one look of a timer; False, and a warning, when the broker does not answer meanwhile.

    Why: an exception that escapes a Faust timer crashes the whole worker, and a broker restart or a partition
    without a leader for a few seconds is no reason to stop. The timer simply looks again at its next tick.
    """
    try:
        await look()
    except (KafkaError, BrokerUnavailable) as exc:
        log.warning("timer_look_skipped", timer=timer, error=repr(exc))
        return False
    return True


class BatchHooks(Protocol):
    """What a handler that keeps state for the batch in flight may add (``streams.pipeline.stages.audit``)."""

    def acknowledged(self) -> None:
        """Every output of the records handled so far is acknowledged: state held back may be stored now."""

    def abandoned(self) -> None:
        """The batch in flight will not be acknowledged: forget state held back for it."""


@dataclass(frozen=True)
class BatchPolicy:
    """How big a stage's batch may grow: what one poll brings, up to ``max_records``.

    ``linger_s``: after a poll brought records, wait this long for more before handling them. For stages whose
    outputs nobody waits for (the audit trail): fewer, fuller batches mean fewer produce requests, commits and
    changelog writes per record, and more of the core for the stages that alert a party.
    """

    max_records: int = BATCH_MAX_RECORDS
    linger_s: float = 0.0


@dataclass
class Batch:
    """Consumed records, in order, with what each must produce before it may be acknowledged.

    ``tokens`` are what the caller acknowledges (Faust events in the worker); ``inputs`` the records as the
    stage saw them, kept to dead-letter one whose outputs the broker refuses.
    """

    opened_at: float = 0.0
    """``time.monotonic()`` when the first record came in."""
    tokens: list[Any] = field(default_factory=list)
    inputs: list[Incoming] = field(default_factory=list)
    outputs: list[list[Emit]] = field(default_factory=list)
    emit_count: int = 0

    def add(self, token: Any, incoming: Incoming, emits: Sequence[Emit]) -> None:
        if not self.tokens:
            self.opened_at = time.monotonic()
        self.tokens.append(token)
        self.inputs.append(incoming)
        self.outputs.append(list(emits))
        self.emit_count += len(emits)

    def emits(self) -> list[Emit]:
        """Every output, in the order of the inputs, so that each key's records keep their order."""
        return [emit for emits in self.outputs for emit in emits]

    def __len__(self) -> int:
        return len(self.tokens)


Ack = Callable[[Any], Awaitable[object]]


class StageRunner:
    """One stage's error handling and bookkeeping, shared by every stage.

    Records are handled one by one (the domain needs each one's table writes before the next) and their outputs
    collected in a ``Batch``; ``flush`` sends the batch's outputs together, waits for every acknowledgement once,
    and only then acknowledges the inputs, in order.
    """

    def __init__(
        self,
        name: str,
        handler: Handler | AsyncHandler,
        producer: Producer,
        dead_letters: DeadLetterSink,
        stats: StageStats,
    ) -> None:
        self.name = name
        self.handler = handler
        self.producer = producer
        self.dead_letters = dead_letters
        self.stats = stats

    async def process(self, incoming: Incoming) -> None:
        """Handle one record and send its outputs (a batch of one); never raises for bad input."""
        batch = Batch()
        batch.add(None, incoming, await self.handle(incoming))
        await self.flush(batch)

    async def handle(self, incoming: Incoming) -> list[Emit]:
        """The record's outputs, or its dead letter when it cannot be handled; raises only for retriable errors."""
        self.stats.consumed[self.name] += 1
        with structlog.contextvars.bound_contextvars(
            stage=self.name, topic=incoming.topic, partition=incoming.partition, offset=incoming.offset
        ):
            try:
                result = self.handler(incoming)
                emits = list(await result if inspect.isawaitable(result) else result)
                (self.stats.with_output if emits else self.stats.without_output)[self.name] += 1
                return emits
            except StageFailure as exc:
                return self._dead_letter(incoming, exc.phase, exc.reason, exc.cause or exc, exc.party)
            except InputError as exc:
                return self._dead_letter(incoming, "decode", str(exc), exc, None)
            except ICS2StreamsError as exc:
                if exc.retriable:
                    raise
                return self._dead_letter(incoming, "process", str(exc), exc, None)
            except Exception as exc:
                log.exception("stage_bug", error=repr(exc))
                return self._dead_letter(incoming, "process", f"unexpected error: {exc!r}", exc, None)

    async def flush(self, batch: Batch, ack: Ack | None = None) -> None:
        """Send the batch's outputs, wait until the broker acknowledged all of them, then acknowledge the inputs.

        If the broker refuses the batch for good (a record too large), each record's outputs are sent on their own
        and a record whose outputs are still refused is dead-lettered (phase ``produce``); whatever was acknowledged
        before is repeated, which consumers deduplicate by id. A broker that is away is no reason to dead-letter
        anything: that error escapes, and leaves every input of the batch unacknowledged, to be read again.
        """
        if not batch:
            return
        try:
            try:
                await self.producer.send_all(batch.emits())
            except Exception as exc:
                if broker_away(exc) or getattr(self.producer, "stopping", False):
                    raise
                log.warning("batch_produce_failed", stage=self.name, records=len(batch), error=repr(exc))
                await self._one_by_one(batch)
        except BaseException:
            self._hook("abandoned")
            raise
        self._hook("acknowledged")
        self.stats.emitted[self.name] += batch.emit_count
        if ack is not None:
            for token in batch.tokens:
                await ack(token)

    async def _one_by_one(self, batch: Batch) -> None:
        for index, (incoming, emits) in enumerate(zip(batch.inputs, batch.outputs, strict=True)):
            try:
                await self.producer.send_all(emits)
            except Exception as exc:
                if broker_away(exc) or getattr(self.producer, "stopping", False):
                    raise
                with structlog.contextvars.bound_contextvars(
                    stage=self.name, topic=incoming.topic, partition=incoming.partition, offset=incoming.offset
                ):
                    log.exception("produce_failed", error=repr(exc))
                    letters = self._dead_letter(
                        incoming, "produce", f"could not produce the result: {exc!r}", exc, None
                    )
                await self.producer.send_all(letters)
                batch.emit_count += len(letters) - len(emits)
                batch.outputs[index] = letters

    def _hook(self, name: str) -> None:
        hook = getattr(self.handler, name, None)
        if callable(hook):
            hook()

    def _dead_letter(
        self, incoming: Incoming, phase: str, reason: str, exc: BaseException, party: str | None
    ) -> list[Emit]:
        self.stats.dead_lettered[self.name] += 1
        if incoming.topic == self.dead_letters.topic:
            # A dead letter is already kept, with its bytes and reason, where it is: one that cannot be handled is
            # not dead-lettered again onto the topic it came from, which would loop.
            log.error("dead_letter_not_handled", phase=phase, reason=reason, party=party)
            return []
        log.warning("dead_letter", phase=phase, reason=reason, party=party)
        return self.dead_letters.emits(
            stage=self.name, phase=phase, reason=reason, exc=exc, incoming=incoming, party=party
        )
