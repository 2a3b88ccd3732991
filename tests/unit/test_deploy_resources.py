"""Strimzi resources and Kubernetes manifests agree with the catalogue, the grants, the settings and deploy/k8s."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.admin import desired_specs
from streams.cli.deploy import COMMITTED_COMMAND, demo_parties
from streams.cli.main import cli
from streams.deploy.kubernetes import manifests
from streams.deploy.options import DeployError, DeployOptions, resource_name
from streams.deploy.render import render_files, resources
from streams.deploy.strimzi import acl_rules, kafka_topics, kafka_users
from streams.security.acls import Grant, gateway_grants, party_grants, party_user, worker_grants
from streams.settings import Settings
from streams.topics import Catalogue, Durability

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "deploy" / "k8s"
APP = REPO / "streams" / "pipeline" / "app.py"

#: Kubernetes' own name rules, written out here rather than imported, so the generator cannot grade itself.
DNS_SUBDOMAIN = re.compile(r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS_LABEL = re.compile(r"^(?=.{1,63}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
STRIMZI_TYPES = {"topic": "topic", "group": "group", "transactionalId": "transactional_id", "cluster": "cluster"}
#: Strimzi's AclRule ``patternType`` values, back to the grants' wording.
STRIMZI_PATTERNS = {"literal": "literal", "prefix": "prefixed", None: None}

prefixes = st.from_regex(r"[A-Za-z0-9._-]{0,12}", fullmatch=True)
party_ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True)


def options(**changes: Any) -> DeployOptions:
    return DeployOptions(image="ics2-streams:test", **changes)


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def all_docs(chosen: DeployOptions) -> list[dict[str, Any]]:
    return [doc for docs in resources(chosen).values() for doc in docs]


def only(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (doc,) = by_kind(docs, kind)
    return doc


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def topic_name(resource: dict[str, Any]) -> str:
    """The Kafka topic of a KafkaTopic: ``spec.topicName``, or the resource name as Strimzi defaults it."""
    return resource["spec"].get("topicName", resource["metadata"]["name"])


def acl_entries(resource: dict[str, Any]) -> list[tuple[str, str | None, str | None, str, str]]:
    """A KafkaUser's rules as one (type, name, pattern, operation, permission) per operation."""
    entries = []
    for rule in resource["spec"]["authorization"]["acls"]:
        target = rule["resource"]
        for operation in rule["operations"]:
            entries.append(
                (
                    STRIMZI_TYPES[target["type"]],
                    target.get("name"),
                    STRIMZI_PATTERNS[target.get("patternType")],
                    operation,
                    rule["type"],
                )
            )
    return entries


def grant_entries(grants: list[Grant]) -> list[tuple[str, str | None, str | None, str, str]]:
    """Grants as the same tuples; Strimzi's cluster resource carries no name or pattern."""
    cluster = {"cluster"}
    return [
        (
            g.resource_type,
            None if g.resource_type in cluster else g.name,
            None if g.resource_type in cluster else g.pattern,
            g.operation,
            g.permission.lower(),
        )
        for g in grants
    ]


