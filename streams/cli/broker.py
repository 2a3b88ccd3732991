"""``ics2 broker``: run the local Kafka broker (KRaft) without Docker: one node, or ``--nodes 3`` for a cluster.

A cluster's node ``n`` listens for clients on the base port (``ICS2_BOOTSTRAP_SERVERS``' or ``--port``) plus
``2(n-1)`` and for the controllers on the port after it (``streams.broker.cluster``); ``status``, ``stop`` and
``logs`` read the node count from the state folder.

Exit codes (``streams.errors.ExitCode``): 0 on success (``status``: the broker runs, every node of a cluster), 4 when
the broker did not answer or (``status``) does not run, 6 when its port is taken, 8 when the platform is unusable
(no Java, no Maven).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.table import Table

from streams.broker import BrokerStatus, ClusterStatus, LocalBroker, LocalCluster, node_ports, recorded_nodes
from streams.broker.cluster import MAX_NODES
from streams.broker.secure import SECURITY_MODES, client_environment, recorded_security
from streams.cli.options import json_option
from streams.cli.output import console as make_console
from streams.cli.output import quiet_kafka_client
from streams.errors import ExitCode, PlatformError
from streams.logs import configure_logging
from streams.settings import Settings

_state_dir = click.option(
    "--state-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="The broker's state folder (default: <ICS2_STATE_DIR>/kafka).",
)
_port = click.option("--port", type=int, help="Client port (default: the port of ICS2_BOOTSTRAP_SERVERS).")
_controller_port = click.option("--controller-port", type=int, help="Controller port (default: client port + 1).")


def _local(state_dir: Path | None, nodes: int | None = None, port: int | None = None) -> LocalBroker | LocalCluster:
    """The folder's one-node broker or cluster: ``nodes`` if given, else the count its folder recorded, else one."""
    settings = Settings.from_env()
    folder = state_dir or settings.state_dir / "kafka"
    recorded = recorded_nodes(folder)
    count = nodes or recorded or 1
    if count == 1:
        if recorded:
            raise PlatformError(
                f"{folder} holds a cluster of {recorded} nodes: use --nodes {recorded}, or another --state-dir"
            )
        return _broker(state_dir, port)
    return LocalCluster.from_settings(settings, state_dir=state_dir, port=port, nodes=count)


def _broker(
    state_dir: Path | None,
    port: int | None = None,
    controller_port: int | None = None,
    security: str | None = None,
    tls_port: int | None = None,
    client_auth: bool = False,
) -> LocalBroker:
    settings = Settings.from_env()
    overrides: dict[str, object] = {"state_dir": state_dir, "port": port, "controller_port": controller_port}
    if port is not None and controller_port is None:
        overrides["controller_port"] = port + 1
    # Without --security, the mode the folder was started in, so that status and stop probe it the right way.
    overrides["security"] = security or recorded_security(state_dir or settings.state_dir / "kafka")
    overrides["tls_port"] = tls_port
    overrides["client_auth"] = client_auth or None
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


def _cluster_table(status: ClusterStatus) -> Table:
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    state = "ready" if status.ready else ("running, not all answering" if status.running else "not all running")
    rows = [
        ("state", state),
        ("bootstrap", status.bootstrap_servers),
        ("brokers seen", "-" if status.brokers_seen is None else f"{status.brokers_seen} of {len(status.nodes)}"),
        ("kafka", status.version),
        ("state dir", str(status.state_dir)),
        ("cluster id", status.cluster_id),
    ]
    for number, node in enumerate(status.nodes, start=1):
        node_state = "ready" if node.ready else ("running, not answering" if node.running else "stopped")
        uptime = f", up {node.uptime_s:.0f}s" if node.uptime_s is not None else ""
        rows.append((f"node {number}", f"{node_state}, {node.bootstrap_servers}, pid {node.pid or '-'}{uptime}"))
    for key, value in rows:
        table.add_row(key, value)
    return table


def _cluster_json(status: ClusterStatus) -> dict[str, object]:
    keys = ("running", "ready", "pid", "bootstrap_servers", "uptime_s")
    return {
        "running": status.running,
        "ready": status.ready,
        "nodes": [{"node_id": n, **{k: getattr(node, k) for k in keys}} for n, node in enumerate(status.nodes, 1)],
        "bootstrap_servers": status.bootstrap_servers,
        "brokers_seen": status.brokers_seen,
        "version": status.version,
        "state_dir": str(status.state_dir),
        "cluster_id": status.cluster_id,
    }


