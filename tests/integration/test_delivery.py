"""An alert for a party without a queue is kept and delivered once, in order, when the queue appears (real broker).

Before, the worker logged ``party_not_onboarded`` and dropped the record: after onboarding the party's inbox was
empty. Here no party has a queue when the seed is booked; ``ics2 book`` warns at once; the worker keeps the alerts;
``ics2 topics apply --party`` creates the queue of the party with the most alerts, and every alert the alerts topic
holds for it arrives on it, in the alerts topic's order, each once.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from dataclasses import replace
from pathlib import Path

from streams.admin import apply_topics, delete_topics, list_topics
from streams.client import read_topic
from streams.contracts.avro import SchemaCatalogue
from streams.scenarios import seed_booking
from streams.settings import Settings
from streams.topics import Catalogue
from tests.integration.services import ICS2, gateway, service_env, worker

SCHEMAS = SchemaCatalogue.load()


def alert_ids(records: list) -> list[str]:
    return [SCHEMAS.decode(r.value, reader="PartyAlert").record["alert_id"] for r in records]


async def settled_alerts(settings: Settings, catalogue: Catalogue) -> list:
    """The alerts topic once it has stopped growing for a few seconds."""
    seen = -1
    records: list = []
    while len(records) != seen:
        seen = len(records)
        await asyncio.sleep(4)
        records = await read_topic(settings, catalogue.alerts.name, timeout=15)
    return records


async def test_alerts_for_a_party_onboarded_late_are_delivered_once_in_order(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}."
    settings = replace(kafka_settings, topic_prefix=prefix, app_id=f"{prefix}app")
    catalogue = Catalogue.for_prefix(prefix)
    await apply_topics(settings, catalogue)  # no party has a queue yet
    env = service_env(settings, tmp_path / "state")
    running = worker(settings, tmp_path).start()
    customs = gateway(settings, tmp_path).start()
    try:
        await asyncio.to_thread(running.wait_healthy)
        booking = tmp_path / "seed.json"
        booking.write_text(json.dumps(seed_booking()))
        booked = subprocess.run([ICS2, "book", str(booking)], env=env, capture_output=True, text=True, timeout=60)
        assert booked.returncode == 0, booked.stderr
        await read_topic(settings, catalogue.alerts.name, until=lambda rs: len(rs) >= 4, timeout=120)
        alerts = await settled_alerts(settings, catalogue)
        parties = sorted({r.key.decode() for r in alerts}, key=lambda p: -sum(r.key == p.encode() for r in alerts))
        assert parties, "the seed alerts its planner at least"
        late = parties[0]
        assert f"warning: {late} has no queue yet" in booked.stderr
        assert "party_queue_missing_alert_kept" in running.log_path.read_text()
        kept = [r for r in alerts if r.key == late.encode()]

        applied = subprocess.run(
            [ICS2, "topics", "apply", "--party", late], env=env, capture_output=True, text=True, timeout=90
        )
        assert applied.returncode == 0, applied.stderr
        queue = catalogue.party_queue(late).name
        await read_topic(settings, queue, until=lambda rs: len(rs) >= len(kept), timeout=60)
        await asyncio.sleep(6)
        delivered = await read_topic(settings, queue, timeout=15)
        expected = alert_ids(
            [r for r in await read_topic(settings, catalogue.alerts.name, timeout=15) if r.key == late.encode()]
        )
        assert alert_ids(delivered) == expected, "every alert of the party, in the alerts topic's order, each once"
        running.check_running("after the delivery")
    finally:
        customs.stop()
        running.stop()
        await delete_topics(settings, await list_topics(settings, prefix), wait=False)
