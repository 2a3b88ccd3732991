"""What the audit trail records of each topic: one entry per Kafka record, keyed by the MBL it concerns.

The trail records what was really written to Kafka, so entries are derived from the records themselves, never from
what a stage meant to write. Raw customs notifications name no MBL before correlation; they are recorded when the
correlator has tied them to a filing (the ``notification`` ENS event carries the parsed notification and the hash of
its raw XML). Per-party queues repeat the alerts topic and are not recorded twice.

Every record of a recorded topic gets exactly one entry (``EntryDeriver.account``), so that a replay can prove that
nothing is missing (``streams.audit.completeness``): a record that names no MBL or does not decode goes to the
``UNATTRIBUTED`` chain as a ``skipped`` entry saying why. Each entry carries the SHA-256 of its source record's value
(``source_sha256``), which the replay compares with the record still on the topic.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from streams.audit.trail import canonical_json
from streams.contracts.avro import SchemaCatalogue
from streams.contracts.events import ACK
from streams.errors import InputError
from streams.topics import Catalogue, TopicSpec

#: EnsEvent type -> the kind of the audit entry (a tick that carries an acknowledgement is recorded as ``ack``).
ENS_EVENT_KINDS = {
    "planned": "plan",
    "filing_sent": "filing_sent",
    "filing_blocked": "filing_blocked",
    "notification": "notification",
    "tick": "tick",
}

UNATTRIBUTED = "(unattributed)"
"""The chain of the records that name no MBL or do not decode: they are chained too, so that every record of a recorded
topic is in the trail once. Not an MBL: the replay shows no consolidation for it, and a record naming it as its MBL is
unattributed as well."""
SKIPPED_KIND = "skipped"
CHAIN_STAGE = "audit-chain"
"""The stage that chains ``audit-entries``; a stage's name is its consumer group's (``<app id>.<stage>``)."""
KEPT_KEY_BYTES = 200
"""Of a skipped record's key, the entry keeps this much (the value only by its SHA-256: it may be megabytes)."""


class SourceRecord(Protocol):
    """A consumed Kafka record: ``streams.pipeline.stage.Incoming`` and ``streams.client.Record`` both fit.

    Read-only members, so that frozen dataclasses such as ``Incoming`` fit too."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes: ...
    @property
    def timestamp_ms(self) -> int | None: ...


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One thing to append to an MBL's chain, with the Kafka coordinates of the record it was derived from."""

    mbl: str
    kind: str
    record: dict[str, Any]
    source: str
    occurred_at: str
    source_sha256: str = ""
    """The SHA-256 (hex) of the source record's value, so that a replay can tell the entry belongs to that record."""

    @property
    def payload(self) -> str:
        """The canonical JSON the trail stores and hashes: the record, its MBL, where and when it came from.

        The MBL is inside the hashed payload because the record's own ``mbl`` field is not sealed by its hash.
        """
        data = {"mbl": self.mbl, "occurred_at": self.occurred_at, "record": self.record, "source": self.source}
        if self.source_sha256:
            data["source_sha256"] = self.source_sha256
        return canonical_json(data)

    def to_avro(self) -> dict[str, Any]:
        """The ``AuditEntry`` Avro record of the ``audit_entries`` topic."""
        return {
            "mbl": self.mbl,
            "kind": self.kind,
            "payload": self.payload,
            "source": self.source,
            "occurred_at": self.occurred_at,
        }


@dataclass(frozen=True, slots=True)
class Skipped:
    """A record the trail does not hold, and why (counted by the collector, never silently dropped)."""

    reason: str
    source: str
    kind: str = field(default="", compare=False)
    """The kind the record would have had (e.g. ``alert``), when it decoded."""
    record: Any = field(default=None, compare=False)
    """The decoded record, when it decoded."""


def collector_stages(catalogue: Catalogue) -> dict[str, TopicSpec]:
    """Collector stage -> the recorded topic it reads. Named explicitly, never derived, so that no rename moves a
    consumer group's committed positions, which the replay reads to know how far each topic must be chained."""
    return {
        "audit-collect-bookings": catalogue.bookings,
        "audit-collect-drafts": catalogue.filing_drafts,
        "audit-collect-filings": catalogue.filings_outbound,
        "audit-collect-ens-events": catalogue.ens_events,
        "audit-collect-alerts": catalogue.alerts,
        "audit-collect-dead-letters": catalogue.dead_letters,
    }


def source_id(record: SourceRecord) -> str:
    return f"{record.topic}:{record.partition}:{record.offset}"


def source_digest(record: SourceRecord) -> str:
    """The SHA-256 of a record's value, as an entry names it (``source_sha256``)."""
    return hashlib.sha256(record.value).hexdigest()


def split_source(source: str) -> tuple[str, int, int]:
    """``topic:partition:offset`` -> its parts; topic names may not hold ``:``, so the split is unambiguous."""
    topic, partition, offset = source.rsplit(":", 2)
    return topic, int(partition), int(offset)


