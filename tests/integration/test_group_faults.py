"""Issue 19: two workers in one consumer group, one of them SIGKILLed, must lose nothing.

A single worker killed and restarted loses nothing (``test_faults.py``, ``test_end_to_end.py``); the production shape
is different: worker A runs with a backlog and reads ahead, worker B joins the same group and takes some of A's
partitions away mid-batch, and B is then killed without leaving the group, so that its partitions go back to A once
B's session expires. The report saw a third of the alerts lost that way, and a hole in the committed offsets. Here B
is killed at one of three moments, then restarted and killed again as an orchestrator's crash loop would (up to
``KILLS`` times while bookings flow), under the steady background traffic a production broker always carries.

What these runs showed on the Faust workers (faust-streaming 0.15, ``OrderedRecovery``): when A takes partitions
over, its fetch loop already runs while the recovery seeks the stream partitions one by one to their committed
offsets; a batch fetched for a partition sought a moment earlier is drained and dropped, aiokafka's position moves
past it, and the next record's offset jumps over Faust's read offset. Faust takes such a jump for a gap of a compacted
topic (``Consumer._add_gap``) and commits over it (``_new_offset``): the victim's last commit, then the survivor's
first commit far beyond it, and the records in between never processed. A partition whose drained batch reached its
end stays stuck instead until the stall guard seeks it back.

Only what is visible from outside is used, so that the test holds whatever consumes the topics inside the worker:
the topics (read back by a consumer of the test's own, without a group), the workers' HTTP views (``/health``,
``/ens/<mbl>``, ``/api/worker``), process signals and, for the diagnosis printed on failure only, the consumer
group's committed offsets. The oracle is a reference run without faults on the same broker, under a fresh topic
prefix: each kill must end with the same registrations, the same alerts (by party, customs message, MBL, HBL and LRN:
alert ids derive from customs' message ids, which differ from run to run) on the alerts topic and on every party's
queue, and the same ENS states as that run; no alert id with two contents, nothing dead-lettered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.admin import admin_client, apply_topics
from streams.broker import LocalBroker
from streams.client import Record, publish_bookings, start_client, stop_consumer
from streams.contracts.avro import SchemaCatalogue
from streams.contracts.records import ens_event
from streams.scenarios import as_party, seed_booking
from streams.settings import Settings
from streams.simulator import Outcome, RiskRule, RiskScript
from streams.topics import Catalogue
from tests.data import SEED_PARTIES
from tests.integration.services import Service, gateway, start_broker, worker
from tests.integration.test_faults import conflicting_alert_ids, poll_until, trouble

pytestmark = pytest.mark.timeout(600)

SCHEMAS = SchemaCatalogue.load()
#: Consolidations per run; each is booked by four parties, so every worker has a backlog on every partition.
CONSOLIDATIONS = 30
#: Booked before the workers start (the backlog worker A reads ahead); the others follow in waves, so that bookings
#: still flow when B has joined every stage, however fast the workers are.
BACKLOG = 12
WAVE = 3
WAVE_EVERY_S = 3.0
#: Partitions of every topic: the victim holds half of them, and the survivor seeks each one it takes over.
PARTITIONS = 4
#: The seed co-load's parties that book it (each files its own part: 8 filings per consolidation in all).
PLANNERS = ("ML-TYO", "COLOADER-A", "COLOADER-D", "CARRIER-A")
#: Customs answers with a Do Not Load and an RFI in every consolidation, as in the report; no time-driven chase (the
#: default two-hour grace), so that a run's alerts do not depend on how long it took.
SCRIPT = RiskScript(
    rules=(RiskRule(Outcome.DO_NOT_LOAD, hbl="DAI26NGO0077"), RiskRule(Outcome.RFI, hbl="SKC26TYO0003")),
)
#: The victim is restarted, as an orchestrator restarts a crashed pod, and killed again as soon as it has taken
#: records, while bookings still flow: every takeover is one more chance for a loss (issue 19 needed one).
KILLS = 3
#: No more kills once this share of the reference run's registrations is there: a takeover with nothing left to do
#: proves little.
LAST_KILL_BEFORE = 0.95
#: Background traffic, as a production group always has: watchdog ticks (the ``EnsEvent`` the workers' own watchdog
#: writes) for the run's ENS, which change nothing here (every deadline is months away). With traffic in bursts only,
#: the broker holds the survivor's fetches for up to 1.5 s, and a takeover rarely overlapped the loss's window.
TICKS_PER_S = 20.0
#: The workers trust this header as a logged-in operator, for ``/api/worker`` (which partitions a worker holds).
OPERATOR_HEADER = "X-ICS2-Test-Operator"
#: From the kill until everything the reference run produced is there; generous, the machine is small and shared.
SETTLE_TIMEOUT_S = 120.0
#: A run is over when nothing new arrived for this long (the simulator answers every second).
QUIET_S = 6.0
#: Something is missing, the survivor holds every partition and nothing new came for this long: it never will (the
#: stall guard of the worker looks every 15 s).
GIVE_UP_QUIET_S = 40.0
#: Topics that are written only while bookings and customs' answers are being processed.
FLOW = ("filing_drafts", "filings_outbound", "notifications_inbound", "notifications_parsed", "alerts", "dead_letters")
#: Topics the workers consume in their group: where a commit can pass over records.
INPUTS = (
    "bookings",
    "notifications_inbound",
    "notifications_parsed",
    "ens_events",
    "filing_drafts",
    "filings_outbound",
    "alerts",
    "audit_entries",
)
#: Inputs of which every record, once processed, is named as the source of an output (an audit entry at least);
#: not ``notifications.parsed`` (ledger entries only update a table; a notification that arrives before its filing
#: is released later under the source of the record that releases it) nor ``audit-entries`` (an entry chained
#: already is skipped).
ALWAYS_ANSWERED = ("bookings", "notifications_inbound", "ens_events", "filing_drafts", "filings_outbound", "alerts")
#: Input topics that one stage alone consumes.
ONE_STAGE_TOPICS = ("notifications_inbound", "notifications_parsed", "audit_entries")
#: Topics whose records name their input (``ics2-source``; dead letters: ``ics2-rejected``).
OUTPUTS = (
    "filing_drafts",
    "filings_outbound",
    "notifications_parsed",
    "ens_events",
    "alerts",
    "audit_entries",
    "audit",
    "dead_letters",
)


@pytest.fixture(scope="module")
def group_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """A one-node broker of this module alone: its workers are killed, and a slow run must not slow others down."""
    broker = start_broker(tmp_path_factory.mktemp("group-kafka"), "the group fault tests' Kafka broker")
    try:
        yield broker
    finally:
        broker.stop()


def consolidation_bookings(count: int) -> list[dict[str, Any]]:
    """``count`` copies of the seed co-load under their own MBLs, each booked by every planner (several filers)."""
    books: list[dict[str, Any]] = []
    for i in range(count):
        book = seed_booking()
        book["master"]["mbl_number"] = f"OCLU26GRP{i:07d}"
        book["event_id"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"group-fault/{book['master']['mbl_number']}/1"))
        books.extend(book if party == book["planning_party"] else as_party(book, party) for party in PLANNERS)
    return books


MBLS = sorted({b["master"]["mbl_number"] for b in consolidation_bookings(CONSOLIDATIONS)})


async def deployment(broker: LocalBroker, tmp: Path) -> Settings:
    """A fresh topic prefix and group on the module's broker, every topic and party queue created."""
    prefix = f"g{uuid.uuid4().hex[:8]}."
    settings = Settings(
        bootstrap_servers=broker.config.bootstrap_servers,
        state_dir=tmp / "client-state",
        topic_prefix=prefix,
        app_id=f"{prefix}app",
        default_partitions=PARTITIONS,
    )
    await apply_topics(settings, Catalogue.for_prefix(prefix), SEED_PARTIES)
    return settings


