"""What an operations team gets from ``ics2``: complete output in a pipe, one error line and a documented exit code.

The commands run as real subprocesses with standard output piped, as a script or ``> file`` runs them. Commands
that need Kafka are pointed at a closed loopback port: no broker answers there, so none is needed.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from streams.broker import free_tcp_port
from streams.domain.labels import ACTION_LABELS, FILING_STATE_LABELS, HOUSE_STATE_LABELS, MESSAGE_LABELS
from streams.errors import EXIT_CODE_MEANINGS, ExitCode
from tests.data import REPO, SEED_PATH, seed_json

ICS2 = str(Path(sys.executable).with_name("ics2"))
SCENARIOS = REPO / "tests" / "scenarios"
EARLY = "2027-01-01T00:00:00Z"
SEED_HBLS = sorted(h["hbl_number"] for h in seed_json()["house_bills"])


def run(*args: str, columns: int = 80, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``ics2 ARGS`` with stdout and stderr piped, outside any terminal, with COLUMNS as a user's shell may set it."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ICS2_")}
    environ.update(COLUMNS=str(columns), **(env or {}))
    return subprocess.run(
        [ICS2, *args], capture_output=True, text=True, env=environ, timeout=120, stdin=subprocess.DEVNULL
    )


def one_error_line(done: subprocess.CompletedProcess[str], code: ExitCode) -> str:
    """The failure is one ``error:`` line on stderr, no traceback, the documented exit code; returns the line."""
    assert done.returncode == code, (done.returncode, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    return lines[0]


class TestPipedOutputIsComplete:
    @pytest.mark.parametrize("columns", [40, 200])
    def test_plan_keeps_every_hbl_and_reason_whole(self, columns: int):
        """``ics2 plan | cat``: every filing's HBL with its filer and whole reason on one line, at any width."""
        table = run("plan", str(SEED_PATH), columns=columns)
        plan = json.loads(run("plan", str(SEED_PATH), "--json").stdout)
        assert table.returncode == 0, table.stderr
        planned = {f["hbl"] for f in plan["filings"]}
        assert planned == set(SEED_HBLS) & planned and len(planned) == 5
        assert planned <= set(re.findall(r"[A-Z]{3}\d{2}[A-Z]{3}\d{4}", table.stdout))
        for filing in plan["filings"]:
            assert any(filing["reason"] in line and (filing["hbl"] or "") in line for line in table.stdout.splitlines())

    def test_plan_is_the_same_for_any_terminal_width(self):
        """A pipe does not take the width of the terminal the command was started from."""
        assert run("plan", str(SEED_PATH), columns=40).stdout == run("plan", str(SEED_PATH), columns=300).stdout

    def test_validate_keeps_rule_hbl_and_message_on_one_line(self):
        """``ics2 validate | grep``: each finding's rule, HBL and whole message share a line (none is dropped)."""
        args = ("validate", str(SCENARIOS / "broken-fields.json"), "--now", EARLY)
        table = run(*args)
        findings = json.loads(run(*args, "--json").stdout)["findings"]
        assert table.returncode == 1 and findings
        for f in findings:
            assert any(
                f["rule_id"] in line and f["message"] in line and (f["hbl"] or "") in line
                for line in table.stdout.splitlines()
            ), f

    def test_render_lists_every_lrn_and_file_whole(self, tmp_path: Path):
        """``ics2 render | cat``: every HBL, LRN and file name of our filings on one line; --json gives the same."""
        table = run("render", str(SEED_PATH), "--out", str(tmp_path / "a"))
        rows = json.loads(run("render", str(SEED_PATH), "--out", str(tmp_path / "a"), "--json").stdout)
        assert table.returncode == 0, table.stderr
        assert len(rows) == 4
        for r in rows:
            assert any(
                r["lrn"] in line and r["hbl"] in line and r["file"] in line for line in table.stdout.splitlines()
            )


@pytest.fixture(scope="module")
def no_broker() -> str:
    """A loopback address nobody listens on: connecting to it is refused at once."""
    return f"127.0.0.1:{free_tcp_port()}"


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port another process (here, this test) listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


