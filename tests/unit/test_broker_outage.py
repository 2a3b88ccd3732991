"""A worker rides out a broker that does not answer for a while: timers skip a look, stage outputs are sent again."""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

import pytest
from aiokafka.errors import (
    GroupCoordinatorNotAvailableError,
    KafkaConnectionError,
    KafkaTimeoutError,
    LeaderNotAvailableError,
    MessageSizeTooLargeError,
    NodeNotReadyError,
    OutOfOrderSequenceNumber,
    ProducerClosed,
)

from streams.errors import BrokerUnavailable
from streams.pipeline import runner
from streams.pipeline.runner import Producer, broker_away, skip_when_broker_away
from streams.pipeline.stage import Emit
from streams.settings import Settings
from streams.topics import Catalogue

CATALOGUE = Catalogue.for_prefix("u.")


class FlakyKafka:
    """An aiokafka producer on a broker that refuses the first ``failures`` sends (the list is shared by every
    producer made on it, as a broker is), and acknowledges the others with ``outcome`` (``None``: success)."""

    def __init__(self, failures: list[Exception], outcome: Exception | None = None) -> None:
        self.failures = failures
        self.outcome = outcome
        self.acknowledged: list[tuple[str, bytes]] = []
        self.attempts = 0
        self.stopped = False
        self.futures: list[asyncio.Future[None]] = []

    async def send(
        self, topic: str, value: bytes, key: bytes | None, headers: list, partition: int | None = None
    ) -> asyncio.Future[None]:
        if self.stopped:
            raise ProducerClosed()
        self.attempts += 1
        if self.failures:
            raise self.failures.pop(0)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.outcome is None:
            self.acknowledged.append((topic, value))
            done.set_result(None)
        else:
            done.set_exception(self.outcome)
        self.futures.append(done)
        return done

    async def stop(self) -> None:
        self.stopped = True

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1}


class FakeBroker:
    """Makes the producers of a ``Producer``: ``away`` starts fail as on a broker that refuses connections."""

    def __init__(self, failures: list[Exception] | None = None, away: int = 0) -> None:
        self.failures = failures if failures is not None else []
        self.away = away
        self.made: list[FlakyKafka] = []
        self.starts = 0

    def producer(self) -> Producer:
        producer = Producer(Settings(), CATALOGUE)
        producer._start_kafka = self.start  # type: ignore[method-assign]
        return producer

    async def start(self) -> FlakyKafka:
        self.starts += 1
        if self.away:
            self.away -= 1
            raise KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 9092)]")
        kafka = FlakyKafka(self.failures)
        self.made.append(kafka)
        return kafka

    @property
    def acknowledged(self) -> list[tuple[str, bytes]]:
        return [record for kafka in self.made for record in kafka.acknowledged]

    @property
    def attempts(self) -> int:
        return sum(kafka.attempts for kafka in self.made)


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "backoff", lambda attempt: 0.0)


def producer_with(kafka: FlakyKafka) -> Producer:
    producer = Producer(Settings(), CATALOGUE)
    producer._kafka = kafka  # type: ignore[assignment]
    return producer


EMITS = [Emit(CATALOGUE.alerts.name, b"k1", b"v1"), Emit(CATALOGUE.ens_events.name, b"k2", b"v2")]


class TestBrokerAway:
    @pytest.mark.parametrize(
        "error",
        [NodeNotReadyError("n"), KafkaTimeoutError(), BrokerUnavailable("b"), GroupCoordinatorNotAvailableError()],
    )
    def test_outage_errors_are_worth_another_try(self, error):
        """Errors of a broker that is restarting or frozen, including a timed-out request, are transient."""
        assert broker_away(error)

    @pytest.mark.parametrize("error", [MessageSizeTooLargeError(), ValueError("bug")])
    def test_final_errors_are_not(self, error):
        """A record the broker refuses, or a bug, is not retried: it goes to the dead-letter topic."""
        assert not broker_away(error)


