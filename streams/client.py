"""Small aiokafka clients for the edges: publish a booking or reference data, read a topic from the beginning.

The CLI, the demo and the tests use them; the workers do not (they run on Faust).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError

from streams.contracts.avro import SchemaCatalogue
from streams.errors import BrokerUnavailable
from streams.settings import Settings
from streams.topics import Catalogue

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Record:
    """A consumed record with its coordinates."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int

    def header(self, name: str) -> bytes | None:
        return next((v for k, v in self.headers if k == name), None)


async def produce(
    settings: Settings,
    topic: str,
    records: Iterable[tuple[bytes | None, bytes]],
    headers: Sequence[tuple[str, bytes]] = (),
) -> int:
    """Produce (key, value) pairs and wait for every acknowledgement; returns how many."""
    producer = AIOKafkaProducer(acks="all", enable_idempotence=True, **settings.kafka_client_kwargs())
    await start_client(producer, settings)
    try:
        futures = [await producer.send(topic, value=value, key=key, headers=list(headers)) for key, value in records]
        await asyncio.gather(*futures)
        return len(futures)
    finally:
        await producer.stop()


async def publish_bookings(settings: Settings, bookings: Iterable[Mapping[str, Any]]) -> int:
    """Encode booking events (their JSON form) as Avro and publish them keyed by MBL."""
    schemas = SchemaCatalogue.load()
    topic = Catalogue.for_prefix(settings.topic_prefix).bookings.name
    records = [(b["master"]["mbl_number"].encode(), schemas.encode("BookingEvent", b)) for b in bookings]
    return await produce(settings, topic, records, headers=[("ics2-record", b"BookingEvent")])


async def read_topic(
    settings: Settings,
    topic: str,
    *,
    until: Callable[[list[Record]], bool] | None = None,
    timeout: float = 10.0,
    idle: float = 1.0,
) -> list[Record]:
    """Every record of ``topic`` from the beginning, read without a consumer group (it commits nothing).

    Returns when ``until(records)`` holds, or when ``idle`` seconds pass with nothing new after reaching the end
    (no ``until``), or at ``timeout``.
    """
    consumer = AIOKafkaConsumer(
        topic, enable_auto_commit=False, auto_offset_reset="earliest", group_id=None, **settings.kafka_client_kwargs()
    )
    await start_client(consumer, settings)
    records: list[Record] = []
    try:
        wait_until = time.monotonic() + min(timeout, 10.0)
        while not consumer.assignment() and time.monotonic() < wait_until:
            await asyncio.sleep(0.05)
        tps = sorted(consumer.assignment())
        deadline = time.monotonic() + timeout
        last_new = time.monotonic()
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for tp_records in batch.values():
                for m in tp_records:
                    records.append(
                        Record(m.topic, m.partition, m.offset, m.key, m.value, tuple(m.headers or ()), m.timestamp)
                    )
                last_new = time.monotonic()
            if until is not None:
                if until(records):
                    break
            elif time.monotonic() - last_new > idle:
                ends = await consumer.end_offsets(tps)
                positions = [await consumer.position(tp) for tp in tps]
                if all(p >= ends[tp] for p, tp in zip(positions, tps, strict=True)):
                    break
    finally:
        await stop_consumer(consumer)
    return records


async def reach_broker(settings: Settings, timeout: float = 15.0) -> None:
    """Open and close an admin connection: ``BrokerUnavailable`` when no broker answers at the bootstrap servers."""
    from streams.admin import admin_client

    try:
        async with admin_client(settings, request_timeout=timeout):
            pass
    except BrokerUnavailable as exc:
        raise BrokerUnavailable(f"no Kafka broker answers at {settings.bootstrap_servers}") from exc


async def start_client(client: AIOKafkaProducer | AIOKafkaConsumer, settings: Settings) -> None:
    """Start a producer or consumer; a broker that cannot be reached is ``BrokerUnavailable`` naming the servers."""
    try:
        await client.start()
    except (KafkaConnectionError, KafkaTimeoutError, OSError) as exc:
        await client.stop()
        raise BrokerUnavailable(f"no Kafka broker answers at {settings.bootstrap_servers}") from exc


async def keep_reading(read: Callable[[], Awaitable[None]], event: str) -> None:
    """Run a background reader until cancelled; a broker hiccup restarts it (logged as ``event``), never ends it."""
    while True:
        try:
            await read()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning(event, error=repr(exc))
            await asyncio.sleep(2.0)


async def stop_consumer(consumer: AIOKafkaConsumer) -> None:
    """Stop a consumer; aiokafka issue 647: stop() soon after start() can raise its own task's CancelledError."""
    try:
        await consumer.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
