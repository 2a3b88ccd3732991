"""Kubernetes manifests of the workers and the gateway connector, for a cluster whose Kafka Strimzi runs.

Scaling is by partitions: every worker joins one consumer group (the app id), so each partition of the input
topics is consumed by one worker at a time and replicas beyond the partition count stand idle. Tables live on disk
(RocksDB) in each worker's own volume claim, named after its pod (``ICS2_WORKER_ID``): a pod restarted after a clean
stop reads only the changelog records written since, and a partition that moved to it is rebuilt from its changelog. The
StatefulSet's stable pod names are also Faust's client ids and make each worker's ``/health`` and ``/ens`` views
addressable through the headless Service.
"""

from __future__ import annotations

from typing import Any

from streams.deploy.options import DeployOptions
from streams.deploy.strimzi import PART_OF, gateway_user, kafka_user_name, worker_user

WEB_PORT_NAME = "web"
HEALTH_PATH = "/health"
STATE_DIR = "/var/lib/ics2"
CLUSTER_CA_DIR = "/etc/ics2/cluster-ca"
#: The ``ics2`` user of ``deploy/Dockerfile``.
IMAGE_UID = 10001
#: Strimzi's User Operator puts a SCRAM user's password under this key of the Secret named after the user.
PASSWORD_KEY = "password"
#: Strimzi's Cluster Operator puts the cluster CA certificate under this key of ``<cluster>-cluster-ca-cert``.
CA_KEY = "ca.crt"
#: Each worker's table volume: RocksDB files of its partitions (a few KiB per open consolidation, closed ones evicted).
STATE_CLAIM_SIZE = "10Gi"


def labels(options: DeployOptions, component: str) -> dict[str, str]:
    """The labels selectors use: one app instance, one component."""
    return {
        "app.kubernetes.io/name": "ics2-streams",
        "app.kubernetes.io/instance": options.app_id,
        "app.kubernetes.io/component": component,
    }


def settings_env(options: DeployOptions) -> dict[str, str]:
    """The ``ICS2_*`` settings both processes share (``Settings.from_env`` reads them); secrets are not here."""
    return {
        "ICS2_APP_ID": options.app_id,
        "ICS2_BOOTSTRAP_SERVERS": options.bootstrap,
        "ICS2_DEFAULT_PARTITIONS": str(options.default_partitions),
        "ICS2_LOG_FORMAT": "json",
        "ICS2_PROCESSING_GUARANTEE": options.processing_guarantee,
        "ICS2_SASL_MECHANISM": "SCRAM-SHA-512",
        "ICS2_SECURITY_PROTOCOL": "SASL_SSL",
        "ICS2_SSL_CAFILE": f"{CLUSTER_CA_DIR}/{CA_KEY}",
        "ICS2_STATE_DIR": STATE_DIR,
        "ICS2_TOPIC_PREFIX": options.prefix,
        "ICS2_WEB_HOST": "0.0.0.0",
        "ICS2_WEB_PORT": str(options.web_port),
    }


def config_map(options: DeployOptions) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": options.config_name, "labels": {**labels(options, "config"), **PART_OF}},
        "data": settings_env(options),
    }


