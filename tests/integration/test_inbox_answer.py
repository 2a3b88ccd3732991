"""A party reads its inbox and answers customs' RFI from the terminal, on the real broker with the real processes.

The worker and the customs simulator run as ``ics2`` subprocesses; the simulator is scripted to send an RFI on
SHIPPER-4's HBL, which ML-TYO filed (F15). ``ics2 inbox`` and ``ics2 answer`` run as a user would run them.
"""

from __future__ import annotations

import asyncio
import json
import queue
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from streams.admin import apply_topics, delete_topics, list_topics
from streams.client import publish_bookings, read_topic
from streams.contracts.avro import SchemaCatalogue
from streams.domain.dates import parse_datetime
from streams.scenarios import SEED_MBL, as_party, seed_booking
from streams.settings import Settings
from streams.simulator import Outcome, RiskRule, RiskScript
from streams.topics import Catalogue
from tests.data import SEED_PARTIES
from tests.integration.services import ICS2, Service, gateway, service_env, worker

SCHEMAS = SchemaCatalogue.load()
RFI_HBL = "SKC26TYO0003"
NS = {"i": "urn:wco:datamodel:eu:ics2:2"}


@dataclass
class Referred:
    """The running system after customs' RFI reached ML-TYO's inbox."""

    settings: Settings
    catalogue: Catalogue
    worker: Service
    env: dict[str, str]
    workdir: Path
    rfi: dict[str, Any]

    def ics2(self, *args: str, timeout: float = 90.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run([ICS2, *args], env=self.env, capture_output=True, text=True, timeout=timeout)

    def inbox(self, party: str, *args: str) -> list[dict[str, Any]]:
        done = self.ics2("inbox", party, "--json", *args)
        assert done.returncode == 0, done.stderr
        return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]

    def wait_inbox(self, party: str, found: Any) -> dict[str, Any]:
        """Runs ``ics2 inbox PARTY --json`` until an alert satisfies ``found``: a condition, not a clock (the test's
        timeout is the one limit); fails at once with the worker's log if the worker is gone."""
        while True:
            match = next((a for a in self.inbox(party) if found(a)), None)
            if match is not None:
                return match
            self.worker.check_running(f"no such alert in the inbox of {party}")
            time.sleep(1.0)


@pytest.fixture(scope="module")
async def referred(kafka_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Referred]:
    """Worker and scripted simulator running, the seed booked by ML-TYO and the carrier, the RFI in ML-TYO's inbox."""
    prefix = f"t{uuid.uuid4().hex[:8]}."
    settings = replace(kafka_settings, topic_prefix=prefix, app_id=f"{prefix}app")
    catalogue = Catalogue.for_prefix(prefix)
    workdir = tmp_path_factory.mktemp("inbox-answer")
    await apply_topics(settings, catalogue, SEED_PARTIES)
    script = workdir / "risk.json"
    script.write_text(json.dumps(RiskScript(rules=(RiskRule(Outcome.RFI, hbl=RFI_HBL),)).to_json()))
    customs = gateway(settings, workdir, "--script", str(script), "--poll-interval", "1").start()
    running = worker(settings, workdir).start()
    try:
        await asyncio.to_thread(running.wait_healthy, 90.0)
        seed = seed_booking()
        await publish_bookings(settings, [seed, as_party(seed, "CARRIER-A")])
        env = {**service_env(settings, workdir / "state"), "COLUMNS": "200"}
        context = Referred(settings, catalogue, running, env, workdir, {})
        context.rfi = await asyncio.to_thread(
            context.wait_inbox, "ML-TYO", lambda a: a["notification_message_type"] == "IE3Q02"
        )
        yield context
    finally:
        running.stop()
        customs.stop()
        await delete_topics(settings, await list_topics(settings, prefix), wait=False)


def ens_house(service: Service, hbl: str) -> dict[str, Any] | None:
    status, state = service.get(f"/ens/{SEED_MBL}")
    if status != 200:
        return None
    return next((h for h in state["houses"] if h["hbl"] == hbl), None)


