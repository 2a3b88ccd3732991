"""``ics2 broker``: run the local Kafka broker (KRaft, one node) without Docker.

Exit codes (``streams.errors.ExitCode``): 0 on success (``status``: the broker runs), 4 when the broker did not
answer or (``status``) does not run, 6 when its port is taken, 8 when the platform is unusable (no Java, no Maven).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.table import Table

from streams.broker import BrokerStatus, LocalBroker
from streams.broker.secure import SECURITY_MODES, client_environment, recorded_security
from streams.cli.options import json_option
from streams.cli.output import console as make_console
from streams.errors import ExitCode
from streams.settings import Settings

_state_dir = click.option(
    "--state-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="The broker's state folder (default: <ICS2_STATE_DIR>/kafka).",
)
_port = click.option("--port", type=int, help="Client port (default: the port of ICS2_BOOTSTRAP_SERVERS).")
_controller_port = click.option("--controller-port", type=int, help="Controller port (default: client port + 1).")


def _broker(
    state_dir: Path | None,
    port: int | None = None,
    controller_port: int | None = None,
    security: str | None = None,
    tls_port: int | None = None,
) -> LocalBroker:
    settings = Settings.from_env()
    overrides: dict[str, object] = {"state_dir": state_dir, "port": port, "controller_port": controller_port}
    if port is not None and controller_port is None:
        overrides["controller_port"] = port + 1
    # Without --security, the mode the folder was started in, so that status and stop probe it the right way.
    overrides["security"] = security or recorded_security(state_dir or settings.state_dir / "kafka")
    overrides["tls_port"] = tls_port
    return LocalBroker.from_settings(settings, **overrides)


def _status_table(status: BrokerStatus) -> Table:
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    state = "ready" if status.ready else ("running, not answering" if status.running else "stopped")
    rows = [
        ("state", state),
        ("pid", str(status.pid) if status.pid else "-"),
        ("bootstrap", status.bootstrap_servers),
        ("kafka", status.version),
        ("state dir", str(status.state_dir)),
        ("uptime", f"{status.uptime_s:.0f}s" if status.uptime_s is not None else "-"),
    ]
    for key, value in rows:
        table.add_row(key, value)
    return table


@click.group()
def broker() -> None:
    """Start, stop and inspect the local Kafka broker (KRaft, one node, jars from Maven Central)."""


@broker.command()
@_state_dir
@_port
@_controller_port
@click.option("--timeout", type=float, default=90.0, show_default=True, help="Seconds to wait for readiness.")
@click.option(
    "--security",
    type=click.Choice(SECURITY_MODES),
    default=None,
    help="sasl: SCRAM users and ACLs (ics2 parties); ssl: TLS with a private CA. Fixed at the first start.",
)
@click.option("--tls-port", type=int, default=None, help="With --security sasl: also a SASL_SSL listener here.")
@json_option
def start(
    state_dir: Path | None,
    port: int | None,
    controller_port: int | None,
    timeout: float,
    security: str | None,
    tls_port: int | None,
    as_json: bool,
) -> None:
    """Start the broker in the background, or report the one already running."""
    console = make_console()
    local = _broker(state_dir, port, controller_port, security, tls_port)
    status = local.start(timeout=timeout)
    cfg = local.config
    if as_json:
        environment = client_environment(cfg.security, cfg.bootstrap_servers, cfg.state_dir)
        started = {"bootstrap_servers": status.bootstrap_servers, "pid": status.pid, "started_now": status.started_now}
        click.echo(json.dumps({**started, "timings": dict(status.timings), "environment": environment}))
        return
    headline = "started" if status.started_now else "already running"
    console.print(f"Kafka broker {headline} on [bold]{status.bootstrap_servers}[/bold] (pid {status.pid})")
    labels = {"jars": "jar fetch", "format": "storage format", "start_to_ready": "start to ready"}
    for phase, seconds in status.timings.items():
        note = " (cached)" if phase == "jars" and seconds == 0 else ""
        console.print(f"  {labels.get(phase, phase)}: {seconds:.2f}s{note}", highlight=False)
    if cfg.security != "plaintext":
        console.print(f"security {cfg.security}: run ics2 as the admin with", highlight=False)
        for name, value in client_environment(cfg.security, cfg.bootstrap_servers, cfg.state_dir).items():
            click.echo(f"  export {name}={value}")
        if cfg.tls_bootstrap_servers is not None:
            console.print(
                f"  TLS (SASL_SSL) on {cfg.tls_bootstrap_servers}, CA {cfg.state_dir / 'tls' / 'ca.pem'}",
                highlight=False,
            )


@broker.command()
@_state_dir
@click.option("--timeout", type=float, default=30.0, show_default=True, help="Seconds before SIGKILL.")
@json_option
def stop(state_dir: Path | None, timeout: float, as_json: bool) -> None:
    """Stop the broker (SIGTERM, then SIGKILL after the timeout)."""
    stopped = _broker(state_dir).stop(timeout=timeout)
    if as_json:
        click.echo(json.dumps({"stopped": stopped}))
    else:
        make_console().print("Kafka broker stopped" if stopped else "No Kafka broker was running")


@broker.command()
@_state_dir
@_port
@json_option
def status(state_dir: Path | None, port: int | None, as_json: bool) -> None:
    """Show whether the broker runs and answers clients; exit 4 when it does not run."""
    current = _broker(state_dir, port).status()
    if as_json:
        keys = ("running", "ready", "pid", "bootstrap_servers", "version", "uptime_s")
        click.echo(json.dumps({**{k: getattr(current, k) for k in keys}, "state_dir": str(current.state_dir)}))
    else:
        make_console().print(_status_table(current))
    sys.exit(ExitCode.OK if current.running else ExitCode.BROKER)


@broker.command()
@_state_dir
@click.option("-n", "--lines", type=int, default=60, show_default=True, help="How many lines of the server log.")
def logs(state_dir: Path | None, lines: int) -> None:
    """Print the end of the broker's output and server log."""
    click.echo(_broker(state_dir).log_tail(lines))
