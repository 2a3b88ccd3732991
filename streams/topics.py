"""The topic catalogue: every topic the product reads or writes, in one place.

Names are explicit, never derived from agent or table names, so that renaming a step cannot silently rename a
topic or a state store. A prefix (``ICS2_TOPIC_PREFIX``) lets several deployments, or tests, share one cluster.
``docker-compose.yml``, the Strimzi resources and ``ics2 topics apply`` all read this module.

Durability follows one rule everywhere (``Durability``): replication factor ``min(3, brokers)`` and
``min.insync.replicas`` ``min(2, replication)``, so that with ``acks=all`` a write is on two disks before it is
acknowledged and, on three brokers or more, one broker may die without losing an acknowledged record or stopping
writes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from enum import StrEnum

DAY_MS = 24 * 60 * 60 * 1000
SIMULATOR_SNAPSHOT_MAX_BYTES = 8 * 1024 * 1024
INBOUND_MAX_MESSAGE_BYTES = 8 * 1024 * 1024
"""The inbound XML topic takes records far above what the parser accepts (``streams.messages.safe``), so an
oversize message reaches the parse stage and is dead-lettered with its bytes instead of vanishing at the broker."""
DEAD_LETTER_MAX_MESSAGE_BYTES = INBOUND_MAX_MESSAGE_BYTES + 1024 * 1024
"""Room for the largest inbound record plus its envelope; the worker's producer may send messages this large."""


#: The largest replication factor chosen by the rule, however many brokers there are.
MAX_REPLICATION = 3
#: The largest ``min.insync.replicas`` chosen by the rule: two copies before an acknowledgement, one broker spare.
MAX_MIN_INSYNC_REPLICAS = 2
#: Kafka's own default ``min.insync.replicas``; a topic needs no override to get it from a broker left at defaults.
KAFKA_DEFAULT_MIN_INSYNC_REPLICAS = 1


@dataclass(frozen=True, slots=True)
class Durability:
    """Replication factor and ``min.insync.replicas`` of topics (and of the broker's own internal topics).

    With ``acks=all`` a producer is acknowledged once ``min_insync`` replicas have the record; with one spare
    replica a broker can fail (or restart) without losing acknowledged records or refusing writes.
    """

    replication: int
    min_insync: int

    def __post_init__(self) -> None:
        if self.replication < 1:
            raise ValueError(f"replication factor must be at least 1, not {self.replication}")
        if not 1 <= self.min_insync <= self.replication:
            raise ValueError(
                f"min.insync.replicas must be between 1 and the replication factor {self.replication}, "
                f"not {self.min_insync}: a higher value refuses every acks=all write"
            )

    @classmethod
    def for_replication(cls, replication: int) -> Durability:
        """The rule's ``min.insync.replicas`` for a given replication factor."""
        return cls(replication, min(MAX_MIN_INSYNC_REPLICAS, max(1, replication)))

    @classmethod
    def for_brokers(cls, brokers: int) -> Durability:
        """The rule for a cluster of ``brokers``: replication ``min(3, brokers)``, min ISR ``min(2, replication)``."""
        return cls.for_replication(min(MAX_REPLICATION, max(1, brokers)))

    def capped(self, replication: int) -> Durability:
        """For a topic that has only ``replication`` replicas: a min ISR above that would refuse every write."""
        return Durability(replication, min(self.min_insync, max(1, replication)))


class Cleanup(StrEnum):
    """Compacted topics keep the latest value per key (reference data, state); others keep every event."""

    COMPACT = "compact"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One topic: its name, what the key and value are, how long it keeps data, and why it exists."""

    name: str
    purpose: str
    key: str
    value: str
    cleanup: Cleanup = Cleanup.DELETE
    partitions: int | None = None
    """None means the deployment's default (``ICS2_DEFAULT_PARTITIONS``)."""
    retention_ms: int | None = None
    """None keeps data forever (``retention.ms=-1``) on retained topics; compacted topics ignore it."""
    extra_config: tuple[tuple[str, str], ...] = field(default=())

    def config(self, min_insync_replicas: int | None = None) -> dict[str, str]:
        """Topic-level configuration as the broker wants it; ``min.insync.replicas`` only when given, since its
        value depends on the cluster (``Durability``), not on the topic."""
        config = {"cleanup.policy": self.cleanup.value}
        if self.cleanup is Cleanup.DELETE:
            config["retention.ms"] = str(self.retention_ms if self.retention_ms is not None else -1)
        else:
            config["min.cleanable.dirty.ratio"] = "0.1"
        config.update(dict(self.extra_config))
        if min_insync_replicas is not None:
            config["min.insync.replicas"] = str(min_insync_replicas)
        return config


