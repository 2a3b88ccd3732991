"""Replay of the audit trail: the rebuilt ENS state equals the tracker's, reports are deterministic, HTML is safe.

The stages run in process (plain dicts for tables, the customs simulator answering), with the audit stages
collecting every recorded topic and chaining the entries, as the worker does on Kafka.
"""

from __future__ import annotations

import copy
import html
import json
import re
from collections import defaultdict, deque
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastavro import reader as avro_reader
from fastavro import writer as avro_writer

from streams.audit import parallel
from streams.audit.archive import manifests, next_offsets, read_archives, write_archive
from streams.audit.parallel import share_of
from streams.audit.replay import ReplayFilter, build_report, comparable_state, ens_state, report_json
from streams.audit.report import WIDTH, duration, plain_title, render_html, text_width, timeline_svg
from streams.audit.signing import Keyring, Signer, public_pem
from streams.audit.trail import ChainHead, chain, head_after
from streams.cli.replay import replay_command
from streams.contracts.avro import SchemaCatalogue
from streams.contracts.events import ack_record
from streams.domain.dates import format_datetime
from streams.domain.labels import OURS_NOTE
from streams.pipeline.stage import Emit, Incoming
from streams.pipeline.stages.audit import audit_stages
from streams.pipeline.stages.booking import BookingStage
from streams.pipeline.stages.correlate import Correlator
from streams.pipeline.stages.lifecycle import LifecycleTracker
from streams.pipeline.stages.parse import NotificationParser
from streams.simulator import CustomsSimulator, Outcome, RiskRule, RiskScript
from streams.topics import Catalogue
from tests.data import SEED_PATH

NOW = datetime(2027, 6, 1, 9, 0, tzinfo=UTC)
SEED_MBL = "OCLU26TYO7781234"
OTHER_MBL = "OCLU26TYO7790001"
SCHEMAS = SchemaCatalogue.load()
SIGNER = Signer.of(Ed25519PrivateKey.generate())
KEYS = Keyring.of([SIGNER.public])


def seed_json(mbl: str = SEED_MBL) -> dict[str, Any]:
    text = SEED_PATH.read_text()
    if mbl != SEED_MBL:
        for prefix in ("SKC26TYO", "AOB26OSA", "CHY26YOK", "DAI26NGO"):
            text = text.replace(prefix, prefix[:-1] + "Z")
    data = json.loads(text)
    data["master"]["mbl_number"] = mbl
    for party in data["parties"]:
        if party["id"] == "CARRIER-A":
            party["contact"] = {"email": "ens@oceanic.example", "phone": None}
    return data


class AuditedPump:
    """Feeds each emitted record to every stage that consumes its topic, the audit stages included, in order."""

    def __init__(self, script: RiskScript | None = None) -> None:
        self.catalogue = c = Catalogue.for_prefix("")
        self.now = NOW
        clock = lambda: self.now  # noqa: E731
        self.tables: dict[str, dict[str, bytes]] = {k: {} for k in ("plans", "ledger", "parked", "ens", "chain")}
        self.consumers: dict[str, list[Any]] = defaultdict(list)
        self.consumers[c.bookings.name].append(BookingStage(SCHEMAS, c, clock, self.tables["plans"]))
        self.consumers[c.notifications_inbound.name].append(NotificationParser(SCHEMAS, c, clock))
        self.consumers[c.notifications_parsed.name].append(
            Correlator(SCHEMAS, c, clock, self.tables["ledger"], self.tables["parked"])
        )
        self.consumers[c.ens_events.name].append(LifecycleTracker(SCHEMAS, c, clock, self.tables["ens"]))
        for source, handler in audit_stages(SCHEMAS, c, clock, self.tables["chain"], signer=SIGNER).values():
            self.consumers[source.name].append(handler)
        self.simulator = CustomsSimulator(script or RiskScript(), seed=7)
        self.topics: dict[str, list[Emit]] = defaultdict(list)
        self.queue: deque[Emit] = deque()

    def book(self, data: dict[str, Any]) -> None:
        key = data["master"]["mbl_number"].encode()
        self.queue.append(Emit(self.catalogue.bookings.name, key, SCHEMAS.encode("BookingEvent", data)))

    def run(self) -> None:
        while self.queue:
            emit = self.queue.popleft()
            offset = len(self.topics[emit.topic])
            self.topics[emit.topic].append(emit)
            if emit.topic == self.catalogue.filings_outbound.name:
                filing = SCHEMAS.decode(emit.value, reader="Filing").record
                for answer in self.simulator.submit(filing["xml"], self.now):
                    self.queue.append(Emit(self.catalogue.notifications_inbound.name, b"x", answer.xml))
            received_ms = int(self.now.timestamp() * 1000)
            incoming = Incoming(emit.topic, 0, offset, emit.key, emit.value, emit.headers, received_ms)
            for handler in self.consumers.get(emit.topic, []):
                self.queue.extend(handler(incoming))

    def advance(self, when: datetime) -> None:
        self.now = when
        for answer in self.simulator.advance(when):
            self.queue.append(Emit(self.catalogue.notifications_inbound.name, b"x", answer.xml))
        self.run()

    def trail(self) -> list[dict[str, Any]]:
        return [SCHEMAS.decode(e.value, reader="AuditRecord").record for e in self.topics[self.catalogue.audit.name]]

    def live(self, mbl: str) -> dict[str, Any]:
        return json.loads(self.tables["ens"][mbl])


