"""The Faust application and its wiring, built by one function that the worker, the demo and the tests share.

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
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import faust
import structlog
from faust.serializers import codecs
from faust.types import TP, TableT
from yarl import URL

from streams.audit.signing import key_path, signer_for
from streams.contracts.avro import SchemaCatalogue
from streams.contracts.records import ens_event
from streams.pipeline.dead_letters import DeadLetterSink
from streams.pipeline.eviction import Evictor
from streams.pipeline.recovery import OrderedTableManager
from streams.pipeline.runner import (
    AsyncHandler,
    BatchPolicy,
    Producer,
    StageRunner,
    StageStats,
    add_stage,
    skip_when_broker_away,
)
from streams.pipeline.stage import Emit, Handler
from streams.pipeline.stages import changes
from streams.pipeline.stages.audit import audit_stages
from streams.pipeline.stages.booking import BookingStage
from streams.pipeline.stages.correlate import Correlator
from streams.pipeline.stages.lifecycle import LifecycleTracker, TickSchedule
from streams.pipeline.stages.parse import NotificationParser
from streams.pipeline.stall import StallGuard
from streams.pipeline.tablestore import (
    KeyedRocksDBStore,
    key_partition,
    store_url,
    table_options,
    table_partitions,
)
from streams.pipeline.web import register_views
from streams.settings import ProcessingGuarantee, SecurityProtocol, Settings
from streams.topics import Catalogue, TopicSpec, with_partitions

log = structlog.get_logger(__name__)

Clock = Callable[[], datetime]

#: Seconds between two looks of the stall guard.
STALL_CHECK_S = 5.0
#: How long Faust's producer (table changelogs) waits to fill a produce request.
CHANGELOG_LINGER_S = 0.005
#: A worker that dies without leaving the group (SIGKILL, power loss) holds its partitions this long, so its
#: replacement waits this long before it resumes (Faust's default is 60 s; 30 s made a restart idle 26-48 s). 6 s is
#: the broker's smallest allowed session (``group.min.session.timeout.ms``). Static membership was not taken: every
#: worker would need its own stable ``group.instance.id``, and a static member that stops cleanly keeps its
#: partitions for the whole session instead of handing them over at once.
SESSION_TIMEOUT_S = 6.0
#: The audit stages' batches: nobody waits for an audit record within a second, so they gather up to a quarter of
#: a second of records before sending (measured in ``make bench``: fewer produce requests, commits and chain-head
#: writes per record, and more of the core for the stages that alert a party).
AUDIT_BATCHES = BatchPolicy(linger_s=0.25, max_age_s=1.0)
#: Heartbeats a third of the session apart (Kafka's rule), so two lost heartbeats do not end a live worker's session.
HEARTBEAT_INTERVAL_S = 2.0


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Pipeline:
    """The built app with what tests, views and the demo need to see."""

    app: faust.App
    settings: Settings
    catalogue: Catalogue
    stats: StageStats
    tables: dict[str, TableT[str, bytes]] = field(default_factory=dict)
    runners: dict[str, StageRunner] = field(default_factory=dict)
    evictor: Evictor | None = None


def faust_app(settings: Settings) -> faust.App:
    """A Faust app configured from the settings; no agents yet."""
    datadir = settings.table_dir
    datadir.parent.mkdir(parents=True, exist_ok=True)
    options: dict[str, Any] = {
        "broker": settings.faust_broker_url,
        "store": store_url(settings),
        "processing_guarantee": settings.processing_guarantee.value,
        "topic_partitions": settings.default_partitions,
        "topic_replication_factor": 1,
        "topic_allow_declare": True,
        "consumer_auto_offset_reset": "earliest",
        "producer_acks": -1,
        # Table changelogs go through Faust's producer, one send per table write; lingering 5 ms lets a batch's
        # writes share produce requests (measured: a quarter less CPU per notification). Faust flushes this
        # producer before it commits offsets, so no offset is committed ahead of its changelog.
        "producer_linger": CHANGELOG_LINGER_S,
        "key_serializer": "raw",
        "value_serializer": "raw",
        "datadir": str(datadir),
        "web_host": settings.web_host,
        "web_port": settings.web_port,
        "web_bind": settings.web_host,
        "canonical_url": URL(f"http://{settings.web_host}:{settings.web_port}"),
        "broker_commit_every": 100,
        "broker_commit_interval": 1.0,
        # Faust empties the agents' buffers on a rebalance or stop, then would wait for those very messages to be
        # acknowledged: a worker losing partitions to a new one hung there. In-flight records are not waited for;
        # their offsets are not committed, so the new owner reads them again (at-least-once, ids deduplicate).
        "stream_wait_empty": False,
        "broker_session_timeout": SESSION_TIMEOUT_S,
        "broker_heartbeat_interval": HEARTBEAT_INTERVAL_S,
        "TableManager": OrderedTableManager,
    }
    if settings.processing_guarantee is ProcessingGuarantee.EXACTLY_ONCE:
        options["processing_guarantee"] = "exactly_once"
    if settings.security_protocol is not SecurityProtocol.PLAINTEXT:
        options["broker_credentials"] = _credentials(settings)
    return faust.App(settings.app_id, **options)


def _credentials(settings: Settings) -> Any:
    ssl_context = settings.kafka_client_kwargs().get("ssl_context")
    if settings.security_protocol.value.startswith("SASL"):
        return faust.SASLCredentials(
            username=settings.sasl_username,
            password=settings.sasl_password,
            mechanism=settings.sasl_mechanism,
            ssl_context=ssl_context,
        )
    return faust.SSLCredentials(ssl_context)


class Utf8Keys(codecs.Codec):
    """Table keys as plain UTF-8, the bytes our topics are keyed by, so a key's partition is the same in both."""

    def _dumps(self, obj: Any) -> bytes:
        return obj.encode() if isinstance(obj, str) else bytes(obj)

    def _loads(self, s: bytes) -> Any:
        return s.decode()