class TestSendAllRetries:
    async def test_outputs_are_sent_again_until_the_broker_answers(self, no_backoff):
        """Two failed attempts while the broker is away, then every output is acknowledged: nothing dead-lettered.
        Each failed attempt retires its producer (stopped), and the next attempt starts a new one."""
        broker = FakeBroker([NodeNotReadyError("n"), KafkaTimeoutError()])
        await broker.producer().send_all(EMITS)
        assert broker.acknowledged == [(e.topic, e.value) for e in EMITS]
        assert broker.attempts == 2 + len(EMITS)
        assert [kafka.stopped for kafka in broker.made] == [True, True, False]

    async def test_no_producer_runs_while_the_broker_is_away(self, no_backoff):
        """While the broker refuses connections a new producer fails to start: the send waits, with backoff, and
        sends once a producer starts, on that one."""
        broker = FakeBroker(away=3)
        await broker.producer().send_all(EMITS)
        assert broker.starts == 4 and len(broker.made) == 1
        assert broker.acknowledged == [(e.topic, e.value) for e in EMITS]

    async def test_a_final_error_is_raised_at_once(self, no_backoff):
        """A record too large fails on the first attempt, so that the stage dead-letters it; the producer stays."""
        broker = FakeBroker([MessageSizeTooLargeError()])
        with pytest.raises(MessageSizeTooLargeError):
            await broker.producer().send_all(EMITS)
        assert broker.attempts == 1 and not broker.made[0].stopped

    async def test_an_outage_longer_than_the_budget_is_raised(self, no_backoff, monkeypatch):
        """Past ``PRODUCE_RETRY_S`` the error goes up (the engine then reads the batch again later)."""
        monkeypatch.setattr(runner, "PRODUCE_RETRY_S", 0.0)
        broker = FakeBroker([NodeNotReadyError("n")] * 5)
        with pytest.raises(NodeNotReadyError):
            await broker.producer().send_all(EMITS)
        assert broker.attempts == 1


class TestOutOfOrderSequence:
    async def test_the_producer_is_replaced_and_the_records_sent_again(self, no_backoff):
        """aiokafka#1017: after an outage the idempotent producer's batches are refused with an out-of-order
        sequence number, for good. The producer is retired (stopped) and the records go out on a new one."""
        broker = FakeBroker()
        producer = broker.producer()
        broken = FlakyKafka([], outcome=OutOfOrderSequenceNumber())
        producer._kafka = broken  # type: ignore[assignment]
        await producer.send_all(EMITS)
        assert broken.stopped and broken.acknowledged == []
        assert broker.acknowledged == [(e.topic, e.value) for e in EMITS]
        assert producer._kafka is broker.made[0]

    async def test_a_send_on_a_producer_retired_meanwhile_is_sent_again(self, no_backoff):
        """Stages share the producer: one retires it while another hands records over; that one's records are
        sent again on the new producer instead of failing for good (ProducerClosed was dead-lettered)."""
        broker = FakeBroker()
        producer = broker.producer()

        class RetiredMeanwhile(FlakyKafka):
            async def send(self, *args: Any, **kwargs: Any) -> asyncio.Future[None]:
                producer._retire(self, "another stage's send failed")  # type: ignore[arg-type]
                self.stopped = True
                return await super().send(*args, **kwargs)

        old = RetiredMeanwhile([])
        producer._kafka = old  # type: ignore[assignment]
        await producer.send_all(EMITS)
        assert old.acknowledged == []
        assert broker.acknowledged == [(e.topic, e.value) for e in EMITS]

    async def test_stopping_producer_does_not_start_another(self):
        """After ``stop`` a send fails at once (ProducerClosed), without starting a producer nobody would stop."""
        broker = FakeBroker()
        producer = broker.producer()
        await producer.stop()
        with pytest.raises(ProducerClosed):
            await producer.send_all(EMITS)
        assert broker.starts == 0


class HalfWayKafka(FlakyKafka):
    """Takes the first record (its acknowledgement still to come), then fails to take the next one."""

    def __init__(self) -> None:
        super().__init__([])
        self.first: asyncio.Future[None] | None = None

    async def send(self, *args: Any, **kwargs: Any) -> asyncio.Future[None]:
        if self.first is None:
            self.first = asyncio.get_running_loop().create_future()
            return self.first
        raise KafkaTimeoutError()


