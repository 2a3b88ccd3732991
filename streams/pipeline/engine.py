"""The processing loop of every stage: poll, handle, produce, save, commit; one rule, in one place.

Each stage is a consumer group of its own (``<app id>.<stage>``) with one aiokafka consumer per worker. A batch is
what one poll brings (up to ``BatchPolicy.max_records``). For a batch, in this order and only in this order:

1. every record is handled (``StageRunner.handle``: the stage's pure handler, or its dead letter);
2. the batch's outputs are sent and **every one is acknowledged** by the broker;
3. the table writes the batch made (``streams.pipeline.tables``) are sent to their changelogs and acknowledged;
4. they become the tables' state, and the batch's offsets are committed, if the partitions are still this
   worker's in the group generation that handed the batch out.

A batch that fails at 2 or 3 because the broker is away is forgotten: its table writes are dropped and its
partitions are sought back to the batch's first offsets, so it is read again after a backoff; nothing is
dead-lettered for a broker that is away and nothing is saved ahead of its outputs. When the group takes partitions
away, the revocation waits for the batch in flight; a batch that outlives its partitions commits nothing. When the
group assigns partitions, their table changelogs are read to their end before a record is handled; aiokafka itself
resumes each partition at its committed offset (from the start when none is committed).

Why not Faust's agents: Faust's consumer accepted acknowledgements for partitions it no longer held and committed
them later, over records another worker had not processed (the two-worker kill lost alerts); its recovery and its
fetcher needed private attributes patched to resume at the committed offsets. Faust still serves the web views and
the timers (``streams.pipeline.app``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import TopicPartition

from streams.audit.reading import stage_group
from streams.errors import ICS2StreamsError
from streams.pipeline.runner import (
    AsyncHandler,
    Batch,
    BatchPolicy,
    Producer,
    StageRunner,
    backoff,
    broker_away,
)
from streams.pipeline.stage import Emit, Handler, Incoming
from streams.pipeline.tables import ChangelogRecord, StateTable
from streams.settings import Settings

log = structlog.get_logger(__name__)

#: A worker that dies without leaving its groups (SIGKILL, power loss) holds its partitions this long; 6 s is the
#: broker's smallest allowed session (``group.min.session.timeout.ms``).
SESSION_TIMEOUT_S = 6.0
#: Heartbeats a third of the session apart (Kafka's rule).
HEARTBEAT_INTERVAL_S = 2.0
#: How long a revocation waits for the batch in flight before it lets the partitions go (that batch then commits
#: nothing, and its records are read again by their next owner).
REVOKE_WAIT_S = 5.0
#: How long a stop waits for the batch in flight.
STOP_WAIT_S = 5.0
#: How long one poll waits for records.
POLL_TIMEOUT_MS = 500
#: Repeated warnings of one kind (a broker away) are logged at most this often per stage.
WARN_EVERY_S = 10.0

OnAssigned = Callable[[set[int]], Awaitable[None] | None]


@dataclass
class Stage:
    """A stage as the engine runs it: its sources, its handler, the tables it writes."""

    name: str
    sources: tuple[str, ...]
    handler: Handler | AsyncHandler
    tables: tuple[StateTable, ...] = ()
    policy: BatchPolicy = field(default_factory=BatchPolicy)
    on_assigned: tuple[OnAssigned, ...] = ()


class RateLimitedWarning:
    """One warning per key every ``every_s`` seconds, with the count of those held back: a broker away for
    minutes must not write thousands of lines a second."""

    def __init__(self, every_s: float = WARN_EVERY_S) -> None:
        self.every_s = every_s
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def __call__(self, key: str, event: str, **fields: Any) -> None:
        now = time.monotonic()
        if now - self._last.get(key, float("-inf")) < self.every_s:
            self._held[key] = self._held.get(key, 0) + 1
            return
        self._last[key] = now
        held = self._held.pop(key, 0)
        log.warning(event, suppressed=held, **fields)


async def recover_tables(settings: Settings, tables: Sequence[StateTable], partitions: Iterable[int]) -> int:
    """Read each table's changelog partitions from where this worker last read them to their end; records read."""
    wanted = [(table, TopicPartition(table.changelog, p)) for table in tables for p in sorted(set(partitions))]
    if not wanted:
        return 0
    consumer = AIOKafkaConsumer(
        enable_auto_commit=False, auto_offset_reset="earliest", **settings.kafka_client_kwargs()
    )
    await consumer.start()
    read = 0
    try:
        tps = [tp for _, tp in wanted]
        consumer.assign(tps)
        starts = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        owner = {tp: table for table, tp in wanted}
        remaining = {}
        for table, tp in wanted:
            position = table.positions.get(tp.partition, 0)
            if position < starts[tp]:
                table.forget_partition(tp.partition)
                position = starts[tp]
            if position < ends[tp]:
                consumer.seek(tp, position)
                remaining[tp] = ends[tp]
            else:
                table.positions[tp.partition] = max(position, table.positions.get(tp.partition, 0))
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=1000)
            for tp, records in batches.items():
                table = owner[tp]
                for record in records:
                    table.restore(tp.partition, record.offset, record.key or b"", record.value)
                    read += 1
            for tp in list(remaining):
                if await consumer.position(tp) >= remaining[tp]:
                    table = owner[tp]
                    table.positions[tp.partition] = max(table.positions.get(tp.partition, 0), remaining[tp])
                    del remaining[tp]
    finally:
        await consumer.stop()
    return read


