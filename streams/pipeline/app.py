"""The worker, built by one function that the CLI, the demo and the tests share.

Topology (every topic, table and changelog named in ``streams.topics``)::

    bookings ──plan-bookings──▶ filing-drafts, filings.outbound ─▶ (gateway connector)
                    │            notifications.parsed (ledger entries, key lrn:<LRN>)
                    └──────────▶ ens-events (key MBL), alerts + party queues
    notifications.inbound ──parse-notifications──▶ notifications.parsed (key: correlation key)
    notifications.parsed ──correlate (tables: ledger, parked)──▶ ens-events, notifications.parsed (mrn:/ref: keys)
    ens-events ──track-ens (table: ens-state)──▶ alerts, party queues
    timer watchdog ──▶ ens-events (tick) for ENS whose deadline nears with filings missing
    timer parked-changes ──▶ notifications.parsed (FilingChange, ics2-expiry) for changes waiting too long
    timer closed-ens-eviction ──▶ tombstones in the plans, ledger, parked and ens-state changelogs for closed ENS

The stages run in ``streams.pipeline.engine`` (one consumer group per stage, one save rule); Faust hosts the web
views and the timers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import faust
import structlog
from faust.app.base import BootStrategy
from yarl import URL

from streams.audit.signing import key_path, signer_for
from streams.contracts.avro import SchemaCatalogue
from streams.contracts.records import ens_event
from streams.pipeline.dead_letters import DeadLetterSink
from streams.pipeline.engine import Engine, Stage, StageProcessor
from streams.pipeline.eviction import Evictor
from streams.pipeline.runner import (
    AsyncHandler,
    BatchPolicy,
    Producer,
    StageRunner,
    StageStats,
    skip_when_broker_away,
)
from streams.pipeline.stage import Emit, Handler
from streams.pipeline.stages import changes
from streams.pipeline.stages.audit import audit_stages
from streams.pipeline.stages.booking import BookingStage
from streams.pipeline.stages.correlate import Correlator, report_unmatched, unmatched_due
from streams.pipeline.stages.delivery import KnownQueues, QueueDelivery
from streams.pipeline.stages.lifecycle import LifecycleTracker, TickSchedule
from streams.pipeline.stages.parse import NotificationParser
from streams.pipeline.tables import StateTable
from streams.pipeline.web import register_views
from streams.settings import Settings
from streams.topics import Catalogue, TopicSpec, with_partitions

log = structlog.get_logger(__name__)

Clock = Callable[[], datetime]

#: The audit stages' batches: nobody waits for an audit record within a second, so they gather up to a quarter of
#: a second of records before sending (fewer produce requests, commits and chain-head writes per record, and more
#: of the core for the stages that alert a party).
AUDIT_BATCHES = BatchPolicy(linger_s=0.25)
#: How often the party queues are listed again, to deliver what waits for a party onboarded since.
WAITING_CHECK_S = 5.0


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Pipeline:
    """The built app with what tests, views and the demo need to see."""

    app: faust.App
    settings: Settings
    catalogue: Catalogue
    stats: StageStats
    engine: Engine
    tables: dict[str, StateTable] = field(default_factory=dict)
    runners: dict[str, StageRunner] = field(default_factory=dict)
    evictor: Evictor | None = None


class WebAndTimers(BootStrategy):
    """Faust starts its web server, tasks and timers, and no Kafka client: the stages are the engine's.

    Why: an idle Faust consumer still joined a group of its own with an assignor topic, and on a stop during a broker
    outage its thread's close let a CancelledError out and the worker waited Faust's 60 s shutdown timeout."""

    enable_kafka = False
    enable_web = True


class WebApp(faust.App):
    BootStrategy = WebAndTimers


def faust_app(settings: Settings) -> faust.App:
    """The Faust app that hosts the web views and the timers; no agent, no table, no Kafka client."""
    datadir = settings.table_dir
    datadir.parent.mkdir(parents=True, exist_ok=True)
    return WebApp(
        settings.app_id,
        broker=settings.faust_broker_url,
        store="memory://",
        datadir=str(datadir),
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_bind=settings.web_host,
        canonical_url=URL(f"http://{settings.web_host}:{settings.web_port}"),
    )


def _table(name: str, changelog: TopicSpec, settings: Settings, *, by_key: bool = False) -> StateTable:
    """A table whose changelog is the catalogue's explicitly named, compacted topic, partitioned like its source.

    ``by_key``: a write goes to the partition of its key (as the source records with that key), for a table written
    after a whole batch, when the record being processed may be of another partition than the key's.
    """
    spec = with_partitions(changelog, settings.default_partitions)
    return StateTable(name, spec.name, spec.partitions or settings.default_partitions, by_key=by_key)


def build_pipeline(settings: Settings, schemas: SchemaCatalogue | None = None, clock: Clock = utc_now) -> Pipeline:
    """Build the app, its topics, tables and agents; the CLI's worker and the tests call this same function."""
    schemas = schemas or SchemaCatalogue.load()
    catalogue = Catalogue.for_prefix(settings.topic_prefix)
    app = faust_app(settings)
    stats = StageStats()
    producer = Producer(settings, catalogue)
    dead_letters = DeadLetterSink(producer, catalogue.dead_letters.name, schemas)
    engine = Engine(producer)
    pipeline = Pipeline(app=app, settings=settings, catalogue=catalogue, stats=stats, engine=engine)
    tables = pipeline.tables
    tables["plans"] = _table("plans", catalogue.plans_changelog, settings)
    tables["ledger"] = _table("ledger", catalogue.filing_ledger_changelog, settings)
    tables["parked"] = _table("parked", catalogue.parked_changelog, settings)
    # Written once per MBL after a batch's alerts are acknowledged (``LifecycleTracker`` batched), while the current
    # record may be of another partition: partitioned by key, like the audit chain heads below.
    tables["ens-state"] = _table("ens-state", catalogue.ens_state_changelog, settings, by_key=True)
    # Written once per MBL after a batch's records are acknowledged (``BatchChainer``): partitioned by key.
    tables["audit-chain"] = _table("audit-chain", catalogue.audit_chain_changelog, settings, by_key=True)
    tables["waiting"] = _table("waiting", catalogue.waiting_changelog, settings)
    queues = KnownQueues(settings, catalogue)
    delivery = QueueDelivery(schemas, catalogue, tables["waiting"], queues)

    schedule = TickSchedule(max(settings.margins))
    tracker = LifecycleTracker(
        schemas, catalogue, clock, tables["ens-state"], settings.margins, settings.response_times, batched=True,
        schedule=schedule,
    )  # fmt: skip

    def schedule_outdated(partitions: set[int]) -> None:
        """The ens-state partitions held, and their states, changed: the watchdog's schedule is rebuilt."""
        schedule.outdated()

    correlator = Correlator(schemas, catalogue, clock, tables["ledger"], tables["parked"])
    stages: dict[str, tuple[TopicSpec, Handler | AsyncHandler]] = {
        "plan-bookings": (catalogue.bookings, BookingStage(schemas, catalogue, clock, tables["plans"])),
        "parse-notifications": (catalogue.notifications_inbound, NotificationParser(schemas, catalogue, clock)),
        "correlate": (catalogue.notifications_parsed, correlator),
        "track-ens": (catalogue.ens_events, tracker),
        "deliver-alerts": (catalogue.alerts, delivery),
    }
    signer = signer_for(key_path(settings))
    log.info("audit_signing_key", key_id=signer.key_id, path=str(key_path(settings)))
    stages.update(audit_stages(schemas, catalogue, clock, tables["audit-chain"], batched=True, signer=signer))
    written = {
        "plan-bookings": ("plans",),
        "correlate": ("ledger", "parked"),
        "track-ens": ("ens-state",),
        "audit-chain": ("audit-chain",),
        "deliver-alerts": ("waiting",),
    }
    for name, (source, handler) in stages.items():
        runner = pipeline.runners[name] = StageRunner(name, handler, producer, dead_letters, stats)
        stage = Stage(
            name=name,
            sources=(source.name,),
            handler=handler,
            tables=tuple(tables[t] for t in written.get(name, ())),
            policy=AUDIT_BATCHES if name.startswith("audit-") else BatchPolicy(),
            on_assigned=(schedule_outdated,) if name == "track-ens" else (),
        )
        engine.add(StageProcessor(stage, runner, producer, settings))

    @app.task
    async def run_engine() -> None:
        """The stages start with the worker's web server and timers, once the party queues are known."""
        await skip_when_broker_away("deliver-waiting", queues.refresh)
        await engine.start()

    @app.timer(WAITING_CHECK_S, name="deliver-waiting")
    async def deliver_waiting() -> None:
        """Alerts kept for a party without a queue go out, in order, once its queue exists."""
        processor = engine.processors["deliver-alerts"]
        if not await skip_when_broker_away("deliver-waiting", queues.refresh) or not delivery.waiting:
            return
        parties = delivery.deliverable()
        if parties:
            release = processor.outside_batch(lambda: delivery.release(parties))
            if await skip_when_broker_away("deliver-waiting", lambda: release):
                log.info("waiting_alerts_released", parties=parties)

    async def stop_engine(app: faust.App, **kwargs: object) -> None:
        await engine.stop()

    app.on_before_shutdown.connect(stop_engine)  # type: ignore[arg-type]

    @app.timer(settings.watchdog_interval_s, name="deadline-watchdog")
    async def deadline_watchdog() -> None:
        """Asks the tracker to check every ENS whose deadline nears; the tracker decides and escalates."""
        now = clock()
        if not schedule.current:
            schedule.rebuild(tables["ens-state"].items())
            log.info("watchdog_schedule_rebuilt", scheduled=len(schedule.due))
        due = [mbl for mbl in schedule.due_now(now) if tables["ens-state"].get(mbl) is not None]
        if not due:
            return
        emits = []
        for mbl in due:
            record = ens_event(mbl, "tick", now, {}, f"watchdog:{now.isoformat()}")
            emits.append(Emit(catalogue.ens_events.name, mbl.encode(), schemas.encode("EnsEvent", record)))
        if await skip_when_broker_away("deadline-watchdog", lambda: producer.send_all(emits)):
            log.info("watchdog_ticks", count=len(emits))

    @app.timer(settings.watchdog_interval_s, name="parked-changes")
    async def parked_changes() -> None:
        """Sends booking changes parked too long back to the correlate stage, which expires them."""
        wait = timedelta(seconds=settings.change_wait_s)
        topic = catalogue.notifications_parsed.name
        emits = changes.expired(tables["parked"].items(), clock(), wait, schemas, topic)
        if emits and await skip_when_broker_away("parked-changes", lambda: producer.send_all(emits)):
            log.info("parked_changes_expiring", count=len(emits))

    @app.timer(settings.watchdog_interval_s, name="unmatched-answers")
    async def unmatched_answers() -> None:
        """Customs answers that match no filing for too long are reported once, as dead letters with their bytes."""
        wait = timedelta(seconds=settings.unmatched_wait_s)
        due = unmatched_due(tables["parked"].items(), clock(), wait)
        if due:
            report = engine.processors["correlate"].outside_batch(
                lambda: report_unmatched(correlator, due, wait, dead_letters)
            )
            if await skip_when_broker_away("unmatched-answers", lambda: report):
                log.warning("customs_answers_unmatched_reported", keys=due)

    evictor = pipeline.evictor = Evictor(
        tables,
        settings.closed_ens_retention,
        settings.evictions_per_tick,
        pending=lambda: getattr(tracker, "pending", {}),
        forget=lambda mbl: schedule.note(mbl, None),
        owned=lambda table, routing_key: tables[table].owns(routing_key),
    )

    @app.timer(settings.eviction_interval_s, name="closed-ens-eviction")
    async def closed_ens_eviction() -> None:
        """Deletes closed ENS past their retention with what is keyed by them (``streams.pipeline.eviction``)."""
        evicted = evictor.evict(clock())
        tombstones = evictor.take_tombstones()
        if tombstones:
            await skip_when_broker_away("closed-ens-eviction", lambda: producer.send_all(tombstones))
        if evicted:
            log.info("closed_ens_evicted", count=len(evicted), evicted_total=evictor.evicted["ens-state"])

    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        return web.json(
            {
                "status": "ok",
                "app_id": settings.app_id,
                "processing_guarantee": settings.processing_guarantee.value,
                "stages": stats.as_dict(),
            }
        )

    register_views(app, pipeline, schemas, clock)
    return pipeline
