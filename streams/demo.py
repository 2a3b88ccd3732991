"""``make demo``: the whole story on the local broker in about a minute.

Two consolidations are booked by every party that files for them (each forwarder runs ics2-streams for its own
filings); the customs simulator answers. Consolidation 1 is the seed co-load: COLOADER-C never files its F16
(customs chases it), COLOADER-D's HBL gets a Do Not Load, SHIPPER-4's an RFI. Consolidation 2 loads in 30 hours:
customs rejects one filing, and its carrier has not filed the F12, so the deadline watchdog escalates.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console

from streams.admin import apply_topics, delete_topics, list_topics
from streams.audit.reading import report_when_caught_up
from streams.broker import LocalBroker, free_tcp_port
from streams.broker.manager import parse_bootstrap
from streams.client import publish_bookings, read_topic
from streams.contracts.avro import SchemaCatalogue
from streams.domain.labels import HOUSE_STATE_LABELS, MESSAGE_LABELS
from streams.errors import ICS2StreamsError, WorkerUnavailable
from streams.inbox import URGENCY_STYLES, newest_first
from streams.inbox import table as inbox_table
from streams.scenarios import SECOND_MBL, SEED_MBL, bookings, demo_parties
from streams.settings import Settings
from streams.simulator import Outcome, RiskRule, RiskScript, ScriptedRejection
from streams.tables import ens_tables
from streams.topics import Catalogue

#: The operator `ics2 demo` creates for its dashboard (every party), with a fresh password each run.
DEMO_OPERATOR = "demo"

#: What customs will say, by script: the demo's story.
DEMO_SCRIPT = RiskScript(
    rules=(
        RiskRule(Outcome.DO_NOT_LOAD, hbl="DAI26NGO0077"),
        RiskRule(Outcome.RFI, hbl="SKC26TYO0003"),
    ),
    rejections=(ScriptedRejection("KSN26TYO0102", "12", "goodsItem/commodity/descriptionOfGoods", "too vague"),),
    grace=timedelta(seconds=12),
)


@dataclass
class Process:
    name: str
    args: list[str]
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen | None = field(default=None, repr=False)

    def start(self) -> None:
        with self.log.open("ab") as out:
            ics2 = str(Path(sys.executable).with_name("ics2"))
            self.proc = subprocess.Popen([ics2, *self.args], env=self.env, stdout=out, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@contextlib.contextmanager
def processes(items: list[Process]) -> Iterator[list[Process]]:
    try:
        for p in items:
            p.start()
        yield items
    finally:
        for p in reversed(items):
            p.stop()


def get_json(port: int, path: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, None


class DemoStalled(ICS2StreamsError):
    """A step of the demo did not happen in time; the worker's and the simulator's logs say why."""


def wait_for(check: Callable[[], bool], timeout: float, what: str, error: type[ICS2StreamsError] = DemoStalled) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise error(f"{what} did not happen within {timeout:.0f}s")


#: The notification types (and the watchdog's DEADLINE) the story is complete with.
STORY = frozenset({"IE3R01", "IE3Q01", "IE3Q02", "IE3N04", "IE3N99", "IE3N02", "IE3N11", "DEADLINE"})


@dataclass
class DemoResult:
    alerts: list[dict[str, Any]]
    states: dict[str, dict[str, Any]]
    prefix: str
    seconds: float
    workdir: Path
    audit_report: Path | None = None


def run(console: Console, keep: bool = False, timeout: float = 90.0, port: int | None = None) -> DemoResult:
    """Start what is not running (the broker on ``port``, default that of ICS2_BOOTSTRAP_SERVERS), tell the story,
    stop what it started."""
    started = time.monotonic()
    base = Settings.from_env()
    if port is not None:
        host, _ = parse_bootstrap(base.bootstrap_servers)
        base = base.with_(bootstrap_servers=f"{host}:{port}")
    broker = LocalBroker.from_settings(base)
    status = broker.start()
    how = "started" if status.started_now else "already running"
    console.print(f"[bold]Kafka[/] {status.version} on {status.bootstrap_servers} ({how})")
    prefix = f"demo{uuid.uuid4().hex[:6]}."
    settings = base.with_(bootstrap_servers=status.bootstrap_servers, topic_prefix=prefix, app_id=f"{prefix}app")
    try:
        result = tell_story(settings, console, timeout, workdir=Path(tempfile.mkdtemp(prefix="ics2-demo-")))
        result.seconds = time.monotonic() - started
        show(console, result)
        console.print(f"[bold]Audit trail report:[/] {result.audit_report}")
        return result
    finally:
        if not keep:
            with contextlib.suppress(Exception):
                asyncio.run(_delete(settings, prefix))
        if status.started_now:
            broker.stop()
            console.print("[dim]Kafka stopped.[/]")


async def _delete(settings: Settings, prefix: str) -> None:
    await delete_topics(settings, await list_topics(settings, prefix), wait=False)


def tell_story(settings: Settings, console: Console, timeout: float, workdir: Path) -> DemoResult:
    """Worker and customs simulator as subprocesses on ``settings``' broker and prefix; the bookings; the answers.

    The end-to-end test runs this same function.
    """
    catalogue = Catalogue.for_prefix(settings.topic_prefix)
    books_now = datetime.now(UTC)
    parties = demo_parties(bookings(books_now))
    asyncio.run(apply_topics(settings, catalogue, parties))
    script = workdir / "risk-script.json"
    script.write_text(json.dumps(DEMO_SCRIPT.to_json(), indent=2))
    web_port = free_tcp_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ICS2_")}
    env.update(
        ICS2_BOOTSTRAP_SERVERS=settings.bootstrap_servers,
        ICS2_TOPIC_PREFIX=settings.topic_prefix,
        ICS2_APP_ID=settings.app_id,
        ICS2_STATE_DIR=str(workdir / "state"),
        ICS2_WEB_PORT=str(web_port),
        ICS2_WATCHDOG_INTERVAL_S="2",
        ICS2_LOG_FORMAT="json",
    )
    worker = Process("worker", ["worker", "--no-apply-topics"], env, workdir / "worker.log")
    gateway = Process(
        "gateway", ["gateway", "--script", str(script), "--poll-interval", "1"], env, workdir / "gateway.log"
    )
    password = demo_operator(workdir / "state" / "operators.json")
    with processes([worker, gateway]):
        wait_for(
            lambda: get_json(web_port, "/health")[0] == 200,
            60,
            f"the worker's health view (see {worker.log})",
            WorkerUnavailable,
        )
        console.print(f"[bold]Worker[/] and [bold]customs simulator[/] running (logs in {workdir})")
        console.print(
            f"[bold]Dashboard[/] http://127.0.0.1:{web_port}/dashboard while the demo runs: "
            f"log in as {DEMO_OPERATOR} / {password}"
        )
        books = bookings(books_now)
        asyncio.run(publish_bookings(settings, books))
        for b in books:
            console.print(f"  booked {b['master']['mbl_number']} as {b['planning_party']}")
        schemas = SchemaCatalogue.load()

        def story_told(records: list) -> bool:
            kinds = {schemas.decode(r.value, reader="PartyAlert").record["notification_message_type"] for r in records}
            return kinds >= STORY

        console.print("[dim]Waiting for customs' answers (the missing F16 is chased after a 12 s grace period)...[/]")
        records = asyncio.run(read_topic(settings, catalogue.alerts.name, until=story_told, timeout=timeout))
        alerts = unique_alerts(schemas.decode(r.value, reader="PartyAlert").record for r in records)
        wait_for(lambda: _settled(web_port), 20, f"the ENS states (see {worker.log})")
        states = {mbl: get_json(web_port, f"/ens/{mbl}")[1] or {} for mbl in (SEED_MBL, SECOND_MBL)}
        audit = workdir / "state" / "audit-report.html"
        # The worker's state folder holds the key that signed the trail; the replay verifies with its public half.
        replayed = report_when_caught_up(settings.with_(state_dir=workdir / "state"), states, audit)
        console.print(f"[dim]Audit trail replayed from Kafka: {'intact' if replayed.intact else 'BROKEN'}[/]")
    return DemoResult(alerts, states, settings.topic_prefix, 0.0, workdir, audit)


def demo_operator(path: Path) -> str:
    """A demo operator of every party in the demo's own operators file, with a fresh password (returned)."""
    from streams.security.operators import OperatorStore

    password = secrets.token_urlsafe(12)
    store = OperatorStore.load(path)
    store.add(DEMO_OPERATOR, password)
    store.save(path)
    return password