@pytest.fixture(scope="module")
def story() -> AuditedPump:
    """Two consolidations booked by several parties, answered by customs: DNL, RFI, missing F16 chased."""
    script = RiskScript(
        rules=(RiskRule(Outcome.DO_NOT_LOAD, hbl="DAI26NGO0077"), RiskRule(Outcome.RFI, hbl="SKC26TYO0003"))
    )
    pump = AuditedPump(script)
    seed = seed_json()
    pump.book(seed)
    for party in ("COLOADER-A", "COLOADER-D", "CARRIER-A"):
        pump.book(dict(copy.deepcopy(seed), planning_party=party, event_id=f"e-{party}"))
    pump.book(seed_json(OTHER_MBL))
    pump.run()
    pump.advance(NOW + timedelta(hours=3))
    return pump


class TestReplayEqualsLiveState:
    def test_rebuilt_ens_state_equals_the_trackers(self, story: AuditedPump):
        """Re-applying the recorded ENS events gives, for every MBL, the state the lifecycle tracker holds."""
        report = build_report(story.trail())
        rebuilt = {c["mbl"]: c["ens_state"] for c in report["consolidations"]}
        assert set(rebuilt) == {SEED_MBL, OTHER_MBL}
        for mbl, state in rebuilt.items():
            assert comparable_state(state) == comparable_state(story.live(mbl))
        assert rebuilt[SEED_MBL]["state"] == "held_dnl"

    def test_acknowledged_alert_replays_as_acknowledged(self):
        """An operator's ack (a tick carrying it) is recorded as kind ack and rebuilds the same acknowledged state."""
        pump = AuditedPump(RiskScript(rules=(RiskRule(Outcome.DO_NOT_LOAD, hbl="DAI26NGO0077"),)))
        seed = seed_json()
        pump.book(seed)
        for party in ("COLOADER-A", "COLOADER-D", "CARRIER-A"):
            pump.book(dict(copy.deepcopy(seed), planning_party=party, event_id=f"e-{party}"))
        pump.run()
        alerts = [SCHEMAS.decode(e.value, reader="PartyAlert").record for e in pump.topics["ics2.alerts"]]
        dnl = next(a for a in alerts if a["notification_message_type"] == "IE3Q01")
        before = comparable_state(pump.live(SEED_MBL))
        record = ack_record(SEED_MBL, dnl["alert_id"], "ops@ml-tyo", NOW + timedelta(minutes=5))
        pump.queue.append(Emit("ics2.ens-events", SEED_MBL.encode(), SCHEMAS.encode("EnsEvent", record)))
        pump.run()
        assert comparable_state(pump.live(SEED_MBL)) != before
        (rebuilt,) = build_report(pump.trail())["consolidations"]
        assert any(i["kind"] == "ack" for i in rebuilt["timeline"])
        assert comparable_state(rebuilt["ens_state"]) == comparable_state(pump.live(SEED_MBL))

    def test_comparison_ignores_clock_stamps_and_redelivered_lines_only(self, story: AuditedPump):
        """History times, repeated history lines and raised_at are left out; a changed filing state is not."""
        live = story.live(SEED_MBL)
        redelivered = copy.deepcopy(live)
        redelivered["history"] = [["2030-01-01T00:00:00Z", text] for _, text in live["history"] + live["history"][:2]]
        for alert in redelivered.get("open_alerts", []):
            alert["raised_at"] = "2030-01-01T00:00:00Z"
        assert comparable_state(redelivered) == comparable_state(live)
        changed = copy.deepcopy(live)
        changed["filings"][0]["state"] = "rejected"
        assert comparable_state(changed) != comparable_state(live)

    def test_state_until_a_time_ignores_later_events(self, story: AuditedPump):
        """With --until before customs' later answers, the chased F16 (IE3N11 after 3 h) is not in the state."""
        records = [r for r in story.trail() if r["mbl"] == SEED_MBL]
        before = ens_state(records, until=NOW + timedelta(hours=1))
        after = ens_state(records)
        assert before is not None and after is not None
        assert before != after
        assert not any(h["incomplete"] for h in before["houses"])
        assert any(h["incomplete"] for h in after["houses"])

    def test_trail_of_the_story_is_intact(self, story: AuditedPump):
        """Every chain the stages wrote verifies, and every recorded kind shows on the timeline."""
        report = build_report(story.trail())
        assert report["integrity"]["intact"] and report["integrity"]["breaks"] == []
        kinds = {i["kind"] for c in report["consolidations"] for i in c["timeline"]}
        assert {"booking", "draft", "filing", "plan", "filing_sent", "notification", "alert"} <= kinds