def customs(settings: Settings, tmp: Path) -> Service:
    script = tmp / "risk-script.json"
    script.write_text(json.dumps(SCRIPT.to_json()))
    return gateway(settings, tmp, "--script", str(script), "--poll-interval", "1")


def group_worker(settings: Settings, tmp: Path, name: str) -> Service:
    """A worker of the group with its own state folder, web port and log; every worker signs with one audit key."""
    folder = tmp / name
    folder.mkdir()
    service = worker(settings, folder, ICS2_AUDIT_KEY=str(tmp / "audit-key.pem"), ICS2_OPERATOR_HEADER=OPERATOR_HEADER)
    service.name = name
    return service


def get_json(service: Service, path: str) -> dict[str, Any] | None:
    """A worker view as JSON, None when it does not answer (yet, or any more)."""
    request = urllib.request.Request(f"http://127.0.0.1:{service.web_port}{path}", headers={OPERATOR_HEADER: "test"})
    try:
        with urllib.request.urlopen(request, timeout=3) as response:
            return json.loads(response.read())
    except (OSError, ValueError):
        return None


def consumed(service: Service) -> int:
    """Records the worker's stages have taken, by its ``/health`` view."""
    health = get_json(service, "/health") or {}
    return sum(health.get("stages", {}).get("consumed", {}).values())


