"""structlog, configured once at the entry point.

JSON lines when standard error is not a terminal (production, CI, containers), a readable console rendering when
it is. Context variables carry ``mbl``, ``hbl``, ``lrn``, ``mrn``, topic, partition and offset, so every line a
stage writes while handling one message names that message; bind them with ``bound_contextvars``.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

import structlog
from structlog.contextvars import bound_contextvars, merge_contextvars
from structlog.typing import Processor

__all__ = ["RepeatFilter", "bound_contextvars", "configure_logging"]

#: The libraries whose own lines are rate-limited: a client that lost its broker logs every reconnect attempt.
LIBRARIES = ("aiokafka", "faust", "mode")
#: A library's same line (logger, level, message template) is written at most once per this many seconds.
REPEAT_EVERY_S = 10.0


class RepeatFilter(logging.Filter):
    """Lets a library's line through once per ``every_s`` for each (logger, level, template), and tells how many
    were held back on the next one. Why: during a broker outage aiokafka and Faust log every reconnect and metadata
    attempt, and thousands of identical lines a second filled a gigabyte of logs and a core."""

    def __init__(self, every_s: float = REPEAT_EVERY_S, clock: object = time.monotonic) -> None:
        super().__init__()
        self.every_s = every_s
        self.clock = clock
        self._last: dict[tuple[str, int, str], float] = {}
        self._held: dict[tuple[str, int, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(LIBRARIES):
            return True
        key = (record.name, record.levelno, str(record.msg))
        now = self.clock()  # type: ignore[operator]
        if now - self._last.get(key, float("-inf")) < self.every_s:
            self._held[key] = self._held.get(key, 0) + 1
            return False
        self._last[key] = now
        held = self._held.pop(key, 0)
        if held:
            record.msg = f"{record.msg} [{held} alike held back in the last {self.every_s:.0f} s]"
        return True


def configure_logging(fmt: str = "auto", level: int | str = logging.INFO, stream: TextIO | None = None) -> None:
    """Set up structlog and route the standard library's logging (Faust, aiokafka) through the same renderer."""
    if isinstance(level, str):
        level = logging.getLevelNamesMapping()[level.upper()]
    out = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    shared: list[Processor] = [
        merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(),
    ]
    renderer: Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info if use_json else structlog.dev.set_exc_info,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(level),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *([structlog.processors.format_exc_info] if use_json else []),
            renderer,
        ],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    handler.addFilter(RepeatFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in LIBRARIES:
        logging.getLogger(noisy).setLevel(level if level <= logging.DEBUG else max(level, logging.WARNING))
