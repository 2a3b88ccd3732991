"""The dashboard's view models (ENS state -> JSON for the page), its alert feed and the Prometheus metrics."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from html import escape as html_escape

import pytest
from prometheus_client.parser import text_string_to_metric_families

from streams.domain.dates import format_datetime
from streams.domain.events import event_from_json
from streams.domain.labels import OURS_NOTE
from streams.domain.ledger import filing_record
from streams.domain.lifecycle import EnsState, apply
from streams.domain.model import Consolidation
from streams.domain.notifications import Notification
from streams.domain.planning import plan
from streams.pipeline.feed import AlertFeed
from streams.pipeline.metrics import (
    LatencyMatcher,
    PipelineMetrics,
    consumer_lag,
    dead_letter_labels,
    filings_by_state,
)
from streams.pipeline.runner import StageStats
from streams.pipeline.web import (
    alerts_view,
    consolidation_view,
    consolidations_view,
    dashboard_html,
    hbl_tree,
    open_items,
    partitions_by_topic,
    scoped_alerts,
    scoped_consolidations,
    to_act_on,
    worker_view,
)
from streams.security.operators import Operator
from streams.settings import Settings

NOW = datetime(2027, 6, 10, 8, 0, tzinfo=UTC)
DEADLINE = "2027-06-14T12:00:00Z"


def notify(state: EnsState, c: Consolidation, message_type: str, hbl: str, **fields) -> EnsState:
    planned = next(f for f in plan(c).filings if f.hbl == hbl)
    notification = Notification(message_type=message_type, notification_date=NOW, mbl=c.mbl, hbl=hbl, **fields)
    event = {
        "type": "notification",
        "mbl": c.mbl,
        "notification_id": f"{message_type}|{hbl}",
        "record": filing_record(c, planned, "LRN-X").to_json(),
    }
    return apply(state, event_from_json(event, notification), NOW).state


@pytest.fixture
def state(seed) -> EnsState:
    """The seed ENS planned, a DNL on DAI26NGO0077 and an RFI on SKC26TYO0003."""
    event = {
        "type": "planned",
        "mbl": seed.mbl,
        "planning_party": seed.planning_party,
        "version": seed.version,
        "deadline": DEADLINE,
        "filings": [
            {"ours": f.ours, "record": filing_record(seed, f, f"LRN{i}" if f.ours else None).to_json()}
            for i, f in enumerate(plan(seed).filings)
        ],
    }
    state = apply(None, event_from_json(event), NOW).state
    state = notify(state, seed, "IE3Q01", "DAI26NGO0077")
    return notify(state, seed, "IE3Q02", "SKC26TYO0003", referral_reference="RFI-9", deadline=NOW + timedelta(hours=20))


def raw(state: EnsState) -> bytes:
    return json.dumps(state.to_json()).encode()


def alert(alert_id: str, mbl: str, **fields) -> dict:
    return {
        "alert_id": alert_id,
        "party_id": fields.get("party_id", "ML-TYO"),
        "urgency": fields.get("urgency", "high"),
        "action": fields.get("action", "info"),
        "title": f"title {alert_id}",
        "message": "",
        "mbl": mbl,
        "hbl": None,
        "deadline": fields.get("deadline"),
        "notification_message_type": fields.get("notification_message_type", "IE3R01"),
        "created_at": format_datetime(NOW),
    }


class TestHblTree:
    def test_tree_follows_the_hbl_chain(self, state):
        """Top-level nodes are the master loader's HBLs; co-loaders' HBLs nest under their parents."""
        tree = {n["hbl"]: n for n in hbl_tree(state)}
        assert set(tree) == {"SKC26TYO0001", "SKC26TYO0002", "SKC26TYO0003", "SKC26TYO0004"}
        coloader = {n["hbl"]: n for n in tree["SKC26TYO0002"]["children"]}
        assert set(coloader) == {"AOB26OSA1001", "AOB26OSA1002"}
        assert coloader["AOB26OSA1002"]["issuer"] == "COLOADER-A"
        assert [n["hbl"] for n in coloader["AOB26OSA1002"]["children"]] == ["DAI26NGO0077"]

    def test_lowest_hbls_carry_their_state_and_filings(self, state):
        """Each lowest HBL shows its derived state and the filings planned for it; intermediate ones have none."""
        tree = {n["hbl"]: n for n in hbl_tree(state)}
        dnl = tree["SKC26TYO0002"]["children"][1]["children"][0]
        assert dnl["state"] == "held_dnl"
        assert "state" not in tree["SKC26TYO0002"]
        expected = {(f.filing, f.filer) for f in state.filings.values() if f.hbl == "DAI26NGO0077"}
        assert {(f["filing"], f["filer"]) for f in dnl["filings"]} == expected
        assert tree["SKC26TYO0003"]["state"] == "referral_open"


class TestOpenItems:
    def test_dnl_and_rfi_listed_with_deadlines(self, state):
        """The DNL is due by the lodging deadline, the RFI by customs' answer deadline, each naming who was told."""
        items = {i["kind"]: i for i in open_items(state, NOW)}
        assert set(items) == {"dnl", "rfi"}
        assert items["dnl"]["hbl"] == "DAI26NGO0077" and items["dnl"]["deadline"] == DEADLINE
        assert items["rfi"]["referral_reference"] == "RFI-9"
        assert items["rfi"]["deadline"] == format_datetime(NOW + timedelta(hours=20))
        assert {a["party"] for a in items["dnl"]["alerts"]} == {
            a.party for a in state.open_alerts.values() if a.hbl == "DAI26NGO0077"
        }

    def test_acknowledgement_shows(self, state):
        """An acknowledged open alert shows who acknowledged it."""
        rfi = next(a for a in state.open_alerts.values() if a.referral_reference == "RFI-9")
        ack = event_from_json({"type": "ack", "mbl": state.mbl, "alert_id": rfi.alert_id, "by": "eve"})
        acked = apply(state, ack, NOW).state
        item = next(i for i in open_items(acked, NOW) if i["kind"] == "rfi")
        assert [a["acknowledged_by"] for a in item["alerts"]] == ["eve"]

    def test_lifted_condition_is_not_open(self, state, seed):
        """After the assessment completes, the RFI is no longer an open item."""
        done = notify(state, seed, "IE3N03", "SKC26TYO0003")
        assert [i["kind"] for i in open_items(done, NOW)] == ["dnl"]