def assignment(service: Service) -> dict[str, set[int]]:
    """Topic (without the prefix) -> the partitions the worker processes now, by its ``/api/worker`` view; empty when
    it does not answer."""
    view = get_json(service, "/api/worker") or {}
    return {topic: set(partitions) for topic, partitions in view.get("partitions", {}).items()}


def settled_state(state: dict[str, Any] | None) -> Any:
    """What of an ENS state a run without faults decides: states, filings, houses, open alerts (by kind, party and
    HBL); not the MRNs and message ids customs numbered in its order of arrival (alert ids derive from the message
    ids), nor when things happened."""
    if state is None:
        return None
    return {
        "state": state["state"],
        "planning_parties": sorted(state["planning_parties"]),
        "filings": sorted(
            (f["filing"], f["hbl"] or "-", f["filer"], f["ours"], f["state"], f["lrn"], f["dropped"])
            for f in state["filings"]
        ),
        "houses": sorted(
            [h[k] for k in ("hbl", "state", "assessed", "do_not_load", "controlled", "incomplete")]
            + [len(h["open_referrals"])]
            for h in state["houses"]
        ),
        "open_alerts": sorted((a["kind"], a["party"], a["hbl"] or "-") for a in state.get("open_alerts", [])),
        "standing": sorted((a["kind"], a["party"], a["hbl"] or "-") for a in state.get("standing", [])),
    }


def ens_states(service: Service) -> dict[str, Any]:
    return {mbl: settled_state(get_json(service, f"/ens/{mbl}")) for mbl in MBLS}


