"""The local Apache Kafka broker (KRaft) for development and the test session, one node or a small cluster; no
Docker needed."""

from streams.broker.cluster import ClusterConfig, ClusterStatus, LocalCluster, node_ports, recorded_nodes
from streams.broker.jars import ClassPath, ensure_jars, kafka_version
from streams.broker.manager import BrokerConfig, BrokerStatus, LocalBroker, free_tcp_port, new_cluster_id

__all__ = [
    "BrokerConfig",
    "BrokerStatus",
    "ClassPath",
    "ClusterConfig",
    "ClusterStatus",
    "LocalBroker",
    "LocalCluster",
    "ensure_jars",
    "free_tcp_port",
    "kafka_version",
    "new_cluster_id",
    "node_ports",
    "recorded_nodes",
]
