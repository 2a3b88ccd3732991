"""docker-compose.yml describes the same stack as the code: Kafka version, broker settings, topics, settings."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import click
import pytest
import yaml

from streams.broker.jars import kafka_version
from streams.broker.properties import server_properties
from streams.demo import DEMO_SCRIPT
from streams.deploy.compose import EXIT_BROKER, EXIT_USAGE, main
from streams.scenarios import SECOND_MBL, SEED_MBL, bookings, demo_parties
from streams.settings import Settings
from streams.topics import Catalogue, Durability

REPO = Path(__file__).resolve().parents[2]

#: Broker settings that must agree between the local broker and the compose file's Kafka.
SHARED_BROKER_SETTINGS = (
    "process.roles",
    "default.replication.factor",
    "min.insync.replicas",
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


def listeners(value: str) -> dict[str, tuple[str, int]]:
    """``NAME://host:port,...`` -> {NAME: (host, port)}."""
    found = {}
    for listener in value.split(","):
        name, address = listener.split("://", 1)
        host, port = address.rsplit(":", 1)
        found[name] = (host, int(port))
    return found


def option_names(args: list[str]) -> tuple[set[str], click.Command]:
    """The options of the ics2 (sub)command that ``args`` runs, resolved as the CLI resolves them."""
    from streams.cli.main import cli

    command: click.Command = cli
    rest = list(args)
    with click.Context(cli) as ctx:
        while isinstance(command, click.Group):
            found = command.get_command(ctx, rest.pop(0))
            assert found is not None, args
            command = found
    return {o for p in command.params for o in (*p.opts, *p.secondary_opts)}, command


def option_values(args: list[str], option: str) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args) if a == option]


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

    def test_one_broker_means_replication_one_and_one_in_sync(self, compose):
        """The compose file runs one broker, so the durability rule gives 1 and 1, said explicitly; topics apply is left
        to derive the same from the cluster (no --replication-factor or --min-insync-replicas)."""
        env = kafka_env(compose)
        voters = env["controller.quorum.voters"].split(",")
        brokers = [name for name, service in compose["services"].items() if "kafka" in str(service.get("image", ""))]
        assert len(voters) == len(brokers) == 1
        rule = Durability.for_brokers(len(brokers))
        assert (rule.replication, rule.min_insync) == (1, 1)
        for key in ("default.replication.factor", "offsets.topic.replication.factor"):
            assert env[key] == str(rule.replication), key
        for key in ("min.insync.replicas", "transaction.state.log.min.isr"):
            assert env[key] == str(rule.min_insync), key
        command = compose["services"]["topics"]["command"]
        assert not {"--replication-factor", "--min-insync-replicas"} & set(command)

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

    def test_containers_reach_the_internal_listener(self, compose):
        """ICS2_BOOTSTRAP_SERVERS of the services is the address the broker advertises on the compose network."""
        env = kafka_env(compose)
        advertised, bound = listeners(env["advertised.listeners"]), listeners(env["listeners"])
        internal = env["inter.broker.listener.name"]
        host, port = advertised[internal]
        assert f"{host}:{port}" == compose["x-ics2-env"]["ICS2_BOOTSTRAP_SERVERS"]
        assert host in compose["services"], "the advertised host is the broker's service name"
        assert bound[internal][1] == port

    def test_host_clients_reach_the_published_listener(self, compose):
        """A client on the host (ics2's default bootstrap port) is told an address it can resolve and reach."""
        env = kafka_env(compose)
        advertised, bound = listeners(env["advertised.listeners"]), listeners(env["listeners"])
        default_port = int(Settings().bootstrap_servers.rsplit(":", 1)[1])
        from_host = [name for name, (host, port) in advertised.items() if host == "localhost" and port == default_port]
        assert len(from_host) == 1, advertised
        (name,) = from_host
        assert f"{default_port}:{bound[name][1]}" in compose["services"]["kafka"]["ports"]
        assert set(advertised) < set(bound), "every advertised listener is bound"
        protocols = dict(item.split(":") for item in env["listener.security.protocol.map"].split(","))
        assert set(bound) == set(protocols)

    def test_topics_come_from_the_catalogue_with_the_demo_parties_queues(self, compose):
        """A one-shot service applies the catalogue and a queue per demo party before the worker and gateway start."""
        command = compose["services"]["topics"]["command"]
        assert command[:2] == ["topics", "apply"]
        parties = option_values(command, "--party")
        assert parties == demo_parties(bookings(datetime.now(UTC)))
        catalogue = Catalogue()
        assert all(catalogue.party_queue(p).name for p in parties)
        for name in ("worker", "gateway"):
            assert compose["services"][name]["depends_on"]["topics"]["condition"] == "service_completed_successfully"
        assert catalogue.all(), "the catalogue the topics service applies"

    def test_gateway_answers_by_the_demo_risk_script(self, compose):
        """The simulator reads the mounted script, which is the demo's DEMO_SCRIPT."""
        gateway = compose["services"]["gateway"]
        (script,) = option_values(gateway["command"], "--script")
        mounts = dict(reversed(v.removesuffix(":ro").split(":", 1)) for v in gateway["volumes"])
        source = REPO / mounts[script]
        assert json.loads(source.read_text()) == DEMO_SCRIPT.to_json()

    def test_a_one_shot_service_books_the_demo_once_the_worker_is_healthy(self, compose):
        """The book service runs streams.deploy.compose after the worker answers /health on its web port."""
        book = compose["services"]["book"]
        assert book["entrypoint"] == ["python", "-m", "streams.deploy.compose"] and book["command"] == ["book"]
        assert book["depends_on"]["worker"]["condition"] == "service_healthy"
        assert book.get("restart") == "no"
        worker = compose["services"]["worker"]
        probe = " ".join(worker["healthcheck"]["test"])
        assert f":{worker['environment']['ICS2_WEB_PORT']}/health" in probe
        assert main(["nonsense"]) == EXIT_USAGE
        mbls = {b["master"]["mbl_number"] for b in bookings(datetime.now(UTC))}
        assert mbls == {SEED_MBL, SECOND_MBL}

    def test_images_build_from_the_dockerfile_under_deploy(self, compose):
        """Every ics2 service builds the worker image from deploy/Dockerfile, whose entry point is ics2."""
        for name in ("topics", "worker", "gateway", "book"):
            build = compose["services"][name]["build"]
            assert (REPO / build["context"] / build["dockerfile"]).is_file()
        assert 'ENTRYPOINT ["ics2"]' in (REPO / "deploy" / "Dockerfile").read_text()

    def test_service_commands_are_ics2_commands_with_their_options(self, compose):
        """The commands the ics2 services run are commands of the ics2 CLI, with options those commands have."""
        for name in ("topics", "worker", "gateway"):
            args = compose["services"][name]["command"]
            known, command = option_names(args)
            used = {a for a in args if a.startswith("--")}
            assert used <= known, f"{name}: {command.name} has no {sorted(used - known)}"


class TestBookService:
    def test_no_broker_is_one_line_and_exit_code_1(self, monkeypatch, capsys):
        """Booking the demo with no broker says so on one line of stderr and exits 1, without a traceback."""
        monkeypatch.setenv("ICS2_BOOTSTRAP_SERVERS", "127.0.0.1:1")
        assert main(["book"]) == EXIT_BROKER
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("error: cannot book the demo on 127.0.0.1:1")
        assert not any("Traceback" in line for line in err)
