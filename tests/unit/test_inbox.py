"""``ics2 inbox``: what a party sees of its queue, and the documented alert contract alerting services rely on."""

from __future__ import annotations

import io
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from streams.cli.inbox import JsonView, TableView
from streams.contracts.avro import SchemaCatalogue
from streams.domain.dates import format_datetime
from streams.domain.labels import relative_deadline
from streams.domain.notifications import Action, Urgency
from streams.domain.routing import PartyAlert
from streams.inbox import (
    COLUMNS,
    URGENCY_STYLES,
    chain_text,
    deadline_style,
    json_line,
    latest_per_alert,
    newest_first,
    row,
    select,
    table,
)
from streams.pipeline.stage import Incoming
from streams.pipeline.stages.base import EmittingStage
from streams.topics import Catalogue

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2027, 6, 1, 9, 0, tzinfo=UTC)


def alert(alert_id: str, minutes_ago: int = 0, urgency: str = "high", **fields: Any) -> dict[str, Any]:
    """A decoded PartyAlert record, raised ``minutes_ago`` before NOW."""
    record = {
        "alert_id": alert_id,
        "party_id": "ML-TYO",
        "urgency": urgency,
        "action": "answer_rfi",
        "title": f"alert {alert_id}",
        "message": "m",
        "mbl": "OCLU26TYO7781234",
        "hbl": "SKC26TYO0003",
        "hbl_chain": [{"hbl": "SKC26TYO0003", "issuer": "ML-TYO"}],
        "party_at_fault": None,
        "lrn": None,
        "mrn": None,
        "referral_reference": None,
        "deadline": None,
        "notification_message_type": "IE3Q02",
        "created_at": format_datetime(NOW - timedelta(minutes=minutes_ago)),
        "acknowledged": False,
    }
    record.update(fields)
    return record


class TestSelect:
    def test_newest_first(self):
        """Alerts come out by creation time, newest first, whatever order they were read in."""
        alerts = [alert("a", 30), alert("b", 5), alert("c", 60)]
        assert [a["alert_id"] for a in select(alerts)] == ["b", "a", "c"]

    def test_repeated_alert_shown_once_with_its_latest_record(self):
        """A redelivered alert appears once; an acknowledgement (same id, later record) replaces it."""
        alerts = [alert("a", 10), alert("b", 5), alert("a", 10, acknowledged=True)]
        chosen = select(alerts)
        assert [a["alert_id"] for a in chosen] == ["b", "a"]
        assert chosen[1]["acknowledged"] is True

    def test_urgency_filter_and_limit(self):
        """Only the urgencies asked for, and at most ``limit`` of them, the newest kept."""
        alerts = [alert("a", 1, "info"), alert("b", 2, "critical"), alert("c", 3, "high"), alert("d", 4, "critical")]
        assert [a["alert_id"] for a in select(alerts, ["critical", "high"], limit=2)] == ["b", "c"]
        assert [a["alert_id"] for a in select(alerts, ["info"])] == ["a"]

    def test_same_second_keeps_reverse_reading_order(self):
        """Alerts raised in the same second: the one read last is shown first."""
        assert [a["alert_id"] for a in newest_first([alert("x"), alert("y")])] == ["y", "x"]

    @settings(max_examples=150, deadline=None)
    @given(
        st.lists(
            st.tuples(st.sampled_from("abcdefgh"), st.integers(0, 600), st.sampled_from(list(URGENCY_STYLES))),
            max_size=40,
        ),
        st.integers(1, 10),
    )
    def test_inbox_is_unique_sorted_and_bounded(self, items: list[tuple[str, int, str]], limit: int):
        """Any stream of records: ids unique, newest first, at most limit, each the last record read for its id."""
        alerts = [alert(i, m, u) for i, m, u in items]
        chosen = select(alerts, limit=limit)
        ids = [a["alert_id"] for a in chosen]
        assert len(ids) == len(set(ids)) == min(limit, len({i for i, _, _ in items}))
        stamps = [a["created_at"] for a in chosen]
        assert stamps == sorted(stamps, reverse=True)
        last = {a["alert_id"]: a for a in alerts}
        assert all(a is last[a["alert_id"]] for a in chosen)
        assert latest_per_alert(alerts) == list(last.values())


