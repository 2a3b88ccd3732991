"""A local Apache Kafka cluster of several KRaft nodes on the loopback interface, for durability tests and trials.

Each node is one JVM that is both broker and controller (``LocalBroker`` with a shared static quorum), so three
nodes make a three-voter quorum that survives the loss of any one. Ports follow one scheme from a base port (the port
of ``ICS2_BOOTSTRAP_SERVERS``, 19092 by default): node ``n`` listens for clients on ``base + 2(n-1)`` and for the
controllers on the port after it, so node 1 keeps the one-node broker's ports (19092, 19093), node 2 has 19094 and
19095, node 3 19096 and 19097. The state folder holds ``cluster.json`` (node count and the cluster id every node was
formatted with) and one folder per node (``node-1/`` ...) laid out like a one-node broker's.

The cluster is ready when every node answers a metadata request and lists every broker, never after a sleep. Its
internal topics and defaults follow ``streams.topics.Durability``: replication 3 and ``min.insync.replicas`` 2.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import structlog

from streams.broker.jars import kafka_version
from streams.broker.manager import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    BrokerConfig,
    BrokerStatus,
    LocalBroker,
    _in_thread,
    new_cluster_id,
    parse_bootstrap,
)
from streams.errors import BrokerUnavailable, PlatformError
from streams.settings import Settings
from streams.topics import Durability

log = structlog.get_logger(__name__)

#: What the state folder of a cluster records: node count and cluster id (a one-node broker's folder has none).
CLUSTER_MARKER = "cluster.json"
#: Each node a modest heap: three of them share two cores and the machine with workers and tests.
CLUSTER_JVM_OPTIONS = ("-Xms128m", "-Xmx512m", "-XX:+UseG1GC", "-Djava.awt.headless=true")
#: Enough for any local trial; the port scheme takes two ports per node.
MAX_NODES = 9
_PROBE_INTERVAL_S = 0.2


def node_ports(base_port: int, node_id: int) -> tuple[int, int]:
    """Client and controller port of node ``node_id`` (1-based): ``base + 2(n-1)`` and the port after it."""
    client = base_port + 2 * (node_id - 1)
    return client, client + 1


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """How many nodes, from which base port, in which state folder."""

    state_dir: Path
    nodes: int = 3
    port: int = DEFAULT_PORT
    """Node 1's client port; the others follow ``node_ports``."""
    host: str = DEFAULT_HOST
    cache_dir: Path | None = None
    jvm_options: tuple[str, ...] = CLUSTER_JVM_OPTIONS

    def __post_init__(self) -> None:
        object.__setattr__(self, "state_dir", Path(self.state_dir).resolve())
        if not 2 <= self.nodes <= MAX_NODES:
            raise PlatformError(f"a local cluster has 2 to {MAX_NODES} nodes, not {self.nodes} (one node: LocalBroker)")
        last_port = node_ports(self.port, self.nodes)[1]
        if self.port <= 0 or last_port > 65535:
            raise PlatformError(f"ports {self.port} to {last_port} for {self.nodes} nodes are not all TCP ports")

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> ClusterConfig:
        """Base port from the first bootstrap server, state in ``<state_dir>/kafka`` like the one-node broker's."""
        host, port = parse_bootstrap(settings.bootstrap_servers)
        values: dict[str, Any] = {"state_dir": settings.state_dir / "kafka", "host": host, "port": port}
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls(**values)

    @property
    def node_ids(self) -> range:
        return range(1, self.nodes + 1)

    @property
    def bootstrap_servers(self) -> str:
        """Every node's client address: a client that knows them all can bootstrap while any one is down."""
        return ",".join(f"{self.host}:{node_ports(self.port, node_id)[0]}" for node_id in self.node_ids)

    @property
    def marker(self) -> Path:
        return self.state_dir / CLUSTER_MARKER

    @property
    def durability(self) -> Durability:
        return Durability.for_brokers(self.nodes)

    def node_config(self, node_id: int, cluster_id: str) -> BrokerConfig:
        """Node ``node_id``'s own state folder and ports, with the quorum of every node."""
        client, controller = node_ports(self.port, node_id)
        return BrokerConfig(
            state_dir=self.state_dir / f"node-{node_id}",
            port=client,
            controller_port=controller,
            host=self.host,
            cache_dir=self.cache_dir,
            node_id=node_id,
            jvm_options=self.jvm_options,
            quorum_voters=tuple((voter, node_ports(self.port, voter)[1]) for voter in self.node_ids),
            cluster_id=cluster_id,
        )


