"""Faults on a real broker: the broker restarted mid-stream, the broker unresponsive for a while, a worker that
starts with no local state at all, and a worker killed twice (the second time while it recovers) under the audit
trail.

These tests stop, freeze and restart a broker, so they run on their OWN one-node broker (module fixture), never on
the session's broker that every other integration test shares. The worker and the customs simulator (gateway)
run as real ``ics2`` subprocesses and are not restarted: they must ride the fault out on their own. Afterwards
every booking's filings must be registered, no alert id may carry two different contents, nothing may be
dead-lettered, and the ENS states served by the worker must be complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from streams.admin import apply_topics
from streams.audit.entries import AuditEntry, EntryDeriver
from streams.audit.reading import read_trail
from streams.audit.replay import build_report
from streams.audit.trail import examine
from streams.broker import LocalBroker
from streams.client import Record, publish_bookings, read_topic, start_client, stop_consumer
from streams.contracts.avro import SchemaCatalogue
from streams.demo import unique_alerts
from streams.scenarios import seed_booking
from streams.settings import Settings
from streams.topics import Catalogue
from tests.data import SEED_PARTIES
from tests.integration.services import (
    BROKER_START_TIMEOUT_S,
    ICS2,
    Service,
    gateway,
    service_env,
    start_broker,
    worker,
)

SCHEMAS = SchemaCatalogue.load()
#: The seed co-load as booked by ML-TYO: two F15 and two F14 are ML-TYO's own filings.
FILINGS_PER_BOOKING = 4
#: How long the broker stays frozen: longer than the gateway consumer's 10 s and the worker's 6 s session timeouts,
#: shorter than the clients' 40 s request timeout: coordinator and partition leaders stop answering, then come back.
FREEZE_S = 15.0
#: How long a worker stays frozen: beyond its 6 s group session (``streams.pipeline.engine.SESSION_TIMEOUT_S``), so
#: the coordinator drops it, and beyond the 3 s heartbeat's own session check.
WORKER_FREEZE_S = 10.0
#: What the worker logs when a group has assigned it partitions and it reads their tables' changelogs: the moment of
#: the start-up freeze, as when a slow disk stalled a worker there for longer than its session.
OPENING_STATE = "recovering_partitions"
#: Generous: the machine is small and shared.
SETTLE_TIMEOUT_S = 150.0


@pytest.fixture(scope="module")
def fault_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """A one-node broker of this module alone, on free loopback ports; these tests stop and freeze it."""
    broker = start_broker(tmp_path_factory.mktemp("fault-kafka"), "the fault tests' Kafka broker")
    try:
        yield broker
    finally:
        thaw(broker)
        broker.stop()


async def fresh_settings(broker: LocalBroker, tmp_path: Path, letter: str = "f") -> Settings:
    """Settings of a fresh topic prefix and app id on ``broker``, with every topic and party queue created."""
    prefix = f"{letter}{uuid.uuid4().hex[:8]}."
    settings = Settings(
        bootstrap_servers=broker.config.bootstrap_servers,
        state_dir=tmp_path / "client-state",
        topic_prefix=prefix,
        app_id=f"{prefix}app",
        default_partitions=4,
    )
    await apply_topics(settings, Catalogue.for_prefix(prefix), SEED_PARTIES)
    return settings


@pytest.fixture
async def fault_settings(fault_broker: LocalBroker, tmp_path: Path) -> Settings:
    """Settings of a fresh topic prefix and app id on the module's broker, with every topic and party queue created."""
    return await fresh_settings(fault_broker, tmp_path)


def thaw(broker: LocalBroker) -> None:
    """SIGCONT the broker's JVM; harmless when it is not stopped."""
    pid = broker.status(probe=False).pid
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def process_state(pid: int) -> str:
    """The one-letter state of a process in ``/proc/<pid>/stat`` ('T' when stopped by a signal)."""
    stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    return stat.rpartition(")")[2].split()[0]


def bookings(count: int) -> list[dict[str, Any]]:
    """``count`` copies of the seed co-load, each its own consolidation (MBL) and booking event."""
    books = []
    for i in range(count):
        book = seed_booking()
        book["master"]["mbl_number"] = f"OCLU26TYO{i:07d}"
        book["event_id"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"fault/{book['master']['mbl_number']}/1"))
        books.append(book)
    return books