def answer_file(tmp_path: Path) -> Path:
    path = tmp_path / "answer.json"
    path.write_text(json.dumps({"texts": [{"text": "invoice attached"}]}), encoding="utf-8")
    return path


#: Every command that needs the broker, as a user would start it; ``{tmp}`` is a scratch folder.
BROKER_COMMANDS: list[tuple[str, ...]] = [
    ("book", str(SEED_PATH)),
    ("inbox", "ML-TYO"),
    ("inbox", "ML-TYO", "--json"),
    ("ack", "0123456789abcdef01234567"),
    ("answer", "rfi", "RFI27000000AB", "--file", "{answer}", "--party", "ML-TYO"),
    ("replay",),
    ("archive", "--out", "{tmp}/archive"),
    ("topics", "apply"),
    ("topics", "list"),
    ("parties", "list"),
    ("worker", "--no-apply-topics"),
    ("gateway",),
    ("consult", "OCLU26TYO7781234", "--eori", "NL123456789000"),
]


class TestErrorsAreOneLine:
    @pytest.mark.parametrize("command", BROKER_COMMANDS, ids=lambda c: " ".join(c[:2]))
    def test_no_broker(self, command: tuple[str, ...], no_broker: str, tmp_path: Path):
        """With no broker at --bootstrap-servers: one line naming the address and what to do, exit 4."""
        args = [a.format(tmp=tmp_path, answer=answer_file(tmp_path)) for a in command]
        env = {"ICS2_STATE_DIR": str(tmp_path / "state"), "ICS2_WEB_PORT": str(free_tcp_port())}
        done = run(*args, "--bootstrap-servers", no_broker, env=env)
        line = one_error_line(done, ExitCode.BROKER)
        assert no_broker in line and "ics2 broker start" in line
        assert done.stdout == ""

    def test_no_worker(self):
        """``ics2 status`` with no worker: exit 5 (not 'unknown MBL'), naming the address it tried."""
        done = run("status", "OCLU26TYO7781234", env={"ICS2_WEB_PORT": str(free_tcp_port())})
        line = one_error_line(done, ExitCode.WORKER)
        assert "ics2 worker" in line

    def test_status_reads_the_web_port_setting(self):
        """Without --worker, ``ics2 status`` asks the worker at ICS2_WEB_HOST:ICS2_WEB_PORT."""
        port = free_tcp_port()
        done = run("status", "OCLU26TYO7781234", env={"ICS2_WEB_PORT": str(port)})
        assert f"http://127.0.0.1:{port}" in done.stderr

    @pytest.mark.parametrize(
        "command",
        [
            ("plan", "{missing}"),
            ("validate", "{missing}"),
            ("render", "{missing}", "--out", "{tmp}"),
            ("parse", "{missing}"),
            ("book", "{missing}"),
            ("answer", "rfi", "RFI27000000AB", "--file", "{missing}", "--party", "ML-TYO"),
            ("replay", "--archive", "{missing}"),
            ("gateway", "--script", "{missing}"),
        ],
        ids=lambda c: c[0],
    )
    def test_missing_file(self, command: tuple[str, ...], tmp_path: Path):
        """A file that does not exist: one line naming it, exit 3, and nothing is published or written."""
        missing = tmp_path / "nope.json"
        done = run(*[a.format(missing=missing, tmp=tmp_path) for a in command])
        assert str(missing) in one_error_line(done, ExitCode.INPUT)

    def test_not_a_booking(self, tmp_path: Path, no_broker: str):
        """``ics2 book`` of a JSON file that is not a booking: exit 3 before any broker is asked."""
        bad = tmp_path / "list.json"
        bad.write_text("[1, 2]", encoding="utf-8")
        assert "not a booking event" in one_error_line(
            run("book", str(bad), "--bootstrap-servers", no_broker), ExitCode.INPUT
        )

    def test_worker_web_port_taken(self, taken_port: int, no_broker: str):
        """``ics2 worker`` whose web port is taken: exit 6 and the option that moves it, before Faust starts."""
        done = run("worker", "--web-port", str(taken_port), "--bootstrap-servers", no_broker)
        assert "ICS2_WEB_PORT" in one_error_line(done, ExitCode.PORT)

    def test_bad_setting_is_a_usage_error(self):
        """An ICS2_* variable with an unusable value: exit 2, one line."""
        one_error_line(run("status", "X", env={"ICS2_WEB_PORT": "many"}), ExitCode.USAGE)


