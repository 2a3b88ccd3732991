"""What one deployment on Kubernetes is made of, and the naming rules Kubernetes imposes on it."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version

from streams.errors import ICS2StreamsError
from streams.settings import Settings
from streams.topics import Catalogue, Durability

#: Defaults of the product itself, so a generated deployment behaves like ``ics2 worker`` with no variables set.
_SETTINGS = Settings()
#: A DNS-1123 label: what Kubernetes accepts as the name of a Service or a StatefulSet's pods.
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
#: A DNS-1123 subdomain: what Kubernetes accepts as the name of most other resources (KafkaTopic, KafkaUser).
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
#: Room left in a label for the suffixes the generator and Kubernetes add (``-worker``, ``-0``, revision hashes).
_MAX_BASE_NAME = 40
_MAX_SUBDOMAIN = 253
#: The Strimzi ``Kafka`` resource the generated resources belong to unless told otherwise.
DEFAULT_CLUSTER = "ics2"


class DeployError(ICS2StreamsError):
    """Deployment options that cannot give valid Kubernetes or Strimzi resources."""


def _image_default() -> str:
    try:
        return f"ics2-streams:{version('ics2-streams')}"
    except PackageNotFoundError:
        return "ics2-streams:latest"


@dataclass(frozen=True, slots=True)
class DeployOptions:
    """One deployment: which Strimzi cluster, which topic prefix and parties, how many workers."""

    prefix: str = ""
    app_id: str = _SETTINGS.app_id
    cluster: str = DEFAULT_CLUSTER
    """Name of the Strimzi ``Kafka`` resource; its Topic and User Operators pick up our resources by this label."""
    default_partitions: int = _SETTINGS.default_partitions
    topic_replicas: int = 3
    """Replication factor of every topic; ``min.insync.replicas`` follows it (``durability``)."""
    worker_replicas: int = 2
    image: str = field(default_factory=_image_default)
    parties: tuple[str, ...] = ()
    bootstrap_servers: str | None = None
    """None means the cluster's TLS listener as Strimzi names it (``<cluster>-kafka-bootstrap:9093``)."""
    web_port: int = _SETTINGS.web_port
    processing_guarantee: str = _SETTINGS.processing_guarantee.value

    def __post_init__(self) -> None:
        for what, name in (("app id", self.app_id), ("cluster name", self.cluster)):
            if len(name) > _MAX_BASE_NAME or not _DNS_LABEL.fullmatch(name):
                raise DeployError(
                    f"{what} {name!r} must be a DNS label (lowercase letters, digits and '-') of at most "
                    f"{_MAX_BASE_NAME} characters, since Kubernetes names are built from it"
                )
        for what, count in (
            ("partitions", self.default_partitions),
            ("topic replicas", self.topic_replicas),
            ("worker replicas", self.worker_replicas),
        ):
            if count < 1:
                raise DeployError(f"{what} must be at least 1, not {count}")
        if not 0 < self.web_port < 65536:
            raise DeployError(f"web port {self.web_port} is not a TCP port")
        if len(set(self.parties)) != len(self.parties):
            raise DeployError("a party is listed twice")
        try:
            catalogue = self.catalogue
            for party in self.parties:
                catalogue.party_queue(party)
        except ValueError as exc:
            raise DeployError(str(exc)) from exc

    @property
    def catalogue(self) -> Catalogue:
        return Catalogue.for_prefix(self.prefix)

    @property
    def durability(self) -> Durability:
        """The catalogue's rule for ``topic_replicas``: with 3 replicas, ``min.insync.replicas`` 2."""
        return Durability.for_replication(self.topic_replicas)

    @property
    def bootstrap(self) -> str:
        return self.bootstrap_servers or f"{self.cluster}-kafka-bootstrap:9093"

    @property
    def cluster_ca_secret(self) -> str:
        """The Secret in which Strimzi publishes the cluster CA certificate (key ``ca.crt``)."""
        return f"{self.cluster}-cluster-ca-cert"

    @property
    def worker_name(self) -> str:
        return f"{self.app_id}-worker"

    @property
    def gateway_name(self) -> str:
        return f"{self.app_id}-gateway"

    @property
    def config_name(self) -> str:
        return f"{self.app_id}-config"

    @property
    def idle_workers(self) -> int:
        """Workers beyond the partition count get no partition to consume: they only stand by for a rebalance."""
        return max(0, self.worker_replicas - self.default_partitions)


def resource_name(name: str) -> str:
    """A valid Kubernetes name for a Kafka name (topic, user), unchanged when already valid.

    Kafka allows upper case and ``_``; Kubernetes does not. Names that must change get a hash of the original,
    so two Kafka names that differ only in case or punctuation never share a resource.
    """
    if len(name) <= _MAX_SUBDOMAIN and DNS_SUBDOMAIN.fullmatch(name):
        return name
    labels = (re.sub(r"[^a-z0-9-]+", "-", label).strip("-") for label in name.lower().split("."))
    readable = ".".join(label for label in labels if label)
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return f"{readable[: _MAX_SUBDOMAIN - len(digest) - 1].rstrip('.-')}-{digest}".lstrip("-")
