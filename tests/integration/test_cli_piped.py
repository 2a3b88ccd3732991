"""The broker-backed commands as a script runs them: stdout piped, every identifier whole, errors one line.

The worker and the scripted customs simulator run as ``ics2`` subprocesses on the session's broker; the demo's
bookings are published (the seed co-load as each party that files for it, and a second consolidation). Each
command's table output must hold every HBL, LRN, MRN and alert id its own ``--json`` output names, on one line.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from streams.admin import apply_topics, delete_topics, list_topics
from streams.client import publish_bookings
from streams.demo import DEMO_SCRIPT
from streams.errors import ExitCode
from streams.scenarios import SECOND_MBL, SEED_MBL, bookings
from streams.settings import Settings
from streams.topics import Catalogue
from tests.data import seed_json
from tests.integration.services import ICS2, Service, gateway, service_env, worker

SEED_HBLS = {h["hbl_number"] for h in seed_json()["house_bills"]}


@dataclass
class Filed:
    """The running system once every filing of ours of both consolidations has its MRN."""

    settings: Settings
    catalogue: Catalogue
    worker: Service
    env: dict[str, str]
    workdir: Path

    def ics2(self, *args: str, columns: int = 80) -> subprocess.CompletedProcess[str]:
        """``ics2 ARGS`` with stdout piped (not a terminal), COLUMNS as a narrow shell would set it."""
        env = {**self.env, "COLUMNS": str(columns)}
        return subprocess.run(
            [ICS2, *args], env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
        )

    def json(self, *args: str) -> Any:
        done = self.ics2(*args, "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def inbox(self, party: str) -> list[dict[str, Any]]:
        done = self.ics2("inbox", party, "--json")
        assert done.returncode == 0, done.stderr
        return [json.loads(line) for line in done.stdout.splitlines()]


def every_filing_of_ours_registered(service: Service) -> bool:
    for mbl in (SEED_MBL, SECOND_MBL):
        status, state = service.get(f"/ens/{mbl}")
        if status != 200 or not all(f["mrn"] for f in state["filings"] if f["ours"] and f["state"] != "rejected"):
            return False
    return True


def wait_until(check: Any, service: Service, timeout: float, what: str) -> None:
    """Until ``check()`` holds; fails with the worker's log tail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(1.0)
    raise AssertionError(f"{what} not within {timeout:.0f}s:\n{service.tail()}")


@pytest.fixture(scope="module")
async def filed(kafka_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Filed]:
    prefix = f"t{uuid.uuid4().hex[:8]}."
    settings = replace(kafka_settings, topic_prefix=prefix, app_id=f"{prefix}app")
    catalogue = Catalogue.for_prefix(prefix)
    workdir = tmp_path_factory.mktemp("cli-piped")
    books = bookings(datetime.now(UTC))
    parties = sorted({p["id"] for b in books for p in b["parties"] if p["role"] != "shipper"})
    await apply_topics(settings, catalogue, parties)
    script = workdir / "risk.json"
    script.write_text(json.dumps(DEMO_SCRIPT.to_json()))
    customs = gateway(settings, workdir, "--script", str(script), "--poll-interval", "1").start()
    running = worker(settings, workdir).start()
    try:
        await asyncio.to_thread(running.wait_healthy, 90.0)
        await publish_bookings(settings, books)
        await asyncio.to_thread(
            wait_until, lambda: every_filing_of_ours_registered(running), running, 180.0, "every filing's MRN"
        )
        env = {**service_env(settings, workdir / "state"), "ICS2_WEB_PORT": str(running.web_port)}
        yield Filed(settings, catalogue, running, env, workdir)
    finally:
        running.stop()
        customs.stop()
        await delete_topics(settings, await list_topics(settings, prefix), wait=False)


def on_one_line(text: str, *needles: str) -> bool:
    return any(all(n in line for n in needles) for line in text.splitlines())


