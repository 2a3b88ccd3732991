"""The ``ics2 plan`` and ``ics2 validate`` commands: output and exit codes 0, 1 and 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from streams.cli.main import cli
from tests.data import SEED_PATH, SEED_PLAN_PATH, seed_json

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"
EARLY = "2027-01-01T00:00:00Z"


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


class TestPlanCommand:
    def test_json_output_is_the_expected_plan(self, runner):
        """``plan --json`` prints FilingPlan.to_json with the seed's expected filings, exit 0."""
        result = runner.invoke(cli, ["plan", str(SEED_PATH), "--json"])
        assert result.exit_code == 0, result.output
        data = json.loads(result.output)
        expected = json.loads(SEED_PLAN_PATH.read_text(encoding="utf-8"))
        keys = ("filing", "hbl", "filer", "supplementary_declarant")
        assert [{k: f[k] for k in keys} for f in data["filings"]] == expected["filings"]

    def test_table_output_names_filings_and_warning(self, runner):
        """Without --json a table lists the filings and the warning."""
        result = runner.invoke(cli, ["plan", str(SEED_PATH)])
        assert result.exit_code == 0, result.output
        assert "DAI26NGO0077" in result.output and "COLOADER-D" in result.output
        assert "PLAN-MULTI-TIER" in result.output

    def test_plan_errors_exit_1(self, runner):
        """A booking whose tree cannot be planned prints its errors and exits 1."""
        result = runner.invoke(cli, ["plan", str(SCENARIOS / "broken-tree.json"), "--json"])
        assert result.exit_code == 1
        assert {e["code"] for e in json.loads(result.output)["errors"]} >= {"PLAN-MISSING-PARENT", "PLAN-NO-GOODS"}

    def test_bad_json_exits_3(self, runner, tmp_path):
        """Unparseable JSON exits 3 (input file) with a message on stderr."""
        bad = tmp_path / "bad.json"
        bad.write_text("{not json", encoding="utf-8")
        result = runner.invoke(cli, ["plan", str(bad)])
        assert result.exit_code == 3
        assert "not valid JSON" in result.stderr


class TestValidateCommand:
    def test_clean_booking_exits_0(self, runner):
        """The seed validates with warnings only: exit 0."""
        result = runner.invoke(cli, ["validate", str(SEED_PATH), "--now", EARLY, "--json"])
        assert result.exit_code == 0, result.output
        data = json.loads(result.output)
        assert data["ok"] is True and data["errors"] == 0 and data["warnings"] == 1

    def test_findings_exit_1(self, runner):
        """The broken variant exits 1 and lists its findings with rule ids and parties."""
        result = runner.invoke(cli, ["validate", str(SCENARIOS / "broken-fields.json"), "--now", EARLY, "--json"])
        assert result.exit_code == 1
        found = {(f["rule_id"], f["party"]) for f in json.loads(result.output)["findings"]}
        assert ("ENS-CONTAINER-ID", "ML-TYO") in found and ("ENS-SELLER-BUYER", "COLOADER-D") in found

    def test_table_output(self, runner):
        """Without --json the findings are printed as a table."""
        result = runner.invoke(cli, ["validate", str(SCENARIOS / "broken-fields.json"), "--now", EARLY])
        assert result.exit_code == 1
        assert "ENS-HS-CODE" in result.output

    def test_past_deadline_exits_1(self, runner):
        """--now after the lodging deadline makes the seed fail."""
        result = runner.invoke(cli, ["validate", str(SEED_PATH), "--now", "2027-06-15T00:00:00Z", "--json"])
        assert result.exit_code == 1
        assert [f["rule_id"] for f in json.loads(result.output)["findings"] if f["severity"] == "error"] == [
            "ENS-DEADLINE"
        ]

    def test_booking_error_exits_3(self, runner, tmp_path):
        """A JSON document that is not a booking exits 3 naming the field."""
        data = seed_json()
        del data["master"]
        bad = tmp_path / "nomaster.json"
        bad.write_text(json.dumps(data), encoding="utf-8")
        result = runner.invoke(cli, ["validate", str(bad)])
        assert result.exit_code == 3
        assert "$.master is missing" in result.stderr

    def test_missing_file_exits_3(self, runner, tmp_path):
        """A file that does not exist exits 3 with one line naming it."""
        result = runner.invoke(cli, ["validate", str(tmp_path / "nope.json")])
        assert result.exit_code == 3
        assert result.stderr.splitlines() == [f"error: {tmp_path / 'nope.json'} does not exist; check the path"]

    def test_bad_now_exits_2(self, runner):
        """An unparseable --now is a usage error (exit 2)."""
        result = runner.invoke(cli, ["validate", str(SEED_PATH), "--now", "tomorrow"])
        assert result.exit_code == 2
