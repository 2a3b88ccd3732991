"""Kafka-side instruments of the bench: a consumer that stamps arrivals and a producer that sends probes one by one.

Both live in the bench process, so sending and arrival times come from one monotonic clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord

from bench.processes import BenchError, Child
from streams.client import stop_consumer
from streams.settings import Settings

#: Maps a consumed record to the probe it answers (None: not one of ours).
Matcher = Callable[[ConsumerRecord], str | None]


@dataclass(frozen=True, slots=True)
class Probe:
    """One record to send; ``probe_id`` is what the matcher finds in its answer."""

    probe_id: str
    key: bytes | None
    value: bytes


class Arrivals:
    """Reads one topic from its current end and notes, per probe id, when its first answer arrived."""

    def __init__(self, settings: Settings, topic: str, match: Matcher) -> None:
        self.settings = settings
        self.topic = topic
        self.match = match
        self.arrived: dict[str, float] = {}
        self._changed = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, timeout: float = 30.0) -> Arrivals:
        """Take every partition and settle the end offsets, so nothing sent afterwards is missed."""
        self._consumer = AIOKafkaConsumer(
            self.topic,
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=100,
            **self.settings.kafka_client_kwargs(),
        )
        await self._consumer.start()
        deadline = time.monotonic() + timeout
        while not self._consumer.assignment():
            if time.monotonic() >= deadline:
                raise BenchError(f"no partition of {self.topic} assigned after {timeout:.0f}s")
            await asyncio.sleep(0.05)
        tps = sorted(self._consumer.assignment())
        await self._consumer.seek_to_end(*tps)
        for tp in tps:
            await self._consumer.position(tp)
        self._task = asyncio.create_task(self._run(), name=f"arrivals:{self.topic}")
        return self

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            batch = await self._consumer.getmany(timeout_ms=100)
            now = time.perf_counter()
            for messages in batch.values():
                for message in messages:
                    probe_id = self.match(message)
                    if probe_id is not None and probe_id not in self.arrived:
                        self.arrived[probe_id] = now
                        self._changed.set()

    async def wait_for(self, probe_ids: set[str], timeout: float, watched: Child | None = None) -> dict[str, float]:
        """Until every probe has arrived; fails after ``timeout`` or when the watched process dies."""
        deadline = time.monotonic() + timeout
        while not probe_ids <= self.arrived.keys():
            if self._task is not None and self._task.done():
                self._task.result()
            if watched is not None:
                watched.require_alive()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                missing = sorted(probe_ids - self.arrived.keys())
                raise BenchError(
                    f"{len(missing)} of {len(probe_ids)} answers missing on {self.topic} after {timeout:.0f}s, "
                    f"e.g. {missing[:3]}"
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 1.0))
        return {probe_id: self.arrived[probe_id] for probe_id in probe_ids}

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await stop_consumer(self._consumer)


async def send_paced(
    settings: Settings, topic: str, probes: Sequence[Probe], interval_s: float, headers: Sequence[tuple[str, bytes]]
) -> dict[str, float]:
    """Send probes one at a time, each acknowledged (acks=all) before the next, one every ``interval_s``.

    Returns each probe's send time, taken just before the send, on the same clock as ``Arrivals``.
    """
    producer = AIOKafkaProducer(acks="all", linger_ms=0, **settings.kafka_client_kwargs())
    await producer.start()
    sent: dict[str, float] = {}
    try:
        for probe in probes:
            started = time.perf_counter()
            sent[probe.probe_id] = started
            await producer.send_and_wait(topic, value=probe.value, key=probe.key, headers=list(headers))
            await asyncio.sleep(max(0.0, interval_s - (time.perf_counter() - started)))
    finally:
        await producer.stop()
    return sent


async def send_open_loop(
    settings: Settings, topic: str, probes: Sequence[Probe], rate_per_s: float, headers: Sequence[tuple[str, bytes]]
) -> dict[str, float]:
    """Send probes at a fixed offered rate whatever the answers do (open loop), acknowledgements awaited at the end.

    Returns each probe's *scheduled* send time on the ``Arrivals`` clock: a sender that falls behind its schedule
    counts against the latency (no coordinated omission).
    """
    producer = AIOKafkaProducer(acks="all", linger_ms=0, **settings.kafka_client_kwargs())
    await producer.start()
    scheduled: dict[str, float] = {}
    pending = []
    try:
        start = time.perf_counter()
        for index, probe in enumerate(probes):
            due = start + index / rate_per_s
            wait = due - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            scheduled[probe.probe_id] = due
            pending.append(await producer.send(topic, value=probe.value, key=probe.key, headers=list(headers)))
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return scheduled


async def latencies_ms(
    settings: Settings,
    *,
    send_topic: str,
    arrivals: Arrivals,
    probes: Sequence[Probe],
    interval_s: float,
    timeout: float,
    watched: Child,
    headers: Sequence[tuple[str, bytes]] = (),
    rate_per_s: float | None = None,
) -> list[float]:
    """Produce-to-arrival latency of each probe, in the order they were sent: one at a time every ``interval_s``,
    or open loop at ``rate_per_s``."""
    if rate_per_s is None:
        sent = await send_paced(settings, send_topic, probes, interval_s, headers)
    else:
        sent = await send_open_loop(settings, send_topic, probes, rate_per_s, headers)
    arrived = await arrivals.wait_for(set(sent), timeout, watched)
    return [(arrived[probe.probe_id] - sent[probe.probe_id]) * 1000.0 for probe in probes]
