"""``ics2 deploy render``: write the Kubernetes and Strimzi resources of a deployment as YAML.

Exit codes: 0 on success, 1 when ``--check`` finds files that differ from what would be written, 2 on bad options.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from streams.cli.options import json_option
from streams.deploy.options import DEFAULT_CLUSTER, DeployError, DeployOptions
from streams.deploy.render import render_files

EXIT_OK = 0
EXIT_DRIFT = 1
#: What ``deploy/k8s`` in the repository is generated with; the unit tests check it is current.
COMMITTED_COMMAND = "ics2 deploy render --out deploy/k8s --demo-parties"


def demo_parties() -> tuple[str, ...]:
    """The parties ``ics2 demo`` onboards: everyone in its bookings but the shippers."""
    from streams.scenarios import bookings

    return tuple(sorted({p["id"] for b in bookings(datetime.now(UTC)) for p in b["parties"] if p["role"] != "shipper"}))


@click.group()
def deploy() -> None:
    """Resources for running on a Kubernetes cluster with Strimzi."""


@deploy.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Folder to write to")
@click.option("--topic-prefix", "prefix", default="", help="Topic name prefix (ICS2_TOPIC_PREFIX of the deployment)")
@click.option("--app-id", default=None, help="Application id: consumer group and resource names")
@click.option("--cluster", default=DEFAULT_CLUSTER, show_default=True, help="Name of the Strimzi Kafka resource")
@click.option("--partitions", type=click.IntRange(min=1), default=None, help="Partitions of topics with no own count")
@click.option("--replicas", type=click.IntRange(min=1), default=2, show_default=True, help="Worker pods")
@click.option("--topic-replicas", type=click.IntRange(min=1), default=3, show_default=True, help="Replication factor")
@click.option("--image", default=None, help="Container image built from deploy/Dockerfile")
@click.option("--bootstrap-servers", default=None, help="Default: <cluster>-kafka-bootstrap:9093")
@click.option("--party", "parties", multiple=True, help="Onboard this party: its queue and user (repeatable)")
@click.option("--demo-parties", "with_demo_parties", is_flag=True, help="Onboard the parties of `ics2 demo`")
@click.option("--check", is_flag=True, help="Write nothing; exit 1 if the folder differs from what would be written")
@json_option
def render(
    out: Path,
    prefix: str,
    app_id: str | None,
    cluster: str,
    partitions: int | None,
    replicas: int,
    topic_replicas: int,
    image: str | None,
    bootstrap_servers: str | None,
    parties: tuple[str, ...],
    with_demo_parties: bool,
    check: bool,
    as_json: bool,
) -> None:
    """Write KafkaTopics, KafkaUsers, the workers' StatefulSet and the gateway's Deployment to --out."""
    chosen: dict[str, Any] = {
        "app_id": app_id,
        "default_partitions": partitions,
        "image": image,
        "bootstrap_servers": bootstrap_servers,
    }
    onboarded = tuple(dict.fromkeys((*parties, *(demo_parties() if with_demo_parties else ()))))
    try:
        options = DeployOptions(
            prefix=prefix,
            cluster=cluster,
            worker_replicas=replicas,
            topic_replicas=topic_replicas,
            parties=onboarded,
            **{k: v for k, v in chosen.items() if v is not None},
        )
        files = render_files(options)
    except DeployError as exc:
        raise click.UsageError(str(exc)) from exc
    if check:
        stale = [name for name, text in files.items() if _read(out / name) != text]
        if as_json:
            click.echo(json.dumps({"differs": [str(out / name) for name in stale]}))
        else:
            for name in stale:
                click.echo(f"differs: {out / name}")
        sys.exit(EXIT_DRIFT if stale else EXIT_OK)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (out / name).write_text(text, encoding="utf-8")
        if not as_json:
            click.echo(f"wrote {out / name}")
    if as_json:
        click.echo(json.dumps({"wrote": [str(out / name) for name in files]}))
    if options.idle_workers:
        click.echo(
            f"warning: {options.worker_replicas} workers for {options.default_partitions} partitions: "
            f"{options.idle_workers} will idle (raise --partitions to use them)",
            err=True,
        )


def _read(path: Path) -> str | None:
    return path.read_text(encoding="utf-8") if path.is_file() else None