class Tail:
    """Every record of a deployment's topics from their start, read on in the background by one consumer without a
    group (it commits nothing, so it cannot disturb the workers' group)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.catalogue = Catalogue.for_prefix(settings.topic_prefix)
        self.queues = {party: self.catalogue.party_queue(party).name for party in SEED_PARTIES}
        names = {getattr(self.catalogue, t).name for t in (*INPUTS, *OUTPUTS)}
        self.topics = sorted(names | set(self.queues.values()))
        self.records: dict[str, list[Record]] = {t: [] for t in self.topics}
        self.last_new: dict[str, float] = dict.fromkeys(self.topics, time.monotonic())
        self.consumer = AIOKafkaConsumer(
            *self.topics,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=8 * 1024 * 1024,
            **settings.kafka_client_kwargs(),
        )
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Tail:
        await start_client(self.consumer, self.settings)
        assert await poll_until(lambda: {tp.topic for tp in self.consumer.assignment()} >= set(self.topics), 15.0), (
            "the tail's consumer got no partitions"
        )
        self.task = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await stop_consumer(self.consumer)

    async def _read(self) -> None:
        while True:
            batch = await self.consumer.getmany(timeout_ms=200)
            for messages in batch.values():
                for m in messages:
                    record = Record(m.topic, m.partition, m.offset, m.key, m.value, tuple(m.headers or ()), m.timestamp)
                    self.records[m.topic].append(record)
                    self.last_new[m.topic] = time.monotonic()

    def of(self, topic: str) -> list[Record]:
        return self.records[getattr(self.catalogue, topic).name]

    def quiet_for(self) -> float:
        """Seconds since the last record of the flow (not the ENS events and audit records that the workers'
        timers write every 30 s whatever happens)."""
        return time.monotonic() - max(self.last_new[getattr(self.catalogue, t).name] for t in FLOW)

    async def end_offsets(self, topics: Iterable[str]) -> dict[TopicPartition, int]:
        tps = [tp for tp in self.consumer.assignment() if tp.topic in set(topics)]
        return dict(await self.consumer.end_offsets(tps))

    def observe(self, states: dict[str, Any]) -> Observed:
        alerts = [SCHEMAS.decode(r.value, reader="PartyAlert").record for r in self.of("alerts")]
        queued = {
            party: {
                (alert := SCHEMAS.decode(r.value, reader="PartyAlert").record)["alert_id"]: signature(alert)
                for r in self.records[topic]
            }
            for party, topic in self.queues.items()
        }
        dead = [SCHEMAS.decode(r.value, reader="DeadLetter").record for r in self.of("dead_letters")]
        return Observed(
            lrns={(r.header("ics2-lrn") or b"").decode() for r in self.of("filings_outbound")},
            registered={a["lrn"] for a in alerts if a["notification_message_type"] == "IE3R01"},
            alerts={a["alert_id"]: signature(a) for a in alerts},
            queued=queued,
            conflicts=conflicting_alert_ids(alerts),
            dead_letters=[str(d.get("reason")) for d in dead],
            states=states,
        )


Signature = tuple[str, str, str, str, str]


def signature(alert: dict[str, Any]) -> Signature:
    """What an alert is about, the same in every run: party, customs message type, MBL, HBL, LRN. Its id is not:
    it derives from the id customs gave its message, which the simulator numbers in order of arrival."""
    return (
        alert["party_id"],
        alert["notification_message_type"],
        alert.get("mbl") or "-",
        alert.get("hbl") or "-",
        alert.get("lrn") or "-",
    )


def count(alerts: dict[str, Signature]) -> Counter[Signature]:
    """How many distinct alerts (by id) each signature has."""
    return Counter(alerts.values())


class Ticker:
    """Writes watchdog ticks for the run's MBLs, ``TICKS_PER_S`` of them a second, while in use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = Catalogue.for_prefix(settings.topic_prefix).ens_events.name
        self.producer = AIOKafkaProducer(acks=1, **settings.kafka_client_kwargs())
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Ticker:
        await start_client(self.producer, self.settings)
        self.task = asyncio.create_task(self._tick())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await self.producer.stop()

    async def _tick(self) -> None:
        n = 0
        while True:
            mbl = MBLS[n % len(MBLS)]
            record = ens_event(mbl, "tick", datetime.now(UTC), {}, f"test-background:{n}")
            value = SCHEMAS.encode("EnsEvent", record)
            await self.producer.send(self.topic, value, key=mbl.encode(), headers=[("ics2-record", b"EnsEvent")])
            n += 1
            await asyncio.sleep(1 / TICKS_PER_S)


@dataclass
class Observed:
    """What one run left on the topics and in the workers' ENS views."""

    lrns: set[str]
    """LRNs of the filings sent to customs."""
    registered: set[str]
    """LRNs whose registration (IE3R01) reached the alerts topic."""
    alerts: dict[str, Signature]
    """Alert id -> what it is about, of every alert on the alerts topic."""
    queued: dict[str, dict[str, Signature]]
    """Party -> its queue's alerts, by id."""
    conflicts: dict[str, Any]
    dead_letters: list[str]
    states: dict[str, Any]

    def unqueued(self) -> int:
        """Alerts of the alerts topic that are not on their party's queue (the two are written together)."""
        return sum(alert_id not in self.queued.get(sig[0], {}) for alert_id, sig in self.alerts.items())

    def missing_against(self, reference: Observed, *, states: bool = True) -> dict[str, int]:
        """How much of the reference run is not here: registrations, alerts, queued alerts, ENS states that differ
        (``states``: when this observation read them)."""
        queued = Counter(sig for alerts in self.queued.values() for sig in alerts.values())
        missing = {
            "registrations": len(reference.registered - self.registered),
            "alerts": (count(reference.alerts) - count(self.alerts)).total(),
            "queued alerts": (count(reference.alerts) - queued).total() + self.unqueued(),
        }
        if states:
            missing["ENS states"] = sum(self.states.get(mbl) != state for mbl, state in reference.states.items())
        return missing

    def extra_against(self, reference: Observed) -> Counter[Signature]:
        """Alerts the reference run did not raise (a filing sent twice, a notification handled twice)."""
        return count(self.alerts) - count(reference.alerts)

    def first_state_difference(self, reference: Observed) -> str:
        for mbl, state in reference.states.items():
            if self.states.get(mbl) != state:
                return f"{mbl}:\n  reference {state}\n  this run  {self.states.get(mbl)}"
        return "none"


