"""A local KRaft node's ``server.properties``, built as a dict so listeners can be added later.

Each process is both controller and broker; one node has a static one-voter quorum, a local cluster of ``n`` nodes
a static ``n``-voter quorum (``quorum_voters``). Everything listens on the loopback interface only. The broker's own
internal topics (consumer offsets, transaction state, share state) and its defaults for other topics follow the
catalogue's durability rule (``streams.topics.Durability``): replication ``min(3, nodes)`` and
``min.insync.replicas`` ``min(2, replication)``, so 1 and 1 on one node, 3 and 2 on three.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from streams.topics import Durability

#: The listener names used below; a later SASL_SCRAM or SSL listener adds its own name beside CLIENT.
CLIENT_LISTENER = "CLIENT"
CONTROLLER_LISTENER = "CONTROLLER"


@dataclass(frozen=True, slots=True)
class Listener:
    """One named listener: where it binds and which security protocol it speaks."""

    name: str
    host: str
    port: int
    protocol: str = "PLAINTEXT"

    @property
    def address(self) -> str:
        return f"{self.name}://{self.host}:{self.port}"


def server_properties(
    *,
    node_id: int,
    host: str,
    client_port: int,
    controller_port: int,
    log_dir: Path,
    auto_create_topics: bool = False,
    extra_listeners: tuple[Listener, ...] = (),
    overrides: Mapping[str, str] | None = None,
    client_protocol: str = "PLAINTEXT",
    controller_protocol: str = "PLAINTEXT",
    quorum_voters: Mapping[int, int] | None = None,
) -> dict[str, str]:
    """The broker's configuration.

    ``auto.create.topics.enable`` is off: every topic comes from the catalogue (``ics2 topics apply``) and Faust
    creates its internal topics through the admin API, so a typo in a topic name fails loudly instead of
    creating a stray topic. ``quorum_voters`` maps each node id of a local cluster to its controller port on
    ``host``; None is this node alone.
    """
    client = Listener(CLIENT_LISTENER, host, client_port, client_protocol)
    controller = Listener(CONTROLLER_LISTENER, host, controller_port, controller_protocol)
    broker_listeners = (client, *extra_listeners)
    all_listeners = (*broker_listeners, controller)
    voters = dict(quorum_voters) if quorum_voters else {node_id: controller_port}
    if voters.get(node_id) != controller_port:
        raise ValueError(f"node {node_id} with controller port {controller_port} is not one of the voters {voters}")
    durability = Durability.for_brokers(len(voters))
    replication, min_isr = str(durability.replication), str(durability.min_insync)
    properties = {
        "process.roles": "broker,controller",
        "node.id": str(node_id),
        "controller.quorum.voters": ",".join(f"{voter}@{host}:{port}" for voter, port in sorted(voters.items())),
        "controller.listener.names": CONTROLLER_LISTENER,
        "inter.broker.listener.name": CLIENT_LISTENER,
        "listeners": ",".join(listener.address for listener in all_listeners),
        "advertised.listeners": ",".join(listener.address for listener in broker_listeners),
        "listener.security.protocol.map": ",".join(f"{item.name}:{item.protocol}" for item in all_listeners),
        "log.dirs": str(log_dir),
        "num.partitions": "1",
        "default.replication.factor": replication,
        "min.insync.replicas": min_isr,
        "offsets.topic.replication.factor": replication,
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.replication.factor": replication,
        "transaction.state.log.min.isr": min_isr,
        "transaction.state.log.num.partitions": "4",
        "share.coordinator.state.topic.replication.factor": replication,
        "share.coordinator.state.topic.min.isr": min_isr,
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "true" if auto_create_topics else "false",
        "delete.topic.enable": "true",
    }
    properties.update(overrides or {})
    return properties


def render_properties(properties: Mapping[str, str]) -> str:
    """Java properties text; values here never hold characters that need escaping except backslashes."""
    lines = ["# written by streams.broker on every start; edit the code, not this file"]
    lines.extend(f"{key}={value.replace(chr(92), chr(92) * 2)}" for key, value in properties.items())
    return "\n".join(lines) + "\n"


def write_properties(path: Path, properties: Mapping[str, str]) -> None:
    path.write_text(render_properties(properties), encoding="utf-8")
