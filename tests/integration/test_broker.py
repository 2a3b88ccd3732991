"""The local broker manager: the session broker answers, a second start finds it, stop leaves nothing behind."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from streams.broker import BrokerConfig, LocalBroker, ensure_jars, free_tcp_port, kafka_version, new_cluster_id
from streams.broker.jars import POM_PATH, check_main_classes, find_java, find_maven, java_major_version
from streams.broker.properties import Listener, render_properties, server_properties
from streams.errors import BrokerUnavailable, PlatformError
from tests.integration.services import free_ports


def broker_pids(config: BrokerConfig) -> list[int]:
    """Every live ``kafka.Kafka`` process started on this state folder's properties, read from /proc."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
            state = (proc / "stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if "kafka.Kafka" in args and str(config.properties_file) in args and state != "Z":
            pids.append(int(proc.name))
    return pids


def two_free_ports() -> tuple[int, int]:
    port, other = free_ports(2)
    return port, other


class TestSessionBroker:
    async def test_answers_metadata_request(self, kafka_broker):
        """A real client bootstraps against the session broker and sees exactly one node on its port."""
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_broker.config.bootstrap_servers)
        await admin.start()
        try:
            cluster = await admin.describe_cluster()
        finally:
            await admin.close()
        nodes = [(node["host"], node["port"]) for node in cluster["brokers"]]
        assert nodes == [("127.0.0.1", kafka_broker.config.port)]
        assert cluster["cluster_id"]

    def test_status_sees_the_running_broker(self, kafka_broker):
        """status reports the one running JVM of the state folder as ready, with the pom's Kafka version."""
        status = kafka_broker.status()
        assert status.running and status.ready
        assert [status.pid] == broker_pids(kafka_broker.config)
        assert status.version == kafka_version()
        assert status.uptime_s is not None and status.uptime_s > 0

    def test_second_start_returns_the_running_broker(self, kafka_broker):
        """A second start on the same state folder returns the running broker instead of launching another."""
        before = broker_pids(kafka_broker.config)
        again = LocalBroker(kafka_broker.config).start(timeout=30)
        assert again.started_now is False
        assert again.pid == before[0]
        assert broker_pids(kafka_broker.config) == before

    def test_listens_on_loopback_only(self, kafka_broker):
        """The written server.properties binds client and controller listeners to 127.0.0.1 only."""
        text = kafka_broker.config.properties_file.read_text()
        listeners = next(line for line in text.splitlines() if line.startswith("listeners="))
        addresses = listeners.partition("=")[2].split(",")
        assert len(addresses) == 2
        assert all("://127.0.0.1:" in address for address in addresses)


class TestSeparateBroker:
    def test_start_then_stop_leaves_no_process(self, tmp_path):
        """A second broker in its own folder starts ready, and stop leaves neither a process nor a pid file."""
        port, controller_port = two_free_ports()
        broker = LocalBroker(BrokerConfig(state_dir=tmp_path / "kafka", port=port, controller_port=controller_port))
        try:
            started = broker.start(timeout=120)
            assert started.started_now and started.ready
            assert broker_pids(broker.config) == [started.pid]
            assert set(started.timings) >= {"jars", "format", "start_to_ready"}
        finally:
            stopped = broker.stop(timeout=30)
        assert stopped is True
        assert broker_pids(broker.config) == []
        assert not broker.config.pid_file.exists()
        assert broker.stop() is False
        assert broker.status().running is False


class TestPidFile:
    def test_live_pid_of_another_program_is_stale(self, tmp_path):
        """A pid file naming a live process that is not this folder's broker is removed, not trusted."""
        broker = LocalBroker(BrokerConfig(state_dir=tmp_path, port=free_tcp_port()))
        broker.config.pid_file.write_text(f"{os.getpid()}\n")
        assert broker.status(probe=False).running is False
        assert not broker.config.pid_file.exists()

    def test_dead_pid_is_stale(self, tmp_path):
        """A pid file naming a process that has exited is removed."""
        finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
        broker = LocalBroker(BrokerConfig(state_dir=tmp_path, port=free_tcp_port()))
        broker.config.pid_file.write_text(finished.stdout.decode())
        assert broker.status(probe=False).pid is None
        assert not broker.config.pid_file.exists()

    def test_garbage_pid_file_means_not_running(self, tmp_path):
        """An unreadable pid file counts as no broker."""
        broker = LocalBroker(BrokerConfig(state_dir=tmp_path, port=free_tcp_port()))
        broker.config.pid_file.write_text("not a pid\n")
        assert broker.status(probe=False).running is False