class TestConsolidations:
    def test_view_of_one_consolidation(self, state):
        """The consolidation's view names its MBL, worst state, deadline and missing filings."""
        view = consolidation_view(state, NOW)
        assert (view["mbl"], view["state"], view["deadline"]) == (state.mbl, "held_dnl", DEADLINE)
        assert view["missing_filings"] == len(state.missing_filings()) > 0
        assert view["houses"]["SKC26TYO0003"] == "referral_open"

    def test_table_rows_sorted_by_mbl(self, state):
        """Every ENS of the table appears once, sorted by MBL; deleted (empty) rows are skipped."""
        other = EnsState(mbl="AAAA0001")
        views = consolidations_view([(state.mbl, raw(state)), ("AAAA0001", raw(other)), ("gone", b"")], NOW)
        assert [v["mbl"] for v in views] == ["AAAA0001", state.mbl]


class TestAlertFeed:
    def test_repeats_are_dropped_and_newest_come_first(self):
        """The feed keeps each alert id once and lists the latest first."""
        feed = AlertFeed()
        assert feed.add(alert("a", "M"), 1)
        assert feed.add(alert("b", "M"), 2)
        assert not feed.add(alert("a", "M"), 3)
        assert [a["alert_id"] for a in feed.latest()] == ["b", "a"]

    def test_feed_is_bounded(self):
        """Beyond its limit the oldest alerts are forgotten."""
        feed = AlertFeed(limit=3)
        for i in range(5):
            feed.add(alert(f"a{i}", "M"), i)
        assert [a["alert_id"] for a in feed.latest()] == ["a4", "a3", "a2"]
        assert feed.get("a0") is None

    def test_alerts_view_reads_acknowledgements_from_the_state(self, state):
        """An alert acknowledged in its MBL's state is shown acknowledged; others, and unknown MBLs, are not."""
        ack = event_from_json({"type": "ack", "mbl": state.mbl, "alert_id": "x1", "by": "eve", "at": DEADLINE})
        acked = apply(state, ack, NOW)
        states = {state.mbl: acked.state}
        views = alerts_view([alert("x1", state.mbl), alert("x2", state.mbl), alert("x3", "OTHER")], states.get, NOW)
        assert [(v["alert_id"], v["acknowledged"], v["acknowledged_by"]) for v in views] == [
            ("x1", True, "eve"),
            ("x2", False, None),
            ("x3", False, None),
        ]


