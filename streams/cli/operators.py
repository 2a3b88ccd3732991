"""``ics2 operators``: the dashboard's operator accounts (add, remove, list), kept in the operators file.

The file is ``ICS2_OPERATORS_FILE`` or ``<ICS2_STATE_DIR>/operators.json``; running workers read it again when it
changes. Exit codes: 0 on success, 2 on bad input (a short password, an unusable name, an unknown account).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from streams.settings import Settings

EXIT_USAGE = 2

_file = click.option(
    "--file",
    "path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="The operators file (default: ICS2_OPERATORS_FILE, else <ICS2_STATE_DIR>/operators.json).",
)


def _path(path: Path | None) -> Path:
    return path or Settings.from_env().operators_path


@click.group()
def operators() -> None:
    """Who may log in to the dashboard and acknowledge alerts, and for which party."""


@operators.command("add")
@click.argument("name")
@click.option("--party", default=None, help="Scope the operator to this party's alerts (default: every party).")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input instead of a prompt.")
@_file
def add(name: str, party: str | None, password_stdin: bool, path: Path | None) -> None:
    """Add NAME, or give an existing NAME a new password and scope."""
    from streams.security.operators import OperatorError, OperatorStore

    target = _path(path)
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        store = OperatorStore.load(target)
        operator = store.add(name, password, party)
        store.save(target)
    except OperatorError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    scope = f"party {operator.party} only" if operator.party else "every party"
    click.echo(f"operator {operator.name} ({scope}) saved in {target}")


@operators.command("remove")
@click.argument("name")
@_file
def remove(name: str, path: Path | None) -> None:
    """Remove NAME: its sessions end at its next request."""
    from streams.security.operators import OperatorError, OperatorStore

    target = _path(path)
    try:
        store = OperatorStore.load(target)
    except OperatorError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    if not store.remove(name):
        click.echo(f"error: no operator {name} in {target}", err=True)
        sys.exit(EXIT_USAGE)
    store.save(target)
    click.echo(f"operator {name} removed from {target}")


@operators.command("list")
@_file
def list_operators(path: Path | None) -> None:
    """Every operator and the party it is scoped to."""
    from streams.security.operators import OperatorError, OperatorStore

    target = _path(path)
    try:
        store = OperatorStore.load(target)
    except OperatorError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    for operator in store.operators():
        click.echo(f"{operator.name}\t{operator.party or '(every party)'}")
