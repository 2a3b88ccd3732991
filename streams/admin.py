"""Topic administration: make the cluster match the catalogue, idempotently, with aiokafka's admin client.

``apply_topics`` is declarative: it creates what is missing, corrects configuration that drifted from
``TopicSpec.config()``, raises partition counts that are too low, and never deletes data or lowers a partition
count (Kafka cannot, and keys would move). Overrides the catalogue does not mention are kept as they are.

Durability comes from the cluster unless given: ``describe_cluster`` counts the brokers, and ``Durability`` turns the
count into a replication factor (at most 3) and a ``min.insync.replicas`` (at most 2) for new topics. An existing
topic keeps its replication factor (raising it is a partition reassignment, which apply leaves to an operator, with a
warning) and gets the ``min.insync.replicas`` of the rule, never more than its own replica count.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import structlog
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaConnectionError, KafkaError, NodeNotReadyError
from aiokafka.protocol.admin import DescribeConfigsRequest
from aiokafka.protocol.metadata import MetadataRequest

from streams.errors import BrokerUnavailable, PlatformError
from streams.settings import Settings
from streams.topics import (
    KAFKA_DEFAULT_MIN_INSYNC_REPLICAS,
    MAX_REPLICATION,
    Catalogue,
    Durability,
    TopicSpec,
    with_partitions,
)

log = structlog.get_logger(__name__)

#: Kafka error codes apply_topics handles rather than raises.
_TOPIC_ALREADY_EXISTS = 36
_UNKNOWN_TOPIC = 3
#: DescribeConfigs ``config_source`` of a per-topic override (KIP-226); other sources are broker-wide.
_DYNAMIC_TOPIC_CONFIG = 1
#: The largest replication factor apply_topics picks by itself, however many brokers there are.
MAX_DEFAULT_REPLICATION = MAX_REPLICATION
_MIN_ISR = "min.insync.replicas"
#: How often to look again while waiting for the broker's metadata to show a change.
_POLL_S = 0.1
#: How long a broker of a cluster may not know a topic another broker already described.
_CONFIG_LAG_S = 10.0


class TopicAdminError(PlatformError):
    """The cluster refused a topic operation (bad config, not authorised, ...)."""


@dataclass(frozen=True, slots=True)
class TopicChange:
    """One existing topic that ``apply_topics`` corrected, with a human-readable line per change."""

    topic: str
    changes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ApplyReport:
    """What ``apply_topics`` did; ``warnings`` lists drift it may not correct (more partitions than the spec)."""

    created: tuple[str, ...]
    updated: tuple[TopicChange, ...]
    unchanged: tuple[str, ...]
    warnings: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated)

    @property
    def updated_names(self) -> tuple[str, ...]:
        return tuple(change.topic for change in self.updated)


@dataclass(frozen=True, slots=True)
class TopicState:
    """A topic as the cluster has it: partition count and its per-topic configuration overrides."""

    name: str
    partitions: int
    overrides: Mapping[str, str]
    config: Mapping[str, str]
    """Every effective value (overrides and broker defaults), for comparison with the spec."""
    replication: int = 1
    """The fewest replicas any of its partitions has."""


@asynccontextmanager
async def admin_client(settings: Settings, request_timeout: float = 30.0) -> AsyncIterator[AIOKafkaAdminClient]:
    """A started admin client; a broker that cannot be reached becomes ``BrokerUnavailable``."""
    client = AIOKafkaAdminClient(**settings.kafka_client_kwargs(), request_timeout_ms=int(request_timeout * 1000))
    try:
        await client.start()
    except (KafkaConnectionError, OSError, TimeoutError) as exc:
        await client.close()
        raise BrokerUnavailable(f"no Kafka broker answers at {settings.bootstrap_servers}") from exc
    try:
        yield client
    finally:
        await client.close()


def desired_specs(settings: Settings, catalogue: Catalogue, party_ids: Iterable[str] = ()) -> tuple[TopicSpec, ...]:
    """The catalogue's fixed topics plus one queue per party, with partition counts made concrete."""
    specs = [*catalogue.all(), *(catalogue.party_queue(party) for party in party_ids)]
    return tuple(with_partitions(spec, settings.default_partitions) for spec in specs)


