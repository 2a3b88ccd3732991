"""How every ``ics2`` command writes: complete lines to a pipe or file, one line per error, one exit code table.

rich draws tables for the width of the terminal, and for 80 columns when standard output is not one, folding HBL
numbers, MRNs and LRNs across lines so that ``grep`` finds none. To a pipe or a file the console is as wide as the
content needs instead, whatever the terminal or ``COLUMNS`` says, so that the output is the same everywhere.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import IO, NoReturn

import click
from rich.console import Console

from streams.errors import BrokerUnavailable, ExitCode, ICS2StreamsError

#: Wide enough for any row the commands print; tables are only as wide as their content.
PIPE_WIDTH = 10_000


_TRAILING_BLANKS = re.compile(r"[ \t]+(?=\n)")


class _TrimmedLines:
    """A text stream that drops the blanks rich pads lines with, so a file holds no trailing whitespace."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def write(self, text: str) -> int:
        self.out.write(_TRAILING_BLANKS.sub("", text))
        return len(text)

    def flush(self) -> None:
        self.out.flush()

    def isatty(self) -> bool:
        return False


def console(*, stderr: bool = False) -> Console:
    """The terminal's console, or one that never folds a cell when writing to a pipe or a file."""
    terminal = Console(stderr=stderr)
    if terminal.is_terminal:
        return terminal
    out = _TrimmedLines(sys.stderr if stderr else sys.stdout)
    return Console(file=out, width=PIPE_WIDTH, no_color=True, highlight=False)  # type: ignore[arg-type]


def quiet_kafka_client() -> None:
    """The Kafka client logs each failed connection before raising; a command says it once, in its own words.

    ``configure_logging`` (worker, gateway) sets the client's level again, so long-running processes keep its logs.
    """
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


def error_line(exc: BaseException) -> str:
    """``error: <what is wrong>; <what to do>`` on one line (a multi-line message keeps its first line)."""
    lines = str(exc).strip().splitlines() or [type(exc).__name__]
    hint = getattr(exc, "hint", "")
    return f"error: {lines[0]}" + (f"; {hint}" if hint and hint not in lines[0] else "")


def fail(exc: BaseException, code: int | None = None) -> NoReturn:
    """Print ``exc`` as one line on standard error and exit with its code (``ExitCode.FAILED`` for a stranger)."""
    click.echo(error_line(exc), err=True)
    sys.exit(code if code is not None else int(getattr(exc, "exit_code", ExitCode.FAILED)))


def as_project_error(exc: BaseException) -> ICS2StreamsError | None:
    """The project error a library's exception stands for, if any: aiokafka's connection errors mean no broker."""
    if isinstance(exc, ICS2StreamsError):
        return exc
    from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError

    if isinstance(exc, KafkaConnectionError | KafkaTimeoutError):
        return BrokerUnavailable(f"cannot reach the Kafka broker: {exc}")
    return None
