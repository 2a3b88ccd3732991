"""``ics2 inbox PARTY``: the party's queue in the terminal, newest first, or as JSON lines for scripts.

Read-only: a consumer without a group (aiokafka then assigns it every partition of the queue itself), sought to the
beginning, so it never commits and never disturbs the alerting services that consume the same queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import click

from streams.cli.options import json_option, principal_options, settings_from
from streams.errors import NotFound
from streams.settings import Settings

#: How often the table is redrawn while following, so relative deadlines stay true.
REDRAW_S = 5.0
URGENCIES = ("critical", "high", "normal", "info")
#: Without a group, aiokafka assigns every partition of the topic itself once it has the topic's metadata.
ASSIGNMENT_TIMEOUT_S = 15.0


class QueueUnavailable(NotFound):
    """The party's queue does not exist (party not onboarded) or this principal may not read it."""


async def read_queue(
    settings: Settings,
    topic: str,
    on_alerts: Callable[[list[dict[str, Any]]], None],
    *,
    follow: bool,
    on_caught_up: Callable[[], None] | None = None,
    on_tick: Callable[[], None] | None = None,
) -> int:
    """Feed every decodable alert of ``topic`` to ``on_alerts`` in batches; until the end, or forever with ``follow``.

    ``on_caught_up`` is called once the records present at the start are read; while following, ``on_tick`` every
    ``REDRAW_S``. Returns how many records could not be read as ``PartyAlert`` (skipped, never fatal for an inbox).
    """
    from aiokafka import AIOKafkaConsumer
    from aiokafka.errors import KafkaConnectionError, KafkaError

    from streams.client import start_client, stop_consumer
    from streams.contracts.avro import SchemaCatalogue
    from streams.errors import DecodeError

    schemas = SchemaCatalogue.load()
    consumer = AIOKafkaConsumer(
        group_id=None, enable_auto_commit=False, auto_offset_reset="earliest", **settings.kafka_client_kwargs()
    )
    skipped = 0
    await start_client(consumer, settings)
    try:
        if topic not in await consumer.topics():
            raise QueueUnavailable(
                f"no queue {topic} on {settings.bootstrap_servers}: is the party onboarded?",
                hint="check the party id and --topic-prefix, or create its queue with ics2 topics apply --party",
            )
        consumer.subscribe([topic])
        waited = time.monotonic() + ASSIGNMENT_TIMEOUT_S
        while not consumer.assignment():
            if time.monotonic() > waited:
                raise QueueUnavailable(f"no partition of {topic} could be assigned")
            await asyncio.sleep(0.05)
        partitions = sorted(consumer.assignment())
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        caught_up = False
        last_tick = time.monotonic()
        while True:
            batch = await consumer.getmany(*partitions, timeout_ms=500)
            alerts: list[dict[str, Any]] = []
            for records in batch.values():
                for record in records:
                    try:
                        alerts.append(schemas.decode(record.value, reader="PartyAlert").record)
                    except DecodeError:
                        skipped += 1
            if alerts:
                on_alerts(alerts)
            if not caught_up and all([await consumer.position(tp) >= ends[tp] for tp in partitions]):
                caught_up = True
                if on_caught_up is not None:
                    on_caught_up()
                if not follow:
                    return skipped
            if caught_up and on_tick is not None and time.monotonic() - last_tick >= REDRAW_S:
                on_tick()
                last_tick = time.monotonic()
    except KafkaConnectionError:
        raise
    except KafkaError as exc:
        raise QueueUnavailable(f"cannot read {topic}: {exc!r}") from exc
    finally:
        await stop_consumer(consumer)


