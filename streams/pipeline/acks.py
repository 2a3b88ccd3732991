"""Acknowledgements of alerts published on ``ens-events``, shared by the dashboard and ``ics2 ack``.

How an ack is carried (a ``tick`` with an ``ack`` payload) is the contract's: ``streams.contracts.events``.
"""

from __future__ import annotations

from datetime import datetime

from streams.contracts.events import ack_record
from streams.settings import Settings


async def publish_ack(settings: Settings, mbl: str, alert_id: str, by: str, at: datetime) -> None:
    """Publish the ack keyed by MBL, so it lands on the partition, and the worker, that holds the MBL's state."""
    from streams.client import produce
    from streams.contracts.avro import SchemaCatalogue
    from streams.topics import Catalogue

    value = SchemaCatalogue.load().encode("EnsEvent", ack_record(mbl, alert_id, by, at))
    topic = Catalogue.for_prefix(settings.topic_prefix).ens_events.name
    await produce(settings, topic, [(mbl.encode(), value)], headers=[("ics2-record", b"EnsEvent")])