class TestKafkaTopics:
    def test_one_resource_per_topic_that_topics_apply_creates(self):
        """The KafkaTopics name exactly the topics `ics2 topics apply` creates, fixed ones and party queues."""
        chosen = options(parties=("FWD-1", "CARRIER-A"), default_partitions=6)
        specs = desired_specs(Settings(default_partitions=6), chosen.catalogue, chosen.parties)
        topics = kafka_topics(chosen.catalogue, chosen)
        assert [topic_name(t) for t in topics] == [spec.name for spec in specs]

    def test_partitions_replicas_and_every_config_key_match_the_catalogue(self):
        """Each KafkaTopic carries the spec's partition count and exactly its configuration, key for key, plus the
        min.insync.replicas of its replication."""
        chosen = options(parties=("FWD-1",), default_partitions=5, topic_replicas=2)
        specs = {s.name: s for s in desired_specs(Settings(default_partitions=5), chosen.catalogue, chosen.parties)}
        for topic in kafka_topics(chosen.catalogue, chosen):
            spec = specs[topic_name(topic)]
            assert topic["spec"]["partitions"] == spec.partitions
            assert topic["spec"]["config"] == {**spec.config(), "min.insync.replicas": "2"}
            assert topic["spec"]["replicas"] == 2

    @pytest.mark.parametrize(("replicas", "min_insync"), [(1, "1"), (2, "2"), (3, "2"), (5, "2")])
    def test_min_insync_replicas_follow_the_rule_of_topics_apply(self, replicas, min_insync):
        """min.insync.replicas is min(2, replicas), the rule `ics2 topics apply` uses: with 3 replicas a write is on
        two before acks=all returns, and one broker may be down without refusing writes."""
        chosen = options(topic_replicas=replicas)
        assert chosen.durability == Durability.for_replication(replicas)
        for topic in kafka_topics(chosen.catalogue, chosen):
            assert topic["spec"]["replicas"] == replicas
            assert topic["spec"]["config"]["min.insync.replicas"] == min_insync

    def test_default_deployment_has_three_replicas_and_two_in_sync(self):
        """The committed deployment's topics (and the default options) have 3 replicas and min.insync.replicas 2."""
        for topic in yaml.safe_load_all((COMMITTED / "topics.yaml").read_text()):
            assert topic["spec"]["replicas"] == 3
            assert topic["spec"]["config"]["min.insync.replicas"] == "2"

    def test_topics_with_their_own_partition_count_keep_it(self):
        """The audit topic stays on one partition whatever the deployment's default."""
        chosen = options(default_partitions=12)
        audit = chosen.catalogue.audit.name
        (topic,) = [t for t in kafka_topics(chosen.catalogue, chosen) if topic_name(t) == audit]
        assert topic["spec"]["partitions"] == 1

    def test_topic_name_is_spelled_out_only_where_kubernetes_refuses_it(self):
        """A queue with capitals keeps its real name in spec.topicName; valid names rely on Strimzi's default."""
        chosen = options(parties=("CARRIER-A",))
        topics = {topic_name(t): t for t in kafka_topics(chosen.catalogue, chosen)}
        queue = topics[chosen.catalogue.party_queue("CARRIER-A").name]
        assert queue["spec"]["topicName"] == "ics2.party.CARRIER-A.queue"
        assert queue["metadata"]["name"] != queue["spec"]["topicName"]
        assert "topicName" not in topics[chosen.catalogue.bookings.name]["spec"]
        assert topics[chosen.catalogue.bookings.name]["metadata"]["name"] == "ics2.bookings"

    def test_topics_belong_to_the_named_strimzi_cluster(self):
        """The Topic Operator of the named cluster picks every KafkaTopic up by its label."""
        chosen = options(cluster="prod-kafka")
        topics = kafka_topics(chosen.catalogue, chosen)
        assert {t["metadata"]["labels"]["strimzi.io/cluster"] for t in topics} == {"prod-kafka"}
        assert {t["apiVersion"] for t in topics} == {"kafka.strimzi.io/v1beta2"}

    @settings(max_examples=150, deadline=None)
    @given(
        prefix=prefixes,
        parties=st.lists(party_ids, max_size=6, unique=True),
        partitions=st.integers(min_value=1, max_value=64),
    )
    def test_any_prefix_and_parties_give_valid_unique_resource_names(self, prefix, parties, partitions):
        """Whatever the prefix and party ids, resource names are valid and distinct and topics match one-to-one."""
        chosen = options(prefix=prefix, parties=tuple(parties), default_partitions=partitions)
        topics = kafka_topics(chosen.catalogue, chosen)
        names = [t["metadata"]["name"] for t in topics]
        assert all(DNS_SUBDOMAIN.fullmatch(name) for name in names), names
        assert len(set(names)) == len(names)
        specs = desired_specs(Settings(default_partitions=partitions), chosen.catalogue, chosen.parties)
        assert [(topic_name(t), t["spec"]["partitions"]) for t in topics] == [(s.name, s.partitions) for s in specs]


class TestResourceName:
    def test_a_valid_name_is_kept(self):
        """A topic name Kubernetes accepts is the resource name as it is."""
        assert resource_name("ics2.filings.outbound") == "ics2.filings.outbound"

    def test_names_differing_only_in_case_get_different_resources(self):
        """Lower-casing alone would merge two party queues; the hash keeps them apart."""
        upper, lower = resource_name("ics2.party.AB.queue"), resource_name("ics2.party.ab.queue")
        assert upper != lower and DNS_SUBDOMAIN.fullmatch(upper)

    def test_underscores_and_leading_punctuation_become_valid(self):
        """A prefix with underscores or a leading dot still gives a valid name."""
        for name in ("my_test_ics2.bookings", ".-x.ics2.audit", "__", "A" * 300):
            assert DNS_SUBDOMAIN.fullmatch(resource_name(name)), name