def durability_for(
    brokers: int, replication_factor: int | None = None, min_insync_replicas: int | None = None
) -> Durability:
    """The rule for ``brokers`` brokers, or the replication and min ISR given; a min ISR above the replication factor
    is refused, since it would refuse every ``acks=all`` write."""
    try:
        if replication_factor is None:
            chosen = Durability.for_brokers(brokers)
        else:
            chosen = Durability.for_replication(replication_factor)
        return chosen if min_insync_replicas is None else Durability(chosen.replication, min_insync_replicas)
    except ValueError as exc:
        raise TopicAdminError(str(exc)) from exc


async def cluster_durability(settings: Settings, timeout: float = 30.0) -> Durability:
    """The rule for the cluster ``settings`` reach: what Faust's own topics and any other topic creator should use."""
    async with admin_client(settings, request_timeout=timeout) as admin:
        return Durability.for_brokers(await _broker_count(admin))


async def apply_topics(
    settings: Settings,
    catalogue: Catalogue,
    party_ids: Iterable[str] = (),
    *,
    replication_factor: int | None = None,
    min_insync_replicas: int | None = None,
    timeout: float = 30.0,
) -> ApplyReport:
    """Create, correct or leave each catalogue topic so the cluster matches the specs; safe to run again.

    ``replication_factor`` None means the number of brokers, at most three (one on the local broker);
    ``min_insync_replicas`` None means the replication factor, at most two (``Durability``).
    """
    specs = desired_specs(settings, catalogue, party_ids)
    async with admin_client(settings, request_timeout=timeout) as admin:
        brokers = await _broker_count(admin)
        durability = durability_for(brokers, replication_factor, min_insync_replicas)
        existing = await _describe(admin, [spec.name for spec in specs], missing_ok=True)
        missing = [spec for spec in specs if spec.name not in existing]
        created = await _create(admin, missing, durability, timeout)
        updated: list[TopicChange] = []
        unchanged: list[str] = [spec.name for spec in missing if spec.name not in created]
        warnings: list[str] = []
        for spec in specs:
            state = existing.get(spec.name)
            if state is None:
                continue
            changes, spec_warnings = await _correct(admin, spec, state, durability, timeout)
            warnings.extend(spec_warnings)
            if changes:
                updated.append(TopicChange(spec.name, changes))
            else:
                unchanged.append(spec.name)
        if created:
            fresh = {spec.name: spec for spec in missing if spec.name in created}
            await _await_metadata(admin, fresh, timeout)
            await _settle_min_insync(admin, fresh, durability, timeout)
    report = ApplyReport(tuple(created), tuple(updated), tuple(unchanged), tuple(warnings))
    log.info(
        "topics_applied",
        prefix=catalogue.prefix,
        brokers=brokers,
        replication=durability.replication,
        min_insync_replicas=durability.min_insync,
        created=len(report.created),
        updated=len(report.updated),
        unchanged=len(report.unchanged),
        warnings=len(report.warnings),
    )
    return report


async def list_topics(settings: Settings, prefix: str = "", *, include_internal: bool = False) -> list[str]:
    """Topic names on the cluster that start with ``prefix``, sorted; Kafka's own ``__`` topics left out."""
    async with admin_client(settings) as admin:
        names = await admin.list_topics()
    return sorted(name for name in names if name.startswith(prefix) and (include_internal or not name.startswith("__")))


async def describe_topics(settings: Settings, names: Iterable[str]) -> dict[str, TopicState]:
    """Partition counts and configuration of the named topics; names the cluster lacks are absent."""
    async with admin_client(settings) as admin:
        return await _describe(admin, list(names), missing_ok=True)


