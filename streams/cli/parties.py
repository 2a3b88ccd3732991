"""``ics2 parties``: onboard parties on a secured broker (queue, SCRAM user, ACLs), list and offboard them.

Run as the admin (``ICS2_SECURITY_PROTOCOL=SASL_PLAINTEXT``, ``ICS2_SASL_MECHANISM=SCRAM-SHA-512``,
``ICS2_SASL_USERNAME=ics2-admin``, ``ICS2_SASL_PASSWORD``; ``ics2 broker start --security sasl`` prints them).
Exit codes: 0 on success, 1 when the broker cannot be reached or refuses a change, 2 on bad input.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from streams.errors import ICS2StreamsError
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

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

_prefix = click.option("--prefix", default=None, help="Topic name prefix (default: ICS2_TOPIC_PREFIX).")
_password_file = click.option(
    "--password-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Read the password from this file, or write a new one there (mode 0600) if it does not exist.",
)
_dry_run = click.option("--dry-run", is_flag=True, help="Print the grants only; touch nothing.")


def _fail(console: Console, exc: Exception, code: int = EXIT_FAILED) -> None:
    console.print(f"[red]error[/red] {exc}", markup=True, highlight=False)
    sys.exit(code)


def _context(prefix: str | None) -> tuple[Settings, Catalogue]:
    settings = Settings.from_env(topic_prefix=prefix)
    return settings, Catalogue.for_prefix(settings.topic_prefix)


def _password(password_file: Path | None) -> tuple[str | None, bool]:
    """The password to set (None: keep the existing one or generate), and whether it was written to the file."""
    return (None, False) if password_file is None else read_or_create_password(password_file)


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
@_prefix
@_password_file
@_dry_run
@click.option(
    "--client-cert",
    "client_cert",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Also issue a TLS client certificate (mutual TLS, `ics2 broker start --mtls`) into this folder, signed "
    "by the local broker's CA.",
)
@click.option(
    "--ca-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="The local broker's TLS folder holding ca.pem and ca.key (default: <ICS2_STATE_DIR>/kafka/tls).",
)
def onboard(
    party_id: str,
    prefix: str | None,
    password_file: Path | None,
    dry_run: bool,
    client_cert: Path | None,
    ca_dir: Path | None,
) -> None:
    """Create the party's queue topic, SCRAM user and ACLs; safe to run again (keeps the password unless given)."""
    console = Console()
    try:
        settings, catalogue = _context(prefix)
        grants = party_grants(catalogue, party_id)
    except ValueError as exc:
        _fail(console, exc, EXIT_USAGE)
        return
    if dry_run:
        console.print(_grants_table(grants))
        return
    try:
        password, wrote_file = _password(password_file)
    except (OSError, ValueError) as exc:
        _fail(console, exc, EXIT_USAGE)
        return
    try:
        access = asyncio.run(onboard_party(settings, catalogue, party_id, password))
    except ICS2StreamsError as exc:
        _fail(console, exc)
        return
    _report(console, access, password_file, wrote_file)
    if client_cert is not None:
        from streams.security.tls import issue_client_certificate

        try:
            issued = issue_client_certificate(ca_dir or settings.state_dir / "kafka" / "tls", access.user, client_cert)
        except ICS2StreamsError as exc:
            _fail(console, exc)
            return
        console.print(f"client certificate {issued.cert} and key {issued.key} (mode 0600) for {access.user}")


@parties.command()
@click.argument("party_id")
@_prefix
@click.option("--delete-queue", is_flag=True, help="Also delete the queue and its records (kept by default).")
def offboard(party_id: str, prefix: str | None, delete_queue: bool) -> None:
    """Remove the party's ACLs and SCRAM user; its queue is kept unless --delete-queue."""
    console = Console()
    try:
        settings, catalogue = _context(prefix)
        catalogue.party_queue(party_id)
        done = asyncio.run(offboard_party(settings, catalogue, party_id, delete_queue=delete_queue))
    except ValueError as exc:
        _fail(console, exc, EXIT_USAGE)
        return
    except ICS2StreamsError as exc:
        _fail(console, exc)
        return
    user = "user deleted" if done.user_deleted else "user kept (it has grants on another prefix)"
    queue = "queue deleted" if done.queue_deleted else "queue kept"
    console.print(f"offboarded {party_id}: {done.acls_removed} ACLs removed, {user}, {queue}", highlight=False)


@parties.command(name="list")
@_prefix
def list_(prefix: str | None) -> None:
    """List parties with a user or a queue, and how many ACLs they hold on this prefix."""
    console = Console()
    try:
        settings, catalogue = _context(prefix)
        listings = asyncio.run(list_parties(settings, catalogue))
    except ICS2StreamsError as exc:
        _fail(console, exc)
        return
    table = Table(title=f"Parties on {settings.bootstrap_servers}")
    for column in ("Party", "User", "Credential", "Queue", "ACLs"):
        table.add_column(column)
    for item in listings:
        yes_no = {True: "yes", False: "no"}
        table.add_row(item.party_id, item.user, yes_no[item.has_credential], yes_no[item.queue_exists], str(item.acls))
    console.print(table)


@parties.command()
@click.argument("role", type=click.Choice(PROCESS_ROLES))
@click.option("--user", required=True, help="The SCRAM user the process runs as (ICS2_SASL_USERNAME of it).")
@_prefix
@_password_file
@_dry_run
def process(role: str, user: str, prefix: str | None, password_file: Path | None, dry_run: bool) -> None:
    """Give ics2 worker or ics2 gateway its own user with least privilege (for ICS2_APP_ID and the prefix)."""
    console = Console()
    settings, catalogue = _context(prefix)
    grants = process_grants(settings, catalogue, role, user)
    if dry_run:
        console.print(_grants_table(grants))
        return
    try:
        password, wrote_file = _password(password_file)
    except (OSError, ValueError) as exc:
        _fail(console, exc, EXIT_USAGE)
        return
    try:
        access = asyncio.run(onboard_process(settings, catalogue, role, user, password))
    except ICS2StreamsError as exc:
        _fail(console, exc)
        return
    _report(console, access, password_file, wrote_file)