class TestStartRefusals:
    def test_taken_port_is_refused_before_launch(self, tmp_path):
        """A client port held by another program fails at once with the port named, and nothing is launched."""
        with socket.socket() as squatter:
            squatter.bind(("127.0.0.1", 0))
            squatter.listen()
            port = squatter.getsockname()[1]
            broker = LocalBroker(BrokerConfig(state_dir=tmp_path / "kafka", port=port, controller_port=free_tcp_port()))
            with pytest.raises(PlatformError, match=f"127.0.0.1:{port} is taken"):
                broker.start(timeout=10)
        assert broker_pids(broker.config) == []
        assert not broker.config.pid_file.exists()

    def test_jvm_dying_during_start_fails_with_its_output(self, tmp_path):
        """A JVM that exits while starting fails the start at once, with its own output, and leaves no pid file."""
        port, controller_port = two_free_ports()
        config = BrokerConfig(
            state_dir=tmp_path / "kafka", port=port, controller_port=controller_port, jvm_options=("-Xmx1k",)
        )
        broker = LocalBroker(config)
        with pytest.raises(PlatformError, match=r"exited during start(.|\n)*heap") as caught:
            broker.start(timeout=60)
        assert not isinstance(caught.value, BrokerUnavailable)
        assert not config.pid_file.exists()
        assert broker_pids(config) == []

    def test_missing_java_is_explained(self, monkeypatch, tmp_path):
        """Without java on PATH or JAVA_HOME the error says which Java to install."""
        monkeypatch.delenv("JAVA_HOME", raising=False)
        monkeypatch.setenv("PATH", str(tmp_path))
        with pytest.raises(PlatformError, match=r"java not found.*Java 17"):
            find_java()

    def test_old_java_is_refused(self, monkeypatch, tmp_path):
        """A Java older than 17 is refused with the version found."""
        fake = tmp_path / "bin" / "java"
        fake.parent.mkdir()
        fake.write_text("#!/bin/sh\necho 'openjdk version \"11.0.2\" 2019-01-15' >&2\n")
        fake.chmod(0o755)
        monkeypatch.setenv("JAVA_HOME", str(tmp_path))
        with pytest.raises(PlatformError, match=r"Java 11.*17 or later"):
            find_java()

    def test_missing_maven_is_explained(self, monkeypatch, tmp_path):
        """Without mvn on PATH an empty cache cannot be filled, and the error says to install Maven."""
        monkeypatch.setenv("PATH", str(tmp_path))
        with pytest.raises(PlatformError, match=r"mvn not found.*maven"):
            find_maven()
        with pytest.raises(PlatformError, match="mvn not found"):
            ensure_jars(tmp_path / "cache")


