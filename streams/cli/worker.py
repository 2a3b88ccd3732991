"""``ics2 worker``: run the stream processors (Faust worker) until stopped.

Before Faust starts, the broker must answer and the web port must be free: either failure is one line and its exit
code (4, 6), not Faust's tracebacks.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from types import FrameType

import click

from streams.cli.options import connection_options
from streams.client import reach_broker
from streams.errors import PortInUse
from streams.settings import Settings


def require_free_port(host: str, port: int, option: str) -> None:
    """``PortInUse`` when another process listens on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise PortInUse(
                f"port {host}:{port} is taken by another process", hint=f"stop it or choose another port ({option})"
            ) from exc


@click.command()
@connection_options
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
    require_free_port(settings.web_host, settings.web_port, "--web-port, ICS2_WEB_PORT")
    asyncio.run(reach_broker(settings))
    configure_logging(settings.log_format, level=loglevel.upper())
    if apply_topics:
        from streams.admin import apply_topics as apply
        from streams.topics import Catalogue

        asyncio.run(apply(settings, Catalogue.for_prefix(settings.topic_prefix)))
    pipeline = build_pipeline(settings)
    signal.signal(signal.SIGUSR1, _dump_tasks)
    faust.Worker(
        pipeline.app, loglevel=loglevel, quiet=True, override_logging=False, redirect_stdouts=False
    ).execute_from_commandline()


def _dump_tasks(signum: int, frame: FrameType | None) -> None:
    """SIGUSR1 prints every asyncio task's stack to standard error: where is a stuck worker waiting?"""
    loop = asyncio.get_event_loop()
    for task in asyncio.all_tasks(loop):
        print(f"--- {task.get_name()} {task!r}"[:300], file=sys.stderr)
        task.print_stack(limit=12, file=sys.stderr)
