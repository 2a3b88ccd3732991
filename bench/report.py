"""The results of a run: one JSON document (kept under ``bench/results/``) and the table printed on the terminal."""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Mapping
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from rich.table import Table

from bench.stats import PathResult, ratios, rounded

#: Bumped when the document's shape changes, so that old results can still be told apart.
RESULT_FORMAT = "ics2-bench/2"
RESULTS_DIR = Path(__file__).resolve().parent / "results"
LATEST = "latest.json"


def environment(kafka_version: str, broker: str, load_at_start: float) -> dict[str, Any]:
    """What the numbers depend on besides the code: machine, interpreter, client and broker versions."""
    versions = {}
    for package in ("aiokafka", "faust-streaming", "fastavro", "lxml"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cpu_count": os.cpu_count(),
        "load_average_1m": {"start": round(load_at_start, 2), "end": round(os.getloadavg()[0], 2)},
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "kafka_version": kafka_version,
        "broker": broker,
        "packages": versions,
    }


def result_document(
    *,
    started_at: datetime,
    finished_at: datetime,
    parameters: Mapping[str, Any],
    environment: Mapping[str, Any],
    pipeline: PathResult,
    passthrough: PathResult,
) -> dict[str, Any]:
    """The JSON result of a run: parameters, environment, both paths' numbers, the ratios and the raw samples."""
    return {
        "format": RESULT_FORMAT,
        "started_at": started_at.isoformat(),
        "finished_at": finished_at.isoformat(),
        "environment": dict(environment),
        "parameters": dict(parameters),
        "pipeline": pipeline.to_json(),
        "passthrough": passthrough.to_json(),
        "ratios": rounded(ratios(pipeline, passthrough)),
        "raw": {
            "pipeline_latencies_ms": [round(value, 3) for value in pipeline.latencies_ms],
            "passthrough_latencies_ms": [round(value, 3) for value in passthrough.latencies_ms],
        },
    }


def result_name(started_at: datetime) -> str:
    """``20261120T090000Z.json``: sorts by time, and has no characters that file systems dislike."""
    return started_at.strftime("%Y%m%dT%H%M%SZ") + ".json"


def write_results(document: Mapping[str, Any], started_at: datetime, directory: Path = RESULTS_DIR) -> Path:
    """Write the document under its UTC timestamp and as ``latest.json``; returns the timestamped path."""
    directory.mkdir(parents=True, exist_ok=True)
    text = json.dumps(document, indent=2, sort_keys=False) + "\n"
    path = directory / result_name(started_at)
    path.write_text(text, encoding="utf-8")
    (directory / LATEST).write_text(text, encoding="utf-8")
    if document.get("measures"):
        path.with_suffix(".md").write_text(markdown_summary(document), encoding="utf-8")
    return path


def _number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def results_table(document: Mapping[str, Any]) -> Table:
    """Pipeline beside passthrough, one row per measure, with the ratio in the last column."""
    pipeline, passthrough, ratio = document["pipeline"], document["passthrough"], document["ratios"]
    parameters = document["parameters"]
    table = Table(
        title="ICS2 pipeline vs raw aiokafka passthrough (same broker, same run)",
        caption=(
            f"{parameters['bookings']} bookings, {parameters['notifications']} notifications every "
            f"{parameters['interval_ms']:g} ms, {parameters['partitions']} partitions; "
            f"pipeline latency crosses {pipeline['hops']} hops (parse, correlate, track, produce), "
            f"the passthrough {passthrough['hops']}"
        ),
    )
    table.add_column("measure")
    table.add_column("pipeline", justify="right")
    table.add_column("passthrough", justify="right")
    table.add_column("pipeline ÷ passthrough", justify="right")
    p_tp, b_tp = pipeline["throughput"], passthrough["throughput"]
    table.add_row(
        "throughput (bookings/s vs records/s)",
        _number(p_tp["items_per_s"]),
        _number(b_tp["items_per_s"]),
        _ratio(ratio["throughput"]),
    )
    table.add_row("outputs/s (filings vs records)", _number(p_tp["outputs_per_s"]), _number(b_tp["outputs_per_s"]), "")
    table.add_row("drain span (s)", _number(p_tp["span_s"], 2), _number(b_tp["span_s"], 2), "")
    table.add_row("startup to first output (s)", _number(p_tp["startup_s"], 2), _number(b_tp["startup_s"], 2), "")
    p_lat, b_lat = pipeline["latency_ms"], passthrough["latency_ms"]
    for key, label in (("p50_ms", "p50"), ("p95_ms", "p95"), ("p99_ms", "p99"), ("max_ms", "max")):
        ratio_key = {"p50_ms": "latency_p50", "p99_ms": "latency_p99"}.get(key)
        table.add_row(
            f"latency {label} (ms)",
            _number(p_lat[key], 2),
            _number(b_lat[key], 2),
            _ratio(ratio[ratio_key]) if ratio_key else "",
        )
    rss = (pipeline["peak_rss_kib"], passthrough["peak_rss_kib"])
    table.add_row(
        "peak RSS (MiB, VmHWM)",
        _number(None if rss[0] is None else rss[0] / 1024),
        _number(None if rss[1] is None else rss[1] / 1024),
        _ratio(ratio["peak_rss"]),
    )
    return table


