"""Kafka's own load generator, ``org.apache.kafka.tools.ProducerPerformance``, as the broker's raw produce limit.

Its class path comes from Maven Central through ``deploy/kafka-tools/pom.xml`` (kafka-tools at the version the pom
pins), copied once like the broker's jars (``streams.broker.jars``) into ``<cache>/kafka-tools/<version>/lib``.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from streams.broker.jars import _copy_dependencies, _locked, find_java, kafka_version
from streams.errors import PlatformError
from streams.settings import PROJECT_ROOT

POM_PATH = PROJECT_ROOT / "deploy" / "kafka-tools" / "pom.xml"
DEFAULT_CACHE_DIR = PROJECT_ROOT / ".cache" / "kafka-tools"
MAIN_CLASS = "org.apache.kafka.tools.ProducerPerformance"
_MARKER = ".complete"
#: The summary line: "200000 records sent, 34012.2 records/sec (48.66 MB/sec), 412.3 ms avg latency, ...".
_SUMMARY = re.compile(r"(\d+) records sent, ([0-9.]+) records/sec \(([0-9.]+) MB/sec\), ([0-9.]+) ms avg latency")


@dataclass(frozen=True, slots=True)
class ProducerPerf:
    version: str
    records: int
    record_bytes: int
    records_per_s: float
    mb_per_s: float
    avg_latency_ms: float


def ensure_tools(cache_dir: Path = DEFAULT_CACHE_DIR, pom: Path = POM_PATH) -> tuple[str, Path]:
    """The kafka-tools version and its ``lib`` folder, copied from Maven Central on first use."""
    version = kafka_version(pom)
    version_dir = cache_dir / version
    lib_dir = version_dir / "lib"
    if (version_dir / _MARKER).exists():
        return version, lib_dir
    version_dir.mkdir(parents=True, exist_ok=True)
    with _locked(version_dir / ".lock"):
        if not (version_dir / _MARKER).exists():
            _copy_dependencies(pom, version_dir, lib_dir)
            (version_dir / _MARKER).write_text(f"{version}\n", encoding="utf-8")
    return version, lib_dir


def parse_summary(output: str) -> tuple[int, float, float, float]:
    """(records, records/s, MB/s, average latency in ms) from the tool's last summary line."""
    found = _SUMMARY.findall(output)
    if not found:
        raise PlatformError(f"ProducerPerformance printed no summary:\n{output[-2000:]}")
    records, per_s, mb_s, latency = found[-1]
    return int(records), float(per_s), float(mb_s), float(latency)


def producer_performance(
    bootstrap_servers: str, topic: str, records: int, record_bytes: int, timeout_s: float = 300.0
) -> ProducerPerf:
    """Run the tool once against ``topic`` (acks=all, no throttle) and return its summary."""
    version, lib_dir = ensure_tools()
    command = [
        str(find_java()), "-Xmx512m", "-cp", f"{lib_dir}/*", MAIN_CLASS,
        "--topic", topic, "--num-records", str(records), "--record-size", str(record_bytes), "--throughput", "-1",
        "--producer-props", f"bootstrap.servers={bootstrap_servers}", "acks=all",
    ]  # fmt: skip
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PlatformError(f"ProducerPerformance did not finish: {exc}") from exc
    if result.returncode != 0:
        raise PlatformError(f"ProducerPerformance exit {result.returncode}:\n{(result.stdout + result.stderr)[-2000:]}")
    sent, per_s, mb_s, latency = parse_summary(result.stdout)
    return ProducerPerf(version, sent, record_bytes, per_s, mb_s, latency)