class TestDeadline:
    @pytest.mark.parametrize(
        ("delta", "expected"),
        [
            (timedelta(hours=5), "in 5 h"),
            (timedelta(hours=5, minutes=40), "in 5 h"),
            (timedelta(minutes=25), "in 25 min"),
            (timedelta(seconds=20), "in 1 min"),
            (timedelta(hours=-2), "overdue by 2 h"),
            (timedelta(minutes=-3), "overdue by 3 min"),
            (timedelta(hours=50), "in 2 d 2 h"),
            (timedelta(days=3), "in 3 d"),
            (timedelta(0), "overdue by 1 min"),
        ],
    )
    def test_relative_to_now(self, delta: timedelta, expected: str):
        """A deadline reads as time left, or time overdue, relative to now."""
        assert relative_deadline(format_datetime(NOW + delta), NOW) == expected

    def test_no_deadline_reads_empty(self):
        """Alerts without a deadline show none."""
        assert relative_deadline(None, NOW) == ""

    def test_due_soon_or_overdue_is_shown_critical(self):
        """A high alert due within two hours, or overdue, takes the critical colour; one due later keeps its own."""
        soon = alert("a", deadline=format_datetime(NOW + timedelta(minutes=90)))
        later = alert("b", deadline=format_datetime(NOW + timedelta(hours=20)))
        overdue = alert("c", urgency="normal", deadline=format_datetime(NOW - timedelta(hours=1)))
        assert deadline_style(soon, NOW) == deadline_style(overdue, NOW) == URGENCY_STYLES["critical"]
        assert deadline_style(later, NOW) == URGENCY_STYLES["high"]


class TestRows:
    def test_row_shows_chain_fault_action_and_references(self):
        """A row holds the alert id, urgency, title, deadline relative and absolute, the MBL, the HBL chain with
        issuers, the party at fault, what to do in words and the references."""
        chain = [{"hbl": "SKC26TYO0002", "issuer": "ML-TYO"}, {"hbl": "DAI26NGO0077", "issuer": "COLOADER-D"}]
        record = alert(
            "a",
            urgency="critical",
            hbl_chain=chain,
            party_at_fault="COLOADER-D",
            referral_reference="RFI27000000AB",
            mrn="27NLQ8E4F0A1B2C3D4",
            deadline=format_datetime(NOW + timedelta(hours=5)),
        )
        cells = dict(zip(COLUMNS, (c.plain for c in row(record, NOW)), strict=True))
        assert cells["alert id"] == "a" and cells["urgency"] == "critical" and cells["MBL"] == "OCLU26TYO7781234"
        assert cells["what"].startswith("alert a") and "request for information (RFI)" in cells["what"]
        assert cells["deadline"] == "in 5 h (2027-06-01 14:00 UTC)"
        assert cells["HBL chain"] == "SKC26TYO0002 (ML-TYO) > DAI26NGO0077 (COLOADER-D)"
        assert cells["at fault"] == "COLOADER-D" and cells["what to do"] == "answer the RFI (ics2 answer rfi)"
        assert "ref RFI27000000AB" in cells["references"] and "MRN 27NLQ8E4F0A1B2C3D4" in cells["references"]

    def test_urgency_cell_is_coloured(self):
        """Critical is red, high yellow: the colour of the urgency cell follows the urgency."""
        urgency = COLUMNS.index("urgency")
        assert "red" in row(alert("a", urgency="critical"), NOW)[urgency].style
        assert "yellow" in row(alert("a", urgency="high"), NOW)[urgency].style

    def test_without_chain_the_hbl_stands_in(self):
        """An alert with no chain shows its HBL in the chain's place; one without an HBL leaves it empty."""
        chain = COLUMNS.index("HBL chain")
        assert chain_text(alert("a", hbl_chain=[])) == ""
        assert row(alert("a", hbl_chain=[]), NOW)[chain].plain == "SKC26TYO0003"
        assert row(alert("a", hbl_chain=[], hbl=None), NOW)[chain].plain == ""

    def test_acknowledged_alert_is_marked(self):
        """An acknowledged alert says so beside its title."""
        assert row(alert("a", acknowledged=True), NOW)[COLUMNS.index("what")].plain.endswith("(acknowledged)")

    def test_table_renders_every_alert_and_the_count(self):
        """The rendered table names the party, how many alerts it shows of how many, and each title."""
        console = Console(record=True, width=200)
        console.print(table("ML-TYO", [alert("a"), alert("b")], NOW, total=5))
        text = console.export_text()
        assert "Inbox of ML-TYO: 2 alert(s) of 5" in text
        assert "alert a" in text and "alert b" in text


