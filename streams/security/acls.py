"""Who may do what on the broker, as plain data: the grants of a party, a worker, a gateway connector.

Pure (no Kafka client here), so the same grants feed the local broker's onboarding (``streams.security.onboarding``)
and generated Strimzi ``KafkaUser`` resources. Least privilege is the rule: a party reads its own queue and nothing
else, and the processes get exactly the topics their stages read or write, named through the catalogue.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from streams.topics import Catalogue, TopicSpec

RESOURCE_TYPES = frozenset({"topic", "group", "transactional_id", "cluster"})
PATTERNS = frozenset({"literal", "prefixed"})
OPERATIONS = frozenset(
    {
        "Read",
        "Write",
        "Create",
        "Delete",
        "Alter",
        "Describe",
        "ClusterAction",
        "DescribeConfigs",
        "AlterConfigs",
        "IdempotentWrite",
        "All",
    }
)
PERMISSIONS = frozenset({"Allow", "Deny"})
#: Kafka names the one cluster resource this way in every ACL.
CLUSTER_RESOURCE = "kafka-cluster"
#: The SCRAM user of ``ics2`` administration (topics, onboarding); a super user of the secured local broker.
ADMIN_USER = "ics2-admin"
#: A party's user is this prefix and its id, so a party can never take the name of a process user.
PARTY_USER_PREFIX = "party-"
_PARTY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,100}$")


@dataclass(frozen=True)
class Grant:
    """One ACL entry: ``principal`` may (or may not) do ``operation`` on what ``name`` and ``pattern`` match."""

    principal: str
    resource_type: str
    name: str
    pattern: str
    operation: str
    permission: str = "Allow"

    def __post_init__(self) -> None:
        if not self.principal.startswith("User:") or len(self.principal) == len("User:"):
            raise ValueError(f"principal {self.principal!r} is not User:<name>")
        if self.resource_type not in RESOURCE_TYPES:
            raise ValueError(f"resource type {self.resource_type!r} is not one of {sorted(RESOURCE_TYPES)}")
        if self.pattern not in PATTERNS:
            raise ValueError(f"pattern {self.pattern!r} is not literal or prefixed")
        if self.operation not in OPERATIONS:
            raise ValueError(f"operation {self.operation!r} is not a Kafka ACL operation")
        if self.permission not in PERMISSIONS:
            raise ValueError(f"permission {self.permission!r} is not Allow or Deny")
        if not self.name:
            raise ValueError("a grant needs a resource name")

    def matches(self, resource_type: str, name: str) -> bool:
        """Whether this grant's resource pattern covers the named resource (as the broker's authorizer decides)."""
        if resource_type != self.resource_type:
            return False
        return name.startswith(self.name) if self.pattern == "prefixed" else name == self.name

    def allows(self, principal: str, resource_type: str, name: str, operation: str) -> bool:
        """Whether this grant lets ``principal`` do ``operation`` there (``All`` covers every operation)."""
        return (
            self.permission == "Allow"
            and self.principal == principal
            and self.operation in (operation, "All")
            and self.matches(resource_type, name)
        )


def principal_of(user: str) -> str:
    """The Kafka principal of a SCRAM user."""
    return f"User:{user}"


def allowed(grants: Iterable[Grant], principal: str, resource_type: str, name: str, operation: str) -> bool:
    """Whether any grant allows the operation; Describe is implied by Read, Write, Delete or Alter, as in Kafka."""
    implied = {"Describe": ("Read", "Write", "Delete", "Alter"), "DescribeConfigs": ("AlterConfigs",)}
    operations = (operation, *implied.get(operation, ()))
    return any(grant.allows(principal, resource_type, name, candidate) for grant in grants for candidate in operations)


def party_user(party_id: str) -> str:
    """The SCRAM user name of a party, e.g. ``party-FWD-1``.

    Party ids are already restricted to letters, digits, '.', '_' and '-' (they name a topic), which are also safe
    in SCRAM user names; anything else is refused rather than rewritten, so two ids never map to one user.
    """
    if not _PARTY_ID.fullmatch(party_id):
        raise ValueError(f"party id {party_id!r} may hold only letters, digits, '.', '_' and '-'")
    return f"{PARTY_USER_PREFIX}{party_id}"


#: Ends the group prefix of a party; it cannot occur in a party id, so ``inbox.A:`` never covers party ``A.B``'s groups.
PARTY_GROUP_SEPARATOR = ":"


def party_group(catalogue: Catalogue, party_id: str) -> str:
    """The consumer group a party's alerting services may use; also any group ``<this>:<anything>``."""
    return f"{catalogue.prefix}inbox.{party_id}"


def party_grants(catalogue: Catalogue, party_id: str) -> list[Grant]:
    """Read its own queue, and use consumer groups named after it; nothing else, and no write anywhere.

    The group is granted as the literal name plus the prefix ``inbox.<party>:``; the separator cannot occur in a
    party id, so party ``A`` gets no rights on the groups of ``AB`` or ``A.B``.
    """
    principal = principal_of(party_user(party_id))
    queue = catalogue.party_queue(party_id).name
    group = party_group(catalogue, party_id)
    return [
        Grant(principal, "topic", queue, "literal", "Read"),
        Grant(principal, "topic", queue, "literal", "Describe"),
        Grant(principal, "group", group, "literal", "Read"),
        Grant(principal, "group", group, "literal", "Describe"),
        Grant(principal, "group", f"{group}{PARTY_GROUP_SEPARATOR}", "prefixed", "Read"),
        Grant(principal, "group", f"{group}{PARTY_GROUP_SEPARATOR}", "prefixed", "Describe"),
    ]


