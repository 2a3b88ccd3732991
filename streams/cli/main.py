"""Entry point of the ``ics2`` console script.

Sub-commands live in their own modules and are imported only when called, so ``ics2 plan`` works without
importing Faust or Kafka clients, and a broken optional module cannot break the others.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from streams.cli.output import as_project_error, fail, quiet_kafka_client
from streams.errors import ExitCode

#: command name -> "module:attribute" of a click command.
COMMANDS: dict[str, str] = {
    "broker": "streams.cli.broker:broker",
    "topics": "streams.cli.topics:topics",
    "plan": "streams.cli.domain:plan",
    "validate": "streams.cli.domain:validate",
    "render": "streams.cli.domain:render",
    "parse": "streams.cli.domain:parse",
    "book": "streams.cli.book:book",
    "worker": "streams.cli.worker:worker",
    "gateway": "streams.cli.gateway:gateway",
    "demo": "streams.cli.demo:demo",
    "status": "streams.cli.status:status",
    "inbox": "streams.cli.inbox:inbox",
    "answer": "streams.cli.answer:answer",
    "consult": "streams.cli.consult:consult",
    "replay": "streams.cli.replay:replay_command",
    "archive": "streams.cli.archive:archive",
    "audit": "streams.cli.audit:audit",
    "ack": "streams.cli.ack:ack",
    "deploy": "streams.cli.deploy:deploy",
    "parties": "streams.cli.parties:parties",
    "operators": "streams.cli.operators:operators",
}


class LazyGroup(click.Group):
    """A click group that imports each sub-command's module on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        return getattr(importlib.import_module(module_name), attribute)

    def invoke(self, ctx: click.Context) -> Any:
        """Errors the project raises on purpose, and a broker that cannot be reached, end as one line and an exit
        code (``streams.errors.ExitCode``); anything else is a bug and keeps its traceback."""
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            sys.exit(ExitCode.INTERRUPTED)
        except Exception as exc:
            known = as_project_error(exc)
            if known is None:
                raise
            fail(known)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ics2-streams")
def cli() -> None:
    """File ICS2 Entry Summary Declarations from booking events and route customs' answers."""
    quiet_kafka_client()
