"""``ics2 consult MBL|MRN --eori EORI``: ask customs what it holds (IE3Q05 -> IE3R08 through the gateway).

Recovers a filing's state, or a notification that was lost: customs answers with every filing of the requester
(as declarant, or as the MBL's carrier) under the MRN or MBL, its state and the last notification it sent about it.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import click

from streams.cli.options import json_option, principal_options, settings_from


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("target", metavar="MBL|MRN")
@click.option("--eori", required=True, help="EORI of the requester: the declarant of the filings, or the carrier")
@click.option("--party", help="Party id of the requester, recorded on the outbound request (default: the EORI)")
@click.option("--hbl", help="Only the filings of this house B/L")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait for customs' IE3R08")
@json_option
@principal_options
def consult(
    target: str,
    eori: str,
    party: str | None,
    hbl: str | None,
    timeout: float,
    as_json: bool,
    **connection: str | None,
) -> None:
    """Consult the ENS filings under MBL or MRN (IE3Q05) and print customs' answer (IE3R08)."""
    from streams.errors import GatewayUnavailable, RenderError
    from streams.gateway.consult import consult as run

    settings = settings_from(**connection)
    try:
        results = asyncio.run(
            run(settings, target, eori, datetime.now(UTC).replace(microsecond=0), party=party, hbl=hbl, timeout=timeout)
        )
    except RenderError as exc:
        raise click.BadParameter(str(exc)) from exc
    if results is None:
        raise GatewayUnavailable(f"no IE3R08 from customs within {timeout:g}s")
    if as_json:
        click.echo(json.dumps(results.to_json(), indent=2, sort_keys=True))
        return
    click.echo(f"IE3R08 {results.reference} for {results.requester} ({results.mbl or target}):")
    if not results.filings:
        click.echo("  customs holds no filing of this requester under it")
    for f in results.filings:
        house = f.hbl or "master level"
        click.echo(f"  {f.filing} {house:<16} {f.mrn}  {f.status:<12} last {f.last_notification or '-'}  LRN {f.lrn}")
