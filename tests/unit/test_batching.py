"""The stage runner's batches: nothing is acknowledged before every output of its batch is, in the inputs' order."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from aiokafka.errors import MessageSizeTooLargeError

from streams.contracts.avro import SchemaCatalogue
from streams.errors import BrokerUnavailable
from streams.pipeline.dead_letters import DeadLetterSink
from streams.pipeline.runner import Batch, StageRunner, StageStats
from streams.pipeline.stage import Emit, Incoming
from streams.topics import Catalogue

SCHEMAS = SchemaCatalogue.load()
CATALOGUE = Catalogue.for_prefix("b.")
OUT = CATALOGUE.alerts.name


def record(offset: int, value: bytes = b"v") -> Incoming:
    return Incoming(CATALOGUE.bookings.name, 0, offset, b"k", value)


class Producer:
    """Records each ``send_all``; a gate holds the broker's acknowledgement back, ``refuse`` fails the named values."""

    def __init__(self, refuse: Sequence[bytes] = (), error: Exception | None = None) -> None:
        self.catalogue = CATALOGUE
        self.calls: list[list[Emit]] = []
        self.acknowledged: list[Emit] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.refuse = set(refuse)
        self.error = error

    async def send_all(self, emits: Sequence[Emit]) -> None:
        self.calls.append(list(emits))
        await self.gate.wait()
        if self.error is not None:
            raise self.error
        if any(e.value in self.refuse for e in emits):
            raise MessageSizeTooLargeError()
        self.acknowledged.extend(emits)


class Echo:
    """A handler with two outputs per input, and the batch hooks the runner calls."""

    def __init__(self) -> None:
        self.hooks: list[str] = []

    def __call__(self, incoming: Incoming) -> list[Emit]:
        if incoming.value == b"retry":
            raise BrokerUnavailable("table not ready")
        return [Emit(OUT, incoming.key, incoming.value + b"-1"), Emit(OUT, incoming.key, incoming.value + b"-2")]

    def acknowledged(self) -> None:
        self.hooks.append("acknowledged")

    def abandoned(self) -> None:
        self.hooks.append("abandoned")


def stage(producer: Producer, handler: Any = None) -> tuple[StageRunner, Echo]:
    handler = handler or Echo()
    sink = DeadLetterSink(producer, CATALOGUE.dead_letters.name, SCHEMAS)  # type: ignore[arg-type]
    return StageRunner("s", handler, producer, sink, StageStats()), handler  # type: ignore[arg-type]


async def filled(runner: StageRunner, values: Sequence[bytes]) -> Batch:
    batch = Batch()
    for offset, value in enumerate(values):
        incoming = record(offset, value)
        batch.add(offset, incoming, await runner.handle(incoming))
    return batch


