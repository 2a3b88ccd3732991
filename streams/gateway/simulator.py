"""The simulator connector: the pure ``CustomsSimulator`` behind the gateway boundary, with state that survives
a restart.

State is persisted as ``state()`` snapshots (plus the message ids already answered) on a compacted topic, one
key per deployment. Replaying the outbound topic was the alternative and was not chosen: the MRNs depend on the
order in which filings reached the simulator, which a replay across partitions does not reproduce, and the time
of each original ``submit`` is not on the record.

Why a restart neither loses answers nor gives one LRN two MRNs: the loop calls ``checkpoint`` (which writes the
snapshot) only after the answers are acknowledged, and commits offsets only after that.

* Crash before the snapshot: the filing is consumed again and submitted to the older state, whose MRN counter has
  not moved, so customs answers again with the same MRN (a duplicate, never a different one).
* Crash after the snapshot, before the commit: the filing is consumed again, but its ``message_id`` is in the
  snapshot, so it is skipped: its answers are already on the broker.

The seed is part of the state (MRNs depend on it) and a restored seed wins over the configured one; the configured
risk script replaces the restored one, so an operator can change outcomes for filings still to come.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import orjson
import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import NewTopic

from streams.admin import admin_client
from streams.errors import ICS2StreamsError, InputError
from streams.gateway.base import InboundMessage, InDoubt, OutboundFiling
from streams.gateway.clients import stop_quietly
from streams.pipeline.runner import Producer
from streams.pipeline.stage import Emit
from streams.settings import Settings
from streams.simulator import CustomsSimulator, Outbound, RiskScript
from streams.topics import SIMULATOR_SNAPSHOT_MAX_BYTES, Catalogue, Durability, TopicSpec

log = structlog.get_logger(__name__)

#: Message ids remembered for deduplication; far more than can be in flight between two commits.
REMEMBERED_IDS = 5000
SNAPSHOT_MAX_BYTES = SIMULATOR_SNAPSHOT_MAX_BYTES
_TOPIC_ALREADY_EXISTS = 36


def simulator_state_topic(catalogue: Catalogue) -> TopicSpec:
    """The compacted topic holding the simulator's snapshots (from the catalogue)."""
    return catalogue.simulator_state


