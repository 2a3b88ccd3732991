"""``ics2 answer rfi|rfs REFERENCE --file answer.json``: answer a customs referral from the product.

The file is checked here (shape, and that the XML renders against the XSD with stand-in MRN and filer), then
published as an ``AnswerRequest`` keyed ``ref:<REFERENCE>`` to the correlation topic, where the pipeline completes
it from the filing ledger and sends IE3R02 / IE3R03 through the outbound topic like every filing.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from streams.cli.options import json_option, principal_options, read_json, settings_from
from streams.errors import InputError


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
    as_json: bool,
) -> None:
    from streams.cli.answer_checks import answer_request
    from streams.client import produce
    from streams.contracts.avro import SchemaCatalogue
    from streams.domain.answers import AnswerRejected
    from streams.domain.ledger import referral_key
    from streams.pipeline.stages.answers import RECORD
    from streams.topics import Catalogue

    settings = settings_from(bootstrap_servers, topic_prefix, username, password)
    catalogue = Catalogue.for_prefix(settings.topic_prefix)
    answering = party or settings.sasl_username
    if answering:
        try:
            catalogue.party_queue(answering)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--party") from exc
    content: Any = read_json(file)
    try:
        record = answer_request(
            kind, reference, content, requested_at=datetime.now(UTC), mbl=mbl, requested_by=answering
        )
    except (ValueError, AnswerRejected) as exc:
        raise InputError(
            f"{file} cannot answer {kind.upper()} {reference}: {exc}", hint="see the README, Inbox and answers"
        ) from exc
    value = SchemaCatalogue.load().encode(RECORD, record)
    headers = [("ics2-record", RECORD.encode()), ("ics2-party", (answering or "").encode())]
    key = referral_key(reference).encode()
    asyncio.run(produce(settings, catalogue.notifications_parsed.name, [(key, value)], headers=headers))
    if as_json:
        click.echo(json.dumps({"request_id": record["request_id"], "referral": reference, "kind": kind}))
        return
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
        type=click.Path(path_type=Path, dir_okay=False),
        help="The answer as JSON (format in the README, section Inbox and answers)",
    )
    @click.option("--mbl", help="The MBL the referral is about; the answer is refused if the referral's differs")
    @click.option("--party", help="The answering party's id (default: the SASL user name); must be the filer")
    @principal_options
    @json_option
    def command(
        reference: str, file: Path, mbl: str | None, party: str | None, as_json: bool, **connection: str | None
    ) -> None:
        _publish(kind, reference, file, mbl, party, **connection, as_json=as_json)

    return command


answer.add_command(_command("rfi", "request for information (IE3Q02) by an IE3R02 to"))
answer.add_command(_command("rfs", "request for high-risk cargo screening (IE3Q03) by an IE3R03 to"))