class TestViews:
    def test_json_view_prints_newest_first_within_the_limit(self, capsys: pytest.CaptureFixture[str]):
        """--json: the backlog's newest alerts, one JSON object a line, limited; later records print as they come."""
        view = JsonView(limit=2, urgencies=())
        with view:
            view.add([alert("a", 30), alert("b", 20), alert("c", 10)])
            view.caught_up()
            view.add([alert("d", 0)])
            view.add([alert("d", 0)])
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [a["alert_id"] for a in lines] == ["c", "b", "d"]

    def test_json_view_prints_an_acknowledgement_again(self, capsys: pytest.CaptureFixture[str]):
        """A changed record of an alert already printed (its acknowledgement) is printed again."""
        view = JsonView(limit=10, urgencies=())
        with view:
            view.add([alert("a")])
            view.caught_up()
            view.add([alert("a", acknowledged=True)])
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [(a["alert_id"], a["acknowledged"]) for a in lines] == [("a", False), ("a", True)]

    def test_json_view_interrupted_before_the_end_prints_what_it_read(self, capsys: pytest.CaptureFixture[str]):
        """Stopped before the backlog was read (Ctrl-C), the view still prints what it has, filtered."""
        with JsonView(limit=10, urgencies=("critical",)) as view:
            view.add([alert("a", urgency="critical"), alert("b", urgency="info")])
        assert [json.loads(line)["alert_id"] for line in capsys.readouterr().out.splitlines()] == ["a"]

    def test_table_view_prints_once_at_the_end(self, capsys: pytest.CaptureFixture[str]):
        """Without --follow the table is printed once, with the alerts read."""
        with TableView("ML-TYO", 10, (), follow=False) as view:
            view.add([alert("a")])
            view.caught_up()
        out = capsys.readouterr().out
        assert out.count("Inbox of ML-TYO") == 1 and "alert a" in out

    def test_followed_table_shows_alerts_added_later(self):
        """With --follow the live table is redrawn with every batch; what it ends on holds the later alert."""
        view = TableView("ML-TYO", 10, ("critical",), follow=True)
        view.console = Console(file=io.StringIO(), width=200)
        with view:
            view.add([alert("a", urgency="critical")])
            view.caught_up()
            view.add([alert("b", urgency="critical"), alert("c", urgency="info")])
            view.redraw()
        out = view.console.file.getvalue()
        assert "Inbox of ML-TYO: 2 alert(s)" in out and "alert b" in out and "alert c" not in out

    def test_json_line_round_trips_the_record(self):
        """A JSON line reads back as the same record, field names as in the schema."""
        record = alert("a", hbl_chain=[{"hbl": "H", "issuer": "I"}], deadline="2027-06-02T09:00:00Z")
        assert json.loads(json_line(record)) == record


def _fields(schema: dict[str, Any], where: str = "") -> list[str]:
    names: list[str] = []
    for field in schema["fields"]:
        path = f"{where}{field['name']}"
        names.append(path)
        kind = field["type"]
        if isinstance(kind, dict) and kind.get("type") == "array" and isinstance(kind["items"], dict):
            names += _fields(kind["items"], f"{path}[].")
    return names