class TestKafkaUsers:
    def test_acls_equal_the_grants_of_every_user(self):
        """Each KafkaUser's ACL rules, one per operation, are exactly the grants of its process or party."""
        catalogue = Catalogue.for_prefix("t-")
        users = {u["metadata"]["name"]: u for u in kafka_users(catalogue, ["FWD-1", "ml-tyo"], "app")}
        expected = {
            "app-worker": worker_grants(catalogue, "app", "app-worker"),
            "app-gateway": gateway_grants(catalogue, "app", "app-gateway"),
            "party-fwd-1": party_grants(catalogue, "FWD-1"),
            "party-ml-tyo": party_grants(catalogue, "ml-tyo"),
        }
        assert set(users) == set(expected)
        for name, grants in expected.items():
            entries = acl_entries(users[name])
            assert sorted(entries, key=str) == sorted(set(grant_entries(grants)), key=str), name

    @settings(max_examples=150, deadline=None)
    @given(prefix=prefixes, parties=st.lists(party_ids, max_size=5, unique_by=str.lower))
    def test_any_parties_get_exactly_their_grants_or_are_refused(self, prefix, parties):
        """Each party's KafkaUser carries exactly its grants; ids Kubernetes cannot take stop the generator."""
        catalogue = Catalogue.for_prefix(prefix)
        if not all(DNS_SUBDOMAIN.fullmatch(party_user(party).lower()) for party in parties):
            with pytest.raises(DeployError):
                kafka_users(catalogue, parties, "app")
            return
        users = kafka_users(catalogue, parties, "app")
        assert len(users) == len(parties) + 2
        for party, user in zip(parties, users[2:], strict=True):
            assert user["metadata"]["name"] == party_user(party).lower()
            expected = set(grant_entries(party_grants(catalogue, party)))
            assert sorted(acl_entries(user), key=str) == sorted(expected, key=str)

    def test_rules_use_only_values_the_strimzi_crd_accepts(self):
        """Resource types, pattern types, operations and rule types are from the KafkaUser CRD's enumerations."""
        operations = {"Read", "Write", "Create", "Delete", "Alter", "Describe", "ClusterAction", "AlterConfigs"}
        operations |= {"DescribeConfigs", "IdempotentWrite", "All"}
        for user in kafka_users(Catalogue(), ["FWD-1"], "app", exactly_once=True):
            for rule in user["spec"]["authorization"]["acls"]:
                assert rule["resource"]["type"] in {"topic", "group", "cluster", "transactionalId"}
                assert rule["resource"].get("patternType", "literal") in {"literal", "prefix"}
                assert set(rule["operations"]) <= operations and rule["type"] in {"allow", "deny"}
                assert ("name" in rule["resource"]) == (rule["resource"]["type"] != "cluster")

    def test_exactly_once_adds_the_transactional_ids(self):
        """With exactly-once processing the worker may also use its transactional ids."""
        catalogue = Catalogue()
        worker = kafka_users(catalogue, [], "app", exactly_once=True)[0]
        expected = worker_grants(catalogue, "app", "app-worker", exactly_once=True)
        assert sorted(acl_entries(worker), key=str) == sorted(set(grant_entries(expected)), key=str)
        assert any(entry[0] == "transactional_id" for entry in acl_entries(worker))

    def test_every_user_logs_in_with_scram_and_belongs_to_the_cluster(self):
        """Strimzi creates a SCRAM-SHA-512 password and applies simple ACLs for each user."""
        for user in kafka_users(Catalogue(), ["FWD-1"], "app", cluster="prod"):
            assert user["kind"] == "KafkaUser"
            assert user["spec"]["authentication"] == {"type": "scram-sha-512"}
            assert user["spec"]["authorization"]["type"] == "simple"
            assert user["metadata"]["labels"]["strimzi.io/cluster"] == "prod"

    def test_party_users_are_the_onboarding_names_in_lower_case(self):
        """A party's KafkaUser is its onboarding user name, lower-cased as Kubernetes requires."""
        names = [u["metadata"]["name"] for u in kafka_users(Catalogue(), ["CARRIER-A", "x.y"], "app")]
        assert names == ["app-worker", "app-gateway", party_user("CARRIER-A").lower(), party_user("x.y").lower()]

    def test_parties_that_differ_only_in_case_are_refused(self):
        """Two parties whose users would share one KafkaUser stop the generator."""
        with pytest.raises(DeployError, match="case"):
            kafka_users(Catalogue(), ["ab", "AB"], "app")

    def test_a_party_id_kubernetes_cannot_name_is_refused(self):
        """An underscore cannot be in a KafkaUser name, and SCRAM names are never rewritten beyond case."""
        with pytest.raises(DeployError, match="KafkaUser"):
            kafka_users(Catalogue(), ["FWD_1"], "app")

    def test_a_grant_for_another_principal_is_refused(self):
        """Strimzi applies a user's rules to that user only, so a foreign grant cannot be carried over."""
        grant = Grant("User:other", "topic", "ics2.bookings", "literal", "Read")
        with pytest.raises(DeployError, match="other"):
            acl_rules("app-worker", [grant])