@click.command()
@click.argument("party")
@click.option("--follow", is_flag=True, help="Keep reading and updating until Ctrl-C")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True, help="Show the N newest alerts")
@json_option
@click.option(
    "--urgency",
    "urgencies",
    type=click.Choice(URGENCIES),
    multiple=True,
    help="Only alerts of this urgency; repeat for several",
)
@principal_options
def inbox(
    party: str,
    follow: bool,
    limit: int,
    as_json: bool,
    urgencies: tuple[str, ...],
    bootstrap_servers: str | None,
    topic_prefix: str | None,
    username: str | None,
    password: str | None,
) -> None:
    """Show PARTY's queue, newest first: alert id, urgency, deadline, MBL, HBL chain, what to do.

    --json prints one PartyAlert record per line, newest first.
    """
    from streams.topics import Catalogue

    settings = settings_from(bootstrap_servers, topic_prefix, username, password)
    try:
        topic = Catalogue.for_prefix(settings.topic_prefix).party_queue(party).name
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="PARTY") from exc
    view = JsonView(limit, urgencies) if as_json else TableView(party, limit, urgencies, follow)
    try:
        with view:
            skipped = asyncio.run(
                read_queue(settings, topic, view.add, follow=follow, on_caught_up=view.caught_up, on_tick=view.redraw)
            )
    except KeyboardInterrupt:
        return
    if skipped:
        click.echo(f"warning: {skipped} record(s) of {topic} are not PartyAlert records and were skipped", err=True)


class JsonView:
    """JSON lines: the inbox newest first once the queue is read; while following, each new or changed record."""

    def __init__(self, limit: int, urgencies: Sequence[str]) -> None:
        self.limit = limit
        self.urgencies = urgencies
        self.alerts: list[dict[str, Any]] = []
        self.printed: dict[str, dict[str, Any]] = {}
        self.backlog_read = False

    def __enter__(self) -> JsonView:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        """Print what was read when the queue ends or Ctrl-C stops it; nothing when reading failed."""
        if not self.backlog_read and _printable(exc_type):
            self.flush()

    def add(self, alerts: list[dict[str, Any]]) -> None:
        self.alerts.extend(alerts)
        if self.backlog_read:
            self.flush()

    def caught_up(self) -> None:
        """The backlog is read: print its newest ``limit`` alerts, then every new record as it comes."""
        from streams.inbox import latest_per_alert

        self.flush()
        for alert in latest_per_alert(self.alerts):
            self.printed.setdefault(alert["alert_id"], alert)
        self.backlog_read = True

    def redraw(self) -> None:
        """Lines once printed stay as they are: nothing to redraw."""

    def flush(self) -> None:
        from streams.inbox import json_line, select

        fresh = [a for a in select(self.alerts, self.urgencies) if self.printed.get(a["alert_id"]) != a]
        for alert in fresh if self.backlog_read else fresh[: self.limit]:
            click.echo(json_line(alert))
            self.printed[alert["alert_id"]] = alert


class TableView:
    """A rich table; with ``follow`` a live one, redrawn on every batch and every few seconds."""

    def __init__(self, party: str, limit: int, urgencies: Sequence[str], follow: bool) -> None:
        from streams.cli.output import console

        self.party = party
        self.limit = limit
        self.urgencies = urgencies
        self.follow = follow
        self.console = console()
        self.alerts: list[dict[str, Any]] = []
        self.live: Any = None
        self._stack = contextlib.ExitStack()

    def render(self) -> Any:
        from streams.inbox import select, table

        chosen = select(self.alerts, self.urgencies)
        return table(self.party, chosen[: self.limit], datetime.now(UTC), total=len(chosen))

    def __enter__(self) -> TableView:
        if self.follow:
            from rich.live import Live

            self.live = self._stack.enter_context(Live(self.render(), console=self.console, auto_refresh=False))
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self._stack.close()
        if not self.follow and _printable(exc_type):
            self.console.print(self.render())

    def add(self, alerts: list[dict[str, Any]]) -> None:
        self.alerts.extend(alerts)
        self.redraw()

    def caught_up(self) -> None:
        self.redraw()

    def redraw(self) -> None:
        if self.live is not None:
            self.live.update(self.render(), refresh=True)


def _printable(exc_type: type[BaseException] | None) -> bool:
    """A view prints what it read when the queue ended or Ctrl-C stopped it, never before an error line."""
    return exc_type is None or issubclass(exc_type, KeyboardInterrupt)
