"""Durability on a real three-node KRaft cluster: topics replicated 3 times with ``min.insync.replicas`` 2, and a
broker killed (SIGKILL) mid-stream without losing anything.

The cluster (``ics2 broker start --nodes 3``'s ``LocalCluster``) belongs to this module alone: a test kills one of its
nodes. The worker and the customs simulator run as real ``ics2`` subprocesses given every node's address, and are
not restarted; the checks are those of ``test_faults.py``, plus every alert on its party's queue.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import socket
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from streams.admin import admin_client, apply_topics, describe_topics
from streams.broker import ClusterConfig, LocalCluster, free_tcp_port, node_ports
from streams.broker.cluster import CLUSTER_JVM_OPTIONS
from streams.client import publish_bookings, read_topic
from streams.demo import unique_alerts
from streams.errors import PlatformError
from streams.settings import Settings
from streams.topics import Catalogue, Durability
from tests.data import SEED_PARTIES
from tests.integration.services import BROKER_START_TIMEOUT_S, ICS2, service_env
from tests.integration.test_faults import (
    FILINGS_PER_BOOKING,
    alerts_of,
    assert_alive,
    assert_hit_mid_stream,
    assert_nothing_lost_or_doubled,
    bookings,
    first_filings_out,
    mbl_of,
    process_state,
    running,
    settle,
    trouble,
)

NODES = 3
#: The rule on three brokers: three replicas, two of them in sync before an acks=all write is acknowledged.
RULE = Durability.for_brokers(NODES)


def free_port_run(count: int, host: str = "127.0.0.1") -> int:
    """A base port with ``count`` free ports from it on: a cluster's nodes take consecutive ports."""
    for _ in range(100):
        base = free_tcp_port(host)
        if base + count > 65535:
            continue
        free = True
        for port in range(base, base + count):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                try:
                    probe.bind((host, port))
                except OSError:
                    free = False
                    break
        if free:
            return base
    raise AssertionError(f"no run of {count} free ports on {host}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Three nodes of this module alone, on free consecutive loopback ports; a test kills one of them."""
    base = free_port_run(2 * NODES)
    local = LocalCluster(ClusterConfig(state_dir=tmp_path_factory.mktemp("cluster") / "kafka", nodes=NODES, port=base))
    atexit.register(local.stop)
    started = time.monotonic()
    try:
        local.start(timeout=BROKER_START_TIMEOUT_S)
    except PlatformError as exc:
        local.stop()
        pytest.fail(f"the three-node cluster did not start: {exc}", pytrace=False)
    print(f"three-node cluster ready in {time.monotonic() - started:.1f}s")
    try:
        yield local
    finally:
        local.stop()


def cluster_settings(cluster: LocalCluster, tmp_path: Path) -> Settings:
    """A fresh topic prefix and app id on the cluster, reached through every node's address."""
    prefix = f"c{uuid.uuid4().hex[:8]}."
    return Settings(
        bootstrap_servers=cluster.config.bootstrap_servers,
        state_dir=tmp_path / "client-state",
        topic_prefix=prefix,
        app_id=f"{prefix}app",
        default_partitions=4,
    )


async def partition_leaders(settings: Settings, topics: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Each topic's partitions as the cluster describes them (leader, replicas, in-sync replicas)."""
    async with admin_client(settings) as admin:
        described = await admin.describe_topics(topics)
    return {topic["topic"]: topic["partitions"] for topic in described if topic["error_code"] == 0}


async def broker_config(settings: Settings, broker_id: int) -> dict[str, str]:
    """The effective configuration of one broker."""
    async with admin_client(settings) as admin:
        responses = await admin.describe_configs([ConfigResource(ConfigResourceType.BROKER, str(broker_id))])
    entries = responses[0].to_object()["resources"][0]["config_entries"]
    return {entry["config_names"]: entry["config_value"] for entry in entries if entry["config_value"] is not None}


class TestClusterLayout:
    def test_nodes_take_consecutive_port_pairs_and_share_one_quorum(self, tmp_path):
        """Node n listens on base + 2(n-1) and its controller on the port after; every node votes in one quorum,
        node 1 keeps the one-node broker's ports, and each node gets a modest heap."""
        config = ClusterConfig(state_dir=tmp_path, nodes=3, port=19092)
        assert [node_ports(19092, n) for n in config.node_ids] == [(19092, 19093), (19094, 19095), (19096, 19097)]
        assert config.bootstrap_servers == "127.0.0.1:19092,127.0.0.1:19094,127.0.0.1:19096"
        nodes = [config.node_config(n, "cluster-id") for n in config.node_ids]
        assert {node.quorum_voters for node in nodes} == {((1, 19093), (2, 19095), (3, 19097))}
        assert [node.state_dir.name for node in nodes] == ["node-1", "node-2", "node-3"]
        assert all("-Xmx512m" in node.jvm_options for node in nodes) and "-Xmx512m" in CLUSTER_JVM_OPTIONS

    def test_a_size_the_quorum_was_not_formatted_with_is_refused(self, tmp_path):
        """A state folder keeps its node count: a static quorum cannot grow or shrink by a restart."""
        (tmp_path / "cluster.json").write_text(json.dumps({"nodes": 3, "cluster_id": "x"}))
        with pytest.raises(PlatformError, match="has 3 nodes, not 5"):
            LocalCluster(ClusterConfig(state_dir=tmp_path, nodes=5))
        with pytest.raises(PlatformError, match="2 to"):
            ClusterConfig(state_dir=tmp_path, nodes=1)


class TestReplication:
    async def test_topics_apply_gives_three_replicas_and_two_in_sync(self, cluster, tmp_path):
        """`ics2 topics apply` on three brokers, with no option, creates every topic and party queue with 3 replicas
        and min.insync.replicas 2; the brokers' own defaults and internal topics say the same."""
        settings = cluster_settings(cluster, tmp_path)
        env = service_env(settings, tmp_path / "state")
        args = [ICS2, "topics", "apply", "--json", *(f"--party={party}" for party in SEED_PARTIES)]
        applied = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120, check=False)
        assert applied.returncode == 0, applied.stderr
        catalogue = Catalogue.for_prefix(settings.topic_prefix)
        names = [spec.name for spec in catalogue.all()] + [catalogue.party_queue(p).name for p in SEED_PARTIES]
        assert sorted(json.loads(applied.stdout)["created"]) == sorted(names)
        states = await describe_topics(settings, names)
        leaders = await partition_leaders(settings, names)
        for name in names:
            assert states[name].replication == RULE.replication == 3, name
            assert states[name].overrides["min.insync.replicas"] == str(RULE.min_insync) == "2", name
            assert all(len(part["isr"]) == 3 for part in leaders[name]), name
        for broker_id in cluster.config.node_ids:
            config = await broker_config(settings, broker_id)
            assert config["min.insync.replicas"] == "2"
            assert config["default.replication.factor"] == "3"
            assert config["offsets.topic.replication.factor"] == "3"
            assert config["transaction.state.log.replication.factor"] == "3"
            assert config["transaction.state.log.min.isr"] == "2"

    async def test_min_in_sync_never_exceeds_a_topics_own_replicas(self, cluster, tmp_path):
        """Topics made with one replica keep it (apply warns, it does not reassign) and keep min.insync.replicas 1:
        2 would refuse every acks=all write to them."""
        settings = cluster_settings(cluster, tmp_path)
        catalogue = Catalogue.for_prefix(settings.topic_prefix)
        await apply_topics(settings, catalogue, replication_factor=1)
        report = await apply_topics(settings, catalogue)
        assert report.created == () and report.updated == ()
        assert len([w for w in report.warnings if "fewer than the 3 wanted" in w]) == len(catalogue.all())
        states = await describe_topics(settings, [spec.name for spec in catalogue.all()])
        assert {(state.replication, state.config["min.insync.replicas"]) for state in states.values()} == {(1, "1")}


def ics2_broker(cluster: LocalCluster, *args: str) -> subprocess.CompletedProcess[str]:
    """``ics2 broker ARGS --state-dir <the cluster's folder>``, with none of the developer's ICS2_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ICS2_")}
    command = [ICS2, "broker", *args, "--state-dir", str(cluster.config.state_dir)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=180, check=False)


class TestCommands:
    def test_status_start_and_logs_cover_every_node(self, cluster):
        """`ics2 broker status` finds the node count in the folder and reports each node ready with every broker
        seen; `start` reports the running cluster; `logs` shows each node's log."""
        port = str(cluster.config.port)
        status = ics2_broker(cluster, "status", "--port", port, "--json")
        assert status.returncode == 0, status.stderr
        report = json.loads(status.stdout)
        assert report["ready"] and report["brokers_seen"] == NODES
        assert [node["bootstrap_servers"] for node in report["nodes"]] == cluster.config.bootstrap_servers.split(",")
        again = ics2_broker(cluster, "start", "--port", port, "--json")
        assert again.returncode == 0, again.stderr
        started = json.loads(again.stdout)
        assert started["started_now"] is False and started["nodes"] == NODES
        assert started["environment"] == {"ICS2_BOOTSTRAP_SERVERS": cluster.config.bootstrap_servers}
        logs = ics2_broker(cluster, "logs", "-n", "5")
        assert logs.returncode == 0 and all(f"=== node {n} ===" in logs.stdout for n in cluster.config.node_ids)


class TestBrokerKilled:
    async def test_leader_of_the_busiest_topics_killed_mid_stream_loses_nothing(self, cluster, tmp_path):
        """SIGKILL the node that leads most partitions of the ENS events and parsed notifications topics while twelve
        bookings flow: the worker and the simulator, not restarted, carry on with the other two nodes; every filing
        is registered, every alert is on its party's queue, nothing is dead-lettered, every ENS is complete. Started
        again, the node rejoins and catches up until every partition has three in-sync replicas."""
        settings = cluster_settings(cluster, tmp_path)
        catalogue = Catalogue.for_prefix(settings.topic_prefix)
        await apply_topics(settings, catalogue, SEED_PARTIES)
        busiest = [catalogue.ens_events.name, catalogue.notifications_parsed.name]
        books = bookings(12)
        async with running(settings, tmp_path) as (processing, customs):
            await publish_bookings(settings, books)
            await first_filings_out(settings)
            leaders = await partition_leaders(settings, busiest)
            led = Counter(part["leader"] for parts in leaders.values() for part in parts)
            victim, partitions_led = led.most_common(1)[0]
            fault_at_ms = int(time.time() * 1000)
            assert await asyncio.to_thread(cluster.kill, victim), f"node {victim} was not running"
            killed_at = time.monotonic()
            expected = len(books) * FILINGS_PER_BOOKING
            outcome = await settle(settings, processing, [mbl_of(b) for b in books], expected, customs)
            settled_s = time.monotonic() - killed_at
            assert_alive(processing, customs)
            assert_nothing_lost_or_doubled(outcome, books, processing, customs)
            assert_hit_mid_stream(outcome, fault_at_ms)
            queued = {
                party: {a["alert_id"] for a in alerts_of(await read_topic(settings, catalogue.party_queue(party).name))}
                for party in SEED_PARTIES
            }
            missing = [
                a["alert_id"]
                for a in unique_alerts(outcome.alerts)
                if a["party_id"] in queued and a["alert_id"] not in queued[a["party_id"]]
            ]
            assert sum(map(len, queued.values())) > 0, f"no alert reached a party queue:\n{trouble(processing)}"
            assert not missing, f"alerts missing from their party's queue: {missing[:5]}\n{trouble(processing)}"
        after = await partition_leaders(settings, [*busiest, "__consumer_offsets"])
        assert all(part["leader"] not in (-1, victim) for parts in after.values() for part in parts), after
        assert all(len(part["replicas"]) == 3 for part in after["__consumer_offsets"])

        restart_at = time.monotonic()
        restarted = await asyncio.to_thread(cluster.start, BROKER_START_TIMEOUT_S)
        assert restarted.started_now and restarted.ready and restarted.brokers_seen == NODES
        names = [spec.name for spec in catalogue.all()]

        async def caught_up() -> bool:
            described = await partition_leaders(settings, names)
            return all(len(part["isr"]) == 3 for parts in described.values() for part in parts)

        deadline = time.monotonic() + 90.0
        while not await caught_up():
            assert time.monotonic() < deadline, "the restarted node never caught up with every partition"
            await asyncio.sleep(1.0)
        print(
            f"node {victim} (leader of {partitions_led} of {sum(led.values())} partitions) killed mid-stream; "
            f"{len(outcome.registered_at_ms)} filings registered, all settled {settled_s:.1f}s after the kill; "
            f"restarted and every partition back to 3 in-sync replicas in {time.monotonic() - restart_at:.1f}s"
        )


class TestStop:
    def test_stop_ends_every_node(self, cluster):
        """`ics2 broker stop` stops every node of the folder's cluster at once; `status` then exits 4."""
        pids = [pid for pid in cluster.status(probe=False).pids if pid is not None]
        assert pids
        stopped = ics2_broker(cluster, "stop", "--json")
        assert stopped.returncode == 0 and json.loads(stopped.stdout) == {"stopped": True}, stopped.stderr
        # The JVMs are this process's children: ended, they stay zombies until it reaps them.
        assert all(not Path(f"/proc/{pid}").exists() or process_state(pid) == "Z" for pid in pids)
        assert ics2_broker(cluster, "status", "--port", str(cluster.config.port)).returncode == 4
