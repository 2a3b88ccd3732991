"""Strimzi ``KafkaTopic`` and ``KafkaUser`` resources generated from the topic catalogue and party onboarding.

The Topic Operator creates and corrects the topics, the User Operator the SCRAM users and their ACLs, so a cluster
run this way needs no ``ics2 topics apply`` and no hand-kept copy of either. Topics get the durability rule of
``ics2 topics apply`` (``streams.topics.Durability``): 3 replicas by default and ``min.insync.replicas`` 2.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from streams.deploy.options import DEFAULT_CLUSTER, DeployError, DeployOptions, resource_name
from streams.security.acls import Grant, gateway_grants, party_grants, party_user, principal_of, worker_grants
from streams.topics import Catalogue, TopicSpec, with_partitions

STRIMZI_API = "kafka.strimzi.io/v1beta2"
CLUSTER_LABEL = "strimzi.io/cluster"
PURPOSE_ANNOTATION = "ics2-streams/purpose"
PART_OF = {"app.kubernetes.io/part-of": "ics2-streams", "app.kubernetes.io/managed-by": "ics2-deploy-render"}

#: Grant resource types as Strimzi's ``AclRule.resource.type`` spells them.
_RESOURCE_TYPES = {"topic": "topic", "group": "group", "transactional_id": "transactionalId", "cluster": "cluster"}
#: Grant patterns as Strimzi's ``patternType`` spells them.
_PATTERN_TYPES = {"literal": "literal", "prefixed": "prefix"}


def kafka_topics(catalogue: Catalogue, options: DeployOptions) -> list[dict[str, Any]]:
    """One ``KafkaTopic`` per catalogue topic and per onboarded party's queue, configured as the catalogue says."""
    resources = []
    for spec in topic_specs(catalogue, options):
        name = resource_name(spec.name)
        # Strimzi takes the topic name from the resource name; ``topicName`` only when Kubernetes refuses it.
        topic_name = {} if name == spec.name else {"topicName": spec.name}
        resources.append(
            {
                "apiVersion": STRIMZI_API,
                "kind": "KafkaTopic",
                "metadata": {
                    "name": name,
                    "labels": {CLUSTER_LABEL: options.cluster, **PART_OF},
                    "annotations": {PURPOSE_ANNOTATION: spec.purpose},
                },
                "spec": {
                    **topic_name,
                    "partitions": spec.partitions,
                    "replicas": options.durability.replication,
                    "config": spec.config(options.durability.min_insync),
                },
            }
        )
    return resources


def topic_specs(catalogue: Catalogue, options: DeployOptions) -> list[TopicSpec]:
    """The fixed topics and the parties' queues, with the deployment's partition count made concrete."""
    specs = [*catalogue.all(), *(catalogue.party_queue(party) for party in options.parties)]
    return [with_partitions(spec, options.default_partitions) for spec in specs]


def worker_user(app_id: str) -> str:
    """The SCRAM user of the stream workers; also the name of the Secret holding its password."""
    return f"{app_id}-worker"


def gateway_user(app_id: str) -> str:
    """The SCRAM user of the customs gateway connector."""
    return f"{app_id}-gateway"


def kafka_users(
    catalogue: Catalogue,
    parties: Iterable[str],
    app_id: str,
    *,
    cluster: str = DEFAULT_CLUSTER,
    exactly_once: bool = False,
) -> list[dict[str, Any]]:
    """The worker's, the gateway's and one ``KafkaUser`` per party, each allowed exactly what its grants say."""
    workers, gateway = worker_user(app_id), gateway_user(app_id)
    users = [
        (workers, worker_grants(catalogue, app_id, workers, exactly_once=exactly_once)),
        (gateway, gateway_grants(catalogue, app_id, gateway)),
        *((party_user(party), party_grants(catalogue, party)) for party in parties),
    ]
    resources = [_kafka_user(user, grants, cluster) for user, grants in users]
    names = [resource["metadata"]["name"] for resource in resources]
    if len(set(names)) != len(names):
        raise DeployError(f"Kafka users that differ only in case cannot all be KafkaUsers: {sorted(names)}")
    return resources


def kafka_user_name(user: str) -> str:
    """The ``KafkaUser`` (and SCRAM user) name of a Kafka user: lower case, since Kubernetes names are.

    Strimzi takes the SCRAM user name from the resource name, so a name is never hashed or shortened: a user whose
    name cannot become valid by lower-casing alone is refused.
    """
    name = user.lower()
    if resource_name(name) != name:
        raise DeployError(f"Kafka user {user!r} cannot name a KafkaUser (letters, digits, '.' and '-' only)")
    return name


def _kafka_user(user: str, grants: Sequence[Grant], cluster: str) -> dict[str, Any]:
    name = kafka_user_name(user)
    return {
        "apiVersion": STRIMZI_API,
        "kind": "KafkaUser",
        "metadata": {"name": name, "labels": {CLUSTER_LABEL: cluster, **PART_OF}},
        "spec": {
            "authentication": {"type": "scram-sha-512"},
            "authorization": {"type": "simple", "acls": acl_rules(user, grants)},
        },
    }


def acl_rules(user: str, grants: Sequence[Grant]) -> list[dict[str, Any]]:
    """Strimzi ACL rules for one user: grants on the same resource and permission share one rule.

    Strimzi applies a KafkaUser's rules to that user's principal, so every grant must be for ``user``.
    """
    operations: dict[tuple[str, str, str, str], list[str]] = {}
    for grant in grants:
        if grant.principal != principal_of(user):
            raise DeployError(f"a grant for {grant.principal!r} is not for the Kafka user {user!r}")
        if grant.resource_type not in _RESOURCE_TYPES or grant.pattern not in _PATTERN_TYPES:
            raise DeployError(f"Strimzi has no ACL for a {grant.pattern} {grant.resource_type!r} resource")
        key = (grant.resource_type, grant.name, grant.pattern, grant.permission)
        listed = operations.setdefault(key, [])
        if grant.operation not in listed:
            listed.append(grant.operation)
    rules = []
    for (resource_type, name, pattern, permission), ops in operations.items():
        resource: dict[str, str] = {"type": _RESOURCE_TYPES[resource_type]}
        if resource_type != "cluster":
            resource.update(name=name, patternType=_PATTERN_TYPES[pattern])
        rules.append({"resource": resource, "operations": sorted(ops), "host": "*", "type": permission.lower()})
    return rules