class TestWords:
    def test_consolidation_states_and_deadline_in_words(self, state):
        """ENS, HBL and filing states carry their plain words; the deadline is relative and absolute."""
        view = consolidation_view(state, NOW)
        assert view["state_label"] == "do not load: customs holds the cargo"
        assert view["deadline_label"] == "in 4 d 4 h (2027-06-14 12:00 UTC)"
        tree = {n["hbl"]: n for n in view["tree"]}
        dnl = tree["SKC26TYO0002"]["children"][1]["children"][0]
        assert (dnl["hbl"], dnl["state_label"]) == ("DAI26NGO0077", "do not load: customs holds the cargo")
        assert {f["state_label"] for f in dnl["filings"]} <= {"planned, not yet sent", "expected from another party"}

    def test_open_items_name_the_customs_message(self, state):
        """An open DNL is worded as customs' Do Not Load request; the RFI's deadline is 20 h away."""
        items = {i["kind"]: i for i in open_items(state, NOW)}
        assert items["dnl"]["kind_label"] == "IE3Q01 (Do Not Load request)"
        assert items["rfi"]["deadline_label"].startswith("in 20 h (")

    def test_consolidation_lists_every_party_it_concerns(self, state):
        """Planning parties, filers and issuers along the HBL chains: the party filter's choices."""
        parties = consolidation_view(state, NOW)["parties"]
        assert {"ML-TYO", "COLOADER-A", "COLOADER-C", "COLOADER-D", "CARRIER-A"} <= set(parties)
        assert parties == sorted(set(parties))

    def test_alerts_split_into_to_act_on_and_for_information(self, state):
        """A DNL to stop loading is to act on; a registration (info) is for information; both in words."""
        dnl = alert(
            "d",
            state.mbl,
            urgency="critical",
            action="stop_loading",
            notification_message_type="IE3Q01",
            deadline="2027-06-10T10:00:00Z",
        )
        registered = alert("r", state.mbl, urgency="info", action="info")
        views = {v["alert_id"]: v for v in alerts_view([dnl, registered], {state.mbl: state}.get, NOW)}
        assert views["d"]["to_act_on"] and not views["r"]["to_act_on"]
        assert views["d"]["message_label"] == "IE3Q01 (Do Not Load request)"
        assert views["d"]["action_label"].startswith("stop loading")
        assert (views["d"]["deadline_in"], views["d"]["deadline_label"]) == ("in 2 h", "in 2 h (2027-06-10 10:00 UTC)")
        assert to_act_on({"urgency": "high", "action": "info"}), "a carrier told of an RFI watches its cargo"


class TestPartyScope:
    def test_scoped_operator_sees_only_its_partys_alerts(self, state):
        views = alerts_view([alert("a1", state.mbl), alert("a2", state.mbl, party_id="COLOADER-D")], {}.get, NOW)
        assert [v["alert_id"] for v in scoped_alerts(views, Operator("d", "COLOADER-D"))] == ["a2"]
        assert [v["alert_id"] for v in scoped_alerts(views, Operator("all"))] == ["a1", "a2"]

    def test_scoped_operator_sees_its_consolidations_with_its_alerts_only(self, state):
        """The seed concerns COLOADER-D; its open items keep COLOADER-D's alerts only; another MBL is not shown."""
        view = consolidation_view(state, NOW)
        told = {a["party"] for item in view["open"] for a in item["alerts"]}
        assert "COLOADER-D" in view["parties"] and "COLOADER-D" in told and len(told) > 1
        other = {**view, "mbl": "OTHER", "parties": ["FWD-X"]}
        scoped = scoped_consolidations([view, other], Operator("d", "COLOADER-D"))
        assert [c["mbl"] for c in scoped] == [state.mbl]
        assert {a["party"] for item in scoped[0]["open"] for a in item["alerts"]} == {"COLOADER-D"}
        assert scoped_consolidations([view, other], Operator("all")) == [view, other]


class TestWorker:
    def test_partitions_grouped_by_topic_without_the_prefix(self):
        """The worker's assignment is listed per topic, partitions sorted, the deployment's prefix left out."""

        class TP:
            def __init__(self, topic: str, partition: int) -> None:
                self.topic, self.partition = topic, partition

        assignment = [TP("p.ics2.ens-events", 3), TP("p.ics2.bookings", 0), TP("p.ics2.ens-events", 1)]
        assert partitions_by_topic(assignment, "p.") == {"ics2.bookings": [0], "ics2.ens-events": [1, 3]}

    def test_worker_view_names_host_process_and_ens_partitions(self):
        """The worker id is host:pid; its ENS partitions are those of the ENS events topic."""

        class TP:
            def __init__(self, topic: str, partition: int) -> None:
                self.topic, self.partition = topic, partition

        settings = Settings(topic_prefix="p.", app_id="p.app", web_port=7001)
        view = worker_view(settings, [TP("p.ics2.ens-events", 2), TP("p.ics2.bookings", 2)])
        assert view["worker_id"] == f"{view['host']}:{view['pid']}" and view["pid"] > 0
        assert (view["app_id"], view["web"], view["ens_partitions"]) == ("p.app", "127.0.0.1:7001", [2])


