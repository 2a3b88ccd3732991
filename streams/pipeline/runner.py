"""Runs a stage inside a Faust agent: feed it records, emit what it returns, dead-letter what it cannot handle.

Processing guarantee: at-least-once. A record's outputs (and its dead letter, if any) are acknowledged by the
broker before the record itself is acknowledged, and agents run with concurrency 1 so that Faust never commits an
offset past a record that is still in flight (faust-streaming issue 606). Replays after a crash can repeat outputs;
every output carries a deterministic message id so that consumers deduplicate (see ``streams.pipeline.dedup``).
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

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
        app.on_before_shutdown.connect(self._on_shutdown)

    def topic(self, name: str) -> faust.TopicT:
        """The Faust topic an agent consumes (raw bytes in, decoded by the stage)."""
        return self.app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")

    async def _producer(self) -> AIOKafkaProducer:
        async with self._starting:
            if self._kafka is None:
                producer = AIOKafkaProducer(
                    acks="all",
                    enable_idempotence=True,
                    linger_ms=5,
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


class StageRunner:
    """One stage's error handling and bookkeeping, shared by every agent."""

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
        """Handle one record; never raises for bad input."""
        self.stats.consumed[self.name] += 1
        with structlog.contextvars.bound_contextvars(
            stage=self.name, topic=incoming.topic, partition=incoming.partition, offset=incoming.offset
        ):
            try:
                result = self.handler(incoming)
                emits = await result if inspect.isawaitable(result) else result
            except StageFailure as exc:
                await self._dead_letter(incoming, exc.phase, exc.reason, exc.cause or exc, exc.party)
                return
            except InputError as exc:
                await self._dead_letter(incoming, "decode", str(exc), exc, None)
                return
            except ICS2StreamsError as exc:
                if exc.retriable:
                    raise
                await self._dead_letter(incoming, "process", str(exc), exc, None)
                return
            except Exception as exc:
                log.exception("stage_bug", error=repr(exc))
                await self._dead_letter(incoming, "process", f"unexpected error: {exc!r}", exc, None)
                return
            try:
                await self.producer.send_all(emits)
            except Exception as exc:
                log.exception("produce_failed", error=repr(exc))
                await self._dead_letter(incoming, "produce", f"could not produce the result: {exc!r}", exc, None)
                return
            self.stats.emitted[self.name] += len(emits)

    async def _dead_letter(
        self, incoming: Incoming, phase: str, reason: str, exc: BaseException, party: str | None
    ) -> None:
        self.stats.dead_lettered[self.name] += 1
        log.warning("dead_letter", phase=phase, reason=reason, party=party)
        await self.dead_letters.send(
            stage=self.name, phase=phase, reason=reason, exc=exc, incoming=incoming, party=party
        )


def add_stage(
    app: faust.App,
    *,
    name: str,
    source: str,
    handler: Handler | AsyncHandler,
    producer: Producer,
    dead_letters: DeadLetterSink,
    stats: StageStats,
) -> StageRunner:
    """Register an agent called ``name`` that runs ``handler`` on every record of the ``source`` topic."""
    runner = StageRunner(name, handler, producer, dead_letters, stats)
    topic = producer.topic(source)

    async def agent(stream: faust.StreamT) -> None:
        async for event in stream.events():
            await runner.process(Incoming.from_faust(event.message))

    agent.__name__ = agent.__qualname__ = name.replace("-", "_")
    app.agent(topic, name=name, concurrency=1)(agent)
    return runner
