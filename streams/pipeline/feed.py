"""The feed behind the operator's views: a reader of the alerts, inbound notifications and dead-letter topics.

The alert feed is kept by a background reader of the alerts topic rather than by the stages that emit alerts: the
booking stage and the lifecycle tracker both emit them, on whatever worker holds the MBL, and reading the topic
gives every worker the whole feed in the order the alerting services see it. The same reader follows the inbound
notifications (for the alert latency) and the dead-letter topic (dead letters by stage and error class). The views
that show it are ``streams.pipeline.web``.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer

from streams.client import keep_reading, stop_consumer
from streams.contracts.avro import SchemaCatalogue
from streams.errors import ICS2StreamsError
from streams.pipeline.engine import Engine
from streams.pipeline.metrics import PipelineMetrics
from streams.settings import Settings

log = structlog.get_logger(__name__)

#: How many recent alerts the feed keeps (and reads back from the topic's end at start).
FEED_LIMIT = 300
#: How many recent inbound notifications per partition are read back at start, for latencies still to come.
INBOUND_LOOKBACK = 500


class AlertFeed:
    """The latest alerts, once each (the alert stream is at-least-once; the alert id is its identity)."""

    def __init__(self, limit: int = FEED_LIMIT) -> None:
        self.limit = limit
        self._alerts: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def add(self, alert: Mapping[str, Any], timestamp_ms: int) -> bool:
        """Keep an alert record (``PartyAlert``); False for a repeat."""
        if alert["alert_id"] in self._alerts:
            return False
        self._alerts[alert["alert_id"]] = {**alert, "received_ms": timestamp_ms}
        while len(self._alerts) > self.limit:
            self._alerts.popitem(last=False)
        return True

    def get(self, alert_id: str) -> dict[str, Any] | None:
        return self._alerts.get(alert_id)

    def latest(self) -> list[dict[str, Any]]:
        """Newest first."""
        return list(reversed(self._alerts.values()))


class TopicObserver:
    """Follows the alerts, inbound notifications and dead letters of the deployment, without a consumer group."""

    def __init__(self, settings: Settings, schemas: SchemaCatalogue, feed: AlertFeed, metrics: PipelineMetrics):
        from streams.topics import Catalogue

        catalogue = Catalogue.for_prefix(settings.topic_prefix)
        self.settings = settings
        self.schemas = schemas
        self.feed = feed
        self.metrics = metrics
        self.alerts_topic = catalogue.alerts.name
        self.inbound_topic = catalogue.notifications_inbound.name
        self.dead_letters_topic = catalogue.dead_letters.name

    async def run(self) -> None:
        """Read until cancelled; a broker hiccup restarts the reader rather than ending the feed."""
        await keep_reading(self._read, "topic_observer_restarting")

    async def _read(self) -> None:
        topics = (self.alerts_topic, self.inbound_topic, self.dead_letters_topic)
        consumer = AIOKafkaConsumer(
            *topics,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **self.settings.kafka_client_kwargs(),
        )
        await consumer.start()
        try:
            while not consumer.assignment():
                await asyncio.sleep(0.1)
            await self._seek_recent(consumer)
            while True:
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    for record in records:
                        self._observe(record)
        finally:
            await stop_consumer(consumer)

    async def _seek_recent(self, consumer: AIOKafkaConsumer) -> None:
        """Alerts and arrivals from near the end (the feed is bounded); dead letters from the start (counted)."""
        recent = [tp for tp in consumer.assignment() if tp.topic != self.dead_letters_topic]
        if not recent:
            return
        starts = await consumer.beginning_offsets(recent)
        ends = await consumer.end_offsets(recent)
        for tp in recent:
            back = FEED_LIMIT if tp.topic == self.alerts_topic else INBOUND_LOOKBACK
            consumer.seek(tp, max(starts[tp], ends[tp] - back))

    def _observe(self, record: Any) -> None:
        seconds = record.timestamp / 1000
        if record.topic == self.inbound_topic:
            latency = self.metrics.latency.arrived(hashlib.sha256(record.value or b"").hexdigest(), seconds)
        elif record.topic == self.alerts_topic:
            try:
                alert = self.schemas.decode(record.value, reader="PartyAlert").record
            except ICS2StreamsError as exc:
                log.warning("alert_unreadable", offset=record.offset, error=str(exc))
                return
            self.feed.add(alert, record.timestamp)
            headers = dict(record.headers or ())
            notification_id = headers.get("ics2-notification-id")
            latency = (
                None if notification_id is None else self.metrics.latency.alerted(notification_id.decode(), seconds)
            )
        else:
            try:
                dead = self.schemas.decode(record.value, reader="DeadLetter").record
            except ICS2StreamsError:
                self.metrics.dead_lettered("unreadable/unknown", "unknown")
                return
            self.metrics.dead_lettered(dead["stage"], dead["error_class"])
            return
        if latency is not None:
            self.metrics.alert_latency.observe(latency)


async def refresh_lag(engine: Engine, metrics: PipelineMetrics) -> None:
    """Highwater minus position for every partition the engine's stages hold, read at scrape time."""
    metrics.lag = await engine.lag()
