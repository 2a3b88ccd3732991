"""The broker's class path: Java and Maven checks, and one cached copy of the jars per Kafka version.

The jars come from Maven Central through ``deploy/kafka/pom.xml`` rather than a downloaded distribution, so that
the version is pinned in one reviewed file and Maven's own cache (``~/.m2``) and checksums do the fetching.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

import structlog

from streams.errors import PlatformError
from streams.settings import PROJECT_ROOT

log = structlog.get_logger(__name__)

#: The pom that lists the broker's class path; its ``kafka.version`` property is the one place the version lives.
POM_PATH = PROJECT_ROOT / "deploy" / "kafka" / "pom.xml"
#: Log4j 2 configuration handed to the broker JVM.
LOG4J2_CONFIG = PROJECT_ROOT / "deploy" / "kafka" / "log4j2.xml"
#: Where the jars are copied unless ``ICS2_KAFKA_CACHE`` says otherwise (git-ignored).
DEFAULT_CACHE_DIR = PROJECT_ROOT / ".cache" / "kafka"
#: Kafka 4.x refuses to run on older Java.
MIN_JAVA_MAJOR = 17
#: Classes the manager runs; checked in the copied jars so a wrong artifact fails with a clear message.
MAIN_CLASSES = ("kafka/Kafka.class", "kafka/tools/StorageTool.class")

_POM_NS = {"m": "http://maven.apache.org/POM/4.0.0"}
_MARKER = ".complete"
_MVN_TIMEOUT_S = 900


@dataclass(frozen=True, slots=True)
class ClassPath:
    """A complete copy of the broker's jars; ``fetched_s`` is the time the copy took, 0 when it was cached."""

    version: str
    lib_dir: Path
    fetched_s: float

    @property
    def java_classpath(self) -> str:
        """The wildcard form the JVM expands itself (no shell involved)."""
        return f"{self.lib_dir}{os.sep}*"


def kafka_version(pom: Path = POM_PATH) -> str:
    """The Kafka version the pom pins, read from its ``kafka.version`` property."""
    try:
        root = ElementTree.parse(pom).getroot()
    except (OSError, ElementTree.ParseError) as exc:
        raise PlatformError(f"cannot read the broker pom {pom}: {exc}") from exc
    node = root.find("m:properties/m:kafka.version", _POM_NS)
    if node is None or not (node.text or "").strip():
        raise PlatformError(f"{pom} has no <kafka.version> property")
    return (node.text or "").strip()


def default_cache_dir() -> Path:
    """``ICS2_KAFKA_CACHE`` if set, else ``.cache/kafka`` under the repository root."""
    override = os.environ.get("ICS2_KAFKA_CACHE")
    return Path(override) if override else DEFAULT_CACHE_DIR


def find_java() -> Path:
    """The ``java`` of ``JAVA_HOME`` if set, else the one on ``PATH``; it must be Java 17 or later."""
    java_home = os.environ.get("JAVA_HOME")
    candidate = Path(java_home) / "bin" / "java" if java_home else None
    java = str(candidate) if candidate is not None and candidate.exists() else shutil.which("java")
    if java is None:
        raise PlatformError(
            f"java not found: the Kafka broker needs Java {MIN_JAVA_MAJOR} or later "
            "(install e.g. openjdk-17-jre-headless, or set JAVA_HOME)"
        )
    try:
        probe = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PlatformError(f"cannot run {java} -version: {exc}") from exc
    major = java_major_version(probe.stderr + probe.stdout)
    if major is None or major < MIN_JAVA_MAJOR:
        raise PlatformError(
            f"{java} is Java {major or 'of unknown version'}; the Kafka broker needs Java {MIN_JAVA_MAJOR} or later "
            "(install e.g. openjdk-17-jre-headless, or point JAVA_HOME at a newer JDK)"
        )
    return Path(java)


def java_major_version(version_output: str) -> int | None:
    """The major version in ``java -version`` output: ``"1.8.0_392"`` is 8, ``"17.0.15"`` is 17."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if match is None:
        return None
    major = int(match.group(1))
    if major == 1 and match.group(2) is not None:
        return int(match.group(2))
    return major


def find_maven() -> Path:
    """Maven is needed only to fill the cache; once the jars are there the broker runs without it."""
    mvn = shutil.which("mvn")
    if mvn is None:
        raise PlatformError(
            "mvn not found: Maven fetches the Kafka jars from Maven Central once "
            "(install e.g. the 'maven' package, or fill ICS2_KAFKA_CACHE from another machine)"
        )
    return Path(mvn)


def ensure_jars(cache_dir: Path | None = None, pom: Path = POM_PATH) -> ClassPath:
    """Copy the broker's runtime class path into ``<cache>/<version>/lib`` once.

    A marker file written last makes a finished copy recognisable; a folder without it is the remains of an
    interrupted copy and is redone. A file lock keeps concurrent test sessions from copying over each other.
    """
    version = kafka_version(pom)
    version_dir = (cache_dir or default_cache_dir()) / version
    lib_dir = version_dir / "lib"
    marker = version_dir / _MARKER
    if marker.exists():
        return ClassPath(version, lib_dir, 0.0)
    version_dir.mkdir(parents=True, exist_ok=True)
    with _locked(version_dir / ".lock"):
        if marker.exists():
            return ClassPath(version, lib_dir, 0.0)
        started = time.monotonic()
        _copy_dependencies(pom, version_dir, lib_dir)
        check_main_classes(lib_dir, version)
        marker.write_text(f"{version}\n", encoding="utf-8")
        fetched = time.monotonic() - started
    log.info("kafka_jars_copied", version=version, lib_dir=str(lib_dir), seconds=round(fetched, 2))
    return ClassPath(version, lib_dir, fetched)


def check_main_classes(lib_dir: Path, version: str) -> None:
    """Fail clearly when the broker jar is missing or lacks the classes the manager starts."""
    broker_jar = lib_dir / f"kafka_2.13-{version}.jar"
    try:
        with zipfile.ZipFile(broker_jar) as jar:
            names = set(jar.namelist())
    except (OSError, zipfile.BadZipFile) as exc:
        raise PlatformError(f"the broker jar {broker_jar} is missing or unreadable: {exc}") from exc
    missing = [name for name in MAIN_CLASSES if name not in names]
    if missing:
        raise PlatformError(f"{broker_jar} lacks {', '.join(missing)}; is kafka.version in the pom a broker release?")


def _copy_dependencies(pom: Path, version_dir: Path, lib_dir: Path) -> None:
    mvn = find_maven()
    partial = version_dir / "lib.partial"
    for leftover in (partial, lib_dir):
        if leftover.exists():
            shutil.rmtree(leftover)
    command = [
        str(mvn),
        "-q",
        "-B",
        "-f",
        str(pom),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={partial}",
        "-DincludeScope=runtime",
    ]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=_MVN_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PlatformError(f"maven could not copy the Kafka jars: {exc}") from exc
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-20:])
        raise PlatformError(f"maven could not copy the Kafka jars (exit {result.returncode}):\n{tail}")
    partial.rename(lib_dir)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