class TestOptionsAreSpelledAlike:
    @pytest.mark.parametrize(
        "command",
        [
            ("book",),
            ("inbox",),
            ("ack",),
            ("replay",),
            ("archive",),
            ("topics", "apply"),
            ("topics", "list"),
            ("parties", "list"),
            ("parties", "onboard"),
            ("worker",),
            ("gateway",),
            ("answer", "rfi"),
        ],
        ids=" ".join,
    )
    def test_kafka_commands_take_bootstrap_servers_and_topic_prefix(self, command: tuple[str, ...]):
        """``-h`` works everywhere, and every command that talks to Kafka takes both connection options."""
        done = run(*command, "-h", columns=200)
        assert done.returncode == 0, done.stderr
        assert "--bootstrap-servers" in done.stdout and "--topic-prefix" in done.stdout
        assert "--prefix " not in done.stdout

    @pytest.mark.parametrize(
        "command",
        [
            ("plan",),
            ("validate",),
            ("render",),
            ("book",),
            ("inbox",),
            ("ack",),
            ("status",),
            ("replay",),
            ("archive",),
            ("topics", "apply"),
            ("topics", "list"),
            ("parties", "list"),
            ("broker", "status"),
            ("broker", "start"),
            ("broker", "stop"),
            ("demo",),
            ("deploy", "render"),
            ("answer", "rfi"),
        ],
        ids=" ".join,
    )
    def test_json_is_a_flag(self, command: tuple[str, ...]):
        """``--json`` takes no value on any command (``replay`` writes its file with ``--out``)."""
        done = run(*command, "-h", columns=200)
        assert done.returncode == 0, done.stderr
        assert re.search(r"--json\s+Print", done.stdout), done.stdout


def markdown_table(text: str, heading: str) -> list[list[str]]:
    """The rows (cells stripped of backticks) of the first table after ``heading`` in a markdown text."""
    after = text.split(heading, 1)[1]
    rows = []
    for line in after.splitlines():
        if line.startswith("|"):
            cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
            if not set("".join(cells)) <= set("-"):
                rows.append(cells)
        elif rows:
            break
    return rows[1:]


class TestReadme:
    README = (REPO / "README.md").read_text(encoding="utf-8")

    def test_exit_code_table_is_the_code_table(self):
        """The README's exit codes are ``ExitCode``, with the same numbers, names and meanings."""
        rows = markdown_table(self.README, "### Exit codes")
        assert rows == [[str(c.value), c.name, meaning] for c, meaning in EXIT_CODE_MEANINGS.items()]
        assert {c for c in ExitCode} == set(EXIT_CODE_MEANINGS)

    @pytest.mark.parametrize(
        ("heading", "labels"),
        [
            ("### ENS and HBL states", HOUSE_STATE_LABELS),
            ("### Filing states", FILING_STATE_LABELS),
            ("### Customs messages", MESSAGE_LABELS),
            ("### Actions (what to do)", ACTION_LABELS),
        ],
    )
    def test_glossary_is_labels(self, heading: str, labels: Mapping[str, str]):
        """The README's glossary says what ``streams/domain/labels.py`` says, entry for entry."""
        assert markdown_table(self.README, heading) == [[code, meaning] for code, meaning in labels.items()]

    def test_every_action_and_state_of_the_code_has_words(self):
        """No action or state the product emits is left without a label (and so out of the glossary)."""
        from streams.domain.lifecycle import FilingState, HouseState
        from streams.domain.notifications import Action

        assert {a.value for a in Action} <= set(ACTION_LABELS)
        assert {s.value for s in HouseState} <= set(HOUSE_STATE_LABELS)
        assert {s.value for s in FilingState} <= set(FILING_STATE_LABELS)