@dataclass
class Reference:
    observed: Observed
    seconds: float


@contextlib.asynccontextmanager
async def stopping(services: list[Service], tasks: list[asyncio.Task[None]] | None = None) -> AsyncIterator[None]:
    """Every service and task of the lists (as they are at the end) stopped, whatever happened (SIGTERM; killed
    services are gone already)."""
    try:
        yield
    finally:
        for task in tasks or []:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for service in services:
            await asyncio.to_thread(service.stop)


async def in_waves(settings: Settings, books: list[dict[str, Any]]) -> None:
    """``WAVE`` consolidations (all their bookings) every ``WAVE_EVERY_S`` seconds."""
    size = WAVE * len(PLANNERS)
    for start in range(0, len(books), size):
        await asyncio.sleep(WAVE_EVERY_S)
        await publish_bookings(settings, books[start : start + size])


@pytest.fixture(scope="module")
async def reference(group_broker: LocalBroker, tmp_path_factory: pytest.TempPathFactory) -> Reference:
    """The same bookings through one worker without faults: what every faulted run must end with."""
    tmp = tmp_path_factory.mktemp("group-reference")
    settings = await deployment(group_broker, tmp)
    started = time.monotonic()
    gate, only = customs(settings, tmp), group_worker(settings, tmp, "reference-worker")
    async with stopping([only, gate]), Tail(settings) as tail, Ticker(settings):
        gate.start()
        only.start()
        await publish_bookings(settings, consolidation_bookings(CONSOLIDATIONS))
        await asyncio.to_thread(only.wait_healthy, 90.0)
        expected = CONSOLIDATIONS * 8

        async def done() -> Observed | None:
            only.check_running("the reference run")
            gate.check_running("the reference run")
            observed = tail.observe({})
            if len(observed.registered) < expected or tail.quiet_for() < QUIET_S:
                return None
            states = await asyncio.to_thread(ens_states, only)
            again = await asyncio.to_thread(ens_states, only)
            if states != again or None in states.values() or tail.quiet_for() < QUIET_S:
                return None
            return tail.observe(states)

        observed = await poll_for(done, 240.0)
        assert observed is not None, f"the reference run never settled:\n{trouble(only)}\n{trouble(gate)}"
    seconds = time.monotonic() - started
    assert observed.registered == observed.lrns and len(observed.lrns) == expected, "every filing registered"
    kinds = {sig[1] for sig in observed.alerts.values()}
    assert {"IE3R01", "IE3Q01", "IE3Q02"} <= kinds, f"the reference run lacks the report's answers: {kinds}"
    assert not observed.conflicts and not observed.dead_letters and not observed.unqueued()
    assert max(count(observed.alerts).values()) == 1, "an alert's signature names it alone"
    kinds_counted = Counter(sig[1] for sig in observed.alerts.values())
    print(
        f"\nreference run: {len(observed.lrns)} filings, {len(observed.alerts)} alerts "
        f"({', '.join(f'{k} {n}' for k, n in sorted(kinds_counted.items()))}), {len(MBLS)} ENS in {seconds:.0f}s"
    )
    return Reference(observed, seconds)