class TestJars:
    def test_interrupted_copy_is_redone_then_cached(self, tmp_path):
        """A lib folder without the marker is copied afresh; the next call reuses it without Maven."""
        version = kafka_version()
        leftover = tmp_path / version / "lib" / "half-copied.jar"
        leftover.parent.mkdir(parents=True)
        leftover.write_bytes(b"truncated")
        first = ensure_jars(tmp_path)
        assert first.fetched_s > 0
        assert not leftover.exists()
        assert (first.lib_dir / f"kafka_2.13-{version}.jar").exists()
        assert any(jar.name.startswith("log4j-slf4j2-impl") for jar in first.lib_dir.iterdir())
        second = ensure_jars(tmp_path)
        assert second.fetched_s == 0
        assert second.lib_dir == first.lib_dir

    def test_jar_without_main_classes_is_refused(self, tmp_path):
        """A broker jar lacking kafka.Kafka or the StorageTool is reported, naming the missing class."""
        with zipfile.ZipFile(tmp_path / "kafka_2.13-9.9.9.jar", "w") as jar:
            jar.writestr("kafka/Kafka.class", b"")
        with pytest.raises(PlatformError, match="StorageTool"):
            check_main_classes(tmp_path, "9.9.9")

    def test_pom_pins_a_kafka_4_release(self):
        """The pom's kafka.version is a 4.x release number."""
        major, minor, patch = kafka_version(POM_PATH).split(".")
        assert major == "4" and minor.isdigit() and patch.isdigit()

    def test_pom_without_version_is_refused(self, tmp_path):
        """A pom without the kafka.version property is a clear PlatformError."""
        pom = tmp_path / "pom.xml"
        pom.write_text('<project xmlns="http://maven.apache.org/POM/4.0.0"><properties/></project>')
        with pytest.raises(PlatformError, match=r"kafka\.version"):
            kafka_version(pom)

    @pytest.mark.parametrize(
        ("output", "major"),
        [
            ('openjdk version "17.0.15" 2025-04-15', 17),
            ('openjdk version "21" 2023-09-19', 21),
            ('java version "1.8.0_392"', 8),
            ("no version here", None),
        ],
    )
    def test_java_major_version(self, output, major):
        """The major version is read from both the modern and the 1.x style of java -version."""
        assert java_major_version(output) == major


class TestServerProperties:
    def properties(self, tmp_path, **kwargs):
        return server_properties(
            node_id=1, host="127.0.0.1", client_port=1111, controller_port=2222, log_dir=tmp_path, **kwargs
        )

    def test_single_node_kraft_with_replication_one(self, tmp_path):
        """One combined node, a one-voter quorum on the controller port, and internal topics at replication 1."""
        props = self.properties(tmp_path)
        assert props["process.roles"] == "broker,controller"
        assert props["controller.quorum.voters"] == "1@127.0.0.1:2222"
        for key in ("offsets.topic.replication.factor", "transaction.state.log.replication.factor"):
            assert props[key] == "1"
        assert props["transaction.state.log.min.isr"] == "1"
        assert props["group.initial.rebalance.delay.ms"] == "0"
        assert props["auto.create.topics.enable"] == "false"
        assert props["log.dirs"] == str(tmp_path)

    def test_controller_is_not_advertised_to_clients(self, tmp_path):
        """Clients are told the client listener only; the controller listener is bound but not advertised."""
        props = self.properties(tmp_path)
        assert props["listeners"] == "CLIENT://127.0.0.1:1111,CONTROLLER://127.0.0.1:2222"
        assert props["advertised.listeners"] == "CLIENT://127.0.0.1:1111"

    def test_extra_listener_is_added_everywhere(self, tmp_path):
        """A further listener (room for SASL or SSL) appears in listeners, advertised listeners and the protocol map."""
        props = self.properties(tmp_path, extra_listeners=(Listener("SECURE", "127.0.0.1", 3333, "SASL_PLAINTEXT"),))
        assert "SECURE://127.0.0.1:3333" in props["listeners"].split(",")
        assert "SECURE://127.0.0.1:3333" in props["advertised.listeners"].split(",")
        assert "SECURE:SASL_PLAINTEXT" in props["listener.security.protocol.map"].split(",")

    def test_overrides_win(self, tmp_path):
        """Explicit overrides replace the defaults."""
        props = self.properties(tmp_path, overrides={"auto.create.topics.enable": "true", "num.partitions": "3"})
        assert props["auto.create.topics.enable"] == "true"
        assert props["num.partitions"] == "3"

    def test_rendering_escapes_backslashes(self):
        """Rendered properties hold one key per line and escape backslashes for Java."""
        text = render_properties({"a": "1", "log.dirs": "C:\\kafka"})
        lines = [line for line in text.splitlines() if not line.startswith("#")]
        assert lines == ["a=1", "log.dirs=C:\\\\kafka"]


class TestClusterId:
    def test_cluster_ids_are_22_url_safe_characters(self):
        """Cluster ids look like Kafka's: 22 URL-safe base64 characters, no leading dash, all different."""
        ids = {new_cluster_id() for _ in range(200)}
        assert len(ids) == 200
        for cluster_id in ids:
            assert len(cluster_id) == 22
            assert not cluster_id.startswith("-")
            assert set(cluster_id) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