class TestReportContent:
    def test_filings_carry_lrn_and_the_hash_of_the_xml_sent(self, story: AuditedPump):
        """Each filing on the timeline has the LRN and the SHA-256 of the XML that went to customs."""
        outbound = [SCHEMAS.decode(e.value, reader="Filing").record for e in story.topics["ics2.filings.outbound"]]
        sent = {(f["lrn"], f["xml_sha256"]) for f in outbound if f["mbl"] == SEED_MBL}
        report = build_report(story.trail(), ReplayFilter(mbl=SEED_MBL))
        (seed,) = report["consolidations"]
        shown = {(i["details"]["lrn"], i["details"]["xml_sha256"]) for i in seed["timeline"] if i["kind"] == "filing"}
        assert shown == sent and sent

    def test_alerts_are_listed_under_the_party_they_were_routed_to(self, story: AuditedPump):
        """The DNL alert appears in the alerts of COLOADER-D, the HBL's issuer."""
        (seed,) = build_report(story.trail(), ReplayFilter(mbl=SEED_MBL))["consolidations"]
        dnl = {
            i["sequence"]
            for i in seed["timeline"]
            if i["kind"] == "alert" and i["details"]["notification_message_type"] == "IE3Q01"
        }
        routed = {p for p, listed in seed["alerts_by_party"].items() for a in listed if a["sequence"] in dnl}
        assert routed == {"COLOADER-A", "CARRIER-A", "COLOADER-D"}

    def test_hbl_filter_keeps_its_consolidation_and_drops_other_houses(self, story: AuditedPump):
        """--hbl keeps only the consolidation holding it, and no timeline item about another HBL."""
        report = build_report(story.trail(), ReplayFilter(hbl="DAI26NGO0077"))
        assert [c["mbl"] for c in report["consolidations"]] == [SEED_MBL]
        for item in report["consolidations"][0]["timeline"]:
            assert not item["hbls"] or "DAI26NGO0077" in item["hbls"]

    def test_party_filter_keeps_what_concerns_the_party(self, story: AuditedPump):
        """--party keeps only items naming the party, and leaves out consolidations it has no part in."""
        report = build_report(story.trail(), ReplayFilter(party="COLOADER-D"))
        assert report["consolidations"]
        for c in report["consolidations"]:
            assert all("COLOADER-D" in i["parties"] for i in c["timeline"])

    def test_time_filter_keeps_items_in_range(self, story: AuditedPump):
        """--since after the bookings leaves only the later answers and alerts."""
        since = NOW + timedelta(hours=1)
        report = build_report(story.trail(), ReplayFilter(since=since))
        items = [i for c in report["consolidations"] for i in c["timeline"]]
        assert items and all(i["at"] >= "2027-06-01T10:00:00Z" for i in items)
        assert not any(i["kind"] == "booking" for i in items)


