"""The operator dashboard in a real headless Chromium, on a real worker and customs simulator, seed scenario.

Chromium and chromedriver come from Debian (``make browser``); a machine without them fails this test rather than
skipping it, since the dashboard is only proven by a browser. Screenshots of the dashboard and of the audit report go
to ``test-artifacts/`` (git-ignored; ``ICS2_TEST_ARTIFACTS`` moves it) for a person to look at.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
import subprocess
import time
import urllib.error
import urllib.request
import uuid
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import pytest
from prometheus_client.parser import text_string_to_metric_families

from streams.admin import apply_topics, delete_topics, list_topics
from streams.audit.reading import report_when_caught_up
from streams.client import publish_bookings, read_topic
from streams.contracts.avro import SchemaCatalogue
from streams.demo import DEMO_SCRIPT
from streams.scenarios import SEED_MBL, as_party, seed_booking
from streams.security.operators import CSRF_HEADER, CSRF_VALUE, OperatorStore
from streams.settings import Settings
from streams.topics import Catalogue
from tests.integration.services import ICS2, Service, gateway, service_env, worker

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("ICS2_TEST_ARTIFACTS") or REPO / "test-artifacts")
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
#: Generous: two cores shared by several test runs.
BROWSER_TIMEOUT_S = 60.0
OPERATOR = "ops-selenium"
PASSWORD = "selenium-secret-1"
#: An operator of one party only: sees and acknowledges COLOADER-D's alerts and nothing else.
SCOPED, SCOPED_PASSWORD, SCOPED_PARTY = "ops-coloader-d", "coloader-d-secret", "COLOADER-D"
#: An RFI carries no deadline (the IE3Q02 has none), so the worker assumes its response time: 6 h and 18 s puts the
#: RFI inside the 48 h and 24 h margins when it arrives (no escalation then) and at the 6 h margin 18 s later.
RFI_RESPONSE_TIME = "360.3m"
MARGINS = "48h,24h,6h,0h"

#: Worker start, customs answers and a browser on a loaded machine may outlast the default 300 s.
pytestmark = pytest.mark.timeout(600)


@dataclass
class Deployment:
    settings: Settings
    catalogue: Catalogue
    worker: Service
    url: str
    env: dict[str, str]


def poll(check: Callable[[], object], what: str, service: Service) -> object:
    """Until ``check()`` returns something truthy: waits for a condition, not a clock, so a loaded machine is only
    slower (the module's timeout is the one limit); fails at once, with the log, if the worker is gone."""
    while True:
        result = check()
        if result:
            return result
        service.check_running(what)
        time.sleep(0.5)


def basic(name: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()


def get_json(url: str, name: str = OPERATOR, password: str = PASSWORD) -> dict:
    """A view as a script reads it: HTTP Basic credentials of an operator (every party's, unless told)."""
    request = urllib.request.Request(url, headers={"Authorization": basic(name, password)})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def post(url: str, body: dict, headers: dict[str, str]) -> tuple[int, dict]:
    """POST a JSON body; the status and the JSON answer, also for a refusal."""
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json", **headers}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@pytest.fixture(scope="module")
async def deployment(kafka_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Deployment]:
    """Worker and customs simulator on the seed co-load, booked by each party that files for it."""
    tmp = tmp_path_factory.mktemp("dashboard")
    prefix = f"t{uuid.uuid4().hex[:8]}."
    settings = replace(kafka_settings, topic_prefix=prefix, app_id=f"{prefix}app")
    catalogue = Catalogue.for_prefix(prefix)
    books = [seed_booking()]
    books += [as_party(books[0], party) for party in ("COLOADER-A", "COLOADER-D", "CARRIER-A")]
    parties = sorted({p["id"] for p in books[0]["parties"] if p["role"] != "shipper"})
    await apply_topics(settings, catalogue, parties)
    script = tmp / "risk-script.json"
    script.write_text(json.dumps(DEMO_SCRIPT.to_json()))
    accounts = OperatorStore.new()
    accounts.add(OPERATOR, PASSWORD)
    accounts.add(SCOPED, SCOPED_PASSWORD, party=SCOPED_PARTY)
    accounts.save(tmp / "state" / "operators.json")
    customs = gateway(settings, tmp, "--script", str(script), "--poll-interval", "1").start()
    running = worker(
        settings,
        tmp,
        ICS2_WATCHDOG_INTERVAL_S="2",
        ICS2_DEADLINE_MARGINS=MARGINS,
        ICS2_RFI_RESPONSE_TIME=RFI_RESPONSE_TIME,
    ).start()
    try:
        await asyncio.to_thread(running.wait_healthy, 120.0)
        await publish_bookings(settings, books)
        url = f"http://127.0.0.1:{running.web_port}"
        yield Deployment(settings, catalogue, running, url, service_env(settings, tmp / "state"))
    finally:
        running.stop()
        customs.stop()
        await delete_topics(settings, await list_topics(settings, prefix), wait=False)


@pytest.fixture(scope="module")
def artifacts() -> Path:
    """Where the screenshots are kept after the run."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


def full_page_png(browser: object, limit: int = 4000) -> bytes:
    """A screenshot of the whole page (up to ``limit`` pixels high), not just the window."""
    height = browser.execute_script("return document.documentElement.scrollHeight")
    width = browser.get_window_size()["width"]
    browser.set_window_size(width, min(max(int(height) + 140, 1000), limit))
    try:
        return browser.get_screenshot_as_png()
    finally:
        browser.set_window_size(width, 1000)


#: The bounding box of every text of every SVG against its SVG's width: a label cut at an edge shows here.
SVG_TEXT_BOXES = """
return [...document.querySelectorAll("svg")].map(svg => ({
  width: svg.width.baseVal.value,
  axis: svg.querySelectorAll("text.axis").length,
  texts: [...svg.querySelectorAll("text")].map(t => {
    const b = t.getBBox();
    return [t.textContent, b.x, b.x + b.width];
  })
}));
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Headless Chromium through Debian's chromedriver (selenium-manager never downloads anything)."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: run `make browser` (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    options.add_argument("--window-size=1400,1000")
    driver = webdriver.Chrome(service=DriverService(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(BROWSER_TIMEOUT_S)
    try:
        yield driver
    finally:
        driver.quit()


def story_arrived(deployment: Deployment) -> Callable[[], object]:
    """The DNL and RFI alerts are in the worker's feed and the seed ENS is held."""

    def check() -> object:
        alerts = get_json(f"{deployment.url}/api/alerts")["alerts"]
        types = {a["message_type"] for a in alerts}
        consolidations = get_json(f"{deployment.url}/api/consolidations")["consolidations"]
        held = any(c["mbl"] == SEED_MBL and c["state"] == "held_dnl" for c in consolidations)
        return {"IE3Q01", "IE3Q02"} <= types and held

    return check


def distinct_colours(png: bytes, limit: int = 10_000) -> int:
    """Distinct pixel colours of an 8-bit RGB(A) PNG, counted up to ``limit`` (no imaging library needed)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, data, header = 8, b"", b""
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind, body = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            data += body
        pos += 12 + length
    width, height, depth, colour_type = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and colour_type in (2, 6), f"unexpected PNG format {depth}/{colour_type}"
    bpp = 3 if colour_type == 2 else 4
    raw = zlib.decompress(data)
    stride = width * bpp
    previous = bytearray(stride)
    colours: set[bytes] = set()
    for y in range(height):
        start = y * (stride + 1)
        filter_type, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = previous[i]
            if filter_type == 1:
                line[i] = (line[i] + a) & 0xFF
            elif filter_type == 2:
                line[i] = (line[i] + b) & 0xFF
            elif filter_type == 3:
                line[i] = (line[i] + ((a + b) >> 1)) & 0xFF
            elif filter_type == 4:
                c = previous[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        if y % 4 == 0:
            colours.update(bytes(line[x : x + bpp]) for x in range(0, stride, bpp * 2))
            if len(colours) >= limit:
                break
        previous = line
    return len(colours)


def metric_samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        assert response.headers.get_content_type() == "text/plain"
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def unstale(look: Callable[[], T], attempts: int = 10) -> T:
    """Run a look at the page again when the page re-rendered under it (it re-renders every 2 s)."""
    from selenium.common.exceptions import StaleElementReferenceException

    for attempt in range(attempts):
        try:
            return look()
        except StaleElementReferenceException:
            if attempt == attempts - 1:
                raise
            time.sleep(0.2)
    raise AssertionError("unreachable")


class TestDashboard:
    async def test_dashboard_renders_and_acknowledges_in_chromium(self, deployment, browser, artifacts):
        """Chromium shows the seed ENS in words, actions apart from information, the worker, a working party filter;
        acknowledging a DNL there is recorded."""
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import Select, WebDriverWait

        await asyncio.to_thread(poll, story_arrived(deployment), "the DNL/RFI story", deployment.worker)
        browser.get(f"{deployment.url}/dashboard")
        wait = WebDriverWait(browser, BROWSER_TIMEOUT_S, poll_frequency=0.3)
        wait.until(lambda d: "/login" in d.current_url)
        browser.find_element(By.ID, "name").send_keys(OPERATOR)
        browser.find_element(By.ID, "password").send_keys(PASSWORD)
        browser.find_element(By.ID, "submit").click()
        wait.until(lambda d: d.find_element(By.ID, "operator").get_attribute("data-operator") == OPERATOR)
        assert browser.current_url.endswith("/dashboard")
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, f".consolidation[data-mbl='{SEED_MBL}']"))
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#act-on tr.alert[data-type='IE3Q01'] button.ack"))
        worker = get_json(f"{deployment.url}/api/worker")
        wait.until(lambda d: d.find_element(By.ID, "worker").get_attribute("data-worker-id") == worker["worker_id"])

        def page() -> tuple[str | None, str, set[str | None], list[str | None], list[str | None], str]:
            card = browser.find_element(By.CSS_SELECTOR, f".consolidation[data-mbl='{SEED_MBL}']")
            nested = card.find_element(
                By.CSS_SELECTOR, "[data-hbl='SKC26TYO0002'] [data-hbl='AOB26OSA1002'] [data-hbl]"
            )
            kinds = {r.get_attribute("data-kind") for r in browser.find_elements(By.CSS_SELECTOR, "tr.open-item")}
            act = [r.get_attribute("data-urgency") for r in browser.find_elements(By.CSS_SELECTOR, "#act-on tr.alert")]
            info = [
                r.get_attribute("data-urgency") for r in browser.find_elements(By.CSS_SELECTOR, "#information tr.alert")
            ]
            return (
                nested.get_attribute("data-hbl"),
                nested.text,
                kinds,
                act,
                info,
                browser.find_element(By.ID, "worker").text,
            )

        hbl, text, kinds, act, info, worker_text = unstale(page)
        assert hbl == "DAI26NGO0077"
        assert "do not load: customs holds the cargo" in text and "held_dnl" not in text
        assert {"dnl", "rfi"} <= kinds
        assert act and "info" not in act, "only alerts to act on in the act-on section"
        assert info and set(info) == {"info"}, "information apart"
        assert worker["worker_id"] in worker_text and worker["ens_partitions"]
        assert ", ".join(map(str, worker["ens_partitions"])) in worker_text

        screenshot = full_page_png(browser)
        (artifacts / "dashboard.png").write_bytes(screenshot)
        assert distinct_colours(screenshot) > 12, "the screenshot looks blank"

        alerts = get_json(f"{deployment.url}/api/alerts")["alerts"]
        party = "COLOADER-D"
        theirs = [a for a in alerts if a["party"] == party]
        assert theirs and len(theirs) < len(alerts)
        Select(browser.find_element(By.ID, "party")).select_by_value(party)

        def filtered() -> object:
            rows = browser.find_elements(By.CSS_SELECTOR, "tr.alert")
            parties = {r.get_attribute("data-party") for r in rows}
            cards = {c.get_attribute("data-mbl") for c in browser.find_elements(By.CSS_SELECTOR, ".consolidation")}
            return parties == {party} and len(rows) >= len(theirs) and SEED_MBL in cards

        wait.until(lambda d: unstale(filtered))
        assert f"party={party}" in browser.current_url
        (artifacts / f"dashboard-party-{party}.png").write_bytes(full_page_png(browser))
        Select(browser.find_element(By.ID, "party")).select_by_value("")
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "tr.alert")) > len(theirs))

        def acknowledge_first_dnl() -> str | None:
            button = browser.find_element(By.CSS_SELECTOR, "tr.alert[data-type='IE3Q01'] button.ack")
            alert_id = button.get_attribute("data-alert-id")
            button.click()
            return alert_id

        alert_id = unstale(acknowledge_first_dnl)
        row = f"tr.alert.acknowledged[data-alert-id='{alert_id}']"
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, row))
        assert OPERATOR in browser.find_element(By.CSS_SELECTOR, f"{row} .ack-status").text
        (artifacts / "dashboard-acknowledged.png").write_bytes(full_page_png(browser))

        alerts = {a["alert_id"]: a for a in get_json(f"{deployment.url}/api/alerts")["alerts"]}
        assert alerts[alert_id]["acknowledged"] and alerts[alert_id]["acknowledged_by"] == OPERATOR
        dnl = [a for a in alerts.values() if a["message_type"] == "IE3Q01"]
        assert len(dnl) > 1 and sum(a["acknowledged"] for a in dnl) == 1, "only the clicked DNL alert is acknowledged"
        state = get_json(f"{deployment.url}/ens/{SEED_MBL}")
        opened = {a["alert_id"]: a for a in state["open_alerts"]}
        assert opened[alert_id]["acknowledged_by"] == OPERATOR

        browser.find_element(By.ID, "logout").click()
        wait.until(lambda d: "/login" in d.current_url)
        browser.get(f"{deployment.url}/dashboard")
        wait.until(lambda d: "/login" in d.current_url and d.find_elements(By.ID, "password"))

    async def test_audit_report_reads_in_chromium(self, deployment, browser, artifacts):
        """The replayed report (verified with the worker's signing key): every timeline label inside its picture, one
        axis caption, the table in time order."""
        from selenium.webdriver.common.by import By

        await asyncio.to_thread(poll, story_arrived(deployment), "the DNL/RFI story", deployment.worker)
        live = {SEED_MBL: get_json(f"{deployment.url}/ens/{SEED_MBL}")}
        path = artifacts / "audit-report.html"
        worker_state = replace(deployment.settings, state_dir=Path(deployment.env["ICS2_STATE_DIR"]))
        replayed = await asyncio.to_thread(report_when_caught_up, worker_state, live, path)
        assert replayed.intact
        browser.get(path.as_uri())
        pictures = browser.execute_script(SVG_TEXT_BOXES)
        assert pictures, "a timeline per consolidation"
        for picture in pictures:
            assert picture["axis"] == 1
            cut = [text for text, left, right in picture["texts"] if left < 0 or right > picture["width"]]
            assert not cut, f"labels cut at the edge: {cut}"
        section = browser.find_element(By.ID, SEED_MBL)
        tables = section.find_elements(By.TAG_NAME, "table")
        timeline = tables[-1]
        stamps = [cell.text for cell in timeline.find_elements(By.CSS_SELECTOR, "tbody tr td:nth-child(2)")]
        assert len(stamps) > 10 and stamps == sorted(stamps)
        assert "do not load: customs holds the cargo" in section.text
        assert "IE3Q01 (Do Not Load request)" in section.text
        browser.set_window_size(1400, 1000)
        browser.execute_script("window.scrollTo(0, 0)")
        top = browser.get_screenshot_as_png()
        (artifacts / "audit-report-top.png").write_bytes(top)
        assert distinct_colours(top) > 12, "the screenshot looks blank"
        (artifacts / "audit-report.png").write_bytes(full_page_png(browser, limit=8000))

    async def test_unacknowledged_rfi_escalates_until_the_cli_acknowledges_it(self, deployment):
        """The RFI (6 h assumed) is escalated to its party at the 6 h margin, not on arrival inside the 24 h one;
        ``ics2 ack`` then acknowledges it and its escalation, and the acknowledgement is published as a record with the
        RFI's id on the alerts topic and the party's queue (docs/alerts.md)."""
        await asyncio.to_thread(poll, story_arrived(deployment), "the DNL/RFI story", deployment.worker)
        rfi = next(a for a in get_json(f"{deployment.url}/api/alerts")["alerts"] if a["message_type"] == "IE3Q02")

        def escalation() -> object:
            alerts = get_json(f"{deployment.url}/api/alerts")["alerts"]
            return next((a for a in alerts if a["message_type"] == "ESCALATION" and rfi["hbl"] == a["hbl"]), None)

        escalated = await asyncio.to_thread(poll, escalation, "the RFI's escalation", deployment.worker)
        assert escalated["party"] == rfi["party"] and escalated["deadline"] == rfi["deadline"]
        assert not escalated["acknowledged"]

        done = subprocess.run(
            [ICS2, "ack", rfi["alert_id"], "--mbl", SEED_MBL, "--by", "ops-cli"],
            env=deployment.env,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr

        def acknowledged() -> object:
            current = {a["alert_id"]: a for a in get_json(f"{deployment.url}/api/alerts")["alerts"]}
            return all(current[i]["acknowledged_by"] == "ops-cli" for i in (rfi["alert_id"], escalated["alert_id"]))

        await asyncio.to_thread(poll, acknowledged, "the CLI's acknowledgement", deployment.worker)
        state = get_json(f"{deployment.url}/ens/{SEED_MBL}")
        assert [a["acknowledged_by"] for a in state["open_alerts"] if a["alert_id"] == rfi["alert_id"]] == ["ops-cli"]

        def published(records: list) -> list[dict]:
            alerts = [SchemaCatalogue.load().decode(r.value, reader="PartyAlert").record for r in records]
            return [a for a in alerts if a["alert_id"] == rfi["alert_id"] and a["acknowledged"]]

        catalogue = deployment.catalogue
        for topic in (catalogue.alerts.name, catalogue.party_queue(rfi["party"]).name):
            records = await read_topic(deployment.settings, topic, until=lambda rs: bool(published(rs)), timeout=30)
            (ack,) = published(records)
            assert ack["party_id"] == rfi["party"] and "ops-cli" in ack["message"], f"ack record on {topic}"

    async def test_metrics_match_the_records_processed(self, deployment):
        """/metrics counts what the stages consumed per topic, no dead letters, filings by state and alert latency."""
        await asyncio.to_thread(poll, story_arrived(deployment), "the DNL/RFI story", deployment.worker)
        settings, catalogue = deployment.settings, deployment.catalogue
        sources = {
            "plan-bookings": catalogue.bookings.name,
            "parse-notifications": catalogue.notifications_inbound.name,
            "track-ens": catalogue.ens_events.name,
        }

        async def settled() -> tuple[dict, dict]:
            counts = {stage: len(await read_topic(settings, topic, timeout=20)) for stage, topic in sources.items()}
            samples = await asyncio.to_thread(metric_samples, deployment.url)
            consumed = {s: samples.get(("ics2_stage_records_consumed_total", (("stage", s),))) for s in sources}
            return counts, consumed

        counts, consumed = await settled()
        while counts != consumed:
            deployment.worker.check_running(f"consumed {consumed} of {counts}")
            await asyncio.sleep(1)
            counts, consumed = await settled()
        assert consumed == counts, f"{deployment.worker.tail()}"
        assert counts["plan-bookings"] == 4

        samples = await asyncio.to_thread(metric_samples, deployment.url)
        emitted = samples[("ics2_stage_records_emitted_total", (("stage", "plan-bookings"),))]
        drafts = await read_topic(settings, catalogue.filing_drafts.name, timeout=20)
        assert emitted >= len(drafts) > 0
        dead = await read_topic(settings, catalogue.dead_letters.name, timeout=10)
        dead_total = sum(v for (name, _), v in samples.items() if name == "ics2_stage_dead_letters_total")
        assert dead_total == len(dead) == 0
        state = get_json(f"{deployment.url}/ens/{SEED_MBL}")
        by_state = {dict(labels)["state"]: v for (name, labels), v in samples.items() if name == "ics2_ens_filings"}
        assert sum(by_state.values()) == len(state["filings"])
        assert by_state["registered"] == sum(1 for f in state["filings"] if f["state"] == "registered") > 0
        assert samples[("ics2_alert_latency_seconds_count", ())] > 0
        lags = [v for (name, _), v in samples.items() if name == "ics2_consumer_lag"]
        assert lags and all(v >= 0 for v in lags)


class TestOperatorAccess:
    """Run after the browser and escalation tests, which count the acknowledgements they make."""

    async def test_views_and_ack_need_a_logged_in_operator(self, deployment):
        """Without credentials, with wrong ones, or from another site, nothing is shown or acknowledged."""
        await asyncio.to_thread(poll, story_arrived(deployment), "the DNL/RFI story", deployment.worker)
        alert = next(a for a in get_json(f"{deployment.url}/api/alerts")["alerts"] if not a["acknowledged"])
        for path in ("/api/alerts", "/api/consolidations", "/api/worker", "/api/session"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(f"{deployment.url}{path}", timeout=10)
            assert refused.value.code == 401, path
        with pytest.raises(urllib.error.HTTPError) as wrong:
            get_json(f"{deployment.url}/api/alerts", OPERATOR, "not-the-password")
        assert wrong.value.code == 401
        with urllib.request.urlopen(f"{deployment.url}/dashboard", timeout=10) as page:
            assert "/login" in page.url, "the dashboard sends a stranger to the login page"

        ack = f"{deployment.url}/api/alerts/{alert['alert_id']}/ack"
        body = {"mbl": alert["mbl"], "by": "mallory"}
        own = {"Authorization": basic(OPERATOR, PASSWORD)}
        assert post(ack, body, {CSRF_HEADER: CSRF_VALUE})[0] == 401, "no credentials"
        status, answer = post(ack, body, own)
        assert status == 403 and CSRF_HEADER in answer["error"], "a form of another site cannot set the header"
        cross = {**own, CSRF_HEADER: CSRF_VALUE, "Origin": "https://evil.example"}
        assert post(ack, body, cross)[0] == 403
        assert post(ack, body, {**own, CSRF_HEADER: CSRF_VALUE, "Sec-Fetch-Site": "cross-site"})[0] == 403
        status, answer = post(f"{deployment.url}/login", {"name": OPERATOR, "password": PASSWORD}, {})
        assert status == 403, "no login from another site either"

        current = {a["alert_id"]: a for a in get_json(f"{deployment.url}/api/alerts")["alerts"]}
        assert not current[alert["alert_id"]]["acknowledged"], "no refused request acknowledged anything"

    async def test_party_scoped_operator_sees_and_acknowledges_its_party_only(self, deployment):
        """COLOADER-D's operator sees COLOADER-D's alerts only, is refused another party's, and its own ack is
        recorded under its login name, whatever name the request claims."""
        await asyncio.to_thread(poll, story_arrived(deployment), "the DNL/RFI story", deployment.worker)
        every = get_json(f"{deployment.url}/api/alerts")["alerts"]
        scoped = get_json(f"{deployment.url}/api/alerts", SCOPED, SCOPED_PASSWORD)["alerts"]
        assert scoped and {a["party"] for a in scoped} == {SCOPED_PARTY}
        assert len(scoped) == len([a for a in every if a["party"] == SCOPED_PARTY]) < len(every)
        session = get_json(f"{deployment.url}/api/session", SCOPED, SCOPED_PASSWORD)
        assert session["operator"] == {"name": SCOPED, "party": SCOPED_PARTY}
        cards = get_json(f"{deployment.url}/api/consolidations", SCOPED, SCOPED_PASSWORD)["consolidations"]
        assert [c["mbl"] for c in cards] == [SEED_MBL]
        told = {a["party"] for c in cards for item in c["open"] for a in item["alerts"]}
        assert told <= {SCOPED_PARTY}

        headers = {"Authorization": basic(SCOPED, SCOPED_PASSWORD), CSRF_HEADER: CSRF_VALUE}
        other = next(a for a in every if a["party"] != SCOPED_PARTY and not a["acknowledged"])
        status, answer = post(f"{deployment.url}/api/alerts/{other['alert_id']}/ack", {"mbl": other["mbl"]}, headers)
        assert status == 403 and "not authorised" in answer["error"]

        mine = next(a for a in scoped if not a["acknowledged"])
        status, answer = post(
            f"{deployment.url}/api/alerts/{mine['alert_id']}/ack", {"mbl": mine["mbl"], "by": "someone-else"}, headers
        )
        assert status == 202 and answer["by"] == SCOPED

        def recorded() -> object:
            current = {a["alert_id"]: a for a in get_json(f"{deployment.url}/api/alerts")["alerts"]}
            return current[mine["alert_id"]]["acknowledged_by"] == SCOPED

        await asyncio.to_thread(poll, recorded, "the scoped operator's acknowledgement", deployment.worker)
        current = {a["alert_id"]: a for a in get_json(f"{deployment.url}/api/alerts")["alerts"]}
        assert not current[other["alert_id"]]["acknowledged"]