def load_script(path: Path | None) -> RiskScript:
    """The risk script of a JSON file (``RiskScript.from_json`` shape), or the built-in default."""
    if path is None:
        return RiskScript()
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the risk script {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise InputError(f"the risk script {path} is not a JSON object")
    return RiskScript.from_json(data)


class SnapshotStore(Protocol):
    """Where the simulator connector keeps its latest state."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def load(self) -> dict[str, Any] | None: ...

    async def save(self, state: dict[str, Any]) -> None:
        """Persist ``state`` (JSON values and dataclasses, as orjson writes them), read before the first await: it
        holds the simulator's live objects."""


@dataclass(slots=True)
class MemorySnapshotStore:
    """A store that lives as long as the object: tests, and runs that need not survive a restart."""

    state: dict[str, Any] | None = None
    saves: int = 0

    async def start(self) -> None:
        """Nothing to connect."""

    async def stop(self) -> None:
        """Nothing to release."""

    async def load(self) -> dict[str, Any] | None:
        return None if self.state is None else orjson.loads(orjson.dumps(self.state))

    async def save(self, state: dict[str, Any]) -> None:
        self.state = orjson.loads(orjson.dumps(state))
        self.saves += 1


class SnapshotError(ICS2StreamsError):
    """The snapshot topic cannot be read or written; the connector stops rather than run on a forgotten state."""

    retriable = True


class SnapshotTooLarge(ICS2StreamsError):
    """The simulator's state no longer fits one snapshot record: answering goes on, a restart would forget it."""


def encode_snapshot(state: dict[str, Any]) -> bytes:
    """Compact JSON, deflated: the state of a 10-minute soak (tens of thousands of filings) outgrew 8 MiB as JSON."""
    return zlib.compress(orjson.dumps(state, option=orjson.OPT_SORT_KEYS), 1)


def decode_snapshot(value: bytes) -> Any:
    """A snapshot as ``encode_snapshot`` writes it, or as plain JSON (snapshots written before it deflated)."""
    return orjson.loads(value if value[:1] == b"{" else zlib.decompress(value))


class KafkaSnapshotStore:
    """Snapshots as JSON values on a compacted single-partition topic, under one key; the last one wins."""

    def __init__(self, settings: Settings, spec: TopicSpec, key: str) -> None:
        self.settings = settings
        self.spec = spec
        self.key = key.encode("utf-8")
        self._producer: Producer | None = None

    async def start(self) -> None:
        """Create the topic if it is missing, and make the producer that writes snapshots.

        The pipeline's ``Producer``: it waits out a broker that is away and replaces an aiokafka producer an outage
        left refusing every write (out-of-order sequence numbers), which would have failed every checkpoint after.
        """
        async with admin_client(self.settings) as admin:
            cluster = await admin.describe_cluster()
            durability = Durability.for_brokers(len(cluster["brokers"]))
            topic = NewTopic(
                self.spec.name, 1, durability.replication, topic_configs=self.spec.config(durability.min_insync)
            )
            response = await admin.create_topics([topic])
            for _, code, *_ in getattr(response, "topic_errors", ()):
                if code not in (0, _TOPIC_ALREADY_EXISTS):
                    raise SnapshotError(f"cannot create {self.spec.name}: Kafka error {code}")
        self._producer = Producer(
            self.settings,
            Catalogue.for_prefix(self.settings.topic_prefix),
            compression_type="gzip",
            max_request_size=SNAPSHOT_MAX_BYTES,
        )

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def load(self) -> dict[str, Any] | None:
        """The last snapshot under this store's key, read from the beginning of the topic to its current end."""
        consumer = AIOKafkaConsumer(**self.settings.kafka_client_kwargs(), enable_auto_commit=False, group_id=None)
        await consumer.start()
        try:
            partition = TopicPartition(self.spec.name, 0)
            consumer.assign([partition])
            await consumer.seek_to_beginning(partition)
            end = (await consumer.end_offsets([partition]))[partition]
            latest: bytes | None = None
            while await consumer.position(partition) < end:
                batch = await consumer.getmany(partition, timeout_ms=1000)
                for record in batch.get(partition, []):
                    if record.key == self.key:
                        latest = record.value
        finally:
            await stop_quietly(consumer.stop(), "snapshot reader")
        if latest is None:
            return None
        try:
            loaded = decode_snapshot(latest)
        except (ValueError, zlib.error) as exc:
            raise SnapshotError(f"the last snapshot on {self.spec.name} is not JSON: {exc}") from exc
        if not isinstance(loaded, dict):
            raise SnapshotError(f"the last snapshot on {self.spec.name} is not a JSON object")
        return loaded

    async def save(self, state: dict[str, Any]) -> None:
        if self._producer is None:
            raise SnapshotError("the snapshot store is not started")
        value = encode_snapshot(state)
        if len(value) > SNAPSHOT_MAX_BYTES:
            raise SnapshotTooLarge(
                f"the simulator's snapshot is {len(value)} bytes, over the {SNAPSHOT_MAX_BYTES} a record may hold",
                hint="restart the simulator on a new state (another --app-id) when it must survive restarts",
            )
        # One attempt: the connector tries a checkpoint again, with backoff, while the broker is away.
        await self._producer.send_all([Emit(self.spec.name, self.key, value)], retry_s=0)


class SimulatorGateway:
    """The customs simulator as a gateway: answers come from ``submit`` at once and from ``poll`` as time passes."""

    name = "simulator"

    def __init__(self, store: SnapshotStore, script: RiskScript | None = None, seed: int = 0) -> None:
        self.store = store
        self.script = script or RiskScript()
        self.seed = seed
        self.simulator = CustomsSimulator(self.script, seed)
        self._answered: deque[str] = deque(maxlen=REMEMBERED_IDS)
        self._answered_set: set[str] = set()
        self._dirty = False

    async def start(self) -> None:
        """Restore the last snapshot, if any (see the module docstring for what is kept from it)."""
        await self.store.start()
        state = await self.store.load()
        if state is None:
            log.info("simulator_state_new", seed=self.seed)
            return
        try:
            self.simulator = CustomsSimulator.from_json(state["simulator"])
            answered = [str(i) for i in state.get("answered", [])]
        except (KeyError, TypeError) as exc:
            raise SnapshotError(f"the simulator snapshot is not usable: {exc!r}") from exc
        self.simulator.script = self.script
        self.seed = self.simulator.seed
        for message_id in answered[-REMEMBERED_IDS:]:
            self._remember(message_id)
        log.info("simulator_state_restored", seed=self.seed, answered=len(self._answered))

    async def stop(self) -> None:
        await self.store.stop()

    async def submit(self, filing: OutboundFiling, now: datetime) -> Sequence[InboundMessage]:
        """Customs' immediate answers; nothing for a filing already answered before the last snapshot."""
        if filing.message_id in self._answered_set:
            log.info("filing_already_answered", message_id=filing.message_id)
            return ()
        out = self.simulator.submit(filing.xml, now)
        self._remember(filing.message_id)
        self._dirty = True
        return [_inbound(o, f"{filing.message_id}/{index}") for index, o in enumerate(out)]

    async def poll(self, now: datetime) -> Sequence[InboundMessage]:
        """What the passing of time triggers (IE3N02 and IE3N11 for F16s that did not come)."""
        out = self.simulator.advance(now)
        if out:
            self._dirty = True
        return [_inbound(o, "advance/" + hashlib.sha256(o.xml).hexdigest()) for o in out]

    async def checkpoint(self) -> None:
        """The answers are on the broker: save the state that produced them."""
        if not self._dirty:
            return
        try:
            await self.store.save(self.snapshot())
        except SnapshotTooLarge as exc:
            log.error("simulator_snapshot_too_large", error=str(exc))
            return
        self._dirty = False

    async def in_doubt(self) -> InDoubt:
        """Nothing: a filing whose answers may be missing is consumed again, because its offset is not committed."""
        return InDoubt()

    def snapshot(self) -> dict[str, Any]:
        """What ``checkpoint`` saves; it holds the simulator's live objects, so it is encoded at once."""
        return {"simulator": self.simulator.state(), "answered": list(self._answered)}

    def _remember(self, message_id: str) -> None:
        if len(self._answered) == self._answered.maxlen:
            self._answered_set.discard(self._answered[0])
        self._answered.append(message_id)
        self._answered_set.add(message_id)


def _inbound(outbound: Outbound, origin: str) -> InboundMessage:
    """The answer as an inbound message; its id is derived from what caused it, so a repeat has the same id."""
    message_id = hashlib.sha256(f"{origin}|{outbound.addressee}|{outbound.message_type}".encode()).hexdigest()
    return InboundMessage(outbound.addressee, outbound.message_type, outbound.xml, message_id=message_id)