def mbl_of(book: dict[str, Any]) -> str:
    return str(book["master"]["mbl_number"])


def alerts_of(records: list[Record]) -> list[dict[str, Any]]:
    return [SCHEMAS.decode(r.value, reader="PartyAlert").record for r in records]


def registered_lrns(records: list[Record]) -> set[str]:
    """LRNs that customs registered (IE3R01), as the alerts tell."""
    return {a["lrn"] for a in alerts_of(records) if a["notification_message_type"] == "IE3R01"}


def conflicting_alert_ids(alerts: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Alert ids that arrived with two different contents; a replay may only repeat an alert, never change it.

    ``created_at`` is when the worker built the alert; a replay builds it again later, so it is left out.
    """
    seen: dict[str, list[dict[str, Any]]] = {}
    for alert in alerts:
        content = {k: v for k, v in alert.items() if k != "created_at"}
        variants = seen.setdefault(alert["alert_id"], [])
        if content not in variants:
            variants.append(content)
    return {alert_id: variants for alert_id, variants in seen.items() if len(variants) > 1}


def our_filings(state: dict[str, Any]) -> dict[str, str]:
    """HBL (or '-') and filing type -> state, for the filings the planning party lodges itself."""
    return {f"{f['filing']}|{f['hbl'] or '-'}": f["state"] for f in state.get("filings", []) if f["ours"]}


def ens_states(service: Service, mbls: list[str]) -> dict[str, dict[str, Any] | None]:
    """``GET /ens/<mbl>`` for each MBL; None where the worker does not know it (yet) or does not answer."""
    states: dict[str, dict[str, Any] | None] = {}
    for mbl in mbls:
        try:
            status, body = service.get(f"/ens/{mbl}")
        except OSError:
            status, body = 0, {}
        states[mbl] = body if status == 200 else None
    return states


def complete(states: dict[str, dict[str, Any] | None]) -> bool:
    """Every ENS known, and each of our filings in it registered."""
    return all(
        state is not None
        and len(our_filings(state)) == FILINGS_PER_BOOKING
        and set(our_filings(state).values()) == {"registered"}
        for state in states.values()
    )


async def freeze_process(pid: int, seconds: float, what: str) -> None:
    """SIGSTOP the process for ``seconds``, then SIGCONT, whatever happens meanwhile."""
    os.kill(pid, signal.SIGSTOP)
    try:
        assert await poll_until(lambda: process_state(pid) == "T", 5.0), f"{what} is frozen"
        await asyncio.sleep(seconds)
    finally:
        os.kill(pid, signal.SIGCONT)


async def poll_until(check: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    """True as soon as ``check`` holds, False when time runs out first."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(interval)
    return True


async def poll_states(
    service: Service, mbls: list[str], done: Callable[[dict[str, dict[str, Any] | None]], bool], timeout: float
) -> dict[str, dict[str, Any] | None]:
    """The worker's ENS states, read again every second until ``done`` holds or time runs out; the last read."""
    deadline = time.monotonic() + timeout
    while True:
        states = await asyncio.to_thread(ens_states, service, mbls)
        if done(states) or time.monotonic() >= deadline:
            return states
        await asyncio.sleep(1.0)


@dataclass
class Outcome:
    """What the topics and the worker hold once the traffic has settled."""

    alerts: list[dict[str, Any]]
    registered_at_ms: dict[str, int]
    """LRN -> broker timestamp of its first registration alert."""
    outbound: list[Record]
    dead_letters: list[dict[str, Any]]
    states: dict[str, dict[str, Any] | None]


async def settle(
    settings: Settings, service: Service, mbls: list[str], expected_lrns: int, *others: Service
) -> Outcome:
    """Wait until ``expected_lrns`` filings are registered and every ENS is complete, then read what is there.

    Fails at once, with the crash, when the worker or another service dies meanwhile.
    """
    catalogue = Catalogue.for_prefix(settings.topic_prefix)

    def registered_all(records: list[Record]) -> bool:
        assert_alive(service, *others)
        return len(registered_lrns(records)) >= expected_lrns

    await read_topic(settings, catalogue.alerts.name, until=registered_all, timeout=SETTLE_TIMEOUT_S)
    states = await poll_states(service, mbls, complete, 60.0)
    alert_records = await read_topic(settings, catalogue.alerts.name, timeout=30)
    alerts = alerts_of(alert_records)
    registered_at_ms: dict[str, int] = {}
    for record, alert in zip(alert_records, alerts, strict=True):
        if alert["notification_message_type"] == "IE3R01":
            lrn = alert["lrn"]
            registered_at_ms[lrn] = min(record.timestamp_ms, registered_at_ms.get(lrn, record.timestamp_ms))
    outbound = await read_topic(settings, catalogue.filings_outbound.name, timeout=30)
    raw_dead = await read_topic(settings, catalogue.dead_letters.name, timeout=15)
    dead = [SCHEMAS.decode(r.value, reader="DeadLetter").record for r in raw_dead]
    return Outcome(alerts, registered_at_ms, outbound, dead, states)


def assert_nothing_lost_or_doubled(outcome: Outcome, books: list[dict[str, Any]], *logs: Service) -> None:
    """Every booking's filings registered once, every alert id with one content, no dead letter, complete ENS."""
    tails = "\n".join(f"--- {s.name} ---\n{trouble(s)}" for s in logs)
    expected = len(books) * FILINGS_PER_BOOKING
    lrns = {r.header("ics2-lrn") for r in outcome.outbound}
    assert len(lrns) == expected, f"one LRN per filing, {len(lrns)} of {expected}:\n{tails}"
    registered = {a["lrn"] for a in unique_alerts(outcome.alerts) if a["notification_message_type"] == "IE3R01"}
    assert registered == {lrn.decode() for lrn in lrns if lrn is not None}, f"every filing registered:\n{tails}"
    kinds = {a["notification_message_type"] for a in outcome.alerts}
    assert not kinds & {"IE3N01", "IE3N99"}, f"customs saw a duplicate or an invalid filing: {kinds}"
    assert not conflicting_alert_ids(outcome.alerts), "an alert id arrived with two different contents"
    assert outcome.dead_letters == [], f"dead letters: {[d['reason'] for d in outcome.dead_letters]}\n{tails}"
    missing = [mbl for mbl, state in outcome.states.items() if state is None]
    assert not missing, f"ENS unknown to the worker: {missing}\n{tails}"
    assert complete(outcome.states), {mbl: our_filings(s or {}) for mbl, s in outcome.states.items()}
    assert set(outcome.states) == {mbl_of(b) for b in books}


@contextlib.asynccontextmanager
async def running(settings: Settings, tmp: Path) -> AsyncIterator[tuple[Service, Service]]:
    """A worker and the customs simulator, healthy; both stopped (SIGTERM) at the end."""
    customs = gateway(settings, tmp, "--poll-interval", "1").start()
    processing = worker(settings, tmp).start()
    try:
        await asyncio.to_thread(processing.wait_healthy, 90.0)
        yield processing, customs
    finally:
        processing.stop()
        customs.stop()


async def first_filings_out(settings: Settings, count: int = 6) -> None:
    """Until the worker has sent some filings: the fault then hits a stream in full flow."""
    outbound = Catalogue.for_prefix(settings.topic_prefix).filings_outbound.name
    records = await read_topic(settings, outbound, until=lambda rs: len(rs) >= count, timeout=90)
    assert len(records) >= count, "the worker sent no filings before the fault"


def assert_hit_mid_stream(outcome: Outcome, fault_at_ms: int) -> None:
    """The fault is only a test if some filings were still on their way: registered after it began."""
    after = [lrn for lrn, at in outcome.registered_at_ms.items() if at > fault_at_ms]
    assert after, "every filing was registered before the fault: it did not hit the stream mid-way"


def assert_alive(*services: Service) -> None:
    for service in services:
        assert service.proc is not None and service.proc.poll() is None, f"{service.name} died:\n{trouble(service)}"


def trouble(service: Service, lines: int = 12) -> str:
    """The log lines that say why a service failed (crashes, exceptions), then the end of its log."""
    text = service.log_path.read_text(errors="replace") if service.log_path.exists() else ""
    marks = ("Crashed", "crash", "Traceback", "dead_letter", "produce_failed", "critical")
    causes = [line[:2000] for line in text.splitlines() if any(mark in line for mark in marks)][:lines]
    return "\n".join([*causes, "--- tail ---", service.tail(lines)])


async def ride_out(settings: Settings, tmp: Path, fault: Callable[[], Awaitable[None]]) -> None:
    """Twelve bookings, the fault once some filings are out, then every check; worker and gateway never restarted."""
    books = bookings(12)
    async with running(settings, tmp) as (processing, customs):
        await publish_bookings(settings, books)
        await first_filings_out(settings)
        fault_at_ms = int(time.time() * 1000)
        await fault()
        expected = len(books) * FILINGS_PER_BOOKING
        outcome = await settle(settings, processing, [mbl_of(b) for b in books], expected, customs)
        assert_alive(processing, customs)
        assert_nothing_lost_or_doubled(outcome, books, processing, customs)
        assert_hit_mid_stream(outcome, fault_at_ms)


class TestBrokerRestart:
    async def test_worker_and_gateway_ride_out_a_broker_restart(self, fault_broker, fault_settings, tmp_path):
        """Broker stopped cleanly mid-stream and started again: nothing lost, no alert changed, states complete."""

        async def restart() -> None:
            await asyncio.to_thread(fault_broker.stop)
            await asyncio.sleep(5)
            await asyncio.to_thread(fault_broker.start, BROKER_START_TIMEOUT_S)

        await ride_out(fault_settings, tmp_path, restart)


class TestLeaderUnavailable:
    async def test_worker_and_gateway_ride_out_an_unresponsive_broker(self, fault_broker, fault_settings, tmp_path):
        """Broker JVM frozen (SIGSTOP) for 15 s mid-stream, the only node, so every partition's leader and the group
        coordinator stop answering (clients see request timeouts and disconnections), then SIGCONT: nothing lost."""
        pid = fault_broker.status(probe=False).pid
        assert pid is not None

        await ride_out(fault_settings, tmp_path, lambda: freeze_process(pid, FREEZE_S, "the broker JVM"))


class TestWorkerFrozen:
    @pytest.mark.parametrize("moment", ["while-it-starts", "mid-stream"])
    async def test_worker_frozen_beyond_its_session_resumes_every_partition(
        self, fault_settings: Settings, tmp_path: Path, moment: str
    ):
        """The worker's process stopped (SIGSTOP) for longer than its group session, once as it opens its state
        and recovers with bookings waiting, once mid-stream: the group drops it, and after SIGCONT it must rejoin
        and consume every partition again, nothing lost or doubled."""
        books = bookings(12)
        settings = fault_settings
        customs = gateway(settings, tmp_path, "--poll-interval", "1").start()
        processing = worker(settings, tmp_path)
        try:
            if moment == "while-it-starts":
                await publish_bookings(settings, books)
                processing.start()
                opening = await poll_until(lambda: OPENING_STATE in processing.tail(400), 90.0, interval=0.01)
                assert opening, f"the worker never opened its tables:\n{trouble(processing)}"
            else:
                processing.start()
                await asyncio.to_thread(processing.wait_healthy, 90.0)
                await publish_bookings(settings, books)
                await first_filings_out(settings)
            fault_at_ms = int(time.time() * 1000)
            assert processing.proc is not None
            await freeze_process(processing.proc.pid, WORKER_FREEZE_S, "the worker")
            await asyncio.to_thread(processing.wait_healthy, 90.0)
            expected = len(books) * FILINGS_PER_BOOKING
            outcome = await settle(settings, processing, [mbl_of(b) for b in books], expected, customs)
            assert_alive(processing, customs)
            assert_nothing_lost_or_doubled(outcome, books, processing, customs)
            if moment == "mid-stream":
                assert_hit_mid_stream(outcome, fault_at_ms)
        finally:
            processing.stop()
            customs.stop()


class TestChangelogRecovery:
    async def test_fresh_worker_recovers_states_and_plan_memory_from_changelogs(self, fault_settings, tmp_path):
        """A worker with an empty state folder serves the same ENS states and re-plans a new version against the
        plan memory it recovered: only the changed HBL's filing goes out again, as its amendment."""
        books = bookings(4)
        mbls = [mbl_of(b) for b in books]
        catalogue = Catalogue.for_prefix(fault_settings.topic_prefix)
        async with running(fault_settings, tmp_path) as (processing, customs):
            await publish_bookings(fault_settings, books)
            first = await settle(fault_settings, processing, mbls, len(books) * FILINGS_PER_BOOKING, customs)
            assert complete(first.states), f"the first worker never completed:\n{trouble(processing)}"
            assert processing.stop() == 0, f"the first worker did not stop cleanly:\n{trouble(processing)}"

            fresh_dir = tmp_path / "fresh"
            fresh_dir.mkdir()
            fresh = worker(fault_settings, fresh_dir)
            assert not (fresh_dir / "state").exists(), "the fresh worker must start without local state"
            fresh.start()
            try:
                await asyncio.to_thread(fresh.wait_healthy, 90.0)
                recovered = await poll_states(fresh, mbls, lambda states: states == first.states, 90.0)
                assert recovered == first.states, f"states not recovered from the changelogs:\n{trouble(fresh)}"

                changed = copy.deepcopy(books[0])
                changed["version"] = 2
                changed["event_id"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"fault/{mbl_of(changed)}/2"))
                changed["house_bills"][0]["goods"][0]["packages"]["count"] += 2
                changed_hbl = changed["house_bills"][0]["hbl_number"]
                await publish_bookings(fault_settings, [changed])

                sent_before = {r.header("ics2-lrn") for r in first.outbound}
                outbound = await read_topic(
                    fault_settings,
                    catalogue.filings_outbound.name,
                    until=lambda rs: len({r.header("ics2-lrn") for r in rs} - sent_before) >= 1,
                    timeout=90,
                )
                amended = f"F15|{changed_hbl}"
                settled = await poll_states(
                    fresh, [mbl_of(changed)], lambda states: our_filings(states[mbl_of(changed)] or {}).get(amended)
                    == "amended", 90.0,
                )  # fmt: skip
                outbound = await read_topic(fault_settings, catalogue.filings_outbound.name, timeout=30)
                assert_alive(fresh, customs)
            finally:
                fresh.stop()
        new = [r for r in outbound if r.header("ics2-lrn") not in sent_before]
        assert new, f"the new version sent nothing:\n{trouble(fresh)}"
        assert {r.header("ics2-mbl") for r in new} == {mbl_of(changed).encode()}
        assert {r.header("ics2-hbl") for r in new} == {changed_hbl.encode()}, "unchanged HBLs are not filed again"
        assert len({r.header("ics2-lrn") for r in new}) == 1
        # The recovered plan memory and ledger know the F15's MRN: the change goes out as its amendment, and
        # customs' IE3N10 reaches the recovered ENS.
        assert {r.header("ics2-message-type") for r in new} == {b"IE3A15"}
        assert our_filings(settled[mbl_of(changed)] or {}).get(amended) == "amended", trouble(fresh)