@dataclass(frozen=True, slots=True)
class ClusterStatus:
    """Every node's status; the cluster is ``ready`` when all nodes answer and each sees all the brokers."""

    nodes: tuple[BrokerStatus, ...]
    bootstrap_servers: str
    version: str
    state_dir: Path
    cluster_id: str
    brokers_seen: int | None = None
    """The fewest brokers any answering node's metadata lists (None when not probed)."""
    started_now: bool = False
    timings: Mapping[str, float] = field(default_factory=dict)

    @property
    def running(self) -> bool:
        return all(node.running for node in self.nodes)

    @property
    def ready(self) -> bool:
        return all(node.ready for node in self.nodes) and self.brokers_seen in (None, len(self.nodes))

    @property
    def pids(self) -> tuple[int | None, ...]:
        return tuple(node.pid for node in self.nodes)


def recorded_nodes(state_dir: Path) -> int | None:
    """The node count a state folder's cluster was started with; None for a one-node folder (or a new one)."""
    recorded = _read_marker(Path(state_dir) / CLUSTER_MARKER)
    return recorded[0] if recorded else None


def _read_marker(path: Path) -> tuple[int, str] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise PlatformError(f"cannot read {path}: {exc}; remove the state folder to start afresh") from exc
    return int(data["nodes"]), str(data["cluster_id"])