class TestDeterminism:
    def test_the_same_trail_gives_the_same_json_and_html(self, story: AuditedPump):
        """Two replays of the same records give byte-equal JSON and HTML."""
        first, second = build_report(story.trail()), build_report(copy.deepcopy(story.trail()))
        assert report_json(first) == report_json(second)
        assert render_html(first) == render_html(second)

    def test_a_changed_record_changes_the_report(self, story: AuditedPump):
        """Determinism is not blindness: a tampered payload changes the JSON (its verdict)."""
        records = story.trail()
        tampered = copy.deepcopy(records)
        tampered[3]["payload"] = tampered[3]["payload"].replace('"', "'", 1)
        assert report_json(build_report(records)) != report_json(build_report(tampered))

    def test_verified_and_built_over_worker_processes_the_report_is_the_same(
        self, story: AuditedPump, monkeypatch: pytest.MonkeyPatch
    ):
        """Chains verified and histories built in forked workers (one MBL in a worker at least) give the report of
        one process byte for byte, a tampered record and a repeated one included."""
        records = story.trail()
        records[3] = {**records[3], "payload": records[3]["payload"].replace('"', "'", 1)}
        records.append(dict(records[10]))
        monkeypatch.setattr(parallel, "MIN_SHARE", 1)
        alone = report_json(build_report(records, keys=KEYS, workers=1))
        assert '"payload_changed"' in alone and '"duplicates": [\n      {' in alone
        counts = [n for n in range(2, 9) if share_of(SEED_MBL, n) or share_of(OTHER_MBL, n)][:3]
        assert counts, "some count of workers puts an MBL in a forked one"
        for workers in counts:
            assert report_json(build_report(records, keys=KEYS, workers=workers)) == alone


def _record(sequence: int, previous: ChainHead, title: str, mbl: str = "MBL<1>") -> dict[str, Any]:
    alert = {
        "party_id": "P&<b>",
        "title": title,
        "urgency": "high",
        "alert_id": "a",
        "hbl": None,
        "party_at_fault": None,
        "action": "info",
        "notification_message_type": "X",
        "deadline": None,
        "message": title,
    }
    payload = {"occurred_at": "2027-06-01T09:00:00Z", "record": alert, "source": "t:0:0"}
    return chain(previous, "alert", payload, f"2027-06-01T09:00:0{sequence}Z")


class TestHtml:
    def test_data_is_escaped(self):
        """Titles, party ids and MBLs from outside are HTML-escaped: no markup of theirs reaches the page."""
        first = _record(0, ChainHead("MBL<1>"), "<script>alert('x')</script>")
        report = build_report([first])
        page = render_html(report)
        assert "<script" not in page
        assert "&lt;script&gt;" in page and "MBL&lt;1&gt;" in page and "P&amp;&lt;b&gt;" in page

    def test_page_is_self_contained(self, story: AuditedPump):
        """No scripts, links or external sources; an inline SVG timeline per consolidation."""
        page = render_html(build_report(story.trail()))
        for forbidden in ("<script", "<link", "src=", "@import", "url("):
            assert forbidden not in page
        assert page.count("<svg") == 2
        assert "Trail intact" in page

    def test_verdict_on_top_names_the_break(self):
        """A broken chain shows a BROKEN verdict before any consolidation, with MBL and sequence."""
        first = _record(0, ChainHead("M1"), "one", "M1")
        second = _record(1, head_after(first), "two", "M1")
        second["payload"] = second["payload"].replace("two", "tw0")
        page = render_html(build_report([first, second]))
        verdict = page.index("Trail BROKEN")
        assert verdict < page.index("Consolidation M1")
        assert "<td>M1</td><td>1</td><td>1</td><td>payload_changed</td>" in page


def _alerts_at(times: list[str], mbl: str = "M1") -> list[dict[str, Any]]:
    """A chain of alerts recorded in this order, each saying it happened at the given time."""
    records, head = [], ChainHead(mbl)
    for index, at in enumerate(times):
        alert = {
            "party_id": "ML-TYO",
            "title": f"alert {index}",
            "urgency": "high",
            "alert_id": f"a{index}",
            "hbl": None,
            "party_at_fault": None,
            "action": "info",
            "notification_message_type": "IE3Q02",
            "deadline": None,
            "message": "",
        }
        payload = {"occurred_at": at, "record": alert, "source": "t:0:0"}
        records.append(chain(head, "alert", payload, "2027-06-01T12:00:00Z"))
        head = head_after(records[-1])
    return records