def _cell(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    return f"{value:,.2f} {unit}" if unit == "ms" else f"{value:,.0f} {unit}"


def measures_table(document: Mapping[str, Any]) -> Table:
    """Issue 12's rows: each measure beside the baseline of the same run it is judged against."""
    table = Table(title="Against the real limits (same broker, same run)")
    for column in ("measure", "result", "baseline", "ratio", "target"):
        table.add_column(column, justify="left" if column in ("measure", "baseline", "target") else "right")
    for row in document.get("measures", []):
        baseline = f"{row['baseline']}: {_cell(row['baseline_value'], row['unit'])}" if row["baseline"] else ""
        table.add_row(row["measure"], _cell(row["value"], row["unit"]), baseline, _ratio(row["ratio"]), row["target"])
    return table


def markdown_summary(document: Mapping[str, Any]) -> str:
    """The measures as a Markdown table, with when and where they were taken, for ``bench/results/<stamp>.md``."""
    env = document["environment"]
    load = env.get("load_average_1m", {})
    lines = [
        f"# Benchmark {document['started_at']}",
        "",
        f"{env.get('cpu_count')} CPUs, load average {load.get('start')} at start and {load.get('end')} at the end; "
        f"Kafka {env.get('kafka_version')} ({env.get('broker')}); Python {env.get('python')}.",
        "",
        "| measure | result | baseline (same run) | ratio | target |",
        "|---|---:|---|---:|---|",
    ]
    for row in document.get("measures", []):
        baseline = f"{row['baseline']}: {_cell(row['baseline_value'], row['unit'])}" if row["baseline"] else ""
        lines.append(
            f"| {row['measure']} | {_cell(row['value'], row['unit'])} | {baseline} | {_ratio(row['ratio'])} "
            f"| {row['target']} |"
        )
    lines.extend(records_by_topic_lines(document.get("pipeline_notifications", {}).get("records_by_topic", {})))
    return "\n".join(lines) + "\n"


def records_by_topic_lines(by_topic: Mapping[str, Mapping[str, float]]) -> list[str]:
    """Where a booking's and a notification's records go, per topic: the floor's parts."""
    booking, notification = by_topic.get("per_booking", {}), by_topic.get("per_notification", {})
    if not booking and not notification:
        return []
    lines = [
        "",
        "Records written per item, by topic:",
        "",
        "| topic | per booking | per notification |",
        "|---|---:|---:|",
    ]
    for topic in sorted({*booking, *notification}, key=lambda t: (-booking.get(t, 0), -notification.get(t, 0), t)):
        lines.append(f"| {topic} | {booking.get(topic, 0):.2f} | {notification.get(topic, 0):.2f} |")
    lines.append(f"| all | {sum(booking.values()):.2f} | {sum(notification.values()):.2f} |")
    return lines
