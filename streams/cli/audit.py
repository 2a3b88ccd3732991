"""``ics2 audit``: the audit trail's signing key (make it once, export its public half for auditors)."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console

from streams.audit.signing import generate_key, key_id, key_path, load_public_key, public_pem
from streams.cli.options import json_option, settings_from


@click.group()
def audit() -> None:
    """The key that signs every audit record (ICS2_AUDIT_KEY, default <state folder>/audit/signing-key.pem)."""


@audit.command()
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write the key here instead")
@json_option
def keygen(out: Path | None, as_json: bool) -> None:
    """Make a new Ed25519 signing key (owner-only file, never overwritten) and print its key id.

    Give the same key file to every worker (ICS2_AUDIT_KEY); a worker without one makes its own on first start.
    """
    path = out or key_path(settings_from())
    signer = generate_key(path)
    if as_json:
        click.echo(json.dumps({"key_id": signer.key_id, "path": str(path)}))
    else:
        click.echo(signer.key_id)
        Console(stderr=True).print(f"wrote {path}; export its public key with ics2 audit public-key", highlight=False)


@audit.command("public-key")
@click.option(
    "--key",
    "key_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The private key file (default: ICS2_AUDIT_KEY or the state folder's)",
)
@json_option
def public_key(key_file: Path | None, as_json: bool) -> None:
    """Print the signing key's public half (PEM), which ics2 replay --public-key verifies the trail with."""
    public = load_public_key(key_file or key_path(settings_from()))
    if as_json:
        click.echo(json.dumps({"key_id": key_id(public), "public_key": public_pem(public)}))
    else:
        click.echo(public_pem(public), nl=False)
        Console(stderr=True).print(f"key id {key_id(public)}", highlight=False)
