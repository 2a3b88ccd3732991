"""``ics2 answer rfi|rfs REFERENCE --file answer.json``: answer a customs referral from the product.

The file is checked here (shape, and that the XML renders against the XSD with stand-in MRN and filer), then
published as an ``AnswerRequest`` keyed ``ref:<REFERENCE>`` to the correlation topic, where the pipeline completes
it from the filing ledger and sends IE3R02 / IE3R03 through the outbound topic like every filing.
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from streams.cli.options import principal_options, settings_from


@click.group()
def answer() -> None:
    """Answer customs' requests for information (RFI) and for high-risk cargo screening (RFS)."""


def _publish(
    kind: str,
    reference: str,
    file: Path,
    mbl: str | None,
    party: str | None,
    bootstrap_servers: str | None,
    topic_prefix: str | None,
    username: str | None,
    password: str | None,
) -> None:
    from streams.client import produce
    from streams.contracts.avro import SchemaCatalogue
    from streams.domain.ledger import referral_key
    from streams.pipeline.answers import RECORD, AnswerRejected, answer_request
    from streams.topics import Catalogue

    settings = settings_from(bootstrap_servers, topic_prefix, username, password)
    catalogue = Catalogue.for_prefix(settings.topic_prefix)
    answering = party or settings.sasl_username
    if answering:
        try:
            catalogue.party_queue(answering)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--party") from exc
    try:
        content: Any = json.loads(file.read_text(encoding="utf-8"))
        record = answer_request(
            kind, reference, content, requested_at=datetime.now(UTC), mbl=mbl, requested_by=answering
        )
    except (ValueError, AnswerRejected) as exc:
        click.echo(f"error: {file} cannot answer {kind.upper()} {reference}: {exc}", err=True)
        sys.exit(2)
    value = SchemaCatalogue.load().encode(RECORD, record)
    headers = [("ics2-record", RECORD.encode()), ("ics2-party", (answering or "").encode())]
    key = referral_key(reference).encode()
    asyncio.run(produce(settings, catalogue.notifications_parsed.name, [(key, value)], headers=headers))
    click.echo(
        f"{kind.upper()} answer {record['request_id']} for referral {reference} published; "
        f"it goes to customs once the pipeline has matched the referral (see ics2 inbox {answering or '<filer>'})"
    )


def _command(kind: str, what: str) -> click.Command:
    @click.command(name=kind, help=f"Answer customs' {what} REFERENCE, with the JSON answer in --file.")
    @click.argument("reference")
    @click.option(
        "--file",
        "file",
        required=True,
        type=click.Path(path_type=Path, dir_okay=False, exists=True),
        help="The answer as JSON (format in the README, section Inbox and answers)",
    )
    @click.option("--mbl", help="The MBL the referral is about; the answer is refused if the referral's differs")
    @click.option("--party", help="The answering party's id (default: the SASL user name); must be the filer")
    @principal_options
    def command(reference: str, file: Path, mbl: str | None, party: str | None, **connection: str | None) -> None:
        _publish(kind, reference, file, mbl, party, **connection)

    return command


answer.add_command(_command("rfi", "request for information (IE3Q02) by an IE3R02 to"))
answer.add_command(_command("rfs", "request for high-risk cargo screening (IE3Q03) by an IE3R03 to"))