class TestPipedOutput:
    async def test_status_shows_every_hbl_lrn_and_mrn_whole(self, filed: Filed):
        """``ics2 status MBL | cat``: each filing's HBL, LRN and MRN on its line, its state in words."""
        for mbl in (SEED_MBL, SECOND_MBL):
            state = await asyncio.to_thread(filed.json, "status", mbl)
            table = await asyncio.to_thread(filed.ics2, "status", mbl)
            assert table.returncode == 0, table.stderr
            for f in state["filings"]:
                assert on_one_line(table.stdout, f["filing"], f["hbl"] or "-", f["lrn"] or "", f["mrn"] or ""), f
            assert "registered by customs (MRN) [registered]" in table.stdout
            assert "ours = yes" in table.stdout
        seed = await asyncio.to_thread(filed.json, "status", SEED_MBL)
        assert {f["hbl"] for f in seed["filings"] if f["hbl"]} | {h["hbl"] for h in seed["houses"]} <= SEED_HBLS
        assert {h["hbl"] for h in seed["houses"]} == {f["hbl"] for f in seed["filings"] if f["hbl"]}

    async def test_inbox_table_holds_what_its_json_holds(self, filed: Filed):
        """``ics2 inbox ML-TYO > file``: alert id, MBL, HBL chain and every MRN/LRN/reference whole on its line."""
        alerts = await asyncio.to_thread(filed.inbox, "ML-TYO")
        table = await asyncio.to_thread(filed.ics2, "inbox", "ML-TYO", columns=40)
        assert table.returncode == 0, table.stderr
        assert alerts and len(alerts) == sum(1 for a in alerts if a["alert_id"] in table.stdout)
        mrns = set()
        for a in alerts:
            needles = [a["alert_id"], a["mbl"], *(link["hbl"] for link in a["hbl_chain"])]
            needles += [a[k] for k in ("mrn", "lrn", "referral_reference") if a.get(k)]
            assert on_one_line(table.stdout, *needles), a
            mrns |= {a["mrn"]} if a.get("mrn") else set()
        seed = await asyncio.to_thread(filed.json, "status", SEED_MBL)
        assert {f["mrn"] for f in seed["filings"] if f["ours"] and f["filer"] == "ML-TYO"} <= mrns

    async def test_replay_report_names_every_identifier(self, filed: Filed):
        """``ics2 replay --mbl MBL --json | jq``: the seed's HBLs, LRNs and MRNs are in the piped report."""
        done = await asyncio.to_thread(filed.ics2, "replay", "--mbl", SEED_MBL, "--json")
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert [c["mbl"] for c in report["consolidations"]] == [SEED_MBL]
        seed = await asyncio.to_thread(filed.json, "status", SEED_MBL)
        for f in seed["filings"]:
            for value in (f["hbl"], f["lrn"], f["mrn"]):
                assert value is None or value in done.stdout

    async def test_topics_list_names_every_topic_whole(self, filed: Filed):
        """``ics2 topics list | grep``: each topic of the prefix on its own line, whole; --json the same names."""
        listed = await asyncio.to_thread(filed.json, "topics", "list")
        table = await asyncio.to_thread(filed.ics2, "topics", "list", columns=40)
        assert filed.catalogue.bookings.name in {t["topic"] for t in listed}
        for topic in listed:
            assert on_one_line(table.stdout, topic["topic"])


class TestActing:
    async def test_ack_takes_the_alert_id_alone(self, filed: Filed):
        """``ics2 ack ID`` finds the MBL from the alert itself, and the inbox then shows the alert acknowledged."""
        alerts = await asyncio.to_thread(filed.inbox, "ML-TYO")
        chosen = next(a for a in alerts if a["mbl"] == SEED_MBL and a["urgency"] != "info")
        done = await asyncio.to_thread(filed.ics2, "ack", chosen["alert_id"], "--by", "ops", "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {"alert_id": chosen["alert_id"], "mbl": SEED_MBL, "by": "ops"}

    async def test_unknown_alert_id_is_not_found(self, filed: Filed):
        done = await asyncio.to_thread(filed.ics2, "ack", "ffffffffffffffffffffffff")
        assert done.returncode == ExitCode.NOT_FOUND and done.stderr.count("\n") == 1
        assert "no alert ffffffffffffffffffffffff" in done.stderr

    async def test_unknown_mbl_is_not_found_and_not_a_missing_worker(self, filed: Filed):
        """With the worker up, an MBL it does not hold exits 7, not 5."""
        done = await asyncio.to_thread(filed.ics2, "status", "NOSUCHMBL0000001")
        assert done.returncode == ExitCode.NOT_FOUND and done.stderr.count("\n") == 1, done.stderr


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


def test_demo_on_a_taken_port_is_one_line(kafka_broker: object, taken_port: int, tmp_path: Path):
    """``ics2 demo --port P`` with P taken by another process: one line, exit 6, nothing started."""
    kept = ("ICS2_KAFKA_CACHE",)  # the session's jars: the demo must get as far as the port check
    env = {k: v for k, v in os.environ.items() if not k.startswith("ICS2_") or k in kept}
    env["ICS2_STATE_DIR"] = str(tmp_path / "state")
    done = subprocess.run(
        [ICS2, "demo", "--port", str(taken_port)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == ExitCode.PORT, done.stdout + done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: port") and str(taken_port) in lines[0], done.stderr
    assert "Traceback" not in done.stdout + done.stderr