async def alter_topic_config(settings: Settings, name: str, config: Mapping[str, str]) -> None:
    """Set per-topic overrides on one topic, keeping its other overrides (operators' and tests' drift)."""
    async with admin_client(settings) as admin:
        state = (await _describe(admin, [name], missing_ok=False))[name]
        await _alter(admin, name, {**state.overrides, **config})


async def delete_topics(settings: Settings, names: Iterable[str], timeout: float = 30.0, *, wait: bool = True) -> None:
    """Delete topics (tests clean up with it); names that do not exist are ignored.

    ``wait`` returns only once the topics are gone from the metadata, so the names can be reused at once.
    """
    topics = list(names)
    if not topics:
        return
    async with admin_client(settings, request_timeout=timeout) as admin:
        response = await _admin_call(admin.delete_topics(topics, timeout_ms=int(timeout * 1000)), "delete topics")
        for topic, code, *_ in response.topic_error_codes:
            if code not in (0, _UNKNOWN_TOPIC):
                raise TopicAdminError(f"cannot delete topic {topic}: Kafka error code {code}")
        deadline = time.monotonic() + timeout
        while wait and (remaining := set(topics) & set(await _admin_call(admin.list_topics(), "list topics"))):
            if time.monotonic() >= deadline:
                raise TopicAdminError(
                    f"topics still listed {timeout:.0f}s after deletion: {', '.join(sorted(remaining))}"
                )
            await asyncio.sleep(_POLL_S)
    log.info("topics_deleted", count=len(topics))


async def _admin_call(awaitable: Any, what: str) -> Any:
    try:
        return await awaitable
    except KafkaConnectionError as exc:
        raise BrokerUnavailable(f"the broker went away during {what}: {exc}") from exc
    except KafkaError as exc:
        raise TopicAdminError(f"{what} failed: {exc}") from exc


async def _describe(admin: AIOKafkaAdminClient, names: list[str], *, missing_ok: bool) -> dict[str, TopicState]:
    if not names:
        return {}
    metadata = await _admin_call(admin.describe_topics(names), "describe topics")
    partitions: dict[str, int] = {}
    replicas: dict[str, int] = {}
    for topic in metadata:
        if topic["error_code"] == 0:
            partitions[topic["topic"]] = len(topic["partitions"])
            replicas[topic["topic"]] = min((len(part["replicas"]) for part in topic["partitions"]), default=0)
        elif topic["error_code"] != _UNKNOWN_TOPIC or not missing_ok:
            raise TopicAdminError(f"cannot describe topic {topic['topic']}: Kafka error code {topic['error_code']}")
    states: dict[str, TopicState] = {}
    pending = list(partitions)
    deadline = time.monotonic() + _CONFIG_LAG_S
    while pending:
        resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in pending]
        responses = await _admin_call(admin.describe_configs(resources), "describe topic configs")
        lagging: list[str] = []
        for response in responses:
            for resource in response.to_object()["resources"]:
                name, code = resource["resource_name"], resource["error_code"]
                if code == _UNKNOWN_TOPIC and time.monotonic() < deadline:
                    # On a cluster the broker asked may not have the metadata of a topic created a moment ago.
                    lagging.append(name)
                elif code != 0:
                    message = resource["error_message"] or f"Kafka error code {code}"
                    raise TopicAdminError(f"cannot read the config of {name}: {message}")
                else:
                    config, overrides = _config_entries(resource["config_entries"])
                    states[name] = TopicState(name, partitions[name], overrides, config, replicas[name])
        pending = lagging
        if pending:
            await asyncio.sleep(_POLL_S)
    return states


def _config_entries(entries: list[dict[str, Any]]) -> tuple[dict[str, str], dict[str, str]]:
    """All values and the per-topic overrides, from DescribeConfigs v0 (``is_default``) or v1+ (``config_source``)."""
    config: dict[str, str] = {}
    overrides: dict[str, str] = {}
    for entry in entries:
        name, value = entry["config_names"], entry["config_value"]
        if value is None:
            continue
        config[name] = value
        if "config_source" in entry:
            is_override = entry["config_source"] == _DYNAMIC_TOPIC_CONFIG
        else:
            is_override = not entry.get("is_default", True)
        if is_override:
            overrides[name] = value
    return config, overrides


