"""A booking change on the real broker: worker and customs simulator (gateway) as subprocesses.

The seed is booked and registered, the other parties file their own parts (carrier F12, co-loaders' F14/F16);
then version 2 changes a gross mass (amended by MRN), moves CHY26YOK0501 from F14 + F16 to F15 (our F14 invalidated,
the F15 filed, COLOADER-C told to withdraw its F16, which it does) and drops SKC26TYO0003 (invalidated). Customs,
consulted as the carrier, holds every filing registered, amended or invalidated, every house consignment complete,
and nothing was rejected; each party's queue says what happened, and the audit replay shows it.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from streams.audit.reading import read_trail
from streams.audit.replay import build_report
from streams.client import produce, publish_bookings, read_topic
from streams.contracts.avro import SchemaCatalogue
from streams.contracts.records import sha256
from streams.domain.model import Consolidation
from streams.domain.planning import FilingDraft, FilingType, PlannedFiling
from streams.gateway.consult import consult
from streams.messages.parse import parse_notification
from streams.messages.render import render_filing
from streams.messages.render_requests import Invalidation, render_invalidation
from streams.scenarios import seed_booking
from streams.settings import Settings
from streams.topics import Catalogue
from tests.data import SEED_PARTIES
from tests.integration.services import ICS2, Service, gateway, service_env, worker
from tests.unit.test_changes_pipeline import AMENDED_HBL, MOVED_HBL, REMOVED_HBL, version_2

SCHEMAS = SchemaCatalogue.load()
MBL = "OCLU26TYO7781234"
CARRIER_EORI, COLOADER_C_EORI = "NL860123456", "BE0455123987"
#: What the other parties file themselves: (filing, HBL, filer, supplementary declarant, LRN).
THEIRS = (
    (FilingType.F12, None, "CARRIER-A", None, "CARRIER-F12-1"),
    (FilingType.F16, "AOB26OSA1001", "COLOADER-A", None, "CLA-F16-1"),
    (FilingType.F14, "DAI26NGO0077", "COLOADER-A", "COLOADER-D", "CLA-F14-1"),
    (FilingType.F16, "DAI26NGO0077", "COLOADER-D", None, "CLD-F16-1"),
    (FilingType.F16, MOVED_HBL, "COLOADER-C", None, "CLC-F16-1"),
)
TIMEOUT = 240.0


def filing_record(message_type: str, lrn: str, hbl: str | None, filer: str, eori: str, xml: bytes) -> dict[str, Any]:
    """A ``Filing`` as another party's own system would hand it to customs (here: through the same gateway)."""
    return {
        "message_id": f"{lrn}-{sha256(xml)[:12]}", "message_type": message_type, "lrn": lrn, "mbl": MBL, "hbl": hbl,
        "filer_party_id": filer, "filer_eori": eori, "supplementary_declarant": None,
        "supplementary_declarant_eori": None, "booking_version": 1, "xml_sha256": sha256(xml), "xml": xml,
        "created_at": "2026-11-20T09:00:00Z",
    }  # fmt: skip


async def file_theirs(settings: Settings, catalogue: Catalogue, booking: dict) -> None:
    consolidation = Consolidation.from_json(booking)
    records = []
    for filing, hbl, filer, declarant, lrn in THEIRS:
        planned = PlannedFiling(filing, hbl, filer, supplementary_declarant=declarant)
        xml = render_filing(FilingDraft(consolidation, planned, lrn, consolidation.occurred_at))
        eori = consolidation.parties[filer].eori or ""
        records.append(filing_record(filing.message_type, lrn, hbl, filer, eori, xml))
    await send(settings, catalogue, records)


async def send(settings: Settings, catalogue: Catalogue, records: list[dict[str, Any]]) -> None:
    values = [(MBL.encode(), SCHEMAS.encode("Filing", r)) for r in records]
    await produce(settings, catalogue.filings_outbound.name, values, headers=[("ics2-record", b"Filing")])