Moment = Callable[[Service, Settings], Awaitable[None]]


def after(seconds: float) -> Moment:
    async def wait(service: Service, settings: Settings) -> None:
        await asyncio.sleep(seconds)

    wait.__qualname__ = f"{seconds:g}s after"
    return wait


def consuming(stage: str | None) -> Moment:
    """As soon as the worker's stage has taken its first record; ``None``: as soon as any stage has (for the
    replacement, the moment it starts re-processing what the killed worker had not committed).

    Which stages a replacement re-processes depends on what the killed worker had committed: with a commit every
    second, the bookings may all be committed before the audit chain takes its first record, so the replacement
    must not be waited for on one stage in particular.
    """

    async def wait(service: Service, settings: Settings) -> None:
        def taken() -> bool:
            assert_alive(service)
            try:
                consumed = service.get("/health")[1]["stages"]["consumed"]
            except (OSError, KeyError, ValueError):
                return False
            return (sum(consumed.values()) if stage is None else consumed.get(stage, 0)) > 0

        who = f"{stage} never" if stage else "no stage"
        assert await poll_until(taken, 150.0, 0.05), f"{who} took a record:\n{trouble(service)}"

    wait.__qualname__ = f"{stage or 'any stage'} consuming"
    return wait


async def trail_grows(service: Service, settings: Settings) -> None:
    """As soon as the worker has written an audit record more than the topic held when called, i.e. the moment
    between a record written and its chain head stored (the changelog is flushed only at the next commit)."""
    topic = Catalogue.for_prefix(settings.topic_prefix).audit.name
    consumer = AIOKafkaConsumer(topic, group_id=None, enable_auto_commit=False, **settings.kafka_client_kwargs())
    await start_client(consumer, settings)
    try:
        assert await poll_until(lambda: bool(consumer.assignment()), 15.0), f"no partitions of {topic}"
        partitions = sorted(consumer.assignment())
        before = sum((await consumer.end_offsets(partitions)).values())
        deadline = time.monotonic() + 150.0
        while sum((await consumer.end_offsets(partitions)).values()) <= before:
            assert_alive(service)
            assert time.monotonic() < deadline, f"the worker wrote no audit record:\n{trouble(service)}"
            await asyncio.sleep(0.02)
    finally:
        await stop_consumer(consumer)