#: Shared by every per-party queue; the party id is the variable part of the name.
PARTY_QUEUE_PURPOSE = "actions and alerts for one party (forwarder, co-loader or carrier), readable only by it"
_PARTY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,100}$")


@dataclass(frozen=True, slots=True)
class Catalogue:
    """The topics of one deployment; build it with ``Catalogue.for_prefix``."""

    prefix: str = ""

    @classmethod
    def for_prefix(cls, prefix: str = "") -> Catalogue:
        if prefix and not re.fullmatch(r"[A-Za-z0-9._-]{1,100}", prefix):
            raise ValueError(
                f"topic prefix {prefix!r} may hold only letters, digits, '.', '_' and '-', at most 100 of them"
            )
        return cls(prefix)

    def _spec(self, name: str, **kwargs: object) -> TopicSpec:
        return TopicSpec(name=f"{self.prefix}{name}", **kwargs)  # type: ignore[arg-type]

    @property
    def bookings(self) -> TopicSpec:
        return self._spec(
            "ics2.bookings",
            purpose="booking events from booking systems: a consolidation (MBL, HBL tree, goods, parties) per version",
            key="MBL number",
            value="BookingEvent (Avro)",
            retention_ms=90 * DAY_MS,
        )

    @property
    def ref_parties(self) -> TopicSpec:
        return self._spec(
            "ics2.ref.parties",
            purpose="reference data of parties: EORI, name, address, whether they file ICS2 themselves",
            key="party id",
            value="PartyReference (Avro)",
            cleanup=Cleanup.COMPACT,
        )

    @property
    def ref_carriers(self) -> TopicSpec:
        return self._spec(
            "ics2.ref.carriers",
            purpose="reference data of ocean carriers: EORI and SCAC-like codes used to link house filings",
            key="carrier party id",
            value="PartyReference (Avro)",
            cleanup=Cleanup.COMPACT,
        )

    @property
    def filing_drafts(self) -> TopicSpec:
        return self._spec(
            "ics2.filing-drafts",
            purpose="each planned filing with its validation findings, before it is rendered and sent",
            key="MBL number",
            value="FilingDraft (Avro)",
            retention_ms=400 * DAY_MS,
        )

    @property
    def filings_outbound(self) -> TopicSpec:
        return self._spec(
            "ics2.filings.outbound",
            purpose="rendered ICS2 XML filings (IE3F1x, IE3R02/R03) handed to the customs gateway connector",
            key="MBL number",
            value="Filing (Avro) with the XML",
            retention_ms=400 * DAY_MS,
        )

    @property
    def notifications_inbound(self) -> TopicSpec:
        return self._spec(
            "ics2.notifications.inbound",
            purpose="raw customs notification XML as received from the gateway, byte for byte",
            key="addressee EORI",
            value="raw XML bytes",
            retention_ms=400 * DAY_MS,
            extra_config=(("max.message.bytes", str(INBOUND_MAX_MESSAGE_BYTES)),),
        )

    @property
    def notifications_parsed(self) -> TopicSpec:
        return self._spec(
            "ics2.notifications.parsed",
            purpose=(
                "customs notifications parsed into typed records, and the filing-ledger entries they are correlated"
                " against, keyed alike so that both meet in one partition"
            ),
            key="correlation key: lrn:<LRN>, mrn:<MRN>, hbl:<MBL>/<HBL> or ref:<referral>",
            value="CustomsNotification or LedgerEntry (Avro)",
            retention_ms=400 * DAY_MS,
        )

    @property
    def alerts(self) -> TopicSpec:
        return self._spec(
            "ics2.alerts",
            purpose="every party alert, for alerting services (one topic, keyed by the party that must act)",
            key="party id",
            value="PartyAlert (Avro)",
            retention_ms=400 * DAY_MS,
        )

    @property
    def audit(self) -> TopicSpec:
        return self._spec(
            "ics2.audit",
            purpose="the audit trail: every input, decision and output per MBL, hash-chained, kept forever",
            key="MBL number",
            value="AuditRecord (Avro)",
            partitions=1,
        )

    @property
    def audit_entries(self) -> TopicSpec:
        return self._spec(
            "ics2.audit-entries",
            purpose="what the audit trail must record, derived from each recorded topic, before it is hash-chained",
            key="MBL number",
            value="AuditEntry (Avro)",
            retention_ms=30 * DAY_MS,
        )

    @property
    def waiting_changelog(self) -> TopicSpec:
        return self._spec(
            "ics2.party-waiting-changelog",
            purpose=(
                "changelog of the waiting table: per party whose queue does not exist yet, its alerts in order,"
                " delivered once the queue appears"
            ),
            key="party id",
            value="table changelog",
            cleanup=Cleanup.COMPACT,
        )

    @property
    def audit_chain_changelog(self) -> TopicSpec:
        return self._spec(
            "ics2.audit-chain-changelog",
            purpose="changelog of the audit chain table: next sequence, last hash and source offsets chained per MBL",
            key="MBL number",
            value="table changelog",
            cleanup=Cleanup.COMPACT,
        )

    @property
    def dead_letters(self) -> TopicSpec:
        return self._spec(
            "ics2.dead-letters",
            purpose="input a stage could not handle: original bytes plus stage, reason and source offsets",
            key="the original key",
            value="DeadLetter (Avro)",
            retention_ms=400 * DAY_MS,
            extra_config=(("max.message.bytes", str(DEAD_LETTER_MAX_MESSAGE_BYTES)),),
        )

    @property
    def ens_events(self) -> TopicSpec:
        return self._spec(
            "ics2.ens-events",
            purpose="ENS lifecycle events (plan, filing sent or blocked, correlated notification, watchdog tick)",
            key="MBL number",
            value="EnsEvent (Avro)",
            retention_ms=400 * DAY_MS,
        )

    @property
    def plans_changelog(self) -> TopicSpec:
        return self._spec(
            "ics2.plans-changelog",
            purpose="changelog of the plan memory table: last booking version and filings sent per MBL and party",
            key="MBL number|planning party",
            value="table changelog",
            cleanup=Cleanup.COMPACT,
        )

    @property
    def parked_changelog(self) -> TopicSpec:
        return self._spec(
            "ics2.parked-changelog",
            purpose="changelog of notifications parked until the filing they answer is known",
            key="correlation key",
            value="table changelog",
            cleanup=Cleanup.COMPACT,
        )

    @property
    def ens_state_changelog(self) -> TopicSpec:
        return self._spec(
            "ics2.ens-state-changelog",
            purpose="changelog of the ENS lifecycle table (per MBL and HBL)",
            key="MBL number",
            value="table changelog",
            cleanup=Cleanup.COMPACT,
        )

    @property
    def filing_ledger_changelog(self) -> TopicSpec:
        return self._spec(
            "ics2.filing-ledger-changelog",
            purpose="changelog of the filing ledger table that correlates customs answers with filings",
            key="LRN, MRN, MBL+HBL or referral reference",
            value="table changelog",
            cleanup=Cleanup.COMPACT,
        )

    @property
    def simulator_state(self) -> TopicSpec:
        """One partition, so one order of snapshots; large messages, since a snapshot holds the whole state."""
        return self._spec(
            "ics2.gateway.simulator-state",
            purpose="snapshots of the customs simulator's state, so the simulator connector survives restarts",
            key="deployment (app id)",
            value="simulator state (JSON)",
            cleanup=Cleanup.COMPACT,
            partitions=1,
            extra_config=(("max.message.bytes", str(SIMULATOR_SNAPSHOT_MAX_BYTES)),),
        )

    @staticmethod
    def names_a_queue(party_id: str) -> bool:
        """Whether a party id can name a queue topic; ids from input are checked before ``party_queue``."""
        return bool(_PARTY_ID.fullmatch(party_id))

    def party_queue(self, party_id: str) -> TopicSpec:
        """The queue of one party; created when the party is onboarded."""
        if not _PARTY_ID.fullmatch(party_id):
            raise ValueError(f"party id {party_id!r} cannot name a topic")
        return self._spec(
            f"ics2.party.{party_id}.queue",
            purpose=PARTY_QUEUE_PURPOSE,
            key="MBL number",
            value="PartyAlert (Avro)",
            retention_ms=400 * DAY_MS,
        )

    def all(self) -> tuple[TopicSpec, ...]:
        """Every fixed topic (per-party queues come on top, one per onboarded party)."""
        return (
            self.bookings,
            self.ref_parties,
            self.ref_carriers,
            self.filing_drafts,
            self.filings_outbound,
            self.notifications_inbound,
            self.notifications_parsed,
            self.alerts,
            self.audit,
            self.dead_letters,
            self.ens_events,
            self.plans_changelog,
            self.parked_changelog,
            self.ens_state_changelog,
            self.filing_ledger_changelog,
            self.simulator_state,
            self.audit_entries,
            self.audit_chain_changelog,
            self.waiting_changelog,
        )

    def by_name(self, name: str) -> TopicSpec:
        for spec in self.all():
            if spec.name == name:
                return spec
        raise KeyError(name)


def with_partitions(spec: TopicSpec, default: int) -> TopicSpec:
    """The spec with its partition count made concrete."""
    return spec if spec.partitions is not None else replace(spec, partitions=default)
