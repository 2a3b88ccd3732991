"""A worker rides out a broker that does not answer for a while: timers skip a look, stage outputs are sent again."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.errors import (
    GroupCoordinatorNotAvailableError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NodeNotReadyError,
)

from streams.errors import BrokerUnavailable
from streams.pipeline import runner
from streams.pipeline.runner import Producer, broker_away, skip_when_broker_away
from streams.pipeline.stage import Emit
from streams.settings import Settings
from streams.topics import Catalogue

CATALOGUE = Catalogue.for_prefix("u.")


class FlakyKafka:
    """An aiokafka producer whose first ``failures`` sends raise, as while the broker is away."""

    def __init__(self, failures: list[Exception]) -> None:
        self.failures = list(failures)
        self.acknowledged: list[tuple[str, bytes]] = []
        self.attempts = 0

    async def send(
        self, topic: str, value: bytes, key: bytes | None, headers: list, partition: int | None = None
    ) -> asyncio.Future[None]:
        self.attempts += 1
        if self.failures:
            raise self.failures.pop(0)
        self.acknowledged.append((topic, value))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


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
        """Two failed attempts while the broker is away, then every output is acknowledged: nothing dead-lettered."""
        kafka = FlakyKafka([NodeNotReadyError("n"), KafkaTimeoutError()])
        await producer_with(kafka).send_all(EMITS)
        assert kafka.acknowledged == [(e.topic, e.value) for e in EMITS]
        assert kafka.attempts == 2 + len(EMITS)

    async def test_a_final_error_is_raised_at_once(self, no_backoff):
        """A record too large fails on the first attempt, so that the stage dead-letters it."""
        kafka = FlakyKafka([MessageSizeTooLargeError()])
        with pytest.raises(MessageSizeTooLargeError):
            await producer_with(kafka).send_all(EMITS)
        assert kafka.attempts == 1

    async def test_an_outage_longer_than_the_budget_is_raised(self, no_backoff, monkeypatch):
        """Past ``PRODUCE_RETRY_S`` the error goes up (the engine then reads the batch again later)."""
        monkeypatch.setattr(runner, "PRODUCE_RETRY_S", 0.0)
        kafka = FlakyKafka([NodeNotReadyError("n")] * 5)
        with pytest.raises(NodeNotReadyError):
            await producer_with(kafka).send_all(EMITS)
        assert kafka.attempts == 1


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