class TestDashboardPage:
    def test_legend_explains_ours_as_the_cli_does(self):
        """The page's legend carries the shared explanation of the ours column."""
        assert f'<dd id="ours-note">{html_escape(OURS_NOTE)}</dd>' in dashboard_html()

    def test_page_is_self_contained_and_polls_the_views(self):
        """No external script, style or font; the page polls both JSON views."""
        html = dashboard_html()
        assert not re.search(r"(src|href)=\"?(https?:)?//", html)
        assert "@import" not in html
        assert '"/api/consolidations"' in html and '"/api/alerts"' in html and '"/api/worker"' in html
        assert not re.search(r"\.(innerHTML|outerHTML)\s*=", html), "server data must go through textContent"


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


class TestMetrics:
    def test_filings_counted_by_state(self, state):
        """Every filing of every ENS counts once, under its state; absent states are zero."""
        counts = filings_by_state([raw(state), raw(state)])
        assert sum(counts.values()) == 2 * len(state.filings)
        assert counts["registered"] == 0
        assert counts["planned"] == 2 * sum(1 for f in state.filings.values() if f.state.value == "planned")

    def test_consumer_lag(self):
        """Lag is highwater minus position, never negative; unknown offsets are left out."""
        lag = consumer_lag({("t", 0): 10, ("t", 1): 5, ("t", 2): None}, {("t", 0): 7, ("t", 1): 9, ("t", 2): 1})
        assert lag == {("t", 0): 3, ("t", 1): 0}

    def test_dead_letter_labels(self):
        """The dead letter's ``stage/phase`` and qualified error class become three labels."""
        assert dead_letter_labels("correlate/decode", "streams.errors.DecodeError") == (
            "correlate",
            "decode",
            "DecodeError",
        )
        assert dead_letter_labels("legacy", "") == ("legacy", "unknown", "unknown")

    def test_latency_matched_in_either_order_once(self):
        """A notification's latency is measured once, whether its alert or its arrival is read first."""
        matcher = LatencyMatcher()
        assert matcher.arrived("n1", 10.0) is None
        assert matcher.alerted("n1", 10.75) == pytest.approx(0.75)
        assert matcher.alerted("n1", 11.0) is None
        assert matcher.alerted("n2", 20.5) is None
        assert matcher.arrived("n2", 20.0) == pytest.approx(0.5)
        assert matcher.arrived("n2", 20.0) is None

    def test_render_exposes_every_family(self, state):
        """Stage counters, dead letters, lag, filings by state and the latency histogram are in the exposition."""
        stats = StageStats()
        stats.consumed["track-ens"] += 7
        stats.emitted["track-ens"] += 4
        stats.dead_lettered["parse-notifications"] += 2
        metrics = PipelineMetrics(stats, lambda: [raw(state)])
        metrics.dead_lettered("parse-notifications/decode", "streams.errors.XMLRejected")
        metrics.lag = {("t.ics2.bookings", 1): 12}
        metrics.alert_latency.observe(0.3)
        found = samples(metrics.render())
        assert found[("ics2_stage_records_consumed_total", (("stage", "track-ens"),))] == 7
        assert found[("ics2_stage_records_emitted_total", (("stage", "track-ens"),))] == 4
        assert found[("ics2_stage_dead_letters_total", (("stage", "parse-notifications"),))] == 2
        key = (("error_class", "XMLRejected"), ("phase", "decode"), ("stage", "parse-notifications"))
        assert found[("ics2_dead_letters_total", key)] == 1
        assert found[("ics2_consumer_lag", (("partition", "1"), ("topic", "t.ics2.bookings")))] == 12
        planned = sum(1 for f in state.filings.values() if f.state.value == "planned")
        assert found[("ics2_ens_filings", (("state", "planned"),))] == planned
        assert found[("ics2_alert_latency_seconds_count", ())] == 1

    def test_each_app_has_its_own_registry(self):
        """Two pipelines in one process do not share or clash on metrics."""
        one, two = StageStats(), StageStats()
        one.consumed["s"] += 1
        first, second = PipelineMetrics(one, list), PipelineMetrics(two, list)
        first.alert_latency.observe(1.0)
        assert samples(first.render())[("ics2_alert_latency_seconds_count", ())] == 1
        assert samples(second.render())[("ics2_alert_latency_seconds_count", ())] == 0
        assert ("ics2_stage_records_consumed_total", (("stage", "s"),)) not in samples(second.render())