def jsonable(value: Any) -> Any:
    """A decoded Avro value as JSON data: bytes become ``{"base64": ...}`` so that nothing is lost."""
    if isinstance(value, bytes | bytearray):
        return {"base64": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def kafka_time(record: SourceRecord) -> str:
    """The record's Kafka timestamp as ISO 8601 UTC, empty when it has none."""
    if not record.timestamp_ms:
        return ""
    return datetime.fromtimestamp(record.timestamp_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class EntryDeriver:
    """Derives audit entries for the topics of one deployment (its catalogue's prefix)."""

    def __init__(self, schemas: SchemaCatalogue, catalogue: Catalogue) -> None:
        self.schemas = schemas
        self.catalogue = catalogue
        self._by_topic: dict[str, Callable[[SourceRecord], AuditEntry | Skipped]] = {
            catalogue.bookings.name: self._booking,
            catalogue.filing_drafts.name: self._draft,
            catalogue.filings_outbound.name: self._filing,
            catalogue.ens_events.name: self._ens_event,
            catalogue.alerts.name: self._alert,
            catalogue.dead_letters.name: self._dead_letter,
        }
        self._mbl_keyed = {
            catalogue.bookings.name,
            catalogue.filing_drafts.name,
            catalogue.filings_outbound.name,
            catalogue.ens_events.name,
            catalogue.audit_entries.name,
        }

    @property
    def recorded_topics(self) -> tuple[str, ...]:
        """The topics whose records the trail holds."""
        return tuple(self._by_topic)

    def derive(self, record: SourceRecord) -> AuditEntry | Skipped:
        """The entry for one record, or why it has none; never raises for bad input."""
        handler = self._by_topic.get(record.topic)
        if handler is None:
            return Skipped("topic_not_recorded", source_id(record))
        try:
            return handler(record)
        except (InputError, ValueError, KeyError, TypeError) as exc:
            return Skipped(f"undecodable: {type(exc).__name__}", source_id(record))

    def account(self, record: SourceRecord) -> AuditEntry | Skipped:
        """The entry for every record of a recorded topic: its own, or a ``skipped`` one on the ``UNATTRIBUTED``
        chain saying why it has none; Skipped only for a topic the trail does not record."""
        derived = self.derive(record)
        if isinstance(derived, AuditEntry) or derived.reason == "topic_not_recorded":
            return derived
        key = record.key or b""
        noted = {
            "reason": derived.reason,
            "kind": derived.kind or None,
            "record": jsonable(derived.record),
            "key": key[:KEPT_KEY_BYTES].decode("utf-8", errors="replace"),
            "value_bytes": len(record.value),
        }
        return AuditEntry(
            UNATTRIBUTED, SKIPPED_KIND, noted, source_id(record), kafka_time(record), source_digest(record)
        )

    def _entry(
        self, record: SourceRecord, mbl: Any, kind: str, data: Mapping[str, Any], at: Any
    ) -> AuditEntry | Skipped:
        if not isinstance(mbl, str) or not mbl or mbl == UNATTRIBUTED:
            return Skipped("no_mbl", source_id(record), kind, data)
        occurred_at = at if isinstance(at, str) and at else kafka_time(record)
        return AuditEntry(mbl, kind, jsonable(data), source_id(record), occurred_at, source_digest(record))

    def _decode(self, record: SourceRecord, name: str) -> dict[str, Any]:
        return self.schemas.decode(record.value, reader=name).record

    def _booking(self, record: SourceRecord) -> AuditEntry | Skipped:
        """Dated when Kafka received it; the booking system's own ``occurred_at`` stays in the record."""
        data = self._decode(record, "BookingEvent")
        return self._entry(
            record, data["master"]["mbl_number"], "booking", data, kafka_time(record) or data["occurred_at"]
        )

    def _draft(self, record: SourceRecord) -> AuditEntry | Skipped:
        data = self._decode(record, "FilingDraft")
        return self._entry(record, data["mbl"], "draft", data, data.get("created_at"))

    def _filing(self, record: SourceRecord) -> AuditEntry | Skipped:
        """The XML is kept as text beside its hash, so the archive alone shows what was sent."""
        data = dict(self._decode(record, "Filing"))
        xml = bytes(data.pop("xml") or b"")
        try:
            data["xml"] = xml.decode("utf-8")
        except UnicodeDecodeError:
            data["xml_base64"] = base64.b64encode(xml).decode("ascii")
        return self._entry(record, data["mbl"], "filing", data, data.get("created_at"))

    def _ens_event(self, record: SourceRecord) -> AuditEntry | Skipped:
        data = dict(self._decode(record, "EnsEvent"))
        data["payload"] = json.loads(data["payload"])
        kind = ENS_EVENT_KINDS[data["type"]]
        if kind == "tick" and isinstance(data["payload"], dict) and isinstance(data["payload"].get(ACK), dict):
            kind = "ack"
        return self._entry(record, data["mbl"], kind, data, data.get("at"))

    def _alert(self, record: SourceRecord) -> AuditEntry | Skipped:
        data = self._decode(record, "PartyAlert")
        return self._entry(record, data.get("mbl"), "alert", data, data.get("created_at"))

    def _dead_letter(self, record: SourceRecord) -> AuditEntry | Skipped:
        """The MBL is the original key on MBL-keyed topics, else the ``mbl`` field of the original record if any."""
        data = self._decode(record, "DeadLetter")
        key = data.get("original_key")
        mbl: Any = None
        if data.get("source_topic") in self._mbl_keyed and key:
            mbl = bytes(key).decode("utf-8", errors="replace")
        elif data.get("original_value"):
            try:
                mbl = self.schemas.decode(bytes(data["original_value"])).record.get("mbl")
            except InputError:
                mbl = None
        return self._entry(record, mbl, "dead_letter", data, data.get("failed_at"))
