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
from aiokafka.errors import KafkaError, KafkaTimeoutError, OutOfOrderSequenceNumber, ProducerClosed

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
#: How long one request may take, and how long aiokafka holds a record for a partition without a known leader before
#: it fails it (its request timeout is both; 40 s by default). While the broker is away, a producer holding such
#: records asks for metadata in a loop without backoff until they expire (aiokafka 0.14's sender): a third of a core
#: or more, for that long. ``send_all`` tries again within its budget, on a new producer.
REQUEST_TIMEOUT_S = 10.0
#: How long a new producer may take to start (bootstrap, a producer id) before the attempt counts as failed.
START_WAIT_S = 10.0
#: How long a stop waits for records the producer still holds. aiokafka's own stop waits until each is delivered or
#: given up, and an idempotent producer never gives up a record it has sent once, so with the broker away SIGTERM was
#: ignored; what is not acknowledged by then was never committed as processed, and is read again after the restart.
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
    number is what an outage leaves behind in an idempotent producer (``Producer._retire``): a new one can send.
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
    """Sends records with its own idempotent aiokafka producer (``acks=all``) and waits for every acknowledgement.

    The aiokafka producer is started when a send needs one and retired when a send on it fails because the broker is
    away or refuses it for good (``_retire``); the next attempt starts a new one, and that start failing at once is
    how a broker still away is noticed, without a client left trying it in a loop. ``options`` replace aiokafka
    options of the default (the simulator's snapshots are gzipped and larger than a record).
    """

    def __init__(self, settings: Settings, catalogue: Catalogue, **options: Any) -> None:
        self.settings = settings
        self.catalogue = catalogue
        self.options = options
        self._kafka: AIOKafkaProducer | None = None
        self._starting = asyncio.Lock()
        self._retired: set[asyncio.Task[None]] = set()
        self.stopping = False
        """Set when the worker stops: a send waiting for the broker gives up at once instead of retrying."""

    async def _producer(self) -> AIOKafkaProducer:
        async with self._starting:
            if self._kafka is None:
                if self.stopping:
                    raise ProducerClosed()
                self._kafka = await self._start_kafka()
        return self._kafka

    async def _start_kafka(self) -> AIOKafkaProducer:
        """A started aiokafka producer; ``BrokerUnavailable`` when the broker does not give it a start in time."""
        options: dict[str, Any] = {
            "acks": "all",
            "enable_idempotence": True,
            # A batch's outputs are handed over together, so no record needs to linger for others.
            "linger_ms": 0,
            "max_request_size": DEAD_LETTER_MAX_MESSAGE_BYTES,
            "request_timeout_ms": int(REQUEST_TIMEOUT_S * 1000),
            **self.settings.kafka_client_kwargs(),
            **self.options,
        }
        producer = AIOKafkaProducer(**options)
        try:
            await asyncio.wait_for(producer.start(), START_WAIT_S)
        except BaseException as exc:
            self._close_in_background(producer)
            if isinstance(exc, TimeoutError):
                raise BrokerUnavailable(f"no producer could start within {START_WAIT_S:.0f} s") from exc
            raise
        return producer

    async def stop(self) -> None:
        """Stop sending. Records the running producer still holds are waited for at most ``STOP_FLUSH_S``: aiokafka's
        stop waits until each is delivered, and would make SIGTERM wait for a broker that is away. Retired producers
        are not waited for beyond that: what they hold was given up by its callers (sent again, or read again after
        the restart, since it was never committed as processed)."""
        self.stopping = True
        if self._kafka is not None:
            kafka, self._kafka = self._kafka, None
            closing = asyncio.ensure_future(kafka.stop())
            done, _ = await asyncio.wait({closing}, timeout=STOP_FLUSH_S)
            if not done:
                log.warning("producer_stopped_unflushed", waited_s=STOP_FLUSH_S)
                closing.cancel()
        for retired in list(self._retired):
            if not retired.done():
                retired.cancel()

    async def partitions_for(self, topic: str) -> set[int]:
        """The topic's partition numbers, as the broker's metadata has them."""
        producer = await self._producer()
        return set(await producer.partitions_for(topic))

    def _retire(self, broken: AIOKafkaProducer, reason: str) -> None:
        """Retire the producer a send failed on; the next send starts a new one.

        Why, for an out-of-order sequence number: aiokafka numbers a batch when it first sends it and does not take
        the number back when it gives the batch up (expired while the broker was away), so after an outage every
        later batch to that partition leaves a gap and is refused, for good (aio-libs/aiokafka#1017); the stages
        dead-lettered everything they sent. A new producer has a new producer id and numbers from 0.

        Why, for a broker away: the producer would keep the numbers of the batches it gives up (the refusal above,
        once the broker is back), and while it holds records for a partition whose leader it no longer knows its
        sender asks for metadata in a loop without backoff (``REQUEST_TIMEOUT_S``). Until a send is tried again no
        producer is running, and a new one fails to start at once while the broker is still away.

        Sends in flight on the old one end there (their callers send again); it is closed in the background, once
        it has delivered or given up the records it holds.
        """
        if broken is not self._kafka:
            return
        self._kafka = None
        log.warning("producer_retired", reason=reason)
        self._close_in_background(broken)

    def _close_in_background(self, kafka: AIOKafkaProducer) -> None:
        closing = asyncio.ensure_future(kafka.stop())
        self._retired.add(closing)
        closing.add_done_callback(self._closed)

    def _closed(self, task: asyncio.Future[None]) -> None:
        self._retired.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("retired_producer_stop_failed", error=repr(task.exception()))

    async def send_all(self, emits: Sequence[Any], retry_s: float | None = None) -> None:
        """Send and wait until the broker has acknowledged every record (at-least-once needs it).

        ``emits`` are ``Emit``s or ``ChangelogRecord``s (which name their partition and may be tombstones). While
        the broker does not answer (a restart, a partition without a leader) the whole lot is sent again, with
        backoff, for up to ``retry_s`` (``PRODUCE_RETRY_S``; 0: one attempt, for a caller with its own backoff);
        then the error goes to the caller. Records acknowledged before the failure are repeated; consumers
        deduplicate them by their ids.
        """
        if not emits:
            return
        deadline = time.monotonic() + (PRODUCE_RETRY_S if retry_s is None else retry_s)
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
        """One attempt: every record handed over, then every acknowledgement awaited; the first failure raised.

        Every record's future is awaited, or its outcome retrieved once it ends, even when a send fails half way:
        asyncio otherwise logs each failed one ("Future exception was never retrieved") while the broker is away.
        """
        producer = await self._producer()
        pending: list[asyncio.Future[Any]] = []
        try:
            for e in emits:
                sent = await producer.send(
                    e.topic, value=e.value, key=e.key, headers=list(e.headers), partition=getattr(e, "partition", None)
                )
                pending.append(sent)
            outcomes = await asyncio.gather(*pending, return_exceptions=True)
        except ProducerClosed as exc:
            _retrieve_when_done(pending)
            if producer is not self._kafka and not self.stopping:
                raise BrokerUnavailable("the producer was retired while this batch was handed over") from exc
            raise
        except BaseException as exc:
            _retrieve_when_done(pending)
            self._failed(producer, exc)
            raise
        failure = next((o for o in outcomes if isinstance(o, BaseException)), None)
        if failure is not None:
            self._failed(producer, failure)
            raise failure

    def _failed(self, producer: AIOKafkaProducer, exc: BaseException) -> None:
        if isinstance(exc, OutOfOrderSequenceNumber):
            self._retire(producer, "out-of-order sequence number after an outage")
        elif broker_away(exc):
            self._retire(producer, f"broker away: {exc!r}")


def _retrieve_when_done(futures: Sequence[asyncio.Future[Any]]) -> None:
    """Retrieve each future's outcome when it ends, so that a failure nobody awaits is not reported as lost."""
    for future in futures:
        future.add_done_callback(_retrieve)


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


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
