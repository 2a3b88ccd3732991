"""The ics2 command line: every sub-command resolves, and the file-based ones work without Kafka."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from streams.cli.main import COMMANDS, cli
from tests.data import SEED_PATH

REPO = Path(__file__).resolve().parents[2]


class TestCommands:
    @pytest.mark.parametrize("name", sorted(COMMANDS))
    def test_every_listed_command_imports(self, name):
        """A name in the lazy group's table is a real click command."""
        assert isinstance(cli.get_command(click.Context(cli), name), click.Command)

    def test_help_lists_every_command(self):
        """``ics2 --help`` lists them all (and imports none that is broken)."""
        result = CliRunner().invoke(cli, ["--help"])
        assert result.exit_code == 0
        assert all(name in result.output for name in COMMANDS)


class TestFileCommands:
    def test_render_writes_one_xml_per_filing_of_ours(self, tmp_path):
        """``ics2 render`` writes the master loader's four filings of the seed."""
        result = CliRunner().invoke(cli, ["render", str(SEED_PATH), "--out", str(tmp_path)])
        assert result.exit_code == 0, result.output
        names = sorted(p.name.split("_")[0] for p in tmp_path.glob("*.xml"))
        assert names == ["IE3F14", "IE3F14", "IE3F15", "IE3F15"]

    def test_parse_prints_kind_and_references(self):
        """``ics2 parse`` turns an RFI into its kind, MRN and referral reference."""
        result = CliRunner().invoke(cli, ["parse", str(REPO / "tests" / "fixtures" / "xml" / "IE3Q02.xml")])
        assert result.exit_code == 0, result.output
        record = json.loads(result.output)
        assert record["kind"] == "rfi" and record["referral_reference"] and record["actors"] == ["filer"]

    def test_parse_refuses_an_xml_bomb(self, tmp_path):
        """A notification with a DTD exits 3 (input file) with the reason."""
        bomb = tmp_path / "bomb.xml"
        bomb.write_bytes(b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "y">]><IE3R01>&x;</IE3R01>')
        result = CliRunner().invoke(cli, ["parse", str(bomb)])
        assert result.exit_code == 3
