"""The local Apache Kafka broker (KRaft, one node) for development and the test session; no Docker needed."""

from streams.broker.jars import ClassPath, ensure_jars, kafka_version
from streams.broker.manager import BrokerConfig, BrokerStatus, LocalBroker, free_tcp_port, new_cluster_id

__all__ = [
    "BrokerConfig",
    "BrokerStatus",
    "ClassPath",
    "LocalBroker",
    "ensure_jars",
    "free_tcp_port",
    "kafka_version",
    "new_cluster_id",
]