async def ens_until(service: Service, what: str, ok: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    deadline = time.monotonic() + TIMEOUT
    state: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status, state = await asyncio.to_thread(service.get, f"/ens/{MBL}")
        if status == 200 and ok(state):
            return state
        await asyncio.sleep(1.0)
    raise AssertionError(f"{what} never reached; last state {json.dumps(state.get('filings'))}\n{service.tail()}")


def states(ens: dict[str, Any]) -> dict[tuple[str, str | None, str], str]:
    return {(f["filing"], f["hbl"], f["filer"]): f["state"] for f in ens["filings"]}


def inbound(records: list[Any]) -> list[tuple[str, Any]]:
    """(addressee EORI, parsed notification) of every customs message on the inbound topic."""
    return [((r.key or b"").decode(), parse_notification(r.value)) for r in records]


async def test_booking_change_amends_invalidates_and_refiles(
    kafka_settings: Settings, catalogue: Catalogue, tmp_path: Path
) -> None:
    settings = replace(kafka_settings, topic_prefix=catalogue.prefix, app_id=f"{catalogue.prefix}app")
    from streams.admin import apply_topics

    await apply_topics(settings, catalogue, SEED_PARTIES)
    customs = gateway(settings, tmp_path, "--poll-interval", "1").start()
    live = worker(settings, tmp_path).start()
    try:
        await asyncio.to_thread(live.wait_healthy)
        v1 = seed_booking()
        await publish_bookings(settings, [v1])
        await file_theirs(settings, catalogue, v1)
        ours_registered = lambda s: all(f["state"] == "registered" for f in s["filings"] if f["ours"])  # noqa: E731
        await ens_until(live, "version 1 registered", lambda s: len(s["filings"]) > 4 and ours_registered(s))

        v2 = version_2(v1)
        v2["event_id"], v2["occurred_at"] = str(uuid.uuid4()), "2026-11-21T09:00:00Z"
        await publish_bookings(settings, [v2])
        expected = {
            ("F15", AMENDED_HBL, "ML-TYO"): "amended",
            ("F14", MOVED_HBL, "ML-TYO"): "invalidated",
            ("F15", MOVED_HBL, "ML-TYO"): "registered",
            ("F16", MOVED_HBL, "COLOADER-C"): "withdrawn",
            ("F15", REMOVED_HBL, "ML-TYO"): "invalidated",
        }
        ens = await ens_until(
            live, "version 2 settled", lambda s: all(states(s).get(k) == v for k, v in expected.items())
        )
        assert {s for (_, _, filer), s in states(ens).items() if filer == "ML-TYO"} <= {
            "registered",
            "amended",
            "invalidated",
        }

        # COLOADER-C reads its queue and withdraws the F16 the plan no longer needs.
        queue_c = await read_topic(settings, catalogue.party_queue("COLOADER-C").name, timeout=30)
        alerts_c = [SCHEMAS.decode(r.value, reader="PartyAlert").record for r in queue_c]
        assert [a["hbl"] for a in alerts_c if a["title"].startswith("Withdraw your F16")] == [MOVED_HBL]
        notes = inbound(await read_topic(settings, catalogue.notifications_inbound.name, timeout=30))
        f16_mrn = next(n.mrn for eori, n in notes if eori == COLOADER_C_EORI and n.lrn == "CLC-F16-1")
        request = Invalidation("Q04CLC-F16-1", f16_mrn, COLOADER_C_EORI, datetime.now(UTC).replace(microsecond=0), "x")
        xml = render_invalidation(request)
        await send(
            settings,
            catalogue,
            [filing_record("IE3Q04", "Q04CLC-F16-1", MOVED_HBL, "COLOADER-C", COLOADER_C_EORI, xml)],
        )

        answer = await consult(settings, MBL, CARRIER_EORI, datetime.now(UTC).replace(microsecond=0), timeout=TIMEOUT)
        assert answer is not None, f"no IE3R08:\n{customs.tail()}"
        held = [(f.filing, f.hbl, f.status) for f in answer.filings]
        assert {status for _, _, status in held} <= {"registered", "amended", "invalidated"}
        live_houses: dict[str, set[str]] = {}
        for filing, hbl, status in held:
            if hbl and status != "invalidated":
                live_houses.setdefault(hbl, set()).add(filing)
        assert live_houses.pop(REMOVED_HBL, None) is None, "the dropped HBL is gone"
        assert all(f == {"F15"} or f == {"F14", "F16"} for f in live_houses.values()), f"ENS incomplete: {live_houses}"
        assert live_houses[MOVED_HBL] == {"F15"}
        assert ("F16", MOVED_HBL, "invalidated") in held
        assert ("F15", AMENDED_HBL, "amended") in held

        command = [ICS2, "consult", MBL, "--eori", CARRIER_EORI, "--json", "--timeout", str(TIMEOUT)]
        env = service_env(settings, tmp_path / "state")
        done = await asyncio.to_thread(subprocess.run, command, env=env, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
        printed = json.loads(done.stdout)["filings"]
        assert sorted((f["mrn"], f["status"]) for f in printed) == sorted((f.mrn, f.status) for f in answer.filings)

        notes = inbound(await read_topic(settings, catalogue.notifications_inbound.name, timeout=30))
        assert not [n for _, n in notes if n.message_type in ("IE3N01", "IE3N99")], "customs rejected nothing"

        queue = await read_topic(settings, catalogue.party_queue("ML-TYO").name, timeout=30)
        titles = [SCHEMAS.decode(r.value, reader="PartyAlert").record["title"] for r in queue]
        for wanted in (
            f"F15 for {AMENDED_HBL}: amend requested",
            f"F14 for {MOVED_HBL}: replace requested",
            f"F15 for {REMOVED_HBL}: invalidate requested",
        ):
            assert any(t.startswith(wanted) for t in titles), f"{wanted!r} not in ML-TYO's queue: {titles}"

        deadline = time.monotonic() + TIMEOUT
        timeline: list[str] = []
        while time.monotonic() < deadline:
            report = build_report((await read_trail(settings)).records)
            ours = next((c for c in report["consolidations"] if c["mbl"] == MBL), None)
            timeline = [i["title"] for i in ours["timeline"]] if ours else []
            if any(t.startswith("IE3R07") for t in timeline) and any(t.startswith("IE3N10") for t in timeline):
                break
            await asyncio.sleep(2)
        for wanted in (
            f"amend of F15 for {AMENDED_HBL}",
            f"replace of F14 for {MOVED_HBL}",
            f"invalidate of F15 for {REMOVED_HBL}",
            f"IE3A15 for {AMENDED_HBL} sent",
            f"IE3Q04 for {MOVED_HBL} sent",
            f"IE3F15 for {MOVED_HBL} sent",
            f"IE3N10 (amendment_accepted) for {AMENDED_HBL}",
        ):
            assert any(t.startswith(wanted) for t in timeline), f"{wanted!r} not in the audit replay"
    finally:
        live.stop()
        customs.stop()


async def test_changes_customs_never_answers_expire_to_dead_letters_and_alerts(
    kafka_settings: Settings, catalogue: Catalogue, tmp_path: Path
) -> None:
    """No gateway: customs answers nothing. Version 2's requests wait ``ICS2_CHANGE_WAIT_S`` for an MRN, then each
    goes to the dead-letter topic under its own source (count in = count out + dead letters) and ML-TYO is told."""
    settings = replace(kafka_settings, topic_prefix=catalogue.prefix, app_id=f"{catalogue.prefix}app")
    from streams.admin import apply_topics

    await apply_topics(settings, catalogue, SEED_PARTIES)
    live = worker(settings, tmp_path, ICS2_CHANGE_WAIT_S="3", ICS2_WATCHDOG_INTERVAL_S="1").start()
    try:
        await asyncio.to_thread(live.wait_healthy)
        v1 = seed_booking()
        await publish_bookings(settings, [v1])
        v2 = version_2(v1)
        v2["event_id"], v2["occurred_at"] = str(uuid.uuid4()), "2026-11-21T09:00:00Z"
        await publish_bookings(settings, [v2])

        def requests(records: list[Any]) -> set[tuple[int, int]]:
            return {
                (r.partition, r.offset)
                for r in records
                if r.header("ics2-record") == b"FilingChange" and r.header("ics2-expiry") is None
            }

        parsed = await read_topic(
            settings, catalogue.notifications_parsed.name, until=lambda rs: len(requests(rs)) >= 3, timeout=TIMEOUT
        )
        asked = requests(parsed)
        assert len(asked) == 3, "amend, replace and invalidate"

        def expired(records: list[Any]) -> list[Any]:
            letters = [SCHEMAS.decode(r.value, reader="DeadLetter").record for r in records]
            return [d for d in letters if d["stage"] == "correlate/expire"]

        letters = expired(
            await read_topic(
                settings, catalogue.dead_letters.name, until=lambda rs: len(expired(rs)) >= 3, timeout=TIMEOUT
            )
        )
        topic = catalogue.notifications_parsed.name
        assert {(d["source_topic"], d["source_partition"], d["source_offset"]) for d in letters} == {
            (topic, p, o) for p, o in asked
        }
        assert {SCHEMAS.decode(d["original_value"], reader="FilingChange").record["kind"] for d in letters} == {
            "amend",
            "replace",
            "invalidate",
        }

        def told(records: list[Any]) -> list[dict[str, Any]]:
            alerts = [SCHEMAS.decode(r.value, reader="PartyAlert").record for r in records]
            return [a for a in alerts if "customs never answered" in a["title"]]

        queue = await read_topic(
            settings, catalogue.party_queue("ML-TYO").name, until=lambda rs: len(told(rs)) >= 3, timeout=TIMEOUT
        )
        assert {a["hbl"] for a in told(queue)} == {AMENDED_HBL, MOVED_HBL, REMOVED_HBL}
    finally:
        live.stop()