def svg_labels(svg: str) -> list[tuple[str, float, str, str]]:
    """(class, x, anchor, text) of every text element of a timeline."""
    found = []
    for attrs, text in re.findall(r"<text ([^>]*)>([^<]*)", svg):
        x = float(re.search(r'\bx="([-\d.]+)"', attrs).group(1))
        anchor = (re.search(r'text-anchor="(\w+)"', attrs) or re.search("()", "")).group(1) or "start"
        kind = (re.search(r'class="(\w+)"', attrs) or re.search("()", "")).group(1)
        found.append((kind, x, anchor, html.unescape(text)))
    return found


def inside(x: float, anchor: str, text: str, size: int) -> bool:
    width = text_width(text, size)
    left = {"start": x, "middle": x - width / 2, "end": x - width}[anchor]
    return left >= 0 and left + width <= WIDTH


class TestTimeline:
    @pytest.mark.parametrize(
        "span",
        [timedelta(0), timedelta(seconds=7), timedelta(minutes=50), timedelta(hours=3), timedelta(days=12)],
        ids=["instant", "seconds", "minutes", "hours", "days"],
    )
    def test_one_axis_label_and_every_label_inside_at_any_span(self, span):
        """Whatever the span, one axis caption, distinct tick labels, and no label past either edge."""
        start = datetime(2027, 6, 1, 23, 10, 5, tzinfo=UTC)
        times = [start + span * f for f in (0, 0.3, 1)]
        report = build_report(_alerts_at([format_datetime(t) for t in times]))
        (c,) = report["consolidations"]
        c = {
            **c,
            "deadlines": [
                {"at": format_datetime(start + span / 2), "what": "referral RFI00012345678 answer due"},
                {"at": format_datetime(start + span + timedelta(days=3)), "what": "ENS lodging deadline"},
                {"at": format_datetime(start - timedelta(hours=1)), "what": "cut-off"},
            ],
        }
        labels = svg_labels(timeline_svg(c))
        (axis,) = [t for k, _, _, t in labels if k == "axis"]
        assert axis.startswith("time (UTC)") and (span == timedelta(0) or duration(span) in axis)
        ticks = [t for k, _, _, t in labels if k == "tick"]
        assert 2 <= len(ticks) <= 7 and len(set(ticks)) == len(ticks)
        deadlines = [t for k, _, _, t in labels if k == "deadline"]
        assert len(deadlines) == 3 and any("3 d" in t and "after the last event" in t for t in deadlines)
        for _kind, x, anchor, text in labels:
            assert inside(x, anchor, text, 11), text

    def test_a_long_deadline_label_near_the_right_edge_turns_left(self):
        """A deadline at the end of the span is labelled to the left of its line, not cut at the edge."""
        report = build_report(_alerts_at(["2027-06-01T09:00:00Z", "2027-06-01T10:00:00Z"]))
        (c,) = report["consolidations"]
        c = {**c, "deadlines": [{"at": "2027-06-01T10:00:00Z", "what": "referral RFI0000000000000 answer due"}]}
        ((_, x, anchor, text),) = [label for label in svg_labels(timeline_svg(c)) if label[0] == "deadline"]
        assert anchor == "end" and inside(x, anchor, text, 10)