def worker_service(options: DeployOptions) -> dict[str, Any]:
    """Headless, so each worker pod has a DNS name (``<pod>.<service>``) for its web views."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": options.worker_name, "labels": {**labels(options, "worker"), **PART_OF}},
        "spec": {
            "clusterIP": "None",
            "selector": labels(options, "worker"),
            "ports": [{"name": WEB_PORT_NAME, "port": options.web_port, "targetPort": WEB_PORT_NAME}],
        },
    }


def worker_statefulset(options: DeployOptions) -> dict[str, Any]:
    """The stream workers; topics come from Strimzi, so they start with ``--no-apply-topics``."""
    container = {
        **_container(options, "worker", ["worker", "--no-apply-topics"], worker_user(options.app_id)),
        "ports": [{"name": WEB_PORT_NAME, "containerPort": options.web_port, "protocol": "TCP"}],
        # Recovering tables from changelogs can take long on a big backlog: allow up to ten minutes to start.
        "startupProbe": _health_probe(failure_threshold=60),
        "readinessProbe": _health_probe(failure_threshold=3),
        "livenessProbe": _health_probe(failure_threshold=6),
    }
    # The pod's name names its table directory, so that the same pod finds its RocksDB files again.
    pod_name = {"name": "ICS2_WORKER_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    container["env"] = [*container["env"], pod_name]
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": options.worker_name, "labels": {**labels(options, "worker"), **PART_OF}},
        "spec": {
            "serviceName": options.worker_name,
            "replicas": options.worker_replicas,
            # Workers do not depend on each other's start: start them together, one rebalance instead of N.
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": labels(options, "worker")},
            "template": _pod_template(options, "worker", container, state_claim=True),
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "state", "labels": labels(options, "worker")},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": STATE_CLAIM_SIZE}},
                    },
                }
            ],
        },
    }


def _health_probe(failure_threshold: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": HEALTH_PATH, "port": WEB_PORT_NAME},
        "periodSeconds": 10,
        "timeoutSeconds": 5,
        "failureThreshold": failure_threshold,
    }


def worker_disruption_budget(options: DeployOptions) -> dict[str, Any]:
    """Voluntary evictions take one worker at a time, so at most one rebalance and one table recovery at once."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": options.worker_name, "labels": {**labels(options, "worker"), **PART_OF}},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": labels(options, "worker")}},
    }


def gateway_deployment(options: DeployOptions) -> dict[str, Any]:
    """One customs gateway connector; ``Recreate`` so two never answer the same filings during a rollout."""
    container = _container(options, "gateway", ["gateway", "--connector", "simulator"], gateway_user(options.app_id))
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": options.gateway_name, "labels": {**labels(options, "gateway"), **PART_OF}},
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": labels(options, "gateway")},
            "template": _pod_template(options, "gateway", container),
        },
    }


def _container(options: DeployOptions, name: str, args: list[str], user: str) -> dict[str, Any]:
    secret = kafka_user_name(user)
    return {
        "name": name,
        "image": options.image,
        "args": args,
        "envFrom": [{"configMapRef": {"name": options.config_name}}],
        "env": [
            {"name": "ICS2_SASL_USERNAME", "value": secret},
            {"name": "ICS2_SASL_PASSWORD", "valueFrom": {"secretKeyRef": {"name": secret, "key": PASSWORD_KEY}}},
        ],
        "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "state", "mountPath": STATE_DIR},
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "cluster-ca", "mountPath": CLUSTER_CA_DIR, "readOnly": True},
        ],
    }


def _pod_template(
    options: DeployOptions, component: str, container: dict[str, Any], *, state_claim: bool = False
) -> dict[str, Any]:
    """``state_claim``: the ``state`` volume is the StatefulSet's claim of the pod, not a scratch directory."""
    state = [] if state_claim else [{"name": "state", "emptyDir": {}}]
    return {
        "metadata": {"labels": labels(options, component)},
        "spec": {
            # SIGTERM lets Faust commit offsets and leave the group; give it the time to.
            "terminationGracePeriodSeconds": 60,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": IMAGE_UID,
                "fsGroup": IMAGE_UID,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [container],
            "volumes": [
                *state,
                {"name": "tmp", "emptyDir": {}},
                {
                    "name": "cluster-ca",
                    "secret": {"secretName": options.cluster_ca_secret, "items": [{"key": CA_KEY, "path": CA_KEY}]},
                },
            ],
        },
    }


def manifests(options: DeployOptions) -> dict[str, list[dict[str, Any]]]:
    """Every workload resource, by the file it goes to."""
    return {
        "config.yaml": [config_map(options)],
        "worker.yaml": [worker_service(options), worker_statefulset(options), worker_disruption_budget(options)],
        "gateway.yaml": [gateway_deployment(options)],
    }