class LocalCluster:
    """Start, probe and stop the nodes of one cluster state folder; each node is a ``LocalBroker``."""

    def __init__(self, config: ClusterConfig) -> None:
        self.config = config
        recorded = _read_marker(config.marker)
        if recorded is not None and recorded[0] != config.nodes:
            raise PlatformError(
                f"the cluster in {config.state_dir} has {recorded[0]} nodes, not {config.nodes}: a static quorum "
                "keeps its size; use another state folder or remove this one"
            )
        self.cluster_id = recorded[1] if recorded else new_cluster_id()
        self.nodes = tuple(LocalBroker(config.node_config(node_id, self.cluster_id)) for node_id in config.node_ids)

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> LocalCluster:
        return cls(ClusterConfig.from_settings(settings, **overrides))

    @property
    def version(self) -> str:
        return kafka_version()

    def node(self, node_id: int) -> LocalBroker:
        """The node with this id (1-based, the Kafka node and broker id)."""
        if node_id not in self.config.node_ids:
            raise PlatformError(f"the cluster has no node {node_id}")
        return self.nodes[node_id - 1]

    def start(self, timeout: float = 120.0) -> ClusterStatus:
        """Start every node that does not run, then wait until all answer and see each other.

        A node killed or stopped alone is started again with its data; a cluster that already runs is returned.
        Nodes started here are stopped again when the cluster does not become ready.
        """
        self._refuse_one_node_folder()
        started = time.monotonic()
        deadline = started + timeout
        pids: dict[int, int] = {}
        launched: list[LocalBroker] = []
        timings: dict[str, float] = {}
        version = self.version
        try:
            idle = [node for node in self.nodes if node.status(probe=False).pid is None]
            for node in idle:
                node.require_free_ports()
            if idle:
                self.config.state_dir.mkdir(parents=True, exist_ok=True)
                self._write_marker()
            failure: PlatformError | None = None
            # Formatting is a JVM start per node: side by side, the nodes come up in the time of one.
            with ThreadPoolExecutor(max_workers=max(1, len(idle)), thread_name_prefix="cluster-launch") as pool:
                futures = [(node, pool.submit(node.launch)) for node in idle]
                for node, future in futures:
                    try:
                        pid, node_timings, version = future.result()
                    except PlatformError as exc:
                        failure = failure or exc
                        continue
                    pids[node.config.node_id] = pid
                    launched.append(node)
                    for phase, seconds in node_timings.items():
                        timings[phase] = max(timings.get(phase, 0.0), seconds)
            if failure is not None:
                raise failure
            launch_s = time.monotonic() - started
            for node in self.nodes:
                found = pids.get(node.config.node_id) or node.status(probe=False).pid
                if found is None:
                    raise PlatformError(f"node {node.config.node_id} of the cluster stopped during start")
                node.wait_ready(found, max(1.0, deadline - time.monotonic()), stop_on_failure=False)
            seen = self._await_members(deadline)
        except PlatformError:
            self._stop_nodes(launched, grace=5.0)
            raise
        if launched:
            timings["start_to_ready"] = time.monotonic() - started - launch_s
        rounded = {phase: round(seconds, 2) for phase, seconds in timings.items()}
        log.info(
            "cluster_started" if launched else "cluster_already_running",
            nodes=self.config.nodes,
            started=[node.config.node_id for node in launched],
            bootstrap=self.config.bootstrap_servers,
            **rounded,
        )
        status = self.status(probe=False)
        return replace(
            status,
            version=version,
            brokers_seen=seen,
            started_now=bool(launched),
            timings=MappingProxyType(timings),
            nodes=tuple(replace(node, ready=True) for node in status.nodes),
        )

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop every node at once (SIGTERM, SIGKILL after ``timeout``); False when none was running.

        All at once: stopped one by one, the last nodes would wait for a controller quorum that is already gone.
        """
        running = [node for node in self.nodes if node.status(probe=False).running]
        self._stop_nodes(running, grace=timeout)
        if running:
            log.info("cluster_stopped", nodes=[node.config.node_id for node in running])
        return bool(running)

    def kill(self, node_id: int) -> bool:
        """SIGKILL one node, as a crash would (fault tests); False when it was not running."""
        return self.node(node_id).kill()

    def status(self, probe: bool = True) -> ClusterStatus:
        """Every node's state; with ``probe`` also whether each answers and how many brokers their metadata lists."""
        if probe:
            with ThreadPoolExecutor(max_workers=len(self.nodes), thread_name_prefix="cluster-status") as pool:
                nodes = tuple(pool.map(lambda node: node.status(probe=True), self.nodes))
        else:
            nodes = tuple(node.status(probe=False) for node in self.nodes)
        seen = None
        if probe:
            counts = [
                _in_thread(_brokers_listed(node.config.bootstrap_servers, 5.0))
                for node, state in zip(self.nodes, nodes, strict=True)
                if state.ready
            ]
            seen = min(counts, default=0)
        return ClusterStatus(
            nodes=nodes,
            bootstrap_servers=self.config.bootstrap_servers,
            version=self.version,
            state_dir=self.config.state_dir,
            cluster_id=self.cluster_id,
            brokers_seen=seen,
        )

    def log_tail(self, lines: int = 40) -> str:
        """The end of each node's JVM output and server log, node by node."""
        parts = []
        for node in self.nodes:
            parts.append(f"=== node {node.config.node_id} ===")
            parts.append(node.log_tail(lines))
        return "\n".join(parts)

    def _refuse_one_node_folder(self) -> None:
        """A folder formatted for the one-node broker holds that broker's data: never mix it with a cluster's."""
        if (self.config.state_dir / "data" / "meta.properties").exists():
            raise PlatformError(
                f"{self.config.state_dir} holds a one-node broker; stop it and use another state folder "
                "(--state-dir) for a cluster, or remove this one"
            )

    def _write_marker(self) -> None:
        if self.config.marker.exists():
            return
        record = {"nodes": self.config.nodes, "cluster_id": self.cluster_id}
        self.config.marker.write_text(json.dumps(record) + "\n", encoding="utf-8")

    def _await_members(self, deadline: float) -> int:
        """Until every node's metadata lists every broker: then any node can lead any partition's replicas."""
        expected = self.config.nodes
        last: dict[int, int] = {}
        while True:
            for node in self.nodes:
                if not node.status(probe=False).running:
                    raise PlatformError(
                        f"node {node.config.node_id} of the cluster exited during start\n{node.log_tail()}"
                    )
            last = {
                node.config.node_id: _in_thread(_brokers_listed(node.config.bootstrap_servers, 5.0))
                for node in self.nodes
            }
            if all(count == expected for count in last.values()):
                return expected
            if time.monotonic() >= deadline:
                raise BrokerUnavailable(
                    f"the cluster's nodes list {last} brokers, not {expected} each, at the deadline\n"
                    f"{self.log_tail(20)}"
                )
            time.sleep(_PROBE_INTERVAL_S)

    @staticmethod
    def _stop_nodes(nodes: list[LocalBroker] | tuple[LocalBroker, ...], grace: float) -> None:
        if not nodes:
            return
        with ThreadPoolExecutor(max_workers=len(nodes), thread_name_prefix="cluster-stop") as pool:
            list(pool.map(lambda node: node.stop(timeout=grace), nodes))


async def _brokers_listed(bootstrap_server: str, request_timeout: float) -> int:
    """How many brokers the metadata of this one node lists; 0 when it does not answer."""
    from aiokafka.client import AIOKafkaClient
    from aiokafka.errors import KafkaError

    client = AIOKafkaClient(bootstrap_servers=bootstrap_server, request_timeout_ms=int(request_timeout * 1000))
    try:
        await asyncio.wait_for(client.bootstrap(), request_timeout)
        return len(client.cluster.brokers())
    except (TimeoutError, KafkaError, OSError):
        return 0
    finally:
        with contextlib.suppress(Exception):
            await client.close()