codecs.register("ics2-utf8", Utf8Keys())


def _table(
    app: faust.App, name: str, changelog: TopicSpec, settings: Settings, *, by_key: bool = False
) -> TableT[str, bytes]:
    """A table whose changelog is the catalogue's explicitly named, compacted topic.

    ``by_key``: a changelog record's partition comes from its key (the same murmur2 of the same UTF-8 bytes that
    places the source records), not from the record being processed; for a table written after a whole batch,
    when the current record may be of another partition than the key's.
    """
    spec = with_partitions(changelog, settings.default_partitions)
    schema: faust.Schema[str, bytes] = faust.Schema(
        key_type=str, value_type=bytes, key_serializer="ics2-utf8", value_serializer="raw"
    )
    topic = app.topic(spec.name, schema=schema, partitions=spec.partitions, config=spec.config())
    table: TableT[str, bytes] = app.Table(
        name,
        default=None,
        schema=schema,
        partitions=spec.partitions,
        changelog_topic=topic,
        use_partitioner=by_key,
        options=table_options(settings),
    )
    # Faust writes changelog records with serializers it derives from key_type/value_type (JSON without them), not
    # with the schema that recovery reads them with: keys came back JSON-quoted and a recovered table missed them all.
    # ``TableT`` does not declare the serializers that ``faust.Table`` has.
    table.key_serializer = schema.key_serializer  # type: ignore[attr-defined]
    table.value_serializer = schema.value_serializer  # type: ignore[attr-defined]
    return table


def _owned(app: faust.App, table: TableT[str, bytes], routing_key: str) -> bool:
    """Whether this worker is the active owner of the table partition that ``routing_key`` is placed in."""
    topic = table.changelog_topic.get_topic_name()
    partition = key_partition(routing_key.encode(), table_partitions(table))
    return TP(topic, partition) in app.assignor.assigned_actives()