class StageProcessor(ConsumerRebalanceListener):  # type: ignore[misc]
    """One stage's consumer and loop on this worker (see the module's docstring for the order of a batch)."""

    def __init__(self, stage: Stage, runner: StageRunner, producer: Producer, settings: Settings) -> None:
        self.stage = stage
        self.runner = runner
        self.producer = producer
        self.settings = settings
        self.group_id = stage_group(settings, stage.name)
        self.consumer: AIOKafkaConsumer | None = None
        self.assigned: set[TopicPartition] = set()
        self.ready: set[TopicPartition] = set()
        """Assigned partitions whose tables are recovered: only their records are handled."""
        self._lock = asyncio.Lock()
        self._epoch = 0
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._warn = RateLimitedWarning()

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=int(SESSION_TIMEOUT_S * 1000),
            heartbeat_interval_ms=int(HEARTBEAT_INTERVAL_S * 1000),
            max_poll_records=self.stage.policy.max_records,
            **self.settings.kafka_client_kwargs(),
        )
        consumer.subscribe(list(self.stage.sources), listener=self)
        await consumer.start()
        self.consumer = consumer
        self._spawn()

    def _spawn(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"stage:{self.stage.name}")
        self._task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        """A stage's loop must only end when the worker stops: one that ended otherwise is logged and started again,
        never left silently dead with its partitions assigned and unprocessed."""
        if self._stopping.is_set():
            return
        error = None if task.cancelled() else task.exception()
        log.error("stage_loop_ended_restarting", stage=self.stage.name, error=repr(error))
        self._spawn()

    async def stop(self) -> None:
        """Finish the batch in flight (a few seconds at most), then leave the group: another worker takes over."""
        self._stopping.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), STOP_WAIT_S)
            except (TimeoutError, asyncio.CancelledError):
                self._task.cancel()
            except Exception as exc:
                log.warning("stage_stopped_with_error", stage=self.stage.name, error=repr(exc))
        if self.consumer is not None:
            consumer, self.consumer = self.consumer, None
            try:
                await asyncio.wait_for(consumer.stop(), STOP_WAIT_S)
            except (TimeoutError, KafkaError) as exc:
                log.warning("stage_consumer_stop_slow", stage=self.stage.name, error=repr(exc))

    # -- the group's callbacks ------------------------------------------------------------------------------

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        try:
            await asyncio.wait_for(self._lock.acquire(), REVOKE_WAIT_S)
        except TimeoutError:
            log.warning("revoked_with_batch_in_flight", stage=self.stage.name, partitions=_names(revoked))
            self._revoke(revoked)
            return
        try:
            self._revoke(revoked)
        finally:
            self._lock.release()

    def _revoke(self, revoked: set[TopicPartition]) -> None:
        self._epoch += 1
        self.assigned -= set(revoked)
        self.ready -= set(revoked)
        held = {tp.partition for tp in self.assigned}
        for table in self.stage.tables:
            table.held = set(held)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        """Read the tables' changelogs for the partitions before any of their records is handled.

        aiokafka hands the partitions to its fetcher before it calls this, so ``getmany`` may return their records
        while the changelogs are read: ``_process`` handles only partitions in ``ready`` and seeks the others back.
        """
        self._epoch += 1
        self.assigned = set(assigned)
        self.ready = set()
        partitions = {tp.partition for tp in assigned}
        started = time.monotonic()
        if self.stage.tables:
            log.info("recovering_partitions", stage=self.stage.name, partitions=_names(assigned))
        read = await recover_tables(self.settings, self.stage.tables, partitions)
        for table in self.stage.tables:
            table.held = set(partitions)
        self.ready = set(assigned) & self.assigned
        log.info(
            "partitions_assigned",
            stage=self.stage.name,
            partitions=_names(assigned),
            changelog_records=read,
            recovery_s=round(time.monotonic() - started, 3),
        )
        for callback in self.stage.on_assigned:
            result = callback(partitions)
            if result is not None:
                await result

    # -- the loop -------------------------------------------------------------------------------------------

    async def _run(self) -> None:
        assert self.consumer is not None
        consumer = self.consumer
        attempt = 0
        while not self._stopping.is_set():
            try:
                records = await consumer.getmany(timeout_ms=POLL_TIMEOUT_MS)
                if records and self.stage.policy.linger_s:
                    records = await self._linger(consumer, records)
                if not records:
                    continue
                async with self._lock:
                    done = await self._process(records)
                attempt = 0 if done else attempt + 1
            except asyncio.CancelledError:
                # aiokafka was seen to let a CancelledError of its own out of a poll while the group's coordinator
                # went away (its node killed): the stage must go on. Only a cancellation of this task stops it.
                task = asyncio.current_task()
                if self._stopping.is_set() or (task is not None and task.cancelling()):
                    raise
                done = False
                attempt += 1
                self._warn("cancelled", "stage_poll_cancelled_by_client", stage=self.stage.name)
            except Exception as exc:
                if self._stopping.is_set():
                    break
                done = False
                attempt += 1
                if isinstance(exc, KafkaError | ICS2StreamsError | OSError):
                    self._warn("poll", "stage_poll_failed", stage=self.stage.name, error=repr(exc))
                else:
                    log.exception("stage_loop_error", stage=self.stage.name, error=repr(exc))
            if not done and not self._stopping.is_set():
                await self._sleep(backoff(attempt))

    async def _linger(
        self, consumer: AIOKafkaConsumer, records: dict[TopicPartition, list[Any]]
    ) -> dict[TopicPartition, list[Any]]:
        deadline = time.monotonic() + self.stage.policy.linger_s
        count = sum(len(r) for r in records.values())
        while count < self.stage.policy.max_records and not self._stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            more = await consumer.getmany(
                timeout_ms=int(left * 1000), max_records=self.stage.policy.max_records - count
            )
            for tp, extra in more.items():
                records.setdefault(tp, []).extend(extra)
                count += len(extra)
        return records

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _process(self, records: dict[TopicPartition, list[Any]]) -> bool:
        """One batch, by the rule of the module's docstring; False when it must be read again."""
        assert self.consumer is not None
        epoch = self._epoch
        for tp, early in records.items():
            if early and tp in self.assigned and tp not in self.ready:
                # Fetched while its tables are being recovered: read again once they are.
                self.consumer.seek(tp, early[0].offset)
        records = {tp: batch for tp, batch in records.items() if tp in self.ready and batch}
        if not records:
            return True
        batch = Batch()
        firsts = {tp: batch_records[0].offset for tp, batch_records in records.items()}
        try:
            for tp, batch_records in records.items():
                for table in self.stage.tables:
                    table.current_partition = tp.partition
                for record in batch_records:
                    incoming = Incoming.from_record(record)
                    batch.add(tp, incoming, await self.runner.handle(incoming))
            await self.runner.flush(batch)
            if epoch != self._epoch:
                raise _Outlived()
            await self.producer.send_all(self._table_changes())
            if epoch != self._epoch:
                raise _Outlived()
        except _Outlived:
            self._forget(batch)
            log.info("batch_outlived_its_partitions", stage=self.stage.name, records=len(batch))
            return True
        except Exception as exc:
            self._forget(batch)
            if self._stopping.is_set():
                return False
            if not (broker_away(exc) or (isinstance(exc, ICS2StreamsError) and exc.retriable)):
                log.exception("batch_failed", stage=self.stage.name, records=len(batch), error=repr(exc))
            else:
                self._warn("batch", "batch_retried_later", stage=self.stage.name, error=repr(exc), records=len(batch))
            for tp, offset in firsts.items():
                if tp in self.assigned:
                    self.consumer.seek(tp, offset)
            return False
        self._settle_tables(saved=True)
        offsets = {tp: batch_records[-1].offset + 1 for tp, batch_records in records.items()}
        try:
            await self.consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # The outputs and the state are saved: the records are read again by their owner and their outputs,
            # repeated, carry the same ids.
            self._warn("commit", "commit_failed", stage=self.stage.name, error=repr(exc))
        return True

    async def outside_batch(self, work: Callable[[], list[Emit]]) -> int:
        """Run ``work`` (a timer's change to this stage's tables, returning what it emits) between two batches, by
        the same rule: its outputs acknowledged, then its table writes saved; none of it when either fails."""
        async with self._lock:
            emits = work()
            try:
                await self.producer.send_all(emits)
                await self.producer.send_all(self._table_changes())
            except BaseException:
                self._settle_tables(saved=False)
                raise
            self._settle_tables(saved=True)
            return len(emits)

    def _table_changes(self) -> list[ChangelogRecord]:
        """The changelog records of what the stage's tables hold pending."""
        return [record for table in self.stage.tables for record in table.pending_records()]

    def _settle_tables(self, *, saved: bool) -> None:
        """The pending writes become the tables' state (their changelog records acknowledged), or are forgotten."""
        for table in self.stage.tables:
            if saved:
                table.saved()
            else:
                table.abandon()

    def _forget(self, batch: Batch) -> None:
        hook = getattr(self.runner.handler, "abandoned", None)
        if callable(hook):
            hook()
        self._settle_tables(saved=False)

    async def lag(self) -> dict[tuple[str, int], int]:
        """Highwater minus position per partition this stage holds (what ``/metrics`` shows)."""
        consumer = self.consumer
        lag: dict[tuple[str, int], int] = {}
        if consumer is None:
            return lag
        for tp in sorted(self.assigned):
            try:
                highwater = consumer.highwater(tp)
                position = await consumer.position(tp)
            except Exception as exc:  # a partition between rebalances has no position to read
                log.debug("lag_unavailable", stage=self.stage.name, error=repr(exc))
                continue
            if highwater is not None:
                lag[(tp.topic, tp.partition)] = max(0, highwater - position)
        return lag