class TestAlertContract:
    doc = (REPO / "docs" / "alerts.md").read_text(encoding="utf-8")
    schema = json.loads((REPO / "schemas" / "avro" / "PartyAlert.avsc").read_text(encoding="utf-8"))

    def test_doc_lists_every_field_of_the_schema(self):
        """Every field of PartyAlert, nested ones too, has a row in the field table of docs/alerts.md."""
        rows = set(re.findall(r"^\| `([^`]+)` \|", self.doc, flags=re.MULTILINE))
        fields = _fields(self.schema)
        assert len(fields) >= 19
        assert [f for f in fields if f not in rows] == []

    def test_doc_lists_every_urgency_symbol(self):
        """Every Urgency symbol and the enum's default are named in the contract."""
        urgency = next(f for f in self.schema["fields"] if f["name"] == "urgency")["type"]
        assert all(f"`{symbol}`" in self.doc for symbol in urgency["symbols"])
        assert f"default `{urgency['default']}`" in self.doc

    def test_doc_lists_every_header_the_pipeline_writes(self):
        """The headers on an emitted alert record are named in the contract's header table (which headers each
        emitter writes: tests/unit/test_alert_contract.py)."""
        stage = EmittingStage(SchemaCatalogue.load(), Catalogue.for_prefix(""), lambda: NOW)
        party_alert = PartyAlert(
            alert_id="a1", party="ML-TYO", urgency=Urgency.HIGH, action=Action.ANSWER_RFI, title="t", message="m",
            mbl="OCLU26TYO7781234", hbl=None, hbl_chain=(), party_at_fault=None, lrn=None, mrn=None,
            referral_reference=None, deadline=None, message_type="IE3Q02", created_at=NOW,
        )  # fmt: skip
        emits = stage.alert_emits([party_alert], Incoming("t", 0, 0, None, b""))
        assert {e.topic for e in emits} == {"ics2.alerts"}, "the delivery stage copies it to the party's queue"
        section = self.doc.split("## Headers", 1)[1].split("\n## ", 1)[0]
        documented = set(re.findall(r"^\| `(ics2-[a-z-]+)` \|", section, flags=re.MULTILINE))
        assert all({name for name, _ in e.headers} <= documented for e in emits)

    def test_doc_names_both_topics_as_the_catalogue_does(self):
        """The topic names in the contract are the catalogue's."""
        catalogue = Catalogue.for_prefix("")
        assert f"`<prefix>{catalogue.alerts.name}`" in self.doc
        assert "`<prefix>" + catalogue.party_queue("X").name.replace("X", "<party id>") + "`" in self.doc


class TestDemoOutput:
    def test_queues_and_ens_speak_in_words_with_absolute_and_relative_deadlines(self):
        """The demo's queues show alert id, MBL, what to do and deadlines both ways; the ENS explains "ours" and
        its states; a legend gives the meaning of each customs message and state of the story."""
        from streams.demo import DemoResult, show

        deadline = format_datetime(NOW + timedelta(hours=6))
        alerts = [
            alert("dnl1", urgency="critical", action="stop_loading", notification_message_type="IE3Q01"),
            alert("rfi1", urgency="high", deadline=deadline),
            alert("reg1", urgency="info", action="info", notification_message_type="IE3R01"),
        ]
        state = {
            "mbl": "OCLU26TYO7781234",
            "state": "held_dnl",
            "deadline": deadline,
            "filings": [
                {"filing": "F15", "hbl": "SKC26TYO0003", "filer": "ML-TYO", "ours": True, "state": "registered"}
                | {"lrn": "LRN1", "mrn": "27NLQ8E4F0A1B2C3D4"}
            ],
            "houses": [
                {"hbl": "SKC26TYO0003", "state": "held_dnl", "chain": [["SKC26TYO0003", "ML-TYO"]]}
                | {"open_referrals": []}
            ],
        }
        console = Console(record=True, width=400)
        show(console, DemoResult(alerts, {"OCLU26TYO7781234": state}, "demo1.", 12.0, Path("/tmp/x")), NOW)
        text = console.export_text()
        assert "Queue of ML-TYO: 2 to act on, 1 for information" in text
        assert "dnl1" in text and "reg1" not in text and "stop loading: keep the container off the vessel" in text
        assert "in 6 h (2027-06-01 15:00 UTC)" in text
        assert "ENS OCLU26TYO7781234: do not load: customs holds the cargo [held_dnl]" in text
        assert "ours = yes" in text and "registered by customs (MRN) [registered]" in text
        assert re.search(r"IE3Q01 +Do Not Load request", text) and re.search(r"IE3R01 +registration: customs", text)
        assert re.search(r"held_dnl +do not load: customs holds the cargo", text)