def _settled(port: int) -> bool:
    """Both ENS are known to the worker."""
    return all(get_json(port, f"/ens/{mbl}")[0] == 200 for mbl in (SEED_MBL, SECOND_MBL))


def unique_alerts(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Alerts deduplicated by ``alert_id``, the idempotency key of the at-least-once alert stream."""
    return list({a["alert_id"]: a for a in records}.values())


def show(console: Console, result: DemoResult, now: datetime | None = None) -> None:
    """Each party's queue (actions first; information counted), the ENS states, and what the codes in them mean."""
    now = now or datetime.now(UTC)
    by_party: dict[str, list[dict[str, Any]]] = {}
    for alert in result.alerts:
        by_party.setdefault(alert["party_id"], []).append(alert)
    order = list(URGENCY_STYLES)
    for party in sorted(by_party):
        actions = [a for a in newest_first(by_party[party]) if a["urgency"] != "info"]
        actions.sort(key=lambda a: order.index(a["urgency"]))
        info = len(by_party[party]) - len(actions)
        title = f"Queue of {party}: {len(actions)} to act on, {info} for information (ics2 inbox {party})"
        console.print(inbox_table(party, actions, now, title=title))
    for state in result.states.values():
        for table in ens_tables(state, now):
            console.print(table)
    legend(console, result)
    console.print(
        f"[bold green]Demo done[/] in {result.seconds:.0f}s: {len(result.alerts)} alerts to {len(by_party)} parties "
        f"(topics prefixed {result.prefix}, logs in {result.workdir})."
    )


def legend(console: Console, result: DemoResult) -> None:
    """The customs messages and ENS states the story went through, in words (the README's glossary has them all)."""
    codes = sorted({a["notification_message_type"] or "" for a in result.alerts} & set(MESSAGE_LABELS))
    states = {s.get("state") for s in result.states.values()}
    states |= {h["state"] for s in result.states.values() for h in s.get("houses", [])}
    console.print("Messages in this story (the README's glossary has them all):", highlight=False)
    for code in codes:
        console.print(f"  {code:<10} {MESSAGE_LABELS[code]}", highlight=False, markup=False)
    console.print("ENS and HBL states in this story:", highlight=False)
    for state in sorted(states & set(HOUSE_STATE_LABELS)):
        console.print(f"  {state:<14} {HOUSE_STATE_LABELS[state]}", highlight=False, markup=False)