class TestFailedRecordsAreRetrieved:
    async def test_no_future_exception_is_left_unretrieved(self, no_backoff):
        """A send that fails half way leaves futures of records handed over before; their failures are retrieved,
        not logged by asyncio as "Future exception was never retrieved" (39 such lines in one outage)."""
        loop = asyncio.get_running_loop()
        reported: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _loop, context: reported.append(context))
        try:
            with pytest.raises(LeaderNotAvailableError):
                await producer_with(FlakyKafka([], outcome=LeaderNotAvailableError()))._send_once(EMITS * 3)
            half_way = HalfWayKafka()
            with pytest.raises(KafkaTimeoutError):
                await producer_with(half_way)._send_once(EMITS)
            assert half_way.first is not None
            half_way.first.set_exception(LeaderNotAvailableError())
            await asyncio.sleep(0)
            del half_way
            gc.collect()
            await asyncio.sleep(0)
        finally:
            loop.set_exception_handler(None)
        assert not [c for c in reported if "never retrieved" in str(c.get("message"))], reported


class TestStop:
    async def test_stop_waits_a_bounded_time_for_records_the_producer_holds(self, monkeypatch):
        """aiokafka's stop waits until each record is delivered or expires; with the broker away SIGTERM must not
        wait that long."""
        monkeypatch.setattr(runner, "STOP_FLUSH_S", 0.1)
        producer = producer_with(HoldingKafka([]))
        started = time.monotonic()
        await producer.stop()
        assert time.monotonic() - started < 1.0
        assert producer.stopping and producer._kafka is None

    async def test_retired_producers_are_not_waited_for(self):
        """A retired producer holds only records its callers gave up (they send them again, or read their input
        again after the restart): the stop does not wait for the broker on its behalf."""
        producer = Producer(Settings(), CATALOGUE)
        producer._close_in_background(HoldingKafka([]))  # type: ignore[arg-type]
        closing = set(producer._retired)
        started = time.monotonic()
        await producer.stop()
        assert time.monotonic() - started < 0.5
        await asyncio.sleep(0.01)
        assert all(task.cancelled() for task in closing) and not producer._retired


class HoldingKafka(FlakyKafka):
    """A producer whose stop waits for a broker that does not come back."""

    async def stop(self) -> None:
        await asyncio.Event().wait()


class TestBackoff:
    def test_capped_exponential_with_jitter(self):
        """Clients that lost the broker together do not come back in the same instant, nor wait without end."""
        waits = [runner.backoff(attempt, first=0.5, cap=10.0) for attempt in range(12)]
        for attempt, wait in enumerate(waits):
            base = min(10.0, 0.5 * 2**attempt)
            assert base <= wait <= base * 1.5
        assert len({runner.backoff(3) for _ in range(20)}) > 1, "jittered"

    async def test_a_stopping_producer_gives_up_at_once(self, no_backoff):
        """SIGTERM while the broker is away: the send does not retry for its whole budget."""
        producer = producer_with(FlakyKafka([NodeNotReadyError("n")] * 50))
        producer.stopping = True
        with pytest.raises(NodeNotReadyError):
            await producer.send_all(EMITS)


class TestSkipWhenBrokerAway:
    @pytest.mark.parametrize(
        "error",
        [
            GroupCoordinatorNotAvailableError("Unable to get coordinator id"),
            KafkaTimeoutError(),
            NodeNotReadyError("node 1"),
            BrokerUnavailable("no Kafka broker answers at 127.0.0.1:9092"),
        ],
    )
    async def test_a_broker_outage_skips_the_look(self, error):
        """What a restarting or frozen broker raises is swallowed and reported as a skipped look."""
        calls = []

        async def look() -> None:
            calls.append(1)
            raise error

        assert await skip_when_broker_away("stall-guard", look) is False
        assert calls == [1]

    async def test_a_look_that_works_is_reported_done(self):
        """A look that returns normally runs once and counts as done."""
        calls = []

        async def look() -> str:
            calls.append(1)
            return "ok"

        assert await skip_when_broker_away("deadline-watchdog", look) is True
        assert calls == [1]

    async def test_a_bug_still_surfaces(self):
        """Anything but a broker outage propagates: a programming error must not be hidden as an outage."""

        async def look() -> None:
            raise ValueError("bug")

        with pytest.raises(ValueError, match="bug"):
            await skip_when_broker_away("stall-guard", look)
