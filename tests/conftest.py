"""Root fixtures: one real Kafka broker (KRaft, one node) for the whole test session, started only when asked for.

Unit tests never request ``kafka_broker``, so they run without Java. Integration tests get a fresh topic prefix
and catalogue each, so they can share the broker without seeing each other's records. A broker that cannot
start is a failure with its log tail, never a skip: in CI the broker must be there.

The seed co-load is one scenario for every test: the ``seed`` fixture (the model, shared: it is immutable), or
``tests.data.seed_json`` for a fresh copy of its JSON that a test may change.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from streams.admin import apply_topics, delete_topics, list_topics
from streams.broker import LocalBroker
from streams.domain.model import Consolidation
from streams.settings import Settings
from streams.topics import Catalogue
from tests.data import seed_consolidation
from tests.integration.services import start_broker

INTEGRATION_DIR = Path(__file__).resolve().parent / "integration"
REPO = Path(__file__).resolve().parents[1]
#: The workplace folder that may sit beside a developer's clone; a user's clone has none, so nothing may open it.
BESIDE = REPO.parent / "shared"
OPENED_BESIDE: list[str] = []


def _watch_opens(event: str, args: tuple[object, ...]) -> None:
    """Record every file the test process opens in ``../shared`` (an audit hook sees opens from any module)."""
    if event == "open" and args and isinstance(args[0], str | Path):
        path = str(args[0])
        if path.startswith(str(BESIDE)):
            OPENED_BESIDE.append(path)


sys.addaudithook(_watch_opens)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run when anything read outside the repository: the suite must pass on a clone that stands alone."""
    if OPENED_BESIDE:
        print(f"\nopened outside the repository: {sorted(set(OPENED_BESIDE))}", file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test under tests/integration/ needs the broker; mark it so ``-m 'not integration'`` works."""
    for item in items:
        if INTEGRATION_DIR in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """The session's broker on free loopback ports, in a temporary state folder; stopped at the end."""
    broker = start_broker(tmp_path_factory.mktemp("kafka"), "the session's Kafka broker")
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafka_settings(kafka_broker: LocalBroker, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings pointing at the session's broker, independent of the developer's ICS2_* variables."""
    return Settings(
        bootstrap_servers=kafka_broker.config.bootstrap_servers,
        state_dir=tmp_path_factory.mktemp("state"),
        default_partitions=4,
    )


@pytest.fixture
def topic_prefix() -> str:
    """A fresh prefix per test, so tests sharing the broker never read each other's records."""
    return f"t{uuid.uuid4().hex[:8]}."


@pytest.fixture
async def catalogue(kafka_settings: Settings, topic_prefix: str) -> AsyncIterator[Catalogue]:
    """The catalogue of this test's prefix with every topic already created; its topics are deleted afterwards."""
    catalogue = Catalogue.for_prefix(topic_prefix)
    await apply_topics(kafka_settings, catalogue)
    yield catalogue
    await delete_topics(kafka_settings, await list_topics(kafka_settings, topic_prefix), wait=False)


@pytest.fixture(scope="session")
def seed() -> Consolidation:
    """The seed co-load as the model reads it."""
    return seed_consolidation()
