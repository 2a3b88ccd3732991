"""``ics2 demo``: start the local stack, run the bundled scenario end to end, show every party's queue."""

from __future__ import annotations

import click


@click.command()
@click.option("--keep", is_flag=True, help="Keep the demo's topics (prefixed demo<id>.) for inspection")
@click.option("--timeout", type=float, default=90.0, show_default=True, help="Seconds to wait for customs' answers")
def demo(keep: bool, timeout: float) -> None:
    """Book two consolidations, file through the customs simulator, print party queues and ENS states."""
    from rich.console import Console

    from streams.demo import run
    from streams.logs import configure_logging

    configure_logging("console", level="WARNING")
    console = Console()
    if not console.is_terminal:
        console = Console(width=150)
    run(console, keep=keep, timeout=timeout)