@click.group()
def broker() -> None:
    """Start, stop and inspect the local Kafka broker (KRaft, jars from Maven Central): one node, or a cluster."""
    # Progress on standard error: standard output is the report (with --json, the JSON alone).
    configure_logging("auto", level="INFO")
    quiet_kafka_client()


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
@click.option(
    "--mtls",
    is_flag=True,
    help="Mutual TLS on the --tls-port listener: clients must also show a certificate of the broker's CA "
    "(ics2 parties onboard --client-cert).",
)
@click.option(
    "--nodes",
    type=click.IntRange(1, MAX_NODES),
    default=None,
    help="Run a KRaft cluster of this many nodes (each broker and controller, -Xmx512m): node n on the client port "
    "+ 2(n-1), its controller on the port after. Topics then get min(3, nodes) replicas and min.insync.replicas "
    "min(2, replicas). Default: what the state folder was started with, else 1.",
)
@json_option
def start(
    state_dir: Path | None,
    port: int | None,
    controller_port: int | None,
    timeout: float,
    security: str | None,
    tls_port: int | None,
    mtls: bool,
    nodes: int | None,
    as_json: bool,
) -> None:
    """Start the broker in the background, or report the one already running."""
    console = make_console()
    cluster = _local(state_dir, nodes, port)
    if isinstance(cluster, LocalCluster):
        if security or tls_port is not None or mtls or controller_port is not None:
            raise click.UsageError(
                "a local cluster runs plaintext on the port scheme of --port: no --security, --tls-port, --mtls "
                "or --controller-port"
            )
        _start_cluster(cluster, timeout, as_json)
        return
    local = _broker(state_dir, port, controller_port, security, tls_port, mtls)
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


def _start_cluster(cluster: LocalCluster, timeout: float, as_json: bool) -> None:
    status = cluster.start(timeout=timeout)
    environment = {"ICS2_BOOTSTRAP_SERVERS": status.bootstrap_servers}
    if as_json:
        started = {"bootstrap_servers": status.bootstrap_servers, "pids": list(status.pids)}
        extra = {"nodes": len(status.nodes), "started_now": status.started_now, "cluster_id": status.cluster_id}
        click.echo(json.dumps({**started, **extra, "timings": dict(status.timings), "environment": environment}))
        return
    console = make_console()
    headline = "started" if status.started_now else "already running"
    console.print(f"Kafka cluster of {len(status.nodes)} nodes {headline}", highlight=False)
    config = cluster.config
    for node_id, node in zip(config.node_ids, status.nodes, strict=True):
        client, controller = node_ports(config.port, node_id)
        console.print(
            f"  node {node_id}: {config.host}:{client} (controller {controller}), pid {node.pid}", highlight=False
        )
    labels = {"jars": "jar fetch", "format": "storage format (all nodes)", "start_to_ready": "start to ready"}
    for phase, seconds in status.timings.items():
        note = " (cached)" if phase == "jars" and seconds == 0 else ""
        console.print(f"  {labels.get(phase, phase)}: {seconds:.2f}s{note}", highlight=False)
    durability = config.durability
    console.print(
        f"topics get replication {durability.replication} and min.insync.replicas {durability.min_insync} "
        "(ics2 topics apply); reach every node with",
        highlight=False,
    )
    for name, value in environment.items():
        click.echo(f"  export {name}={value}")


@broker.command()
@_state_dir
@click.option("--timeout", type=float, default=30.0, show_default=True, help="Seconds before SIGKILL.")
@json_option
def stop(state_dir: Path | None, timeout: float, as_json: bool) -> None:
    """Stop the broker, every node of a cluster (SIGTERM, then SIGKILL after the timeout)."""
    local = _local(state_dir)
    stopped = local.stop(timeout=timeout)
    if as_json:
        click.echo(json.dumps({"stopped": stopped}))
    elif isinstance(local, LocalCluster):
        said = f"Kafka cluster of {len(local.nodes)} nodes stopped" if stopped else "No node of the cluster was running"
        make_console().print(said)
    else:
        make_console().print("Kafka broker stopped" if stopped else "No Kafka broker was running")


@broker.command()
@_state_dir
@_port
@json_option
def status(state_dir: Path | None, port: int | None, as_json: bool) -> None:
    """Show whether the broker runs and answers clients; exit 4 when it (a node of a cluster) does not run."""
    local = _local(state_dir, port=port)
    if isinstance(local, LocalCluster):
        cluster = local.status()
        if as_json:
            click.echo(json.dumps(_cluster_json(cluster)))
        else:
            make_console().print(_cluster_table(cluster))
        sys.exit(ExitCode.OK if cluster.running else ExitCode.BROKER)
    current = local.status()
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
    """Print the end of the broker's output and server log (node by node for a cluster)."""
    click.echo(_local(state_dir).log_tail(lines))
