"""docker-compose.yml describes the same stack as the code: Kafka version, broker settings, topics, settings."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from streams.broker.jars import kafka_version
from streams.broker.properties import server_properties
from streams.settings import Settings
from streams.topics import Catalogue

REPO = Path(__file__).resolve().parents[2]

#: Broker settings that must agree between the local broker and the compose file's Kafka.
SHARED_BROKER_SETTINGS = (
    "process.roles",
    "offsets.topic.replication.factor",
    "transaction.state.log.replication.factor",
    "transaction.state.log.min.isr",
    "group.initial.rebalance.delay.ms",
    "auto.create.topics.enable",
    "controller.listener.names",
    "inter.broker.listener.name",
)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def kafka_env(compose: dict) -> dict[str, str]:
    env = compose["services"]["kafka"]["environment"]
    return {k.removeprefix("KAFKA_").lower().replace("_", "."): str(v) for k, v in env.items()}


class TestCompose:
    def test_kafka_image_is_the_version_the_pom_fetches(self, compose):
        """The compose file runs the Kafka release the local broker runs."""
        assert compose["services"]["kafka"]["image"] == f"apache/kafka:{kafka_version()}"

    def test_broker_settings_agree_with_the_local_broker(self, compose, tmp_path):
        """Replication factors, auto-create and listener names are those of the embedded broker."""
        local = server_properties(node_id=1, host="127.0.0.1", client_port=1, controller_port=2, log_dir=tmp_path)
        env = kafka_env(compose)
        for key in SHARED_BROKER_SETTINGS:
            assert env[key] == local[key], key

    def test_every_ics2_variable_is_a_setting(self, compose):
        """Every ICS2_* variable the services set names a Settings field and parses."""
        fields = set(Settings.__dataclass_fields__)
        for name, service in compose["services"].items():
            env = {k: str(v) for k, v in (service.get("environment") or {}).items() if k.startswith("ICS2_")}
            if not env:
                continue
            assert {k.removeprefix("ICS2_").lower() for k in env} <= fields, name
            settings = Settings.from_env(env)
            assert settings.bootstrap_servers == "kafka:9092"

    def test_clients_reach_the_advertised_listener(self, compose):
        """ICS2_BOOTSTRAP_SERVERS points at the address the broker advertises."""
        advertised = kafka_env(compose)["advertised.listeners"]
        assert advertised.split("://", 1)[1] == compose["x-ics2-env"]["ICS2_BOOTSTRAP_SERVERS"]

    def test_topics_come_from_the_catalogue(self, compose):
        """A one-shot service applies the catalogue before the worker and gateway start."""
        assert compose["services"]["topics"]["command"] == ["topics", "apply"]
        for name in ("worker", "gateway"):
            assert compose["services"][name]["depends_on"]["topics"]["condition"] == "service_completed_successfully"
        assert Catalogue().all(), "the catalogue the topics service applies"

    def test_images_build_from_the_dockerfile_under_deploy(self, compose):
        """Every ics2 service builds the worker image from deploy/Dockerfile, whose entry point is ics2."""
        for name in ("topics", "worker", "gateway"):
            build = compose["services"][name]["build"]
            assert (REPO / build["context"] / build["dockerfile"]).is_file()
        assert 'ENTRYPOINT ["ics2"]' in (REPO / "deploy" / "Dockerfile").read_text()

    def test_worker_command_exists(self, compose):
        """The commands the services run are commands of the ics2 CLI."""
        from streams.cli.main import COMMANDS

        for name in ("topics", "worker", "gateway"):
            assert compose["services"][name]["command"][0] in COMMANDS
