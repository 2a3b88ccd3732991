"""Runs a stage inside a Faust agent: feed it records, emit what it returns, dead-letter what it cannot handle.

Processing guarantee: at-least-once. Records are handled one by one and their outputs collected per batch (what one
poll brought, within bounds); a batch's outputs (and dead letters) are sent together and every one is acknowledged
by the broker before any record of the batch is acknowledged, in order. Agents run with concurrency 1 so that
Faust never commits an offset past a record that is still in flight (faust-streaming issue 606). Replays after a
crash can repeat outputs; every output carries a deterministic message id so that consumers deduplicate.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import faust
import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, KafkaTimeoutError

from streams.admin import list_topics
from streams.errors import BrokerUnavailable, ICS2StreamsError, InputError
from streams.pipeline.dead_letters import DeadLetterSink
from streams.pipeline.stage import Emit, Handler, Incoming, StageFailure
from streams.settings import Settings
from streams.topics import DEAD_LETTER_MAX_MESSAGE_BYTES, Catalogue

log = structlog.get_logger(__name__)

#: How often, at most, the list of onboarded party queues is read again when an alert names an unknown one.
QUEUE_REFRESH_S = 10.0
#: How long a stage's outputs are sent again while the broker does not answer, before the record is dead-lettered.
PRODUCE_RETRY_S = 120.0
#: Waits between two attempts; the last one repeats.
PRODUCE_BACKOFF_S = (0.5, 1.0, 2.0, 5.0)

#: A batch is sent once it holds this many records, or this many outputs, or is this old, even with more waiting.
BATCH_MAX_RECORDS = 500
BATCH_MAX_EMITS = 5000
BATCH_MAX_AGE_S = 0.05
#: A stage under load (its batch opened this soon after its last send) waits this long for more records.
BUSY_GAP_S = 0.005
BUSY_LINGER_S = 0.002
#: A stage working through a backlog lets the others run at least this often.
YIELD_EVERY_S = 0.002

AsyncHandler = Callable[[Incoming], Awaitable[Sequence[Emit]]]


@dataclass
class StageStats:
    """Per-stage counters: what came in, what went out, what went to the dead-letter topic."""

    consumed: Counter[str] = field(default_factory=Counter)
    emitted: Counter[str] = field(default_factory=Counter)
    dead_lettered: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "consumed": dict(self.consumed),
            "emitted": dict(self.emitted),
            "dead_lettered": dict(self.dead_lettered),
        }


def broker_away(exc: BaseException) -> bool:
    """Whether an error says the broker or a partition leader does not answer now, so that sending later can work.

    aiokafka marks a request that timed out as not retriable, but with the broker restarting or frozen that is
    exactly what a timeout means; a record too large or a closed producer stays final.
    """
    if isinstance(exc, BrokerUnavailable | KafkaTimeoutError):
        return True
    return isinstance(exc, KafkaError) and bool(exc.retriable)


class Producer:
    """Sends ``Emit``s with its own idempotent aiokafka producer and waits for every acknowledgement.

    Stage outputs do not go through Faust's buffered producer: after a restart with table recovery, Faust's
    buffer was seen to stop draining (agents blocked on sends that never completed). Table changelogs still go
    through Faust.
    """

    def __init__(self, app: faust.App, settings: Settings, catalogue: Catalogue) -> None:
        self.app = app
        self.settings = settings
        self.catalogue = catalogue
        self._kafka: AIOKafkaProducer | None = None
        self._starting = asyncio.Lock()
        self._queues_known: set[str] = set()
        self._queues_listed_at = -QUEUE_REFRESH_S
        self._queue_prefix = catalogue.party_queue("x").name.removesuffix("x.queue")
        # mode types a receiver as an unbound function of the sender; a bound method is what it calls in practice.
        app.on_before_shutdown.connect(self._on_shutdown)  # type: ignore[arg-type]

    def topic(self, name: str) -> faust.TopicT:
        """The Faust topic an agent consumes (raw bytes in, decoded by the stage)."""
        return self.app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")

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

    async def _on_shutdown(self, app: faust.App, **kwargs: object) -> None:
        if self._kafka is not None:
            await self._kafka.stop()
            self._kafka = None

    async def _onboarded(self, emits: Sequence[Emit]) -> list[Emit]:
        """Drop records for party queues that do not exist: parties are onboarded with ``ics2 topics apply --party``.

        The worker never creates topics on the hot path (producing to a topic created a moment before was seen to
        stall the producer), and needs no right to create them. The alert itself is on the alerts topic anyway.
        """
        queued = [e for e in emits if e.topic.startswith(self._queue_prefix)]
        if not queued:
            return list(emits)
        now = time.monotonic()
        if any(e.topic not in self._queues_known for e in queued) and now - self._queues_listed_at > QUEUE_REFRESH_S:
            self._queues_known = set(await list_topics(self.settings, self._queue_prefix))
            self._queues_listed_at = now
        missing = {e.topic for e in queued if e.topic not in self._queues_known}
        for topic in sorted(missing):
            log.warning("party_not_onboarded", queue=topic)
        return [e for e in emits if e.topic not in missing]

    async def send_all(self, emits: Sequence[Emit]) -> None:
        """Send and wait until the broker has acknowledged every record (at-least-once needs it).

        While the broker does not answer (a restart, a partition without a leader) the whole batch is sent again,
        for up to ``PRODUCE_RETRY_S``: dead-lettering it would lose the outputs of a record that is fine. Records
        acknowledged before the failure are repeated; consumers deduplicate them by their ids.
        """
        if not emits:
            return
        deadline = time.monotonic() + PRODUCE_RETRY_S
        for attempt in itertools.count():
            try:
                await self._send_once(emits)
                return
            except Exception as exc:
                if not broker_away(exc) or time.monotonic() >= deadline:
                    raise
                delay = PRODUCE_BACKOFF_S[min(attempt, len(PRODUCE_BACKOFF_S) - 1)]
                log.warning("produce_retry", error=repr(exc), attempt=attempt + 1, delay_s=delay)
                await asyncio.sleep(delay)

    async def _send_once(self, emits: Sequence[Emit]) -> None:
        emits = await self._onboarded(emits)
        producer = await self._producer()
        pending = [await producer.send(e.topic, value=e.value, key=e.key, headers=list(e.headers)) for e in emits]
        await asyncio.gather(*pending)


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


@dataclass
class BatchPolicy:
    """When a batch is sent: as soon as no record waits behind it, or when it is full, or when it is old.

    ``linger_s``: when no record waits, wait this long (from the batch's first record) for more before sending.
    For stages whose outputs nobody waits for (the audit trail): fewer, fuller batches mean fewer produce requests,
    commits and table writes per record, and more of the core left to the stages that alert a party.
    """

    max_records: int = BATCH_MAX_RECORDS
    max_emits: int = BATCH_MAX_EMITS
    max_age_s: float = BATCH_MAX_AGE_S
    linger_s: float = 0.0
    busy_linger_s: float = BUSY_LINGER_S
    """The linger of a stage under load: its batch opened soon after the previous one was sent."""
    busy_gap_s: float = BUSY_GAP_S

    def full(self, batch: Batch) -> bool:
        return len(batch.tokens) >= self.max_records or batch.emit_count >= self.max_emits

    def linger(self, batch: Batch, waiting: bool, now: float, last_flush: float = float("-inf")) -> float:
        """How long to wait for more records before deciding whether the batch is due; 0 to decide now.

        Faust hands a stage one record per turn of the event loop, so "nothing waits" is seen after almost every
        record even in a backlog, and batches stayed at one record (measured). A stage whose batch opened within
        ``busy_gap_s`` of its last send is under load: it lingers ``busy_linger_s`` for the records already
        fetched. A record after a quiet spell goes out at once.
        """
        if waiting or not batch.tokens or self.full(batch):
            return 0.0
        linger = self.linger_s
        if batch.opened_at - last_flush < self.busy_gap_s:
            linger = max(linger, self.busy_linger_s)
        return max(0.0, linger - (now - batch.opened_at))

    def due(self, batch: Batch, waiting: bool, now: float) -> bool:
        if not batch.tokens:
            return False
        return not waiting or self.full(batch) or now - batch.opened_at >= self.max_age_s


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
    """One stage's error handling and bookkeeping, shared by every agent.

    Records are handled one by one as they arrive (the domain needs each one's table writes before the next) and
    their outputs collected in a ``Batch``; ``flush`` sends the batch's outputs together, waits for every
    acknowledgement once, and only then acknowledges the inputs, in order.
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
                return list(await result if inspect.isawaitable(result) else result)
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

        If the batch as a whole fails for good, each record's outputs are sent on their own and a record whose
        outputs still fail is dead-lettered (phase ``produce``); whatever was acknowledged before is repeated,
        which consumers deduplicate by id. An error that escapes leaves every input of the batch unacknowledged.
        """
        if not batch:
            return
        try:
            try:
                await self.producer.send_all(batch.emits())
            except Exception as exc:
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
        log.warning("dead_letter", phase=phase, reason=reason, party=party)
        return self.dead_letters.emits(
            stage=self.name, phase=phase, reason=reason, exc=exc, incoming=incoming, party=party
        )


def waiting(stream: Any) -> bool:
    """Whether records already wait in the stream's buffer (the rest of the poll), so that the batch may grow."""
    queue = getattr(getattr(stream, "channel", None), "queue", None)
    return queue is not None and not queue.empty()


def add_stage(
    app: faust.App,
    *,
    name: str,
    source: str,
    handler: Handler | AsyncHandler,
    producer: Producer,
    dead_letters: DeadLetterSink,
    stats: StageStats,
    policy: BatchPolicy | None = None,
) -> StageRunner:
    """Register an agent called ``name`` that runs ``handler`` on every record of the ``source`` topic, in batches."""
    runner = StageRunner(name, handler, producer, dead_letters, stats)
    policy = policy or BatchPolicy()
    topic = producer.topic(source)

    async def agent(stream: faust.StreamT[bytes]) -> None:
        # Faust would acknowledge each event when the next one is taken; here a batch's events are acknowledged
        # only once every output of the batch is (``StageRunner.flush``).
        stream.enable_acks = False
        batch = Batch()
        yielded_at = time.monotonic()
        flushed_at = float("-inf")
        async for event in stream.events():
            incoming = Incoming.from_faust(event.message)
            try:
                emits = await runner.handle(incoming)
            except BaseException:
                await runner.flush(batch, stream.ack)
                raise
            batch.add(event, incoming, emits)
            pause = policy.linger(batch, waiting(stream), time.monotonic(), flushed_at)
            if pause:
                await asyncio.sleep(pause)
            now = time.monotonic()
            if policy.due(batch, waiting(stream), now):
                await runner.flush(batch, stream.ack)
                batch = Batch()
                yielded_at = flushed_at = time.monotonic()
            elif now - yielded_at >= YIELD_EVERY_S:
                # Taking a buffered record does not yield to the event loop: without this, a stage working
                # through a backlog would hold every other stage (and the notifications' latency) until its
                # batch is full. Once per record was measured to cost a loop turn (and a select) per record.
                await asyncio.sleep(0)
                yielded_at = time.monotonic()

    agent.__name__ = agent.__qualname__ = name.replace("-", "_")
    app.agent(topic, name=name, concurrency=1)(agent)
    return runner
