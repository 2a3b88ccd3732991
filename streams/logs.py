"""structlog, configured once at the entry point.

JSON lines when standard error is not a terminal (production, CI, containers), a readable console rendering when
it is. Context variables carry ``mbl``, ``hbl``, ``lrn``, ``mrn``, topic, partition and offset, so every line a
stage writes while handling one message names that message; bind them with ``bound_contextvars``.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog
from structlog.contextvars import bound_contextvars, merge_contextvars
from structlog.typing import Processor

__all__ = ["bound_contextvars", "configure_logging"]


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
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiokafka", "faust", "mode"):
        logging.getLogger(noisy).setLevel(level if level <= logging.DEBUG else max(level, logging.WARNING))
