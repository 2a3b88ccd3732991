"""The engine's one save rule: outputs acknowledged, then state saved, then offsets committed; a failed batch leaves
no state and no commit behind, and is read again from its first offset."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from aiokafka.errors import NodeNotReadyError
from aiokafka.structs import ConsumerRecord, TopicPartition

from streams.contracts.avro import SchemaCatalogue
from streams.pipeline.dead_letters import DeadLetterSink
from streams.pipeline.engine import RateLimitedWarning, Stage, StageProcessor
from streams.pipeline.runner import StageRunner, StageStats
from streams.pipeline.stage import Emit, Incoming
from streams.pipeline.tables import StateTable
from streams.settings import Settings
from streams.topics import Catalogue

CATALOGUE = Catalogue.for_prefix("e.")
SOURCE = CATALOGUE.notifications_parsed.name
TP = TopicPartition(SOURCE, 1)


class Kafka:
    """The producer as the engine sees it; ``fail`` makes the next sends fail as while the broker is away."""

    def __init__(self) -> None:
        self.sent: list[Any] = []
        self.fail = 0
        self.stopping = False
        self.catalogue = CATALOGUE

    async def send_all(self, records: Sequence[Any]) -> None:
        if not records:
            return
        if self.fail:
            self.fail -= 1
            raise NodeNotReadyError("broker away")
        self.sent.extend(records)


class Consumer:
    def __init__(self) -> None:
        self.commits: list[dict[TopicPartition, int]] = []
        self.seeks: list[tuple[TopicPartition, int]] = []

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))


class Releaser:
    """The correlate stage's shape: a parked answer is released (popped) and an event emitted for it."""

    def __init__(self, parked: StateTable) -> None:
        self.parked = parked

    def __call__(self, incoming: Incoming) -> list[Emit]:
        waiting = self.parked.pop("lrn:A", None)
        if waiting is None:
            return []
        return [Emit(CATALOGUE.ens_events.name, b"MBL", waiting)]


def records(*offsets: int) -> dict[TopicPartition, list[Any]]:
    return {TP: [ConsumerRecord(SOURCE, 1, o, 0, 0, b"lrn:A", b"entry", None, 5, 5, ()) for o in offsets]}


def processor() -> tuple[StageProcessor, StateTable, Kafka, Consumer]:
    parked = StateTable("parked", "e.parked-changelog", 4)
    parked.restore(1, 0, b"lrn:A", b"IE3N03")
    parked.held = {1}
    kafka = Kafka()
    stage = Stage("correlate", (SOURCE,), Releaser(parked), (parked,))
    sink = DeadLetterSink(kafka, CATALOGUE.dead_letters.name, SchemaCatalogue.load())  # type: ignore[arg-type]
    runner = StageRunner("correlate", stage.handler, kafka, sink, StageStats())  # type: ignore[arg-type]
    made = StageProcessor(stage, runner, kafka, Settings())  # type: ignore[arg-type]
    consumer = Consumer()
    made.consumer = consumer  # type: ignore[assignment]
    made.assigned = made.ready = {TP}
    return made, parked, kafka, consumer


class TestSaveRule:
    async def test_outputs_then_state_then_commit(self):
        made, parked, kafka, consumer = processor()
        assert await made._process(records(7, 8))
        assert [type(r).__name__ for r in kafka.sent] == ["Emit", "ChangelogRecord"], "the event before the state"
        assert kafka.sent[1].value is None and "lrn:A" not in parked
        assert consumer.commits == [{TP: 9}]

    async def test_an_output_that_fails_leaves_the_parked_answer_and_no_commit(self):
        """The lost IE3N03s: the answer was released and saved, its event failed, and nothing was parked any
        more when the record came again. Now the release is forgotten and the record read again."""
        made, parked, kafka, consumer = processor()
        kafka.fail = 1
        assert not await made._process(records(7))
        assert parked["lrn:A"] == b"IE3N03" and not parked.dirty
        assert consumer.commits == [] and consumer.seeks == [(TP, 7)]
        assert await made._process(records(7))
        assert [r.value for r in kafka.sent if isinstance(r, Emit)] == [b"IE3N03"], "released on the second read"
        assert consumer.commits == [{TP: 8}]

    async def test_a_state_that_fails_to_save_is_not_committed(self):
        made, parked, kafka, consumer = processor()
        kafka.fail = 0

        async def state_fails(records_: Sequence[Any]) -> None:
            if records_ and type(records_[0]).__name__ == "ChangelogRecord":
                raise NodeNotReadyError("away")
            await Kafka.send_all(kafka, records_)

        kafka.send_all = state_fails  # type: ignore[method-assign]
        assert not await made._process(records(3))
        assert parked["lrn:A"] == b"IE3N03" and consumer.commits == [] and consumer.seeks == [(TP, 3)]

    async def test_a_batch_that_outlives_its_partitions_commits_nothing(self):
        """A revocation while the batch is being saved: its offsets belong to the partition's next owner."""
        made, parked, kafka, consumer = processor()
        original = kafka.send_all

        async def revoked_meanwhile(records_: Sequence[Any]) -> None:
            await original(records_)
            made._revoke({TP})

        kafka.send_all = revoked_meanwhile  # type: ignore[method-assign]
        assert await made._process(records(5))
        assert consumer.commits == [] and parked["lrn:A"] == b"IE3N03"

    async def test_records_of_partitions_not_held_are_not_handled(self):
        made, _, kafka, consumer = processor()
        made.assigned = made.ready = set()
        assert await made._process(records(1))
        assert kafka.sent == [] and consumer.commits == [] and consumer.seeks == []

    async def test_records_fetched_while_the_tables_recover_are_read_again_after(self):
        """aiokafka fetches a partition before the assignment callback that recovers its tables has returned: the
        correlate stage parked an answer whose ledger entry was still being read, and it was never released."""
        made, parked, kafka, consumer = processor()
        made.ready = set()
        assert await made._process(records(4, 5))
        assert kafka.sent == [] and consumer.commits == [] and consumer.seeks == [(TP, 4)]
        assert parked["lrn:A"] == b"IE3N03"


class TestRevocation:
    async def test_revocation_waits_for_the_batch_in_flight(self):
        made, _, _, _ = processor()
        order: list[str] = []
        async with made._lock:
            revoking = asyncio.create_task(made.on_partitions_revoked({TP}))
            await asyncio.sleep(0.01)
            order.append("batch done")
        await revoking
        order.append("revoked")
        assert order == ["batch done", "revoked"] and made.assigned == set()


class TestRateLimitedWarning:
    def test_one_line_per_interval_with_the_count_held_back(self, monkeypatch):
        logged: list[dict[str, Any]] = []
        monkeypatch.setattr("streams.pipeline.engine.log.warning", lambda event, **kw: logged.append(kw))
        warn = RateLimitedWarning(every_s=3600)
        for _ in range(1000):
            warn("poll", "stage_poll_failed", error="away")
        assert len(logged) == 1
        warn.every_s = 0
        warn("poll", "stage_poll_failed", error="away")
        assert logged[-1]["suppressed"] == 999