class TestReportWords:
    def test_timeline_table_is_in_time_order(self):
        """Items recorded out of order (a late-arriving answer) are listed by when they happened."""
        records = _alerts_at(["2027-06-01T10:00:00Z", "2027-06-01T09:00:00Z", "2027-06-01T11:00:00Z"])
        page = render_html(build_report(records))
        timeline = page[page.index("<h3>Timeline</h3>") :]
        rows = re.findall(r"<tr><td>(\d+)</td><td>([^<]+)</td>", timeline)
        assert [at for _, at in rows] == sorted(at for _, at in rows)
        assert [int(n) for n, _ in rows] == [1, 0, 2]
        assert "alert to a party" in timeline

    def test_states_and_codes_in_plain_words(self, story: AuditedPump):
        """ENS and house states are worded, message codes carry their meaning, and the page has a legend."""
        page = render_html(build_report(story.trail(), ReplayFilter(mbl=SEED_MBL)))
        assert "do not load: customs holds the cargo" in page
        assert "<td>held_dnl</td>" not in page
        assert "IE3Q01 (Do Not Load request)" in page
        assert "(do_not_load)" not in page
        assert "<dt>IE3Q01</dt><dd>Do Not Load request</dd>" in page

    def test_ours_is_explained(self, story: AuditedPump):
        """The filings table marks the filings this system sends, and says under it what ours means."""
        page = render_html(build_report(story.trail(), ReplayFilter(mbl=SEED_MBL)))
        filings = page[page.index("<h3>Filings</h3>") : page.index("<h3>House bills</h3>")]
        assert "<th>ours</th>" in filings
        assert "<td>F16</td><td>CHY26YOK0501</td><td>COLOADER-C</td><td></td>" in filings
        assert html.escape(OURS_NOTE) in filings and "Planning parties here: ML-TYO, COLOADER-A" in filings

    def test_deadline_is_absolute_and_relative_to_the_history(self, story: AuditedPump):
        """The lodging deadline is shown with how long after the last recorded event it falls."""
        page = render_html(build_report(story.trail(), ReplayFilter(mbl=SEED_MBL)))
        assert re.search(r"lodging deadline 2027-06-\d\dT[\d:]+Z \(\d+ d( \d+ h)? after the last event\)", page)

    def test_durations_read_in_seconds_under_a_minute(self):
        """A span of seconds says so; longer spans read as deadlines do."""
        assert (duration(timedelta(seconds=7)), duration(timedelta(hours=3))) == ("7 s", "3 h")

    def test_plain_title_words_codes(self):
        """A code with its notification kind becomes the code with its meaning; unknown codes stay."""
        assert plain_title("IE3Q02 (rfi) for X") == "IE3Q02 (request for information (RFI)) for X"
        assert plain_title("IE3Z99 (odd) for X") == "IE3Z99 (odd) for X"


class TestArchive:
    def test_archive_round_trip_replays_the_same(self, story: AuditedPump, tmp_path: Path):
        """Records written to the archive read back equal, and replay from it gives the same report."""
        records = story.trail()
        write_archive(tmp_path, "ics2.audit", records, {0: (0, len(records))}, SCHEMAS)
        content = read_archives([tmp_path])
        assert content.records == records and not content.problems
        assert report_json(build_report(content.records, heads=content.heads)) == report_json(build_report(records))

    def test_runs_continue_where_the_last_stopped(self, story: AuditedPump, tmp_path: Path):
        """A second run starts at the offsets after the first and the heads carry on."""
        records = story.trail()
        half = len(records) // 2
        write_archive(tmp_path, "ics2.audit", records[:half], {0: (0, half)}, SCHEMAS)
        assert next_offsets(tmp_path, "ics2.audit") == {0: half}
        write_archive(tmp_path, "ics2.audit", records[half:], {0: (half, len(records))}, SCHEMAS)
        assert [m.run for m in manifests(tmp_path)] == [1, 2]
        content = read_archives([tmp_path])
        assert content.records == records
        assert build_report(content.records, heads=content.heads)["integrity"]["intact"]

    def test_altered_archive_is_detected(self, story: AuditedPump, tmp_path: Path):
        """A record altered inside the archive file shows as a break of its MBL at its sequence, and a file change."""
        records = story.trail()
        write_archive(tmp_path, "ics2.audit", records, {0: (0, len(records))}, SCHEMAS)
        path = tmp_path / "audit-000001.avro"
        with path.open("rb") as stream:
            stored = [dict(r) for r in avro_reader(stream)]
        victim = next(i for i, r in enumerate(stored) if r["kind"] == "filing" and r["mbl"] == SEED_MBL)
        stored[victim]["payload"] = stored[victim]["payload"].replace("IE3F1", "IE3FX", 1)
        with path.open("wb") as out:
            avro_writer(out, SCHEMAS.schema("AuditRecord"), stored, codec="deflate")
        content = read_archives([tmp_path])
        assert any("SHA-256" in p for p in content.problems)
        breaks = build_report(content.records, heads=content.heads)["integrity"]["breaks"]
        assert [(b["mbl"], b["sequence"], b["kind"]) for b in breaks] == [
            (SEED_MBL, stored[victim]["sequence"], "payload_changed")
        ]

    def test_cut_archive_is_detected_by_the_manifest_heads(self, story: AuditedPump, tmp_path: Path):
        """Dropping the last record of a chain from the file shows as truncation against the manifest's head."""
        records = story.trail()
        write_archive(tmp_path, "ics2.audit", records, {0: (0, len(records))}, SCHEMAS)
        last = max(i for i, r in enumerate(records) if r["mbl"] == OTHER_MBL)
        with (tmp_path / "audit-000001.avro").open("wb") as out:
            avro_writer(out, SCHEMAS.schema("AuditRecord"), records[:last] + records[last + 1 :], codec="deflate")
        content = read_archives([tmp_path])
        breaks = build_report(content.records, heads=content.heads)["integrity"]["breaks"]
        assert [(b["mbl"], b["kind"]) for b in breaks] == [(OTHER_MBL, "truncated")]


