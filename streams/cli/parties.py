"""``ics2 parties``: onboard parties on a secured broker (queue, SCRAM user, ACLs), list and offboard them.

Run as the admin (``ICS2_SECURITY_PROTOCOL=SASL_PLAINTEXT``, ``ICS2_SASL_MECHANISM=SCRAM-SHA-512``,
``ICS2_SASL_USERNAME=ics2-admin``, ``ICS2_SASL_PASSWORD``; ``ics2 broker start --security sasl`` prints them).
Exit codes (``streams.errors.ExitCode``): 0 on success, 2 on a bad party id, 3 when the password file cannot be
used, 4 when the broker cannot be reached, 8 when it refuses a change.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from streams.cli.options import connection_options, json_option, settings_from
from streams.cli.output import console as make_console
from streams.errors import InputError
from streams.security.acls import Grant, party_grants
from streams.security.onboarding import (
    PROCESS_ROLES,
    Access,
    list_parties,
    offboard_party,
    onboard_party,
    onboard_process,
    process_grants,
    read_or_create_password,
)
from streams.settings import Settings
from streams.topics import Catalogue

_password_file = click.option(
    "--password-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Read the password from this file, or write a new one there (mode 0600) if it does not exist.",
)
_dry_run = click.option("--dry-run", is_flag=True, help="Print the grants only; touch nothing.")


def _context(bootstrap_servers: str | None, topic_prefix: str | None) -> tuple[Settings, Catalogue]:
    settings = settings_from(bootstrap_servers, topic_prefix)
    return settings, Catalogue.for_prefix(settings.topic_prefix)


def _party_grants(catalogue: Catalogue, party_id: str) -> tuple[Grant, ...]:
    """The party's grants; a party id the catalogue refuses is a usage error."""
    try:
        return tuple(party_grants(catalogue, party_id))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="PARTY_ID") from exc


def _password(password_file: Path | None) -> tuple[str | None, bool]:
    """The password to set (None: keep the existing one or generate), and whether it was written to the file."""
    if password_file is None:
        return None, False
    try:
        return read_or_create_password(password_file)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot use the password file {password_file}: {exc}") from exc


def _grants_table(grants: list[Grant] | tuple[Grant, ...]) -> Table:
    table = Table(show_header=True, box=None)
    for column in ("resource", "name", "pattern", "operation", "permission"):
        table.add_column(column)
    for grant in grants:
        table.add_row(grant.resource_type, grant.name, grant.pattern, grant.operation, grant.permission)
    return table


def _report(console: Console, access: Access, password_file: Path | None, wrote_file: bool) -> None:
    state = "created" if access.created_user else "exists"
    console.print(f"user  {access.user} ({state})", highlight=False)
    if access.queue:
        console.print(f"queue {access.queue}", highlight=False)
    console.print(f"ACLs  {len(access.grants)} granted: {access.acls_added} added, {access.acls_removed} removed")
    if access.password is None:
        console.print("password unchanged")
    elif password_file is not None:
        action = "generated into" if wrote_file else "set from"
        console.print(f"password {action} {password_file}", highlight=False)
    else:
        console.print("password (shown once, store it now):", highlight=False)
        click.echo(access.password)


@click.group()
def parties() -> None:
    """Give parties their own queue and a broker user that can read it and nothing else."""


@parties.command()
@click.argument("party_id")
@connection_options
@_password_file
@_dry_run
def onboard(
    party_id: str, bootstrap_servers: str | None, topic_prefix: str | None, password_file: Path | None, dry_run: bool
) -> None:
    """Create the party's queue topic, SCRAM user and ACLs; safe to run again (keeps the password unless given)."""
    console = make_console()
    settings, catalogue = _context(bootstrap_servers, topic_prefix)
    grants = _party_grants(catalogue, party_id)
    if dry_run:
        console.print(_grants_table(grants))
        return
    password, wrote_file = _password(password_file)
    access = asyncio.run(onboard_party(settings, catalogue, party_id, password))
    _report(console, access, password_file, wrote_file)


@parties.command()
@click.argument("party_id")
@connection_options
@click.option("--delete-queue", is_flag=True, help="Also delete the queue and its records (kept by default).")
def offboard(party_id: str, bootstrap_servers: str | None, topic_prefix: str | None, delete_queue: bool) -> None:
    """Remove the party's ACLs and SCRAM user; its queue is kept unless --delete-queue."""
    console = make_console()
    settings, catalogue = _context(bootstrap_servers, topic_prefix)
    _party_grants(catalogue, party_id)
    done = asyncio.run(offboard_party(settings, catalogue, party_id, delete_queue=delete_queue))
    user = "user deleted" if done.user_deleted else "user kept (it has grants on another prefix)"
    queue = "queue deleted" if done.queue_deleted else "queue kept"
    console.print(f"offboarded {party_id}: {done.acls_removed} ACLs removed, {user}, {queue}", highlight=False)


@parties.command(name="list")
@connection_options
@json_option
def list_(bootstrap_servers: str | None, topic_prefix: str | None, as_json: bool) -> None:
    """List parties with a user or a queue, and how many ACLs they hold on this prefix."""
    settings, catalogue = _context(bootstrap_servers, topic_prefix)
    listings = asyncio.run(list_parties(settings, catalogue))
    if as_json:
        keys = ("party_id", "user", "has_credential", "queue_exists", "acls")
        click.echo(json.dumps([{k: getattr(item, k) for k in keys} for item in listings]))
        return
    table = Table(title=f"Parties on {settings.bootstrap_servers}", title_justify="left")
    for column in ("Party", "User", "Credential", "Queue", "ACLs"):
        table.add_column(column)
    for item in listings:
        yes_no = {True: "yes", False: "no"}
        table.add_row(item.party_id, item.user, yes_no[item.has_credential], yes_no[item.queue_exists], str(item.acls))
    make_console().print(table)


@parties.command()
@click.argument("role", type=click.Choice(PROCESS_ROLES))
@click.option("--user", required=True, help="The SCRAM user the process runs as (ICS2_SASL_USERNAME of it).")
@connection_options
@_password_file
@_dry_run
def process(
    role: str,
    user: str,
    bootstrap_servers: str | None,
    topic_prefix: str | None,
    password_file: Path | None,
    dry_run: bool,
) -> None:
    """Give ics2 worker or ics2 gateway its own user with least privilege (for ICS2_APP_ID and the prefix)."""
    console = make_console()
    settings, catalogue = _context(bootstrap_servers, topic_prefix)
    grants = process_grants(settings, catalogue, role, user)
    if dry_run:
        console.print(_grants_table(grants))
        return
    password, wrote_file = _password(password_file)
    access = asyncio.run(onboard_process(settings, catalogue, role, user, password))
    _report(console, access, password_file, wrote_file)