async def _broker_count(admin: AIOKafkaAdminClient) -> int:
    cluster = await _admin_call(admin.describe_cluster(), "describe cluster")
    return max(1, len(cluster["brokers"]))


def _creation_config(spec: TopicSpec, durability: Durability) -> dict[str, str]:
    """The spec's config, and ``min.insync.replicas`` where the rule asks more than Kafka's default.

    A single broker's topics thus carry exactly the catalogue's overrides; ``_settle_min_insync`` still corrects a
    new topic whose broker defaults to more than it may have.
    """
    if durability.min_insync == KAFKA_DEFAULT_MIN_INSYNC_REPLICAS:
        return spec.config()
    return spec.config(durability.min_insync)


async def _create(
    admin: AIOKafkaAdminClient, specs: list[TopicSpec], durability: Durability, timeout: float
) -> list[str]:
    if not specs:
        return []
    new_topics = [
        NewTopic(
            spec.name,
            num_partitions=spec.partitions or 1,
            replication_factor=durability.replication,
            topic_configs=_creation_config(spec, durability),
        )
        for spec in specs
    ]
    response = await _admin_call(admin.create_topics(new_topics, timeout_ms=int(timeout * 1000)), "create topics")
    created: list[str] = []
    for topic, code, message, *_ in response.topic_errors:
        if code == 0:
            created.append(topic)
        elif code != _TOPIC_ALREADY_EXISTS:
            raise TopicAdminError(f"cannot create topic {topic}: {message or f'Kafka error code {code}'}")
    return created


async def _correct(
    admin: AIOKafkaAdminClient, spec: TopicSpec, state: TopicState, durability: Durability, timeout: float
) -> tuple[tuple[str, ...], list[str]]:
    """Bring one existing topic to its spec; returns the changes made and warnings for what must stay."""
    warnings: list[str] = []
    desired = spec.config()
    # The min ISR is compared with the effective value, so a broker default that already is right needs no override.
    min_insync = str(durability.capped(state.replication).min_insync)
    if state.config.get(_MIN_ISR) != min_insync:
        desired[_MIN_ISR] = min_insync
    changes = [
        f"{key}: {state.config.get(key)} -> {value}" for key, value in desired.items() if state.config.get(key) != value
    ]
    if changes:
        await _alter(admin, spec.name, {**state.overrides, **desired}, timeout)
    if state.replication < durability.replication:
        warnings.append(
            f"{spec.name} has {state.replication} replicas, fewer than the {durability.replication} wanted; left as "
            "is (raising it is a partition reassignment)"
        )
        log.warning(
            "topic_replication_below_wanted", topic=spec.name, replicas=state.replication, wanted=durability.replication
        )
    wanted = spec.partitions or 1
    if state.partitions < wanted:
        request = admin.create_partitions({spec.name: NewPartitions(wanted)}, timeout_ms=int(timeout * 1000))
        await _admin_call(request, "create partitions")
        changes.append(f"partitions: {state.partitions} -> {wanted}")
    elif state.partitions > wanted:
        warnings.append(f"{spec.name} has {state.partitions} partitions, more than the {wanted} specified; left as is")
        log.warning("topic_partitions_above_spec", topic=spec.name, partitions=state.partitions, wanted=wanted)
    return tuple(changes), warnings


async def _settle_min_insync(
    admin: AIOKafkaAdminClient, specs: Mapping[str, TopicSpec], durability: Durability, timeout: float
) -> None:
    """New topics created without a min ISR override take the broker's default; correct those it does not fit."""
    if durability.min_insync != KAFKA_DEFAULT_MIN_INSYNC_REPLICAS:
        return
    states = await _describe(admin, list(specs), missing_ok=True)
    for name, state in states.items():
        if state.config.get(_MIN_ISR) != str(durability.min_insync):
            await _alter(admin, name, {**state.overrides, _MIN_ISR: str(durability.min_insync)}, timeout)