class TestManifests:
    def test_every_resource_has_api_version_kind_and_a_valid_name(self):
        """Every generated document is a well-formed Kubernetes object with a valid name."""
        docs = all_docs(options(parties=("CARRIER-A",)))
        for doc in docs:
            assert doc["apiVersion"] and doc["kind"], doc
            assert DNS_SUBDOMAIN.fullmatch(doc["metadata"]["name"]), doc["metadata"]["name"]
        for kind in ("Service", "StatefulSet", "Deployment", "ConfigMap", "PodDisruptionBudget"):
            assert DNS_LABEL.fullmatch(only(docs, kind)["metadata"]["name"]), kind

    def test_every_env_var_is_a_settings_variable(self):
        """The ConfigMap and the containers set only ICS2_* variables that name Settings fields."""
        docs = all_docs(options())
        fields = set(Settings.__dataclass_fields__)
        names = set(only(docs, "ConfigMap")["data"])
        for workload in (only(docs, "StatefulSet"), only(docs, "Deployment")):
            for container in pod_spec(workload)["containers"]:
                names |= {item["name"] for item in container["env"]}
        assert names
        assert all(name.startswith("ICS2_") for name in names), names
        assert {name.removeprefix("ICS2_").lower() for name in names} <= fields

    def test_settings_read_from_the_manifests_are_the_deployment(self):
        """Settings.from_env accepts the ConfigMap plus the SCRAM user and gives the chosen cluster and port."""
        chosen = options(web_port=7077, prefix="prod.", cluster="kafka-a")
        docs = all_docs(chosen)
        env = dict(only(docs, "ConfigMap")["data"])
        container = pod_spec(only(docs, "StatefulSet"))["containers"][0]
        env |= {item["name"]: item.get("value", "secret") for item in container["env"]}
        parsed = Settings.from_env(env)
        assert parsed.web_port == 7077 and parsed.topic_prefix == "prod."
        assert parsed.bootstrap_servers == "kafka-a-kafka-bootstrap:9093"
        assert parsed.security_protocol.value == "SASL_SSL" and parsed.sasl_mechanism == "SCRAM-SHA-512"

    def test_workloads_read_the_config_map_that_is_generated(self):
        """Both containers take their settings from the generated ConfigMap."""
        docs = all_docs(options())
        config = only(docs, "ConfigMap")["metadata"]["name"]
        for workload in (only(docs, "StatefulSet"), only(docs, "Deployment")):
            container = pod_spec(workload)["containers"][0]
            assert container["envFrom"] == [{"configMapRef": {"name": config}}]

    def test_selectors_match_the_pod_labels_of_their_workload_only(self):
        """Service, StatefulSet and budget select the worker pods; the Deployment its own, and none overlap."""
        docs = all_docs(options())
        workers = only(docs, "StatefulSet")["spec"]["template"]["metadata"]["labels"]
        gateway = only(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]

        def selects(selector: dict[str, str], pod_labels: dict[str, str]) -> bool:
            return selector.items() <= pod_labels.items()

        for selector in (
            only(docs, "Service")["spec"]["selector"],
            only(docs, "StatefulSet")["spec"]["selector"]["matchLabels"],
            only(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        ):
            assert selector and selects(selector, workers) and not selects(selector, gateway)
        selector = only(docs, "Deployment")["spec"]["selector"]["matchLabels"]
        assert selects(selector, gateway) and not selects(selector, workers)

    def test_ports_and_probes_use_the_web_port_and_the_health_page(self):
        """Container port, Service and probes all point at ICS2_WEB_PORT and the worker's /health page."""
        docs = all_docs(options(web_port=7070))
        port = int(only(docs, "ConfigMap")["data"]["ICS2_WEB_PORT"])
        container = pod_spec(only(docs, "StatefulSet"))["containers"][0]
        (declared,) = container["ports"]
        assert declared["containerPort"] == port == 7070
        (service_port,) = only(docs, "Service")["spec"]["ports"]
        assert service_port["port"] == port and service_port["targetPort"] in (declared["name"], port)
        assert f'@app.page("{container["readinessProbe"]["httpGet"]["path"]}")' in APP.read_text()
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["httpGet"]["port"] in (declared["name"], port), probe

    def test_containers_run_real_ics2_sub_commands(self):
        """The image's entry point is ics2, and each container's arguments parse as one of its sub-commands."""
        assert 'ENTRYPOINT ["ics2"]' in (REPO / "deploy" / "Dockerfile").read_text()
        docs = all_docs(options())
        for workload in (only(docs, "StatefulSet"), only(docs, "Deployment")):
            name, *args = pod_spec(workload)["containers"][0]["args"]
            command = cli.get_command(click.Context(cli), name)
            assert command is not None, name
            command.make_context(name, list(args))

    def test_pods_run_as_the_image_user_with_state_where_the_image_keeps_it(self):
        """runAsUser is the Dockerfile's ics2 user, and the writable state volume is the image's ICS2_STATE_DIR: a
        claim per worker pod (its RocksDB tables), a scratch directory for the gateway."""
        dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
        uid = int(re.search(r"--uid (\d+)", dockerfile).group(1))
        state_dir = re.search(r"ICS2_STATE_DIR=(\S+)", dockerfile).group(1)
        docs = all_docs(options())
        assert only(docs, "ConfigMap")["data"]["ICS2_STATE_DIR"] == state_dir
        for workload in (only(docs, "StatefulSet"), only(docs, "Deployment")):
            spec = pod_spec(workload)
            assert spec["securityContext"]["runAsUser"] == uid
            mounts = {m["mountPath"]: m["name"] for m in spec["containers"][0]["volumeMounts"]}
            volumes = {v["name"]: v for v in spec["volumes"]}
            claims = {c["metadata"]["name"] for c in workload["spec"].get("volumeClaimTemplates", [])}
            if workload["kind"] == "StatefulSet":
                assert mounts[state_dir] in claims and mounts[state_dir] not in volumes
            else:
                assert "emptyDir" in volumes[mounts[state_dir]] and not claims

    def test_each_worker_pod_names_its_own_table_directory(self):
        """Two workers must not share a RocksDB directory: the pod's name is the worker id."""
        container = pod_spec(only(all_docs(options()), "StatefulSet"))["containers"][0]
        env = {e["name"]: e for e in container["env"]}
        assert env["ICS2_WORKER_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}

    def test_statefulset_is_governed_by_the_headless_service(self):
        """Stable pod DNS names need the StatefulSet's serviceName to be a headless Service."""
        docs = all_docs(options())
        service = only(docs, "Service")
        assert only(docs, "StatefulSet")["spec"]["serviceName"] == service["metadata"]["name"]
        assert service["spec"]["clusterIP"] == "None"

    def test_passwords_come_from_the_secrets_strimzi_creates_for_the_users(self):
        """Each process logs in as its KafkaUser with the password from the Secret of the same name."""
        docs = all_docs(options())
        users = {u["metadata"]["name"] for u in by_kind(docs, "KafkaUser")}
        for workload in (only(docs, "StatefulSet"), only(docs, "Deployment")):
            env = {item["name"]: item for item in pod_spec(workload)["containers"][0]["env"]}
            username = env["ICS2_SASL_USERNAME"]["value"]
            secret = env["ICS2_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]
            assert username in users and secret == {"name": username, "key": "password"}

    def test_worker_replicas_follow_the_options(self):
        """The StatefulSet runs the chosen number of workers; the gateway always runs alone."""
        docs = all_docs(options(worker_replicas=5))
        assert only(docs, "StatefulSet")["spec"]["replicas"] == 5
        assert only(docs, "Deployment")["spec"]["replicas"] == 1

    def test_workers_beyond_the_partition_count_are_counted_as_idle(self):
        """Replicas above the partitions per topic have nothing to consume."""
        assert options(worker_replicas=6, default_partitions=4).idle_workers == 2
        assert options(worker_replicas=4, default_partitions=4).idle_workers == 0

    def test_manifests_go_to_three_files(self):
        """Config, workers and gateway are separate files, so each can be applied on its own."""
        assert set(manifests(options())) == {"config.yaml", "worker.yaml", "gateway.yaml"}

    @pytest.mark.parametrize(
        "changes",
        [{"app_id": "ICS2_app"}, {"cluster": "-x"}, {"worker_replicas": 0}, {"parties": ("a b",)}, {"web_port": 0}],
    )
    def test_options_kubernetes_cannot_take_are_refused(self, changes):
        """An app id or cluster that cannot name a resource, no workers, a bad party or port: DeployError."""
        with pytest.raises(DeployError):
            options(**changes)


@pytest.fixture(scope="module")
def expected() -> dict[str, str]:
    """What the committed folder must hold: the default deployment with the demo's parties onboarded."""
    return render_files(DeployOptions(parties=demo_parties()))


class TestCommittedFiles:
    def test_committed_files_are_what_the_generator_writes_now(self, expected):
        """deploy/k8s holds exactly today's output for the default catalogue and the demo's parties."""
        for name, text in expected.items():
            path = COMMITTED / name
            current = path.read_text(encoding="utf-8") if path.is_file() else None
            assert current == text, f"deploy/k8s/{name} is stale: regenerate it with `{COMMITTED_COMMAND}`"

    def test_no_other_yaml_is_committed_beside_them(self, expected):
        """A file the generator no longer writes would still be applied by `kubectl apply -f deploy/k8s`."""
        assert {p.name for p in COMMITTED.glob("*.y*ml")} == set(expected), f"regenerate with `{COMMITTED_COMMAND}`"

    def test_committed_files_onboard_the_demo_parties(self):
        """Every party of the demo has its queue and its user in the committed resources."""
        topics = yaml.safe_load_all((COMMITTED / "topics.yaml").read_text())
        names = {topic_name(t) for t in topics}
        assert demo_parties() and all(Catalogue().party_queue(p).name in names for p in demo_parties())


class TestRenderCommand:
    ARGS = ("--topic-prefix", "stage.", "--partitions", "6", "--replicas", "3", "--party", "FWD-1", "--image", "img:1")

    def test_render_writes_the_generated_files(self, tmp_path):
        """`ics2 deploy render` writes each file the generator returns for the given options."""
        result = CliRunner().invoke(cli, ["deploy", "render", "--out", str(tmp_path), *self.ARGS])
        assert result.exit_code == 0, result.output
        chosen = DeployOptions(
            prefix="stage.", default_partitions=6, worker_replicas=3, parties=("FWD-1",), image="img:1"
        )
        expected = render_files(chosen)
        assert {p.name for p in tmp_path.iterdir()} == set(expected)
        for name, text in expected.items():
            assert (tmp_path / name).read_text(encoding="utf-8") == text, name

    def test_check_reports_a_drifted_file_and_writes_nothing(self, tmp_path):
        """--check exits 0 on current files, 1 naming the file that drifted, and leaves it as it was."""
        runner = CliRunner()
        assert runner.invoke(cli, ["deploy", "render", "--out", str(tmp_path), *self.ARGS]).exit_code == 0
        check = ["deploy", "render", "--out", str(tmp_path), "--check", *self.ARGS]
        assert runner.invoke(cli, check).exit_code == 0
        (tmp_path / "users.yaml").write_text("edited by hand\n")
        result = runner.invoke(cli, check)
        assert result.exit_code == 1 and "users.yaml" in result.output and "topics.yaml" not in result.output
        assert (tmp_path / "users.yaml").read_text() == "edited by hand\n"

    def test_more_workers_than_partitions_warn(self, tmp_path):
        """Asking for more workers than partitions says how many will idle."""
        result = CliRunner().invoke(
            cli, ["deploy", "render", "--out", str(tmp_path), "--partitions", "2", "--replicas", "5"]
        )
        assert result.exit_code == 0 and "3 will idle" in result.output

    def test_a_party_that_cannot_be_a_kafka_user_is_a_usage_error(self, tmp_path):
        """A party id with an underscore names a topic but no KafkaUser: exit 2, nothing written."""
        result = CliRunner().invoke(cli, ["deploy", "render", "--out", str(tmp_path / "k8s"), "--party", "FWD_1"])
        assert result.exit_code == 2 and "KafkaUser" in result.output and not (tmp_path / "k8s").exists()

    def test_a_party_that_cannot_name_a_topic_is_a_usage_error(self, tmp_path):
        """A bad party id exits 2 before anything is written."""
        result = CliRunner().invoke(cli, ["deploy", "render", "--out", str(tmp_path / "k8s"), "--party", "a b"])
        assert result.exit_code == 2 and not (tmp_path / "k8s").exists()
