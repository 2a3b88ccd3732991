"""The connector loop: outbound filings to a ``Gateway``, customs' answers to the inbound topic.

A plain aiokafka consume-transform-produce service, not a Faust agent: the gateway is one external system with
its own pace and state, and the loop must control exactly when offsets are committed. For each batch it decodes
every ``Filing`` (what it cannot decode goes to the dead-letter topic, stage ``gateway/decode``), submits it,
produces every answer, waits for the broker's acknowledgements, calls the gateway's ``checkpoint``, and only then
commits the consumed offsets: at least once, never lost. Every ``poll_interval`` seconds it asks the gateway for
answers that time or the outside world brought, and handles them the same way.

Before the first batch it settles what a previous run may have left half done (``Gateway.in_doubt``): it looks for
those messages' ids on the inbound topic and produces only the missing ones.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError
from structlog.contextvars import bound_contextvars

from streams.contracts.avro import SchemaCatalogue
from streams.contracts.dead_letter import dead_letter
from streams.errors import DecodeError, ICS2StreamsError
from streams.gateway.base import HEADER_MESSAGE_ID, Gateway, InboundMessage, InDoubt, OutboundFiling
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

Clock = Callable[[], datetime]


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


@dataclass(slots=True)
class Counters:
    """What the connector did since it started."""

    consumed: int = 0
    answered: int = 0
    dead_lettered: int = 0
    recovered: int = 0


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
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None

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
        """Finish the batch at hand, then stop (what SIGTERM and SIGINT do)."""
        self.stopping.set()

    async def run(self, *, handle_signals: bool = False) -> Counters:
        """Start, settle in-doubt messages, loop until ``request_stop``, close; the counters at the end."""
        loop = asyncio.get_running_loop()
        signals = (signal.SIGTERM, signal.SIGINT) if handle_signals else ()
        for number in signals:
            loop.add_signal_handler(number, self.request_stop)
        try:
            await self._start()
            await self._settle_in_doubt(await self.gateway.in_doubt())
            await self._loop()
        finally:
            for number in signals:
                loop.remove_signal_handler(number)
            await self._close()
        log.info("gateway_stopped", gateway=self.gateway.name, **self._counts())
        return self.counters

    async def _start(self) -> None:
        kwargs = self.settings.kafka_client_kwargs()
        self._producer = AIOKafkaProducer(**kwargs, acks="all", enable_idempotence=True)
        await self._producer.start()
        self._consumer = AIOKafkaConsumer(
            self.outbound_topic,
            **kwargs,
            group_id=group_id_for(self.settings),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.max_records,
        )
        await self._consumer.start()
        await self.gateway.start()
        log.info(
            "gateway_started",
            gateway=self.gateway.name,
            outbound=self.outbound_topic,
            inbound=self.inbound_topic,
            group=group_id_for(self.settings),
        )

    async def _close(self) -> None:
        """Stop the gateway and the clients; offsets not committed stay uncommitted (the consumer never commits)."""
        try:
            await self.gateway.stop()
        finally:
            if self._consumer is not None:
                await self._consumer.stop()
            if self._producer is not None:
                await self._producer.stop()

    async def _loop(self) -> None:
        assert self._consumer is not None
        next_poll = time.monotonic()
        while not self.stopping.is_set():
            wait = min(MAX_WAIT_S, max(0.0, next_poll - time.monotonic()))
            batch = await self._consumer.getmany(timeout_ms=int(wait * 1000), max_records=self.max_records)
            for partition, records in batch.items():
                await self._handle(partition, records)
            if time.monotonic() >= next_poll:
                await self._poll()
                next_poll = time.monotonic() + self.poll_interval

    async def _handle(self, partition: TopicPartition, records: Sequence[ConsumerRecord[Any, Any]]) -> None:
        """Submit one partition's batch, produce all answers and dead letters, checkpoint, then commit."""
        assert self._consumer is not None
        pending: list[asyncio.Future[Any]] = []
        for record in records:
            self.counters.consumed += 1
            with bound_contextvars(topic=record.topic, partition=record.partition, offset=record.offset):
                pending += await self._process(record)
        await self._await_acks(pending)
        await self.gateway.checkpoint()
        try:
            await self._consumer.commit({partition: records[-1].offset + 1})
        except CommitFailedError as exc:
            log.warning("gateway_commit_failed", error=str(exc), partition=partition.partition)

    async def _process(self, record: ConsumerRecord[Any, Any]) -> list[asyncio.Future[Any]]:
        """The sends for one outbound record: its answers, or its dead letter."""
        try:
            filing = decode_filing(record.value, self.schemas)
        except DecodeError as exc:
            return [await self._dead_letter(record, STAGE_DECODE, exc)]
        with bound_contextvars(mbl=filing.mbl, hbl=filing.hbl, lrn=filing.lrn, message_type=filing.message_type):
            try:
                answers = await self._submit(filing)
            except ICS2StreamsError as exc:
                return [await self._dead_letter(record, STAGE_SUBMIT, exc, responsible=filing.filer_party_id)]
            log.info("filing_submitted", answers=[a.message_type for a in answers])
            return await self._send_all(answers)

    async def _submit(self, filing: OutboundFiling) -> Sequence[InboundMessage]:
        """Submit, retrying errors that say a retry can help; after the last attempt the error stops the loop."""
        for delay in (*RETRY_BACKOFF_S, None):
            try:
                return await self.gateway.submit(filing, self.clock())
            except ICS2StreamsError as exc:
                if not exc.retriable or delay is None:
                    raise
                log.warning("gateway_submit_retry", error=str(exc), delay_s=delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def _poll(self) -> None:
        answers = await self.gateway.poll(self.clock())
        if not answers:
            return
        await self._await_acks(await self._send_all(answers))
        await self.gateway.checkpoint()
        log.info("gateway_polled", answers=[a.message_type for a in answers])

    async def _send_all(self, answers: Iterable[InboundMessage]) -> list[asyncio.Future[Any]]:
        assert self._producer is not None
        pending = []
        for answer in answers:
            sent = await self._producer.send(
                self.inbound_topic, value=answer.xml, key=answer.key, headers=answer.headers()
            )
            pending.append(sent)
            self.counters.answered += 1
        return pending

    async def _dead_letter(
        self, record: ConsumerRecord[Any, Any], stage: str, error: Exception, responsible: str | None = None
    ) -> asyncio.Future[Any]:
        assert self._producer is not None
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
        return await self._producer.send(
            self.dead_letter_topic,
            key=envelope.key,
            value=self.schemas.encode("DeadLetter", envelope.record),
            headers=list(envelope.headers),
        )

    @staticmethod
    async def _await_acks(pending: Sequence[asyncio.Future[Any]]) -> None:
        """Wait for every acknowledgement; one failed send fails the batch, so nothing is committed."""
        if pending:
            await asyncio.gather(*pending)

    async def _settle_in_doubt(self, doubt: InDoubt) -> None:
        """Produce the in-doubt messages that are not on the inbound topic yet, then let the gateway confirm them."""
        if not doubt.messages:
            return
        since = doubt.since or datetime.fromtimestamp(0, UTC)
        found = await self._message_ids_since(since - IN_DOUBT_MARGIN)
        missing = [m for m in doubt.messages if m.message_id not in found]
        await self._await_acks(await self._send_all(missing))
        await self.gateway.checkpoint()
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
            await consumer.stop()
        return found

    def _counts(self) -> dict[str, int]:
        return {
            "consumed": self.counters.consumed,
            "answered": self.counters.answered,
            "dead_lettered": self.counters.dead_lettered,
            "recovered": self.counters.recovered,
        }
