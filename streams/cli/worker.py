"""``ics2 worker``: run the stream processors (Faust worker) until stopped."""

from __future__ import annotations

import asyncio

import click

from streams.settings import Settings


@click.command()
@click.option("--bootstrap-servers", envvar="ICS2_BOOTSTRAP_SERVERS", help="Kafka bootstrap servers (host:port,...)")
@click.option("--topic-prefix", envvar="ICS2_TOPIC_PREFIX", help="Prefix of every topic name")
@click.option("--app-id", envvar="ICS2_APP_ID", help="Consumer group and Faust application id")
@click.option("--web-port", envvar="ICS2_WEB_PORT", type=int, help="Port of the health and status views")
@click.option("--apply-topics/--no-apply-topics", default=True, help="Create or update the catalogue's topics first")
@click.option("--loglevel", default="info", show_default=True)
def worker(
    bootstrap_servers: str | None,
    topic_prefix: str | None,
    app_id: str | None,
    web_port: int | None,
    apply_topics: bool,
    loglevel: str,
) -> None:
    """Run the pipeline's agents until SIGTERM or Ctrl-C."""
    import faust

    from streams.logs import configure_logging
    from streams.pipeline.app import build_pipeline

    settings = Settings.from_env(
        bootstrap_servers=bootstrap_servers, topic_prefix=topic_prefix, app_id=app_id, web_port=web_port
    )
    configure_logging(settings.log_format, level=loglevel.upper())
    if apply_topics:
        from streams.admin import apply_topics as apply
        from streams.topics import Catalogue

        asyncio.run(apply(settings, Catalogue.for_prefix(settings.topic_prefix)))
    pipeline = build_pipeline(settings)
    faust.Worker(
        pipeline.app, loglevel=loglevel, quiet=True, override_logging=False, redirect_stdouts=False
    ).execute_from_commandline()