class TestInbox:
    async def test_rfi_reaches_the_filer_with_reference_and_deadline(self, referred: Referred):
        """ML-TYO's inbox holds the RFI on SHIPPER-4's HBL, high, with its reference and a deadline ahead: the
        configured 48 h, since a real IE3Q02 gives none, and the alert says so."""
        rfi = referred.rfi
        assert (rfi["party_id"], rfi["hbl"], rfi["urgency"], rfi["action"]) == ("ML-TYO", RFI_HBL, "high", "answer_rfi")
        assert rfi["referral_reference"]
        assert parse_datetime(rfi["deadline"]) > datetime.now(UTC)
        assert "no deadline given: 48 h assumed" in rfi["message"]

    async def test_inbox_is_newest_first_without_repeats(self, referred: Referred):
        """The JSON inbox lists each alert once, newest first."""
        alerts = await asyncio.to_thread(referred.inbox, "ML-TYO")
        ids = [a["alert_id"] for a in alerts]
        assert len(ids) == len(set(ids)) >= 2
        stamps = [a["created_at"] for a in alerts]
        assert stamps == sorted(stamps, reverse=True)

    async def test_table_shows_the_rfi_with_its_relative_deadline(self, referred: Referred):
        """The terminal table of high alerts names the RFI and when it is due."""
        done = await asyncio.to_thread(referred.ics2, "inbox", "ML-TYO", "--urgency", "high")
        assert done.returncode == 0, done.stderr
        assert "Request for information" in done.stdout and "in 47 h" in done.stdout

    async def test_follow_prints_new_alerts_until_interrupted(self, referred: Referred):
        """--json --follow prints an alert raised after it started, and Ctrl-C ends it cleanly.

        Waits for conditions, not for a clock: for the follower's line about the alert (or its end), then for its
        exit after Ctrl-C; a loaded machine only makes it slower. Its stderr goes to a file, so a chatty follower
        cannot block on a full pipe that nobody reads.
        """
        errors = referred.workdir / "follow.stderr"
        with errors.open("w") as stderr:
            follower = subprocess.Popen(
                [ICS2, "inbox", "COLOADER-C", "--json", "--follow"],
                env=referred.env,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        lines: queue.Queue[str | None] = queue.Queue()

        def pump() -> None:
            for line in follower.stdout or ():
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        try:
            file = referred.workdir / "early.json"
            file.write_text(json.dumps({"texts": [{"text": "answer before the request"}]}))
            args = ("answer", "rfi", "RFI00NOSUCHREF", "--file", str(file), "--party", "COLOADER-C")
            done = await asyncio.to_thread(referred.ics2, *args)
            assert done.returncode == 0, done.stderr
            waiting = None
            while waiting is None:
                line = await asyncio.to_thread(lines.get)
                assert line is not None, f"the follower ended: {errors.read_text()}\n{referred.worker.tail()}"
                alert = json.loads(line)
                waiting = alert if alert["referral_reference"] == "RFI00NOSUCHREF" else None
            assert "waits" in waiting["title"], referred.worker.tail()
        finally:
            follower.send_signal(signal.SIGINT)
            code = await asyncio.to_thread(follower.wait)
        assert code == 0, errors.read_text()

    async def test_unknown_party_is_an_error(self, referred: Referred):
        """A party that was never onboarded has no queue: exit code 7 (not found) and a hint."""
        done = await asyncio.to_thread(referred.ics2, "inbox", "NOBODY")
        assert done.returncode == 7 and "onboarded" in done.stderr


class TestAnswer:
    async def test_answer_by_another_party_is_refused_and_explained(self, referred: Referred):
        """COLOADER-A may not answer ML-TYO's RFI: a dead letter, and the reason in COLOADER-A's inbox."""
        reference = referred.rfi["referral_reference"]
        file = referred.workdir / "wrong.json"
        file.write_text(json.dumps({"texts": [{"text": "not ours to answer"}]}))
        done = await asyncio.to_thread(
            referred.ics2, "answer", "rfi", reference, "--file", str(file), "--party", "COLOADER-A"
        )
        assert done.returncode == 0, done.stderr
        refusal = await asyncio.to_thread(
            referred.wait_inbox, "COLOADER-A", lambda a: a["referral_reference"] == reference and a["urgency"] == "high"
        )
        assert "only ML-TYO" in refusal["message"]
        records = await read_topic(
            referred.settings,
            referred.catalogue.dead_letters.name,
            until=lambda rs: any(b"answer refused" in r.value for r in rs),
            timeout=60,
        )
        reasons = [SCHEMAS.decode(r.value, reader="DeadLetter").record["reason"] for r in records]
        assert any("only ML-TYO" in reason for reason in reasons)

    async def test_answer_goes_out_as_ie3r02_and_customs_clears_the_referral(self, referred: Referred):
        """ics2 answer rfi: IE3R02 on the outbound topic quoting the referral, then the HBL is assessed."""
        reference = referred.rfi["referral_reference"]
        house = ens_house(referred.worker, RFI_HBL)
        assert house is not None and reference in house["open_referrals"]
        file = referred.workdir / "answer.json"
        file.write_text(json.dumps({"texts": [{"text": "Office laptops; invoice INV-4711 attached"}]}))
        args = ("answer", "rfi", reference, "--file", str(file), "--party", "ML-TYO", "--mbl", SEED_MBL)
        done = await asyncio.to_thread(referred.ics2, *args)
        assert done.returncode == 0, done.stderr

        def answered(records: list) -> bool:
            return any(r.header("ics2-message-type") == b"IE3R02" for r in records)

        outbound = await read_topic(
            referred.settings, referred.catalogue.filings_outbound.name, until=answered, timeout=90
        )
        sent = [SCHEMAS.decode(r.value, reader="Filing").record for r in outbound]
        (answer,) = [f for f in sent if f["message_type"] == "IE3R02"]
        root = etree.fromstring(answer["xml"])
        assert root.xpath("//i:referralRequestReference/text()", namespaces=NS) == [reference]
        assert (answer["hbl"], answer["filer_party_id"]) == (RFI_HBL, "ML-TYO")

        house = ens_house(referred.worker, RFI_HBL)
        while house is None or house["state"] != "assessed":
            referred.worker.check_running(f"{RFI_HBL} is {house and house['state']}, not assessed")
            await asyncio.sleep(1.0)
            house = ens_house(referred.worker, RFI_HBL)
        assert house["open_referrals"] == {}
        sent_alert = await asyncio.to_thread(
            referred.wait_inbox, "ML-TYO", lambda a: a["notification_message_type"] == "IE3R02"
        )
        assert sent_alert["referral_reference"] == reference and sent_alert["urgency"] == "info"