class _Outlived(ICS2StreamsError):
    """The group took the batch's partitions away while it was being saved."""


def _names(tps: Iterable[TopicPartition]) -> list[str]:
    return [f"{tp.topic}:{tp.partition}" for tp in sorted(tps)]


class Engine:
    """Every stage's processor on this worker, started and stopped together."""

    def __init__(self, producer: Producer) -> None:
        self.producer = producer
        self.processors: dict[str, StageProcessor] = {}
        self.started = asyncio.Event()

    def add(self, processor: StageProcessor) -> None:
        self.processors[processor.stage.name] = processor

    async def start(self) -> None:
        await asyncio.gather(*(p.start() for p in self.processors.values()))
        self.started.set()
        log.info("engine_started", stages=sorted(self.processors))

    async def stop(self) -> None:
        # A stage sleeping in a produce backoff (the broker away) gives up at once instead of at its next attempt.
        self.producer.stopping = True
        await asyncio.gather(*(p.stop() for p in self.processors.values()), return_exceptions=True)
        await self.producer.stop()
        log.info("engine_stopped")

    def assignment(self) -> set[TopicPartition]:
        return {tp for p in self.processors.values() for tp in p.assigned}

    async def lag(self) -> dict[tuple[str, int], int]:
        lag: dict[tuple[str, int], int] = {}
        for processor in self.processors.values():
            lag.update(await processor.lag())
        return lag