async def _alter(admin: AIOKafkaAdminClient, name: str, config: Mapping[str, str], timeout: float = 30.0) -> None:
    """AlterConfigs replaces a topic's whole override set, so callers pass the overrides to keep as well.

    The broker answers once the controller accepted the change but shows it a moment later; waiting until the
    new values are visible on every broker gives callers read-your-writes (a second apply, a test, a worker starting
    next), since the admin client asks a random broker each time.
    """
    resource = ConfigResource(ConfigResourceType.TOPIC, name, dict(config))
    responses = await _admin_call(admin.alter_configs([resource]), "alter topic config")
    for response in responses:
        for code, message, _type, resource_name, *_ in response.resources:
            if code != 0:
                raise TopicAdminError(f"cannot alter the config of {resource_name}: {message or code}")
    deadline = time.monotonic() + timeout
    while True:
        seen = await _overrides_on_each_broker(admin, name)
        if seen and all(overrides == dict(config) for overrides in seen):
            return
        if time.monotonic() >= deadline:
            raise TopicAdminError(f"the new config of {name} is not visible after {timeout:.0f}s")
        await asyncio.sleep(_POLL_S)


async def _overrides_on_each_broker(admin: AIOKafkaAdminClient, name: str) -> list[dict[str, str]]:
    """The topic's overrides as each live broker describes them; a broker that does not answer is left out (it
    serves no client either), one that does not know the topic yet counts as showing none."""
    cluster = await _admin_call(admin.describe_cluster(), "describe cluster")
    seen: list[dict[str, str]] = []
    for broker in cluster["brokers"]:
        request = DescribeConfigsRequest([(ConfigResourceType.TOPIC, name, None)], False)
        try:
            response = await admin._send_request(request, broker["node_id"])
        except (KafkaConnectionError, NodeNotReadyError):
            continue
        except KafkaError as exc:
            raise TopicAdminError(f"describe topic configs failed: {exc}") from exc
        for resource in response.to_object()["resources"]:
            if resource["error_code"] == _UNKNOWN_TOPIC:
                seen.append({})
            elif resource["error_code"] != 0:
                message = resource["error_message"] or f"Kafka error code {resource['error_code']}"
                raise TopicAdminError(f"cannot read the config of {name}: {message}")
            else:
                seen.append(_config_entries(resource["config_entries"])[1])
    return seen


async def _await_metadata(admin: AIOKafkaAdminClient, specs: Mapping[str, TopicSpec], timeout: float) -> None:
    """Wait until every live broker knows the new topics with a leader for every partition, so that producers,
    Faust and a next apply can use them at once, whichever broker they ask (on a cluster each learns a moment apart).
    """
    deadline = time.monotonic() + timeout
    pending = set(specs)
    while pending:
        cluster = await _admin_call(admin.describe_cluster(), "describe cluster")
        lagging: set[str] = set()
        for broker in cluster["brokers"]:
            try:
                response = await admin._send_request(MetadataRequest(sorted(pending), False), broker["node_id"])
            except (KafkaConnectionError, NodeNotReadyError):
                continue
            except KafkaError as exc:
                raise TopicAdminError(f"describe topics failed: {exc}") from exc
            for topic in response.to_object()["topics"]:
                ready = topic["error_code"] == 0 and all(part["leader"] >= 0 for part in topic["partitions"])
                if not ready or len(topic["partitions"]) < (specs[topic["topic"]].partitions or 1):
                    lagging.add(topic["topic"])
        pending = lagging
        if not pending:
            return
        if time.monotonic() >= deadline:
            raise TopicAdminError(f"topics without leaders after {timeout:.0f}s: {', '.join(sorted(pending))}")
        await asyncio.sleep(_POLL_S)
