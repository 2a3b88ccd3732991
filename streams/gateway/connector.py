"""The connector loop: outbound filings to a ``Gateway``, customs' answers to the inbound topic.

A plain aiokafka consume-transform-produce service, not a Faust agent: the gateway is one external system with
its own pace and state, and the loop must control exactly when offsets are committed. For each batch it decodes
every ``Filing`` (what it cannot decode goes to the dead-letter topic, stage ``gateway/decode``), submits it,
produces every answer, waits for the broker's acknowledgements, calls the gateway's ``checkpoint``, and only then
commits the consumed offsets: at least once, never lost. Every ``poll_interval`` seconds it asks the gateway for
answers that time or the outside world brought, and handles them the same way.

Before the first batch it settles what a previous run may have left half done (``Gateway.in_doubt``): it looks for
those messages' ids on the inbound topic and produces only the missing ones.

A broker that is away is waited for, however long: answers are sent again with capped exponential backoff and
jitter until they are acknowledged (a gateway does not answer the same filing twice, so they cannot be dropped and
the filing read again), and reading stops meanwhile. A stop request (SIGTERM) ends any wait within seconds; what
was not checkpointed and committed by then is read and answered again after the restart.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from structlog.contextvars import bound_contextvars

from streams.client import reach_broker
from streams.contracts.avro import SchemaCatalogue
from streams.contracts.dead_letter import dead_letter
from streams.errors import BrokerUnavailable, DecodeError, ICS2StreamsError
from streams.gateway.base import HEADER_MESSAGE_ID, Gateway, InboundMessage, InDoubt, OutboundFiling
from streams.gateway.clients import stop_quietly
from streams.pipeline.runner import Producer, backoff, broker_away
from streams.pipeline.stage import Emit
from streams.settings import Settings
from streams.topics import Catalogue

log = structlog.get_logger(__name__)

STAGE_DECODE = "gateway/decode"
STAGE_SUBMIT = "gateway/submit"
#: How far before the claim time the in-doubt check starts reading, for clocks that disagree a little.
IN_DOUBT_MARGIN = timedelta(minutes=5)
#: Longest wait for records, so that a stop request or a due poll is noticed quickly.
MAX_WAIT_S = 0.5
RETRY_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0)
#: Longest wait for a commit: aiokafka waits for the group's coordinator without end. A commit not done loses
#: nothing: the batch's answers are acknowledged and checkpointed, so its filings, read again, are not answered twice.
COMMIT_WAIT_S = 5.0
#: A broker answers a fetch at least every half second (aiokafka's ``fetch_max_wait_ms``): none answered for this
#: long, with partitions assigned, and the broker is asked directly whether it is there.
QUIET_FETCH_S = 5.0
#: How long the broker may take to answer that question (an admin connection).
PROBE_TIMEOUT_S = 3.0

Clock = Callable[[], datetime]
T = TypeVar("T")


def utc_now() -> datetime:
    return datetime.now(UTC)


def group_id_for(settings: Settings) -> str:
    """The connector's own consumer group, beside the pipeline's."""
    return f"{settings.app_id}-gateway"


def decode_filing(value: bytes | None, schemas: SchemaCatalogue) -> OutboundFiling:
    """The filing in one outbound record value; ``DecodeError`` for anything else."""
    if value is None:
        raise DecodeError("an outbound record without a value (tombstone) is not a filing")
    return OutboundFiling.from_record(schemas.decode(value, reader="Filing").record)


def waits_for_broker(exc: BaseException) -> bool:
    """Whether waiting can help: the broker or a partition leader is away, or the gateway says a retry can help
    (the simulator's snapshot topic unreachable)."""
    return broker_away(exc) or (isinstance(exc, ICS2StreamsError) and exc.retriable)


@dataclass(slots=True)
class Counters:
    """What the connector did since it started."""

    consumed: int = 0
    answered: int = 0
    dead_lettered: int = 0
    recovered: int = 0


class Stopped(ICS2StreamsError):
    """A stop was requested while the connector waited (for the broker, a backoff): the loop ends, nothing more is
    checkpointed or committed. Never a reason to dead-letter the filing at hand."""


class GatewayConnector:
    """Runs one gateway between the outbound and inbound topics until asked to stop."""

    def __init__(
        self,
        gateway: Gateway,
        settings: Settings,
        catalogue: Catalogue | None = None,
        *,
        poll_interval: float = 5.0,
        clock: Clock = utc_now,
        schemas: SchemaCatalogue | None = None,
        max_records: int = 100,
    ) -> None:
        if poll_interval <= 0:
            raise ValueError("poll_interval must be positive")
        self.gateway = gateway
        self.settings = settings
        self.catalogue = catalogue or Catalogue.for_prefix(settings.topic_prefix)
        self.poll_interval = poll_interval
        self.clock = clock
        self.schemas = schemas or SchemaCatalogue.load()
        self.max_records = max_records
        self.counters = Counters()
        self.stopping = asyncio.Event()
        self.reading_paused = False
        """Set while the broker is away: the consumer holds no subscription until the broker answers (``_pause``)."""
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: Producer | None = None
        self._next_probe = 0.0

    @property
    def outbound_topic(self) -> str:
        return self.catalogue.filings_outbound.name

    @property
    def inbound_topic(self) -> str:
        return self.catalogue.notifications_inbound.name

    @property
    def dead_letter_topic(self) -> str:
        return self.catalogue.dead_letters.name

    def request_stop(self) -> None:
        """Stop at the next step, or at once when waiting for the broker (what SIGTERM and SIGINT do)."""
        self.stopping.set()

    async def run(self, *, handle_signals: bool = False) -> Counters:
        """Start, settle in-doubt messages, loop until ``request_stop``, close; the counters at the end."""
        loop = asyncio.get_running_loop()
        signals = (signal.SIGTERM, signal.SIGINT) if handle_signals else ()
        for number in signals:
            loop.add_signal_handler(number, self.request_stop)
        try:
            await self._until_stopped(self._start())
            await self._settle_in_doubt(await self._until_stopped(self.gateway.in_doubt()))
            await self._loop()
        except Stopped:
            log.info("gateway_stopping", gateway=self.gateway.name)
        finally:
            for number in signals:
                loop.remove_signal_handler(number)
            await self._close()
        log.info("gateway_stopped", gateway=self.gateway.name, **self._counts())
        return self.counters

    async def _start(self) -> None:
        """Start the consumer and the gateway; a broker that is away is waited for, with backoff, like a send."""
        self._producer = Producer(self.settings, self.catalogue)
        await self._until_done("start", self._start_once)
        log.info(
            "gateway_started",
            gateway=self.gateway.name,
            outbound=self.outbound_topic,
            inbound=self.inbound_topic,
            group=group_id_for(self.settings),
        )

    async def _start_once(self) -> None:
        if self._consumer is None:
            self._consumer = AIOKafkaConsumer(
                self.outbound_topic,
                **self.settings.kafka_client_kwargs(),
                group_id=group_id_for(self.settings),
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_poll_records=self.max_records,
            )
            try:
                await self._consumer.start()
            except Exception:
                consumer, self._consumer = self._consumer, None
                await stop_quietly(consumer.stop(), "consumer")
                raise
        try:
            await self.gateway.start()
        except Exception:
            await stop_quietly(self.gateway.stop(), "gateway")
            raise

    async def _close(self) -> None:
        """Stop the gateway and the clients, each for a few seconds at most (``stop_quietly``), so that a broker
        that is away does not hold the stop; offsets not committed stay uncommitted (the consumer never commits on
        its own)."""
        closing = [stop_quietly(self.gateway.stop(), "gateway")]
        if self._consumer is not None:
            closing.append(stop_quietly(self._consumer.stop(), "consumer"))
        if self._producer is not None:
            closing.append(stop_quietly(self._producer.stop(), "producer"))
        await asyncio.gather(*closing)

    async def _loop(self) -> None:
        next_poll = time.monotonic()
        failures = 0
        while not self.stopping.is_set():
            try:
                consumer = await self._reading()
                wait = min(MAX_WAIT_S, max(0.0, next_poll - time.monotonic()))
                batch = await self._until_stopped(
                    consumer.getmany(timeout_ms=int(wait * 1000), max_records=self.max_records)
                )
                for partition, records in batch.items():
                    await self._handle(partition, records)
                if not batch:
                    await self._check_fetching(consumer)
                if time.monotonic() >= next_poll:
                    await self._poll()
                    next_poll = time.monotonic() + self.poll_interval
                failures = 0
            except Exception as exc:
                if isinstance(exc, Stopped) or not broker_away(exc):
                    raise
                self._pause(repr(exc))
                delay = backoff(failures)
                failures += 1
                log.warning("gateway_waits_for_broker", error=repr(exc), attempt=failures, delay_s=round(delay, 2))
                await self._sleep(delay)

    async def _handle(self, partition: TopicPartition, records: Sequence[ConsumerRecord[Any, Any]]) -> None:
        """Submit one partition's batch, produce all answers and dead letters, checkpoint, then commit."""
        outputs: list[Emit] = []
        for record in records:
            self.counters.consumed += 1
            with bound_contextvars(topic=record.topic, partition=record.partition, offset=record.offset):
                outputs += await self._process(record)
        await self._deliver(outputs)
        await self._checkpoint()
        await self._commit(partition, records[-1].offset + 1)

    async def _process(self, record: ConsumerRecord[Any, Any]) -> list[Emit]:
        """The records one outbound record brings: its answers, or its dead letter."""
        try:
            filing = decode_filing(record.value, self.schemas)
        except DecodeError as exc:
            return [self._dead_letter(record, STAGE_DECODE, exc)]
        with bound_contextvars(mbl=filing.mbl, hbl=filing.hbl, lrn=filing.lrn, message_type=filing.message_type):
            try:
                answers = await self._submit(filing)
            except Stopped:
                raise
            except ICS2StreamsError as exc:
                return [self._dead_letter(record, STAGE_SUBMIT, exc, responsible=filing.filer_party_id)]
            log.info("filing_submitted", answers=[a.message_type for a in answers])
            return self._answers(answers)

    async def _submit(self, filing: OutboundFiling) -> Sequence[InboundMessage]:
        """Submit, retrying errors that say a retry can help; after the last attempt the error stops the loop."""
        for delay in (*RETRY_BACKOFF_S, None):
            try:
                return await self.gateway.submit(filing, self.clock())
            except ICS2StreamsError as exc:
                if not exc.retriable or delay is None:
                    raise
                log.warning("gateway_submit_retry", error=str(exc), delay_s=delay)
                await self._sleep(delay)
        raise AssertionError("unreachable")

    async def _poll(self) -> None:
        answers = await self.gateway.poll(self.clock())
        if not answers:
            return
        await self._deliver(self._answers(answers))
        await self._checkpoint()
        log.info("gateway_polled", answers=[a.message_type for a in answers])

    def _answers(self, answers: Iterable[InboundMessage]) -> list[Emit]:
        emits = [Emit(self.inbound_topic, a.key, a.xml, tuple(a.headers())) for a in answers]
        self.counters.answered += len(emits)
        return emits

    def _dead_letter(
        self, record: ConsumerRecord[Any, Any], stage: str, error: Exception, responsible: str | None = None
    ) -> Emit:
        envelope = dead_letter(
            stage,
            error,
            key=record.key,
            value=record.value,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            headers=list(record.headers or ()),
            responsible_party=responsible,
            failed_at=self.clock(),
        )
        self.counters.dead_lettered += 1
        log.warning("filing_dead_lettered", stage=stage, reason=envelope.record["reason"])
        return Emit(
            self.dead_letter_topic,
            envelope.key,
            self.schemas.encode("DeadLetter", envelope.record),
            tuple(envelope.headers),
        )

    async def _deliver(self, outputs: Sequence[Emit]) -> None:
        """Send until the broker has acknowledged every output; one failed send fails the lot, so nothing is
        checkpointed or committed before all are. Why wait without end: the outputs exist only here (a gateway
        does not answer the same filing twice), so they cannot be dropped and their filings read again. Each
        attempt is one send, so that the first failure pauses reading (``_until_done``)."""
        if outputs:
            assert self._producer is not None
            producer = self._producer
            await self._until_done("produce", lambda: producer.send_all(outputs, retry_s=0))

    async def _checkpoint(self) -> None:
        """The gateway's checkpoint (the simulator writes its snapshot to the broker), waited for like a send."""
        await self._until_done("checkpoint", self.gateway.checkpoint)

    async def _until_done(self, what: str, attempt: Callable[[], Awaitable[None]]) -> None:
        """Run ``attempt`` until it succeeds, with capped exponential backoff and jitter while the broker is away and
        reading paused; an error waiting cannot help is raised, and a stop request ends the wait (``Stopped``)."""
        failures = 0
        while True:
            try:
                await self._watched(what, attempt())
                return
            except Exception as exc:
                if isinstance(exc, Stopped) or not waits_for_broker(exc):
                    raise
                self._pause(f"{what} failed: {exc!r}")
                delay = backoff(failures)
                failures += 1
                log.warning("gateway_retry", what=what, error=repr(exc), attempt=failures, delay_s=round(delay, 2))
                await self._sleep(delay)

    async def _watched(self, what: str, operation: Awaitable[None]) -> None:
        """Wait for ``operation`` (a stop ends the wait); each ``QUIET_FETCH_S`` it is not done, ask the broker, and
        pause reading if it does not answer. Why: aiokafka retries a record an idempotent producer has sent once
        until it is delivered, so a send can wait for the whole outage without failing (see ``_pause``)."""
        task = asyncio.ensure_future(operation)
        started = time.monotonic()
        try:
            while True:
                try:
                    await self._until_stopped(asyncio.shield(task), timeout=QUIET_FETCH_S)
                    return
                except TimeoutError:
                    if not self.reading_paused and not await self._broker_answers():
                        self._pause(
                            f"{what} waiting for {time.monotonic() - started:.0f} s; the broker does not answer"
                        )
        finally:
            if not task.done():
                task.cancel()
                task.add_done_callback(_retrieve)

    async def _broker_answers(self) -> bool:
        """Whether the broker answers a direct question (an admin connection) within ``PROBE_TIMEOUT_S``."""
        try:
            await self._until_stopped(reach_broker(self.settings, PROBE_TIMEOUT_S))
        except BrokerUnavailable:
            return False
        return True

    async def _commit(self, partition: TopicPartition, offset: int) -> None:
        """Commit, waiting at most ``COMMIT_WAIT_S``; a commit not done is logged, and loses nothing (see there)."""
        assert self._consumer is not None
        if self.reading_paused:
            log.warning("gateway_commit_skipped", reason="reading paused", partition=partition.partition)
            return
        try:
            await self._until_stopped(self._consumer.commit({partition: offset}), timeout=COMMIT_WAIT_S)
        except (TimeoutError, KafkaError) as exc:
            log.warning("gateway_commit_failed", error=repr(exc), partition=partition.partition)
            if isinstance(exc, TimeoutError) and not await self._broker_answers():
                self._pause(f"commit not done in {COMMIT_WAIT_S:.0f} s; the broker does not answer")

    async def _reading(self) -> AIOKafkaConsumer:
        """The consumer; subscribed again once the broker answers, when reading was paused."""
        assert self._consumer is not None
        if self.reading_paused:
            await self._until_stopped(reach_broker(self.settings, PROBE_TIMEOUT_S))
            self._consumer.subscribe([self.outbound_topic])
            self.reading_paused = False
            log.info("gateway_reading_resumed", outbound=self.outbound_topic)
        return self._consumer

    def _pause(self, reason: str) -> None:
        """Stop reading until the broker answers again (``_reading``).

        Why: aiokafka's fetcher, for a partition whose leader it no longer knows, asks for metadata in a loop
        without backoff while the broker is away (up to a core, for the whole outage). Pausing the partitions does
        not stop it (``consumer.pause``: the fetcher looks for the leader first); holding none does. The group is
        left; records read but not committed are read again after the outage, as after a restart (the simulator
        skips a filing it answered; the file drop writes the same file again).
        """
        if self.reading_paused or self._consumer is None:
            return
        self._consumer.unsubscribe()
        self.reading_paused = True
        log.warning("gateway_reading_paused", reason=reason)

    async def _check_fetching(self, consumer: AIOKafkaConsumer) -> None:
        """Pause reading when no fetch was answered for ``QUIET_FETCH_S`` and the broker does not answer either:
        an idle connector would otherwise not notice an outage (see ``_pause``)."""
        answered = [consumer.last_poll_timestamp(tp) for tp in consumer.assignment()]
        known = [at for at in answered if at is not None]
        now = time.monotonic()
        if not known or now < self._next_probe:
            return
        quiet_s = time.time() - max(known) / 1000
        if quiet_s < QUIET_FETCH_S:
            return
        self._next_probe = now + QUIET_FETCH_S
        if not await self._broker_answers():
            self._pause(f"no fetch answered for {quiet_s:.0f} s; the broker does not answer")

    async def _until_stopped(self, operation: Awaitable[T], timeout: float | None = None) -> T:
        """``operation``'s result, unless a stop is requested first (``Stopped``) or ``timeout`` seconds pass
        (``TimeoutError``); the operation is then cancelled. Why: aiokafka waits for a broker that is away without
        end (a commit for the group's coordinator, a new client for its first answer), and SIGTERM must not wait."""
        task = asyncio.ensure_future(operation)
        stop = asyncio.ensure_future(self.stopping.wait())
        try:
            done, _ = await asyncio.wait((task, stop), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not task.done():
                task.cancel()
                task.add_done_callback(_retrieve)
        if task in done:
            return task.result()
        if self.stopping.is_set():
            raise Stopped()
        raise TimeoutError(f"not done within {timeout} s")

    async def _sleep(self, seconds: float) -> None:
        """A backoff that a stop request ends (``Stopped``)."""
        try:
            await asyncio.wait_for(self.stopping.wait(), seconds)
        except TimeoutError:
            return
        raise Stopped()

    async def _settle_in_doubt(self, doubt: InDoubt) -> None:
        """Produce the in-doubt messages that are not on the inbound topic yet, then let the gateway confirm them."""
        if not doubt.messages:
            return
        since = doubt.since or datetime.fromtimestamp(0, UTC)
        found: set[str] = set()

        async def look() -> None:
            found.update(await self._message_ids_since(since - IN_DOUBT_MARGIN))

        await self._until_done("in-doubt check", look)
        missing = [m for m in doubt.messages if m.message_id not in found]
        await self._deliver(self._answers(missing))
        await self._checkpoint()
        self.counters.recovered += len(missing)
        log.info("gateway_in_doubt_settled", in_doubt=len(doubt.messages), produced=len(missing))

    async def _message_ids_since(self, since: datetime) -> set[str]:
        """The ``ics2-message-id`` headers of inbound records written at or after ``since``."""
        consumer = AIOKafkaConsumer(**self.settings.kafka_client_kwargs(), group_id=None, enable_auto_commit=False)
        await consumer.start()
        found: set[str] = set()
        try:
            assert self._producer is not None
            numbers = await self._producer.partitions_for(self.inbound_topic)
            partitions = [TopicPartition(self.inbound_topic, number) for number in sorted(numbers)]
            if not partitions:
                return found
            consumer.assign(partitions)
            starts = await consumer.offsets_for_times({tp: int(since.timestamp() * 1000) for tp in partitions})
            ends = await consumer.end_offsets(partitions)
            remaining = []
            for tp in partitions:
                start = starts.get(tp)
                if start is not None and start.offset < ends[tp]:
                    consumer.seek(tp, start.offset)
                    remaining.append(tp)
            while remaining:
                batch = await consumer.getmany(*remaining, timeout_ms=1000)
                for records in batch.values():
                    for record in records:
                        found.update(v.decode("utf-8", "replace") for k, v in record.headers if k == HEADER_MESSAGE_ID)
                remaining = [tp for tp in remaining if await consumer.position(tp) < ends[tp]]
        finally:
            await stop_quietly(consumer.stop(), "in-doubt consumer")
        return found

    def _counts(self) -> dict[str, int]:
        return {
            "consumed": self.counters.consumed,
            "answered": self.counters.answered,
            "dead_lettered": self.counters.dead_lettered,
            "recovered": self.counters.recovered,
        }


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Retrieve the outcome of an operation given up on, so that its failure is not reported as never retrieved."""
    if not future.cancelled():
        future.exception()