async def chained_sources(settings: Settings) -> tuple[set[str], list[str], dict[str, Any]]:
    """The sources the trail must hold (every recorded record, read first), the sources of the trail's distinct
    records, and the replay's integrity verdict on what was read."""
    catalogue = Catalogue.for_prefix(settings.topic_prefix)
    deriver = EntryDeriver(SCHEMAS, catalogue)
    expected: set[str] = set()
    for topic in deriver.recorded_topics:
        for record in await read_topic(settings, topic, timeout=30, idle=0.5):
            derived = deriver.derive(record)
            if isinstance(derived, AuditEntry):
                expected.add(derived.source)
    records = (await read_trail(settings)).records
    found = examine(records)
    return expected, [json.loads(r["payload"])["source"] for r in found.unique], build_report(records)["integrity"]


class TestAuditTrailAfterCrashes:
    @pytest.mark.timeout(600)
    @pytest.mark.parametrize(
        ("first_kill", "second_kill"),
        [
            (after(1.0), after(6.0)),
            (trail_grows, trail_grows),
            (consuming("audit-chain"), consuming(None)),
        ],
        ids=["1s-then-6s-into-recovery", "chaining-then-rechaining", "chain-stage-then-reprocessing"],
    )
    async def test_worker_killed_twice_leaves_an_intact_signed_trail(
        self, fault_settings: Settings, tmp_path: Path, first_kill: Moment, second_kill: Moment
    ):
        """SIGKILL once bookings flow, SIGKILL the replacement while it recovers, a third worker finishes: every
        recorded record is chained exactly once (records chained again are byte-identical duplicates), and
        `ics2 replay` verifies the trail, signatures included, as intact."""
        books = bookings(6)
        mbls = [mbl_of(b) for b in books]
        settings = fault_settings
        async with running(settings, tmp_path) as (first, customs):
            await publish_bookings(settings, books)
            await first_kill(first, settings)
            first.kill()
            replacement = worker(settings, tmp_path)
            replacement.log_path = tmp_path / "worker-2.log"
            replacement.start()
            try:
                await second_kill(replacement, settings)
            finally:
                replacement.kill()
            last = worker(settings, tmp_path)
            last.log_path = tmp_path / "worker-3.log"
            last.start()
            try:
                await asyncio.to_thread(last.wait_healthy, 90.0)
                outcome = await settle(settings, last, mbls, len(books) * FILINGS_PER_BOOKING, customs)
                assert_nothing_lost_or_doubled(outcome, books, first, replacement, last, customs)
                deadline = time.monotonic() + SETTLE_TIMEOUT_S
                expected, chained, integrity = await chained_sources(settings)
                while not expected <= set(chained) and time.monotonic() < deadline:
                    assert_alive(last)
                    await asyncio.sleep(2)
                    expected, chained, integrity = await chained_sources(settings)
            finally:
                last.stop()
        assert expected <= set(chained), f"never chained: {sorted(expected - set(chained))[:5]}\n{trouble(last)}"
        doubled = sorted({s for s in chained if chained.count(s) > 1})
        assert not doubled, f"sources chained twice as different records: {doubled[:5]}"
        assert integrity["breaks"] == [], integrity["breaks"][:5]
        out = tmp_path / "replay.json"
        env = service_env(settings, tmp_path / "state")
        replay = subprocess.run(
            [ICS2, "replay", "--out", str(out)], env=env, capture_output=True, text=True, timeout=180, check=False
        )
        assert replay.returncode == 0, replay.stderr
        assert "trail intact" in replay.stderr
        report = json.loads(out.read_text())
        assert (
            report["integrity"]["signatures"]["checked"] and len(report["integrity"]["signatures"]["trusted_keys"]) == 1
        )
        assert {c["mbl"] for c in report["consolidations"]} == set(mbls)
        print(
            f"audit trail after two kills: {report['integrity']['records']} records, "
            f"{len(report['integrity']['duplicates'])} byte-identical duplicates, {len(expected)} sources"
        )
