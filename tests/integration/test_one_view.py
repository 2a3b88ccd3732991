"""One view across workers: two ``ics2 worker`` processes in one group each answer for every consolidation.

Each worker processes the MBLs of its own partitions; the dashboard's ``/api/consolidations`` and ``GET /ens/<mbl>``
of either must still know all of them (``streams.pipeline.ens_view``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import urllib.error
import urllib.request
from dataclasses import replace

import pytest
from aiokafka.partitioner import DefaultPartitioner

from streams.admin import apply_topics
from streams.client import publish_bookings
from streams.pipeline.ens_view import CHANGELOG, SOURCE_HEADER, TABLE
from streams.security.operators import OperatorStore
from tests.data import SEED_PARTIES
from tests.integration.services import Service, worker
from tests.integration.test_end_to_end import distinct_bookings

OPERATOR, PASSWORD = "ops-two-workers", "two-workers-secret"
COUNT = 12

#: Two workers starting and rebalancing on a loaded two-core machine.
pytestmark = pytest.mark.timeout(600)


def get(service: Service, path: str) -> tuple[int, dict]:
    """A view of one worker as a logged-in operator's script reads it."""
    status, body, _ = get_with_source(service, path)
    return status, body


def get_with_source(service: Service, path: str) -> tuple[int, dict, str | None]:
    """Status, JSON body and the ``X-ICS2-ENS-Source`` header of a view."""
    auth = base64.b64encode(f"{OPERATOR}:{PASSWORD}".encode()).decode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{service.web_port}{path}", headers={"Authorization": f"Basic {auth}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read()), response.headers.get(SOURCE_HEADER)
    except urllib.error.HTTPError as exc:
        return exc.code, {}, None


def until(check, what: str, services: list[Service]) -> object:
    """Until ``check()`` is truthy; fails at once when a worker has died (the module's timeout is the one limit)."""
    while True:
        result = check()
        if result:
            return result
        for service in services:
            service.check_running(what)
        time.sleep(0.5)


class TestOneView:
    async def test_each_of_two_workers_answers_for_every_consolidation(self, kafka_settings, catalogue, tmp_path):
        settings = replace(kafka_settings, topic_prefix=catalogue.prefix, app_id=f"{catalogue.prefix}app")
        await apply_topics(settings, catalogue, SEED_PARTIES)
        accounts = OperatorStore.new()
        accounts.add(OPERATOR, PASSWORD)
        accounts.save(tmp_path / "state" / "operators.json")
        first = worker(settings, tmp_path)
        second = worker(settings, tmp_path)
        second.log_path = tmp_path / "worker-2.log"
        workers = [first, second]
        books = distinct_bookings(COUNT, "OCLU26VIEW")
        mbls = sorted(b["master"]["mbl_number"] for b in books)
        partitions = settings.default_partitions
        where = {
            mbl: DefaultPartitioner()(mbl.encode(), list(range(partitions)), list(range(partitions))) for mbl in mbls
        }
        try:
            for service in workers:
                service.start()
            for service in workers:
                await asyncio.to_thread(service.wait_healthy, 120.0)

            def split() -> object:
                """Both workers hold ENS partitions, none twice, all of them between the two."""
                held = [get(s, "/api/worker")[1].get("ens_partitions") or [] for s in workers]
                mine, theirs = set(held[0]), set(held[1])
                return mine and theirs and not mine & theirs and len(mine | theirs) == partitions and held

            held = await asyncio.to_thread(until, split, "the group's partitions split between both workers", workers)
            assert {where[m] for m in mbls} - set(held[0]) and {where[m] for m in mbls} - set(held[1]), (
                "some MBLs are processed by each worker, so each must answer for the other's"
            )
            await publish_bookings(settings, books)

            def everything_everywhere() -> object:
                listed = [
                    sorted(c["mbl"] for c in get(s, "/api/consolidations")[1].get("consolidations", []))
                    for s in workers
                ]
                return all(found == mbls for found in listed)

            await asyncio.to_thread(until, everything_everywhere, "every consolidation on both dashboards", workers)
            for service, own in zip(workers, held, strict=True):
                sources = {}
                for mbl in mbls:
                    status, state, sources[mbl] = get_with_source(service, f"/ens/{mbl}")
                    assert status == 200 and state["mbl"] == mbl, f"{service.name} :{service.web_port} on {mbl}"
                    assert state["filings"], "the planned filings are in the state"
                others = {m for m in mbls if where[m] not in own}
                assert others, "this worker answered for MBLs it does not process"
                assert {m for m, source in sources.items() if source == CHANGELOG} == others
                assert {m for m, source in sources.items() if source == TABLE} == set(mbls) - others
        finally:
            for service in workers:
                service.stop()