def public_key_file(tmp_path: Path) -> Path:
    path = tmp_path / "audit-public.pem"
    path.write_text(public_pem(SIGNER.public))
    return path


class TestSignedArchive:
    def test_manifest_heads_keep_the_signature(self, story: AuditedPump, tmp_path: Path):
        """Each head in the manifest names the key id and signature of its chain's last record, and verifies."""
        records = story.trail()
        manifest = write_archive(tmp_path, "ics2.audit", records, {0: (0, len(records))}, SCHEMAS)
        stored = json.loads((tmp_path / "audit-000001.manifest.json").read_text())["heads"]
        assert {h["key_id"] for h in stored.values()} == {SIGNER.key_id} and all(
            h["signature"] for h in stored.values()
        )
        content = read_archives([tmp_path])
        assert content.heads == manifest.heads
        assert build_report(content.records, heads=content.heads, keys=KEYS)["integrity"]["intact"]

    def test_rewritten_manifest_head_does_not_verify(self, story: AuditedPump, tmp_path: Path):
        """Cutting a chain and rewriting its manifest head to match (no key to sign it) is still found."""
        records = story.trail()
        last = max(i for i, r in enumerate(records) if r["mbl"] == OTHER_MBL)
        cut = records[:last] + records[last + 1 :]
        write_archive(tmp_path, "ics2.audit", cut, {0: (0, len(cut))}, SCHEMAS)
        path = tmp_path / "audit-000001.manifest.json"
        manifest = json.loads(path.read_text())
        manifest["heads"][OTHER_MBL]["signature"] = records[last]["signature"]
        path.write_text(json.dumps(manifest))
        content = read_archives([tmp_path])
        breaks = build_report(content.records, heads=content.heads, keys=KEYS)["integrity"]["breaks"]
        assert [(b["mbl"], b["kind"]) for b in breaks] == [(OTHER_MBL, "head_mismatch")]

    def test_duplicates_replay_once_and_keep_the_head(self, story: AuditedPump, tmp_path: Path):
        """A trail with records stored twice (chained again after a crash) gives the same histories as without."""
        records = story.trail()
        doubled = [*records[:10], *copy.deepcopy(records[4:10]), *records[10:]]
        report = build_report(doubled, keys=KEYS)
        assert report["integrity"]["intact"] and len(report["integrity"]["duplicates"]) == 6
        assert f"Signatures verified with {SIGNER.key_id}" in render_html(report)
        assert "6 record(s) stored twice byte for byte" in render_html(report)
        assert report["consolidations"] == build_report(records, keys=KEYS)["consolidations"]
        write_archive(tmp_path, "ics2.audit", doubled, {0: (0, len(doubled))}, SCHEMAS)
        assert read_archives([tmp_path]).heads == {r["mbl"]: head_after(r) for r in records}