class TestFlush:
    async def test_inputs_are_acknowledged_only_after_every_output_and_in_order(self):
        """While the broker holds the acknowledgement back no input is acknowledged; then all are, in order."""
        producer = Producer()
        runner, handler = stage(producer)
        batch = await filled(runner, [b"a", b"b", b"c"])
        acked: list[int] = []

        async def ack(token: int) -> None:
            assert len(producer.acknowledged) == 6, "an input acknowledged before its batch's outputs"
            acked.append(token)

        producer.gate.clear()
        flushing = asyncio.create_task(runner.flush(batch, ack))
        await asyncio.sleep(0.01)
        assert acked == [] and not flushing.done()
        producer.gate.set()
        await flushing
        assert acked == [0, 1, 2]
        assert len(producer.calls) == 1, "the batch's outputs go out together"
        assert [e.value for e in producer.acknowledged] == [b"a-1", b"a-2", b"b-1", b"b-2", b"c-1", b"c-2"]
        assert handler.hooks == ["acknowledged"]
        assert runner.stats.emitted["s"] == 6 and runner.stats.consumed["s"] == 3

    async def test_a_failed_send_leaves_the_whole_batch_unacknowledged(self):
        """The broker away past the retry budget: the error goes up, no input is acknowledged, held state dropped."""
        producer = Producer(error=ConnectionError("broker gone"))
        runner, handler = stage(producer)
        batch = await filled(runner, [b"a", b"b"])
        acked: list[int] = []

        async def ack(token: int) -> None:
            acked.append(token)

        with pytest.raises(ConnectionError):
            await runner.flush(batch, ack)
        assert acked == []
        assert handler.hooks == ["abandoned"]
        assert runner.stats.emitted["s"] == 0

    async def test_a_record_the_broker_refuses_is_dead_lettered_and_the_rest_go_through(self):
        """One record's outputs refused for good: sent one by one, that record dead-lettered, all acknowledged."""
        producer = Producer(refuse=[b"big-1"])
        runner, _ = stage(producer)
        batch = await filled(runner, [b"a", b"big", b"c"])
        acked: list[int] = []

        async def ack(token: int) -> None:
            acked.append(token)

        await runner.flush(batch, ack)
        assert acked == [0, 1, 2]
        topics = [e.topic for e in producer.acknowledged]
        assert topics.count(CATALOGUE.dead_letters.name) == 1
        assert [e.value for e in producer.acknowledged if e.topic == OUT] == [b"a-1", b"a-2", b"c-1", b"c-2"]
        assert runner.stats.dead_lettered["s"] == 1

    async def test_bad_input_becomes_its_dead_letter_in_the_batch(self):
        """A record the handler cannot use is one dead letter among the batch's outputs, never an error."""
        producer = Producer()
        runner, _ = stage(producer, handler=lambda incoming: (_ for _ in ()).throw(ValueError("bug")))
        batch = await filled(runner, [b"x"])
        await runner.flush(batch)
        assert [e.topic for e in producer.acknowledged] == [CATALOGUE.dead_letters.name]

    async def test_a_retriable_error_is_raised_for_the_worker_to_stop(self):
        """A retriable error is not dead-lettered: the record stays unacknowledged for a later attempt."""
        runner, _ = stage(Producer())
        with pytest.raises(BrokerUnavailable):
            await runner.handle(record(0, b"retry"))

    async def test_an_empty_batch_sends_nothing(self):
        producer = Producer()
        runner, handler = stage(producer)
        await runner.flush(Batch())
        assert producer.calls == [] and handler.hooks == []


class TestDeadLetterLoop:
    async def test_a_dead_letter_that_cannot_be_handled_is_not_dead_lettered_again(self):
        """A stage reading the dead-letter topic must not write its failures back to it: that loops."""
        producer = Producer()

        def broken(incoming: Incoming) -> list[Emit]:
            raise ValueError("bug")

        runner = StageRunner(
            "audit-collect-dead-letters",
            broken,
            producer,  # type: ignore[arg-type]
            DeadLetterSink(producer, CATALOGUE.dead_letters.name, SCHEMAS),  # type: ignore[arg-type]
            StageStats(),
        )
        looped = Incoming(CATALOGUE.dead_letters.name, 0, 7, b"k", b"v")
        assert await runner.handle(looped) == []
        assert runner.stats.dead_lettered["audit-collect-dead-letters"] == 1
        [letter] = await runner.handle(record(8))
        assert letter.topic == CATALOGUE.dead_letters.name


class TestBalance:
    async def test_every_record_consumed_ends_with_output_without_or_as_a_dead_letter(self):
        """Count in = out + none + dead letters, per stage, as /metrics shows it."""
        producer = Producer()

        def handler(incoming: Incoming) -> list[Emit]:
            if incoming.value == b"bad":
                raise ValueError("bug")
            return [] if incoming.value == b"quiet" else [Emit(OUT, b"k", b"out")]

        stats = StageStats()
        runner = StageRunner(
            "s",
            handler,
            producer,
            DeadLetterSink(producer, CATALOGUE.dead_letters.name, SCHEMAS),
            stats,  # type: ignore[arg-type]
        )
        for offset, value in enumerate([b"v", b"quiet", b"bad", b"v"]):
            await runner.handle(record(offset, value))
        assert (stats.with_output["s"], stats.without_output["s"], stats.dead_lettered["s"]) == (2, 1, 1)
        assert (
            stats.consumed["s"]
            == 4
            == sum(c["s"] for c in (stats.with_output, stats.without_output, stats.dead_lettered))
        )