def party_queue_prefix(catalogue: Catalogue) -> str:
    """What every party queue's name starts with; the worker writes to queues of parties onboarded after it started."""
    return catalogue.party_queue("x").name.removesuffix("x.queue")


def worker_sources(catalogue: Catalogue) -> tuple[TopicSpec, ...]:
    """The topics the worker consumes: its stages' sources (``build_pipeline``, the audit collectors) and the
    live feed of its web views (alerts, inbound notifications, dead letters)."""
    return (
        catalogue.bookings,
        catalogue.notifications_inbound,
        catalogue.notifications_parsed,
        catalogue.ens_events,
        catalogue.filing_drafts,
        catalogue.filings_outbound,
        catalogue.alerts,
        catalogue.dead_letters,
        catalogue.audit_entries,
    )


def worker_sinks(catalogue: Catalogue) -> tuple[TopicSpec, ...]:
    """The fixed topics the worker's stages produce to; party queues come on top, by prefix."""
    return (
        catalogue.filing_drafts,
        catalogue.filings_outbound,
        catalogue.notifications_parsed,
        catalogue.ens_events,
        catalogue.alerts,
        catalogue.dead_letters,
        catalogue.audit_entries,
        catalogue.audit,
    )


def worker_changelogs(catalogue: Catalogue) -> tuple[TopicSpec, ...]:
    """The changelogs of the worker's tables, which the engine reads on recovery and writes."""
    return (
        catalogue.plans_changelog,
        catalogue.filing_ledger_changelog,
        catalogue.parked_changelog,
        catalogue.ens_state_changelog,
        catalogue.audit_chain_changelog,
        catalogue.waiting_changelog,
    )


def worker_grants(catalogue: Catalogue, app_id: str, user: str, *, exactly_once: bool = False) -> list[Grant]:
    """Least privilege for ``ics2 worker``: its stage topics, its changelogs, its stages' groups, Faust's own topics.

    Faust declares every internal topic at start (``topic_allow_declare``), and a CreateTopics request for a topic
    that exists but may not be created is answered with an authorisation error, not "already exists"; so the
    changelogs and Faust's ``<app_id>-`` topics (the assignor's leader topic) keep Create. Catalogue topics that
    are not internal are applied up front by the admin and are never created by the worker.
    """
    principal = principal_of(user)
    grants: list[Grant] = []
    for spec in worker_sources(catalogue):
        grants += _topic(principal, spec.name, "literal", "Read", "Describe")
    for spec in worker_sinks(catalogue):
        grants += _topic(principal, spec.name, "literal", "Write", "Describe")
    for spec in worker_changelogs(catalogue):
        grants += _topic(principal, spec.name, "literal", "Read", "Write", "Describe", "Create", "DescribeConfigs")
    grants += _topic(principal, party_queue_prefix(catalogue), "prefixed", "Write", "Describe")
    grants += _topic(principal, f"{app_id}-", "prefixed", "Read", "Write", "Describe", "Create", "DescribeConfigs")
    grants += [
        Grant(principal, "group", app_id, "literal", "Read"),
        Grant(principal, "group", app_id, "literal", "Describe"),
        # Each stage is a consumer group of its own, ``<app_id>.<stage>`` (``streams.pipeline.engine``).
        Grant(principal, "group", f"{app_id}.", "prefixed", "Read"),
        Grant(principal, "group", f"{app_id}.", "prefixed", "Describe"),
        Grant(principal, "cluster", CLUSTER_RESOURCE, "literal", "IdempotentWrite"),
    ]
    if exactly_once:
        grants += [
            Grant(principal, "transactional_id", f"{app_id}-", "prefixed", "Write"),
            Grant(principal, "transactional_id", f"{app_id}-", "prefixed", "Describe"),
        ]
    return _unique(grants)


def gateway_grants(catalogue: Catalogue, app_id: str, user: str) -> list[Grant]:
    """Least privilege for ``ics2 gateway``: read outbound filings, write inbound notifications and dead letters.

    The simulator connector also keeps its snapshots on ``simulator_state``: it reads them back without a group on
    start, and declares that topic itself (CreateTopics, expecting "already exists"), so it keeps Create there.
    """
    principal = principal_of(user)
    grants: list[Grant] = []
    grants += _topic(principal, catalogue.filings_outbound.name, "literal", "Read", "Describe")
    grants += _topic(principal, catalogue.notifications_inbound.name, "literal", "Write", "Describe")
    grants += _topic(principal, catalogue.dead_letters.name, "literal", "Write", "Describe")
    grants += _topic(principal, catalogue.simulator_state.name, "literal", "Read", "Write", "Describe", "Create")
    group = f"{app_id}-gateway"
    grants += [
        Grant(principal, "group", group, "literal", "Read"),
        Grant(principal, "group", group, "literal", "Describe"),
        Grant(principal, "cluster", CLUSTER_RESOURCE, "literal", "IdempotentWrite"),
    ]
    return _unique(grants)


def _topic(principal: str, name: str, pattern: str, *operations: str) -> list[Grant]:
    return [Grant(principal, "topic", name, pattern, operation) for operation in operations]


def _unique(grants: Iterable[Grant]) -> list[Grant]:
    return list(dict.fromkeys(grants))