def build_pipeline(settings: Settings, schemas: SchemaCatalogue | None = None, clock: Clock = utc_now) -> Pipeline:
    """Build the app, its topics, tables and agents; the CLI's worker and the tests call this same function."""
    schemas = schemas or SchemaCatalogue.load()
    catalogue = Catalogue.for_prefix(settings.topic_prefix)
    app = faust_app(settings)
    stats = StageStats()
    producer = Producer(app, settings, catalogue)
    dead_letters = DeadLetterSink(producer, catalogue.dead_letters.name, schemas)
    pipeline = Pipeline(app=app, settings=settings, catalogue=catalogue, stats=stats)
    tables = pipeline.tables
    tables["plans"] = _table(app, "plans", catalogue.plans_changelog, settings)
    tables["ledger"] = _table(app, "ledger", catalogue.filing_ledger_changelog, settings)
    tables["parked"] = _table(app, "parked", catalogue.parked_changelog, settings)
    # Written once per MBL after a batch's alerts are acknowledged (``LifecycleTracker`` batched), while the current
    # record may be of another partition: partitioned by key, like the audit chain heads below.
    tables["ens-state"] = _table(app, "ens-state", catalogue.ens_state_changelog, settings, by_key=True)
    # Written once per MBL after a batch's records are acknowledged (``BatchChainer``), while the current record
    # may be of another partition: partitioned by key.
    tables["audit-chain"] = _table(app, "audit-chain", catalogue.audit_chain_changelog, settings, by_key=True)
    for table in tables.values():
        if isinstance(table.data, KeyedRocksDBStore):
            table.data.open_all()

    schedule = TickSchedule(max(settings.margins))
    tracker = LifecycleTracker(
        schemas, catalogue, clock, tables["ens-state"], settings.margins, settings.response_times, batched=True,
        schedule=schedule,
    )  # fmt: skip

    async def schedule_outdated(app: faust.App, **kwargs: object) -> None:
        schedule.outdated()

    # Sent when a rebalance's table recovery is over: the ens-state partitions held, and their states, may differ.
    app.on_rebalance_complete.connect(schedule_outdated)  # type: ignore[arg-type]
    stages: dict[str, tuple[TopicSpec, Handler | AsyncHandler]] = {
        "plan-bookings": (catalogue.bookings, BookingStage(schemas, catalogue, clock, tables["plans"])),
        "parse-notifications": (catalogue.notifications_inbound, NotificationParser(schemas, catalogue, clock)),
        "correlate": (
            catalogue.notifications_parsed,
            Correlator(schemas, catalogue, clock, tables["ledger"], tables["parked"]),
        ),
        "track-ens": (catalogue.ens_events, tracker),
    }
    signer = signer_for(key_path(settings))
    log.info("audit_signing_key", key_id=signer.key_id, path=str(key_path(settings)))
    stages.update(audit_stages(schemas, catalogue, clock, tables["audit-chain"], batched=True, signer=signer))
    for name, (source, handler) in stages.items():
        pipeline.runners[name] = add_stage(
            app,
            name=name,
            source=source.name,
            handler=handler,
            producer=producer,
            dead_letters=dead_letters,
            stats=stats,
            policy=AUDIT_BATCHES if name.startswith("audit-") else None,
        )
    guard = StallGuard(app, settings, stats, {source.name for source, _ in stages.values()})

    @app.timer(STALL_CHECK_S, name="stall-guard")
    async def stall_guard() -> None:
        """Seeks back when records wait and nothing is consumed (see ``streams.pipeline.stall``)."""
        await skip_when_broker_away("stall-guard", guard.check)

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

    evictor = pipeline.evictor = Evictor(
        tables,
        settings.closed_ens_retention,
        settings.evictions_per_tick,
        pending=lambda: getattr(tracker, "pending", {}),
        forget=lambda mbl: schedule.note(mbl, None),
        owned=lambda table, routing_key: _owned(app, tables[table], routing_key),
    )

    @app.timer(settings.eviction_interval_s, name="closed-ens-eviction")
    async def closed_ens_eviction() -> None:
        """Deletes closed ENS past their retention with what is keyed by them (``streams.pipeline.eviction``)."""
        evicted = evictor.evict(clock())
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
