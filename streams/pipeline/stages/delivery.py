"""The delivery stage: every alert from the alerts topic to its party's queue, or kept until that queue exists.

Stages write an alert once, to the alerts topic, keyed by the party that must act; this stage alone writes the
party queues. Keyed by party, a party's alerts come in one partition, in order; an alert for a party without a
queue (not onboarded yet) is kept in the ``waiting`` table under the party, after those already waiting, and never
dropped. When the queue appears (``KnownQueues``, refreshed by a timer, or at the party's next alert) what waits is
delivered first, in order, then the rest. Why not drop it: a party onboarded a day late must still see the Do Not
Load raised before.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import MutableMapping
from typing import Any

import structlog

from streams.contracts.avro import SchemaCatalogue
from streams.errors import ICS2StreamsError
from streams.pipeline.stage import Emit, Incoming, StageFailure
from streams.settings import Settings
from streams.topics import Catalogue

log = structlog.get_logger(__name__)

#: The header of an alert on the alerts topic that names its party.
PARTY_HEADER = "ics2-party"


class KnownQueues:
    """The party queues that exist, as last listed; ``refresh`` lists them again."""

    def __init__(self, settings: Settings, catalogue: Catalogue) -> None:
        self.settings = settings
        self.prefix = catalogue.party_queue("x").name.removesuffix("x.queue")
        self.names: set[str] = set()
        self.listed_at = float("-inf")

    async def refresh(self) -> set[str]:
        from streams.admin import list_topics

        self.names = set(await list_topics(self.settings, self.prefix))
        self.listed_at = time.monotonic()
        return self.names


class QueueDelivery:
    """alerts -> party queues; the ``waiting`` table holds, per party, the alerts whose queue did not exist yet."""

    def __init__(
        self,
        schemas: SchemaCatalogue,
        catalogue: Catalogue,
        waiting: MutableMapping[str, bytes],
        queues: KnownQueues,
    ) -> None:
        self.schemas = schemas
        self.catalogue = catalogue
        self.waiting = waiting
        self.queues = queues

    def __call__(self, incoming: Incoming) -> list[Emit]:
        party = (incoming.header(PARTY_HEADER) or incoming.key or b"").decode()
        if not self.catalogue.names_a_queue(party):
            log.warning("party_id_cannot_name_a_queue", party=party)
            return []
        queue = self.catalogue.party_queue(party).name
        current = Emit(queue, self._queue_key(incoming, party), incoming.value, incoming.headers)
        held = self.held(party)
        if queue in self.queues.names:
            if held:
                del self.waiting[party]
                log.info("waiting_alerts_delivered", party=party, count=len(held))
            return [*held, current]
        if not held:
            log.warning("party_queue_missing_alert_kept", party=party, queue=queue)
        self.waiting[party] = _encode([*held, current])
        return []

    def _queue_key(self, incoming: Incoming, party: str) -> bytes:
        """A queue is keyed by the alert's MBL (the party when it has none), so a consumer reads an MBL in order."""
        try:
            mbl = self.schemas.decode(incoming.value, reader="PartyAlert").record.get("mbl")
        except ICS2StreamsError as exc:
            raise StageFailure("decode", f"not a PartyAlert: {exc}", party=party, cause=exc) from exc
        return str(mbl or party).encode()

    def held(self, party: str) -> list[Emit]:
        raw = self.waiting.get(party)
        return _decode(raw) if raw else []

    def deliverable(self) -> list[str]:
        """Parties with alerts waiting whose queue exists now."""
        queues = self.queues.names
        return [party for party in list(self.waiting) if self.catalogue.party_queue(party).name in queues]

    def release(self, parties: list[str]) -> list[Emit]:
        """What waits for ``parties``, in order, taken out of the table (a pending delete, saved by the engine)."""
        emits: list[Emit] = []
        for party in parties:
            held = self.held(party)
            if held:
                emits += held
                del self.waiting[party]
                log.info("waiting_alerts_delivered", party=party, count=len(held))
        return emits

    def waiting_count(self) -> int:
        return sum(len(json.loads(raw)) for _, raw in self.waiting.items() if raw)


def _encode(emits: list[Emit]) -> bytes:
    items: list[dict[str, Any]] = [
        {
            "topic": e.topic,
            "key": base64.b64encode(e.key or b"").decode(),
            "value": base64.b64encode(e.value).decode(),
            "headers": [[k, base64.b64encode(v).decode()] for k, v in e.headers],
        }
        for e in emits
    ]
    return json.dumps(items).encode()


def _decode(raw: bytes) -> list[Emit]:
    return [
        Emit(
            item["topic"],
            base64.b64decode(item["key"]),
            base64.b64decode(item["value"]),
            tuple((k, base64.b64decode(v)) for k, v in item["headers"]),
        )
        for item in json.loads(raw)
    ]