class TestReplayCommand:
    def test_replays_an_archive_and_exits_0_when_intact(self, story: AuditedPump, tmp_path: Path):
        """`ics2 replay --archive DIR --out FILE --html FILE` writes both reports and exits 0 on an intact trail."""
        records = story.trail()
        write_archive(tmp_path / "archive", "ics2.audit", records, {0: (0, len(records))}, SCHEMAS)
        out = tmp_path / "out"
        args = ["--archive", str(tmp_path / "archive"), "--out", str(out / "r.json"), "--html", str(out / "r.html")]
        args += ["--public-key", str(public_key_file(tmp_path))]
        result = CliRunner().invoke(replay_command, [*args, "--party", "COLOADER-D"])
        assert result.exit_code == 0, result.output
        report = json.loads((out / "r.json").read_text())
        assert report["filters"]["party"] == "COLOADER-D" and report["integrity"]["intact"]
        assert (out / "r.html").read_text().startswith("<!DOCTYPE html>")

    def test_exits_1_and_says_where_the_chain_breaks(self, story: AuditedPump, tmp_path: Path):
        """A removed record makes the command exit 1 and print the MBL and sequence of the break."""
        records = story.trail()
        index = next(i for i, r in enumerate(records) if r["mbl"] == OTHER_MBL and r["sequence"] == 2)
        kept = records[:index] + records[index + 1 :]
        with (tmp_path / "cut.avro").open("wb") as out:
            avro_writer(out, SCHEMAS.schema("AuditRecord"), kept, codec="deflate")
        key = str(public_key_file(tmp_path))
        result = CliRunner().invoke(replay_command, ["--archive", str(tmp_path / "cut.avro"), "--public-key", key])
        assert result.exit_code == 1
        assert f"MBL {OTHER_MBL} sequence 3" in result.output and "gap" in result.output

    def test_forged_extension_is_named_and_exits_1(self, story: AuditedPump, tmp_path: Path):
        """A record appended to an archive with recomputed hashes but no signature of the stage's key: exit 1,
        the MBL and sequence named as unsigned; the same file replays intact only without it."""
        records = story.trail()
        last = max((r for r in records if r["mbl"] == OTHER_MBL), key=lambda r: r["sequence"])
        payload = {"mbl": OTHER_MBL, "occurred_at": "2027-06-01T12:00:00Z", "record": {}, "source": "x:0:0"}
        forged = chain(head_after(last), "note", payload, "2027-06-01T12:00:00Z")
        with (tmp_path / "forged.avro").open("wb") as out:
            avro_writer(out, SCHEMAS.schema("AuditRecord"), [*records, forged], codec="deflate")
        key = str(public_key_file(tmp_path))
        result = CliRunner().invoke(replay_command, ["--archive", str(tmp_path / "forged.avro"), "--public-key", key])
        assert result.exit_code == 1
        assert f"MBL {OTHER_MBL} sequence {forged['sequence']}" in result.output and "unsigned" in result.output

    def test_without_a_public_key_the_replay_is_not_intact(
        self, story: AuditedPump, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ):
        """No --public-key and no signing key in the state folder: signatures cannot be checked, exit 1."""
        monkeypatch.setenv("ICS2_STATE_DIR", str(tmp_path / "state"))
        records = story.trail()
        write_archive(tmp_path / "a", "ics2.audit", records, {0: (0, len(records))}, SCHEMAS)
        result = CliRunner().invoke(
            replay_command, ["--archive", str(tmp_path / "a"), "--out", str(tmp_path / "r.json")]
        )
        assert result.exit_code == 1 and "no public key" in result.output
        assert json.loads((tmp_path / "r.json").read_text())["integrity"]["signatures"]["checked"] is False

    def test_local_signing_key_is_used_by_default(
        self, story: AuditedPump, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ):
        """On the worker's machine the public half of the state folder's key verifies without --public-key."""
        records = story.trail()
        write_archive(tmp_path / "a", "ics2.audit", records, {0: (0, len(records))}, SCHEMAS)
        key = tmp_path / "state" / "audit" / "signing-key.pem"
        key.parent.mkdir(parents=True)
        key.write_bytes(
            SIGNER.key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        monkeypatch.setenv("ICS2_STATE_DIR", str(tmp_path / "state"))
        result = CliRunner().invoke(
            replay_command, ["--archive", str(tmp_path / "a"), "--out", str(tmp_path / "r.json")]
        )
        assert result.exit_code == 0, result.output
        signatures = json.loads((tmp_path / "r.json").read_text())["integrity"]["signatures"]
        assert signatures == {"checked": True, "trusted_keys": [SIGNER.key_id], "unsigned_accepted": 0}

    def test_times_without_a_zone_are_utc(self, story: AuditedPump, tmp_path: Path):
        """--since 2027-06-01T10:00 means 10:00 UTC; a time that is not ISO 8601 is refused."""
        records = story.trail()
        write_archive(tmp_path, "ics2.audit", records, {0: (0, len(records))}, SCHEMAS)
        json_path = tmp_path / "r.json"
        args = ["--archive", str(tmp_path), "--out", str(json_path), "--public-key", str(public_key_file(tmp_path))]
        assert CliRunner().invoke(replay_command, [*args, "--since", "2027-06-01T10:00"]).exit_code == 0
        assert json.loads(json_path.read_text())["filters"]["since"] == "2027-06-01T10:00:00Z"
        refused = CliRunner().invoke(replay_command, [*args, "--since", "yesterday"])
        assert refused.exit_code == 2 and "ISO 8601" in refused.output
