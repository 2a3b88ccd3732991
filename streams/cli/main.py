"""Entry point of the ``ics2`` console script.

Sub-commands live in their own modules and are imported only when called, so ``ics2 plan`` works without
importing Faust or Kafka clients, and a broken optional module cannot break the others.
"""

from __future__ import annotations

import importlib

import click

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
    "ack": "streams.cli.ack:ack",
    "deploy": "streams.cli.deploy:deploy",
    "parties": "streams.cli.parties:parties",
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


@click.group(cls=LazyGroup)
@click.version_option(package_name="ics2-streams")
def cli() -> None:
    """File ICS2 Entry Summary Declarations from booking events and route customs' answers."""