async def poll_for(check: Callable[[], Awaitable[Observed | None]], timeout: float) -> Observed | None:
    """``check()`` every second until it returns something or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = await check()
        if found is not None:
            return found
        await asyncio.sleep(1.0)
    return None


@dataclass
class Moment:
    """When the second worker is killed, as seen from outside."""

    name: str
    reached: Callable[[Tail, Service, Service, Reference], bool]


def both_consuming(tail: Tail, first: Service, second: Service, reference: Reference) -> bool:
    return consumed(first) > 0 and consumed(second) > 0 and joined(second)


def registered_share(share: float) -> Callable[[Tail, Service, Service, Reference], bool]:
    def reached(tail: Tail, first: Service, second: Service, reference: Reference) -> bool:
        return len(tail.observe({}).registered) >= share * len(reference.observed.registered) and joined(second)

    return reached


MOMENTS = [
    Moment("joined", both_consuming),
    Moment("mid-stream", registered_share(0.4)),
    Moment("late", registered_share(0.85)),
]


@dataclass
class Takeover:
    """One kill: the victim's partitions of ``notifications.parsed`` (one stage reads it, the correlator), and the
    seconds from the kill until the survivor holds every partition again and until it writes its first output of a
    record of the victim's partitions."""

    victim: str
    registered: int
    victim_partitions: set[int]
    killed_at: float = field(default_factory=time.monotonic)
    killed_at_ms: int = field(default_factory=lambda: time.time_ns() // 1_000_000)
    reassigned_s: float | None = None

    def first_output_s(self, tail: Tail) -> float | None:
        parsed = tail.catalogue.notifications_parsed.name
        stamps = [
            r.timestamp_ms
            for topic in ("ens_events", "notifications_parsed")
            for r in tail.of(topic)
            if r.timestamp_ms > self.killed_at_ms and source_of(r)[:2] in {(parsed, p) for p in self.victim_partitions}
        ]
        return (min(stamps) - self.killed_at_ms) / 1000 if stamps else None

    def describe(self, tail: Tail) -> str:
        return (
            f"{self.victim} killed at {self.registered} registered, holding notifications.parsed "
            f"{sorted(self.victim_partitions)}: survivor held every partition after {fmt_s(self.reassigned_s)}, "
            f"first output of the victim's partitions after {fmt_s(self.first_output_s(tail))}"
        )


def source_of(record: Record) -> tuple[str, int, int] | tuple[()]:
    """The input a record names (``ics2-source``; ``ics2-rejected`` for a dead letter) as topic, partition, offset."""
    for header in ("ics2-source", "ics2-rejected"):
        parts = (record.header(header) or b"").decode().rsplit(":", 2)
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            return parts[0], int(parts[1]), int(parts[2])
    return ()


def taking(survivor: Service, victim: Service) -> bool:
    """The restarted victim has taken records and holds partitions of every stage; fails when either worker died."""
    survivor.check_running("the restart")
    victim.check_running("the restart")
    return consumed(victim) > 0 and joined(victim)


def joined(service: Service) -> bool:
    """Whether the worker processes partitions of every topic that one stage alone consumes: its kill leaves work
    for the survivor to take over in every stage, whether the stages share a consumer group or each has its own."""
    held = assignment(service)
    return all(held.get(getattr(Catalogue.for_prefix(""), topic).name) for topic in ONE_STAGE_TOPICS)


def holds_all(service: Service, settings: Settings) -> bool:
    """Whether the worker processes every partition of the topics that one stage alone consumes (whether the stages
    share a consumer group or each has its own, these say that the victim's partitions are the survivor's now)."""
    held = assignment(service)
    every = set(range(settings.default_partitions))
    return all(held.get(getattr(Catalogue.for_prefix(""), topic).name) == every for topic in ONE_STAGE_TOPICS)


class TestTwoWorkersOneKilled:
    @pytest.mark.parametrize("moment", MOMENTS, ids=[m.name for m in MOMENTS])
    async def test_nothing_lost_when_a_group_member_is_killed(
        self, group_broker: LocalBroker, reference: Reference, tmp_path: Path, moment: Moment
    ):
        """Worker A starts with the whole backlog and reads ahead; worker B joins the group and takes partitions
        from A mid-batch; B is SIGKILLed at the moment, restarted and killed again (a crash loop) while the flow
        lasts; A, the survivor, must end where the reference run ended."""
        settings = await deployment(group_broker, tmp_path)
        gate = customs(settings, tmp_path)
        first, second = group_worker(settings, tmp_path, "worker-a"), group_worker(settings, tmp_path, "worker-b")
        services = [first, gate, second]
        tasks: list[asyncio.Task[None]] = []
        kills: list[Takeover] = []
        expected = len(reference.observed.registered)
        async with stopping(services, tasks), Tail(settings) as tail, Commits(settings) as commits, Ticker(settings):
            gate.start()
            first.start()
            books = consolidation_bookings(CONSOLIDATIONS)
            await publish_bookings(settings, books[: BACKLOG * len(PLANNERS)])
            later = asyncio.create_task(in_waves(settings, books[BACKLOG * len(PLANNERS) :]))
            tasks.append(later)
            await asyncio.to_thread(first.wait_healthy, 90.0)
            # B starts while A works through the backlog it fetched: its join revokes partitions from A mid-batch.
            second.start()
            await asyncio.to_thread(second.wait_healthy, 90.0)
            victim = second

            def reached() -> bool:
                first.check_running(f"the kill {moment.name}")
                victim.check_running(f"the kill {moment.name}")
                return moment.reached(tail, first, victim, reference)

            assert await poll_until(reached, 120.0, 0.1), f"never {moment.name}:\n{tail_logs(first, victim)}"
            for n in range(KILLS):
                if n:
                    if len(tail.observe({}).registered) >= LAST_KILL_BEFORE * expected:
                        break
                    victim = group_worker(settings, tmp_path, f"worker-b{n + 1}")
                    services.append(victim)
                    victim.start()
                    await asyncio.to_thread(victim.wait_healthy, 90.0)
                    assert await poll_until(partial(taking, first, victim), 60.0, 0.1), (
                        f"the restarted victim took nothing:\n{tail_logs(victim)}"
                    )
                parsed = assignment(victim).get(Catalogue.for_prefix("").notifications_parsed.name, set())
                kill = Takeover(victim.name, len(tail.observe({}).registered), parsed)
                victim.kill()
                kill.killed_at, kill.killed_at_ms = time.monotonic(), time.time_ns() // 1_000_000
                commits.mark_kill()
                kills.append(kill)
                held = await poll_until(lambda: first.check_running("the survivor") or holds_all(first, settings), 60.0)
                assert held, f"the survivor never took the victim's partitions:\n{tail_logs(first)}"
                kill.reassigned_s = time.monotonic() - kill.killed_at

            async def everything_there() -> Observed | None:
                first.check_running("the survivor")
                if tail.quiet_for() < QUIET_S:
                    return None
                observed = tail.observe(await asyncio.to_thread(ens_states, first))
                if not any(observed.missing_against(reference.observed).values()):
                    return observed
                # Records skipped for good: nothing comes any more once the survivor holds every partition.
                return observed if tail.quiet_for() > GIVE_UP_QUIET_S else None

            observed = await poll_for(everything_there, SETTLE_TIMEOUT_S)
            settled_s = time.monotonic() - kills[-1].killed_at
            if observed is None:
                observed = tail.observe(await asyncio.to_thread(ens_states, first))
            missing = observed.missing_against(reference.observed)
            report = "\n".join(
                [
                    f"kill {moment.name}: {len(kills)} kills",
                    *(f"  {kill.describe(tail)}" for kill in kills),
                    f"  settled {settled_s:.0f}s after the last kill: registered "
                    f"{len(observed.registered & reference.observed.registered)}/{expected}, alerts "
                    f"{len(observed.alerts)}/{len(reference.observed.alerts)}; lost {missing}",
                ]
            )
            print(f"\n{report}")
            why = ""
            if any(missing.values()) or observed.conflicts or observed.dead_letters:
                why = f"first ENS state that differs: {observed.first_state_difference(reference.observed)}\n"
                why += await diagnosis(tail, commits, *services)
                print(why)
        assert not any(missing.values()), f"{report}\n{why}\n{tail_logs(*services)}"
        assert not observed.conflicts, f"alert ids with two contents: {sorted(observed.conflicts)[:5]}"
        assert not observed.dead_letters, f"dead letters: {observed.dead_letters[:5]}"
        extra = observed.extra_against(reference.observed)
        assert not extra, f"alerts the reference run did not raise: {sorted(extra)[:5]}"


def fmt_s(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds:.1f}s"


def tail_logs(*services: Service) -> str:
    return "\n".join(f"--- {s.name} ---\n{trouble(s, 4)}" for s in services)


async def diagnosis(tail: Tail, commits: Commits, *workers: Service) -> str:
    """Which input records no worker processed (no output names them as its source), how the workers' groups
    committed those partitions around the kills, and what the workers logged about partitions they found stuck."""
    holes: set[tuple[str, int]] = set()
    answered: dict[tuple[str, int, int], int] = {}
    """Input record -> when the first output naming it was written (broker time, ms)."""
    for topic in OUTPUTS:
        for record in tail.of(topic):
            if key := source_of(record):
                answered[key] = min(answered.get(key, record.timestamp_ms), record.timestamp_ms)
    kills = ", ".join(f"+{(at - commits.kills[0]):.1f}s" for at in commits.kills)
    lines = [f"kills at {kills} (times are seconds after the first kill)"]
    lines.append("never processed (input records no output names as its source, as read now; after them: when the next")
    lines[-1] += " record was first processed):"
    # The newest records may be in processing right now: not counted.
    settled_ms = time.time_ns() // 1_000_000 - 5000
    for topic in ALWAYS_ANSWERED:
        name = getattr(tail.catalogue, topic).name
        by_partition: dict[int, list[int]] = {}
        for record in tail.of(topic):
            if record.timestamp_ms > settled_ms or (name, record.partition, record.offset) in answered:
                continue
            by_partition.setdefault(record.partition, []).append(record.offset)
        for partition, offsets in sorted(by_partition.items()):
            holes.add((topic, partition))
            later = [at for (t, p, o), at in answered.items() if (t, p) == (name, partition) and o > max(offsets)]
            resumed = f"+{(min(later) - commits.kills_ms[0]) / 1000:.1f}s" if later else "never"
            lines.append(
                f"  {topic} p{partition}: {ranges(sorted(offsets))} ({len(offsets)} records; after them: {resumed})"
            )
    names = {getattr(tail.catalogue, t).name: t for t in INPUTS}
    ends = await tail.end_offsets(names)
    lines.append("committed offsets of the partitions with records never processed (offset@seconds):")
    for (group, tp), history in sorted(commits.history.items(), key=lambda item: (item[0][0], str(item[0][1]))):
        if tp.topic not in names or (names[tp.topic], tp.partition) not in holes:
            continue
        changes = [f"{offset}@{at - commits.kills[0]:+.1f}" for at, offset in history if at > commits.kills[0] - 5]
        lines.append(
            f"  {group.removeprefix(tail.settings.app_id) or '(app)'} {names[tp.topic]} p{tp.partition}: "
            f"{' '.join(changes[:14])}{' ...' if len(changes) > 14 else ''} / end {ends.get(tp, '?')}"
        )
    lines.extend(f"  {error}" for error in commits.errors[:3])
    for service in workers:
        text = service.log_path.read_text(errors="replace") if service.log_path.exists() else ""
        stuck = [line[:300] for line in text.splitlines() if "stall_" in line]
        if stuck:
            lines.append(f"{service.name} found partitions stuck {len(stuck)} times; the last: {stuck[-1]}")
    return "\n".join(lines)


class Commits:
    """The committed offsets of the workers' consumer groups (every group named after the app id), sampled twice a
    second with each change's time: for the diagnosis only, which group ids the workers use is theirs to choose."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.history: dict[tuple[str, TopicPartition], list[tuple[float, int]]] = {}
        self.kills: list[float] = []
        self.kills_ms: list[int] = []
        self.errors: list[str] = []
        self.task: asyncio.Task[None] | None = None

    def mark_kill(self) -> None:
        self.kills.append(time.monotonic())
        self.kills_ms.append(time.time_ns() // 1_000_000)

    async def __aenter__(self) -> Commits:
        self.task = asyncio.create_task(self._sample())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def _sample(self) -> None:
        async with admin_client(self.settings) as admin:
            while True:
                try:
                    groups = [g[0] for g in await admin.list_consumer_groups()]
                    for group in (g for g in groups if g.startswith(self.settings.app_id)):
                        for tp, meta in (await admin.list_consumer_group_offsets(group)).items():
                            history = self.history.setdefault((group, tp), [])
                            if not history or history[-1][1] != meta.offset:
                                history.append((time.monotonic(), meta.offset))
                except Exception as exc:  # diagnostics only: say why, keep sampling
                    self.errors.append(repr(exc))
                await asyncio.sleep(0.5)


def ranges(offsets: list[int]) -> str:
    """``[1, 2, 3, 7]`` -> ``1-3, 7``."""
    spans: list[str] = []
    start = previous = None
    for offset in [*offsets, None]:
        if offset is not None and previous is not None and offset == previous + 1:
            previous = offset
            continue
        if start is not None:
            spans.append(f"{start}-{previous}" if previous != start else f"{start}")
        start = previous = offset
    return ", ".join(spans[:12]) + (" ..." if len(spans) > 12 else "")
