"""The operator dashboard in a real headless Chromium, on a real worker and customs simulator, seed scenario.

Chromium and chromedriver come from Debian (``make browser``); a machine without them fails this test rather than
skipping it, since the dashboard is only proven by a browser.
"""

from __future__ import annotations

import asyncio
import json
import struct
import subprocess
import time
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
from streams.client import publish_bookings, read_topic
from streams.demo import DEMO_SCRIPT, SEED_MBL, as_party, seed_booking
from streams.settings import Settings
from streams.topics import Catalogue
from tests.integration.services import ICS2, Service, gateway, service_env, worker

T = TypeVar("T")

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
#: Generous: two cores shared by several test runs.
STORY_TIMEOUT_S = 180.0
BROWSER_TIMEOUT_S = 60.0
OPERATOR = "ops-selenium"
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


def poll(check: Callable[[], object], timeout: float, what: str, service: Service | None = None) -> object:
    """Until ``check()`` returns something truthy; fails with the worker's log tail otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.5)
    tail = f"\n{service.tail()}" if service is not None else ""
    raise AssertionError(f"{what} did not happen within {timeout:.0f}s{tail}")


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


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
    async def test_dashboard_renders_and_acknowledges_in_chromium(self, deployment, browser, tmp_path):
        """Chromium shows the seed ENS with its HBL tree and alerts; acknowledging a DNL there is recorded."""
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        await asyncio.to_thread(
            poll, story_arrived(deployment), STORY_TIMEOUT_S, "the DNL/RFI story", deployment.worker
        )
        browser.get(f"{deployment.url}/dashboard")
        wait = WebDriverWait(browser, BROWSER_TIMEOUT_S, poll_frequency=0.3)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, f".consolidation[data-mbl='{SEED_MBL}']"))
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "tr.alert[data-type='IE3Q01'] button.ack"))

        def tree() -> tuple[str | None, str, set[str | None]]:
            card = browser.find_element(By.CSS_SELECTOR, f".consolidation[data-mbl='{SEED_MBL}']")
            nested = card.find_element(
                By.CSS_SELECTOR, "[data-hbl='SKC26TYO0002'] [data-hbl='AOB26OSA1002'] [data-hbl]"
            )
            kinds = {r.get_attribute("data-kind") for r in browser.find_elements(By.CSS_SELECTOR, "tr.open-item")}
            return nested.get_attribute("data-hbl"), nested.text, kinds

        hbl, text, kinds = unstale(tree)
        assert hbl == "DAI26NGO0077"
        assert "held_dnl" in text
        assert {"dnl", "rfi"} <= kinds

        screenshot = browser.get_screenshot_as_png()
        (tmp_path / "dashboard.png").write_bytes(screenshot)
        assert distinct_colours(screenshot) > 12, "the screenshot looks blank"

        operator = browser.find_element(By.ID, "operator")
        operator.clear()
        operator.send_keys(OPERATOR)

        def acknowledge_first_dnl() -> str | None:
            button = browser.find_element(By.CSS_SELECTOR, "tr.alert[data-type='IE3Q01'] button.ack")
            alert_id = button.get_attribute("data-alert-id")
            button.click()
            return alert_id

        alert_id = unstale(acknowledge_first_dnl)
        row = f"tr.alert.acknowledged[data-alert-id='{alert_id}']"
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, row))
        assert OPERATOR in browser.find_element(By.CSS_SELECTOR, f"{row} .ack-status").text
        (tmp_path / "dashboard-acknowledged.png").write_bytes(browser.get_screenshot_as_png())

        alerts = {a["alert_id"]: a for a in get_json(f"{deployment.url}/api/alerts")["alerts"]}
        assert alerts[alert_id]["acknowledged"] and alerts[alert_id]["acknowledged_by"] == OPERATOR
        dnl = [a for a in alerts.values() if a["message_type"] == "IE3Q01"]
        assert len(dnl) > 1 and sum(a["acknowledged"] for a in dnl) == 1, "only the clicked DNL alert is acknowledged"
        state = get_json(f"{deployment.url}/ens/{SEED_MBL}")
        opened = {a["alert_id"]: a for a in state["open_alerts"]}
        assert opened[alert_id]["acknowledged_by"] == OPERATOR

    async def test_unacknowledged_rfi_escalates_until_the_cli_acknowledges_it(self, deployment):
        """The RFI (6 h assumed) is escalated to its party at the 6 h margin, not on arrival inside the 24 h one;
        ``ics2 ack`` then acknowledges it and its escalation."""
        await asyncio.to_thread(
            poll, story_arrived(deployment), STORY_TIMEOUT_S, "the DNL/RFI story", deployment.worker
        )
        rfi = next(a for a in get_json(f"{deployment.url}/api/alerts")["alerts"] if a["message_type"] == "IE3Q02")

        def escalation() -> object:
            alerts = get_json(f"{deployment.url}/api/alerts")["alerts"]
            return next((a for a in alerts if a["message_type"] == "ESCALATION" and rfi["hbl"] == a["hbl"]), None)

        escalated = await asyncio.to_thread(poll, escalation, 60, "the RFI's escalation", deployment.worker)
        assert escalated["party"] == rfi["party"] and escalated["deadline"] == rfi["deadline"]
        assert not escalated["acknowledged"]

        done = subprocess.run(
            [ICS2, "ack", rfi["alert_id"], "--mbl", SEED_MBL, "--by", "ops-cli"],
            env=deployment.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr

        def acknowledged() -> object:
            current = {a["alert_id"]: a for a in get_json(f"{deployment.url}/api/alerts")["alerts"]}
            return all(current[i]["acknowledged_by"] == "ops-cli" for i in (rfi["alert_id"], escalated["alert_id"]))

        await asyncio.to_thread(poll, acknowledged, 60, "the CLI's acknowledgement", deployment.worker)
        state = get_json(f"{deployment.url}/ens/{SEED_MBL}")
        assert [a["acknowledged_by"] for a in state["open_alerts"] if a["alert_id"] == rfi["alert_id"]] == ["ops-cli"]

    async def test_metrics_match_the_records_processed(self, deployment):
        """/metrics counts what the stages consumed per topic, no dead letters, filings by state and alert latency."""
        await asyncio.to_thread(
            poll, story_arrived(deployment), STORY_TIMEOUT_S, "the DNL/RFI story", deployment.worker
        )
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

        deadline = time.monotonic() + 90
        counts, consumed = await settled()
        while counts != consumed and time.monotonic() < deadline:
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
