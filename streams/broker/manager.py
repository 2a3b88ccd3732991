"""Run one local Apache Kafka node (KRaft, broker and controller) as a detached JVM, for development and tests.

On its own it is the one-node broker; ``streams.broker.cluster`` runs several of them as one cluster.

The broker is ready when a real client bootstraps against it and lists topics, never after a fixed sleep. Its
state folder holds everything: ``server.properties``, the data (``data/``), the Log4j files (``logs/``), the JVM's
standard streams (``broker.out``) and the pid file that lets a second ``start`` or a later ``stop`` find it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import structlog

from streams.broker.jars import LOG4J2_CONFIG, ClassPath, ensure_jars, find_java, kafka_version
from streams.broker.properties import server_properties, write_properties
from streams.broker.secure import (
    SECURITY_MARKER,
    SECURITY_MODES,
    admin_password,
    scram_format_argument,
    secure_listeners,
)
from streams.errors import BrokerUnavailable, PlatformError, PortInUse
from streams.security.acls import ADMIN_USER
from streams.security.tls import tls_files
from streams.settings import SecurityProtocol, Settings

log = structlog.get_logger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 19092
#: Modest heap: the broker shares the machine with the workers, the tests and the IDE.
DEFAULT_JVM_OPTIONS = ("-Xms256m", "-Xmx1g", "-XX:+UseG1GC", "-Djava.awt.headless=true")
_PROBE_INTERVAL_S = 0.2


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    """Where the broker keeps its state and which loopback ports it listens on."""

    state_dir: Path
    port: int = DEFAULT_PORT
    controller_port: int = DEFAULT_PORT + 1
    host: str = DEFAULT_HOST
    cache_dir: Path | None = None
    """None means ``ICS2_KAFKA_CACHE`` or ``.cache/kafka`` in the repository."""
    node_id: int = 1
    jvm_options: tuple[str, ...] = DEFAULT_JVM_OPTIONS
    security: str = "plaintext"
    """``plaintext``, ``sasl`` (SCRAM-SHA-512 and ACLs) or ``ssl`` (TLS, no authentication); see ``secure.py``."""
    tls_port: int | None = None
    """With ``sasl``: also a SASL_SSL listener on this port."""
    client_auth: bool = False
    """Mutual TLS on the SASL_SSL listener: clients must show a certificate of the broker's CA (``secure.py``)."""
    quorum_voters: tuple[tuple[int, int], ...] = ()
    """Node id and controller port of every voter of a local cluster (``cluster.py``); empty: this node alone."""
    cluster_id: str | None = None
    """The id to format the storage with; None draws a fresh one. A cluster's nodes must all share one."""

    def __post_init__(self) -> None:
        # The JVM runs with the state folder as working directory and the pid check compares command lines.
        object.__setattr__(self, "state_dir", Path(self.state_dir).resolve())
        if self.security not in SECURITY_MODES:
            raise PlatformError(f"broker security {self.security!r} is not one of {', '.join(SECURITY_MODES)}")
        if self.tls_port is not None and self.security != "sasl":
            raise PlatformError("a separate TLS port is for the sasl mode; the ssl mode puts TLS on the client port")
        if self.client_auth and self.tls_port is None:
            raise PlatformError("mutual TLS needs the sasl mode's TLS listener: give a TLS port")

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> BrokerConfig:
        """Port from the first bootstrap server, controller port next to it, state in ``<state_dir>/kafka``."""
        host, port = parse_bootstrap(settings.bootstrap_servers)
        values: dict[str, Any] = {
            "state_dir": settings.state_dir / "kafka",
            "host": host,
            "port": port,
            "controller_port": port + 1,
        }
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls(**values)

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "broker.pid"

    @property
    def properties_file(self) -> Path:
        return self.state_dir / "server.properties"

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "data"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def out_file(self) -> Path:
        """The JVM's standard output and error: warnings, and the reason when it dies before Log4j starts."""
        return self.state_dir / "broker.out"

    @property
    def server_log(self) -> Path:
        return self.logs_dir / "server.log"

    @property
    def tls_bootstrap_servers(self) -> str | None:
        return f"{self.host}:{self.tls_port}" if self.tls_port is not None else None

    def admin_settings(self, *, tls: bool = False, **fields: Any) -> Settings:
        """Client settings of the broker's admin user (the plain settings in plaintext mode)."""
        values: dict[str, Any] = {"bootstrap_servers": self.bootstrap_servers, **fields}
        ca_file = str(tls_files(self.state_dir / "tls").ca_cert)
        if self.security == "ssl":
            values.update(security_protocol=SecurityProtocol.SSL, ssl_cafile=ca_file)
        elif self.security == "sasl":
            values.update(
                security_protocol=SecurityProtocol.SASL_PLAINTEXT,
                sasl_mechanism="SCRAM-SHA-512",
                sasl_username=ADMIN_USER,
                sasl_password=admin_password(self.state_dir),
            )
            if tls:
                values.update(
                    bootstrap_servers=self.tls_bootstrap_servers,
                    security_protocol=SecurityProtocol.SASL_SSL,
                    ssl_cafile=ca_file,
                )
        return Settings(**values)


@dataclass(frozen=True, slots=True)
class BrokerStatus:
    """What ``status`` and ``start`` report; ``timings`` holds seconds per phase of a start."""

    running: bool
    ready: bool
    pid: int | None
    bootstrap_servers: str
    version: str
    state_dir: Path
    uptime_s: float | None
    started_now: bool = False
    timings: Mapping[str, float] = field(default_factory=dict)


def parse_bootstrap(bootstrap_servers: str) -> tuple[str, int]:
    """Host and port of the first server in a ``host:port,host:port`` list."""
    first = bootstrap_servers.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    if not host or not port.isdigit():
        raise PlatformError(f"bootstrap server {first!r} is not host:port")
    return host.strip("[]"), int(port)


def free_tcp_port(host: str = DEFAULT_HOST) -> int:
    """A port the kernel just handed out for ``host`` (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def new_cluster_id() -> str:
    """A Kafka cluster id: a random UUID in URL-safe base64 without padding, never starting with '-'."""
    while True:
        candidate = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        if not candidate.startswith("-"):
            return candidate


class LocalBroker:
    """Start, find, probe and stop the broker of one state folder."""

    def __init__(self, config: BrokerConfig) -> None:
        self.config = config
        self._process: subprocess.Popen[bytes] | None = None

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> LocalBroker:
        return cls(BrokerConfig.from_settings(settings, **overrides))

    @property
    def version(self) -> str:
        return kafka_version()

    def ensure_jars(self) -> ClassPath:
        """The broker's class path, copied from Maven Central into the cache on first use."""
        return ensure_jars(self.config.cache_dir)

    def start(self, timeout: float = 60.0) -> BrokerStatus:
        """Start the broker and wait until a client can bootstrap; a broker already running here is returned."""
        existing = self._running_pid()
        if existing is not None:
            if not self._answers():
                self._await_ready(existing, timeout)
            log.info("broker_already_running", pid=existing, bootstrap=self.config.bootstrap_servers)
            return self.status(probe=False)
        pid, timings, version = self.launch()
        started = time.monotonic()
        self.wait_ready(pid, timeout)
        timings["start_to_ready"] = time.monotonic() - started
        rounded = {phase: round(seconds, 2) for phase, seconds in timings.items()}
        log.info("broker_started", pid=pid, bootstrap=self.config.bootstrap_servers, **rounded)
        return self.started_status(pid, version, timings)

    def launch(self) -> tuple[int, dict[str, float], str]:
        """Write the properties, format the storage once and start the JVM, without waiting for it to answer.

        Returns the pid, seconds per phase so far and the Kafka version. A cluster launches every node first and
        only then waits: no node of a three-voter quorum can be ready before a second one runs.
        """
        timings: dict[str, float] = {}
        classpath = self.ensure_jars()
        timings["jars"] = classpath.fetched_s
        java = find_java()
        cfg = self.config
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        cfg.logs_dir.mkdir(exist_ok=True)
        self.require_free_ports()
        write_properties(cfg.properties_file, self._server_properties())
        started = time.monotonic()
        if self._format_storage(java, classpath):
            timings["format"] = time.monotonic() - started
        return self._launch(java, classpath), timings, classpath.version

    def started_status(self, pid: int, version: str, timings: Mapping[str, float]) -> BrokerStatus:
        """What ``start`` reports for a JVM it launched that now answers."""
        status = self.status(probe=False)
        return BrokerStatus(
            running=status.running,
            ready=True,
            pid=pid,
            bootstrap_servers=status.bootstrap_servers,
            version=version,
            state_dir=self.config.state_dir,
            uptime_s=status.uptime_s,
            started_now=True,
            timings=MappingProxyType(dict(timings)),
        )

    def _server_properties(self) -> dict[str, str]:
        """The plaintext properties exactly as before; a secured mode adds its listeners and settings."""
        cfg = self.config
        common: dict[str, Any] = {
            "node_id": cfg.node_id,
            "host": cfg.host,
            "client_port": cfg.port,
            "controller_port": cfg.controller_port,
            "log_dir": cfg.data_dir,
            "quorum_voters": dict(cfg.quorum_voters) or None,
        }
        self._check_security_marker()
        if cfg.security == "plaintext":
            return server_properties(**common)
        password = admin_password(cfg.state_dir) if cfg.security == "sasl" else None
        secure = secure_listeners(
            cfg.security,
            host=cfg.host,
            state_dir=cfg.state_dir,
            tls_port=cfg.tls_port,
            password=password,
            client_auth=cfg.client_auth,
        )
        cfg.properties_file.touch(mode=0o600)
        cfg.properties_file.chmod(0o600)
        return server_properties(
            **common,
            client_protocol=secure.client_protocol,
            controller_protocol=secure.controller_protocol,
            extra_listeners=secure.extra_listeners,
            overrides=secure.overrides,
        )

    def _check_security_marker(self) -> None:
        """A folder formatted in one mode keeps it: SCRAM users are bootstrapped only when formatting."""
        marker = self.config.state_dir / SECURITY_MARKER
        formatted = (self.config.data_dir / "meta.properties").exists()
        recorded = marker.read_text(encoding="utf-8").strip() if marker.exists() else ("plaintext" if formatted else "")
        if recorded and recorded != self.config.security:
            raise PlatformError(
                f"the broker in {self.config.state_dir} was formatted with security {recorded!r}, not "
                f"{self.config.security!r}; use another state folder or remove this one"
            )
        if self.config.security != "plaintext":
            marker.write_text(self.config.security + "\n", encoding="utf-8")

    def stop(self, timeout: float = 30.0) -> bool:
        """SIGTERM, wait for a clean shutdown, SIGKILL after ``timeout``; False when nothing was running."""
        pid = self._running_pid()
        if pid is None:
            return False
        self._terminate(pid, grace=timeout)
        log.info("broker_stopped", pid=pid, state_dir=str(self.config.state_dir))
        return True

    def kill(self) -> bool:
        """SIGKILL, no clean shutdown (fault tests: a node lost as in a crash); False when nothing was running."""
        pid = self._running_pid()
        if pid is None:
            return False
        self._terminate(pid, grace=10.0, sig=signal.SIGKILL)
        log.info("broker_killed", pid=pid, state_dir=str(self.config.state_dir))
        return True

    def status(self, probe: bool = True) -> BrokerStatus:
        """Whether the broker of this state folder runs, and (with ``probe``) whether it answers clients."""
        pid = self._running_pid()
        uptime = None
        if pid is not None:
            with contextlib.suppress(OSError):
                uptime = max(0.0, time.time() - self.config.pid_file.stat().st_mtime)
        return BrokerStatus(
            running=pid is not None,
            ready=pid is not None and (not probe or self._answers()),
            pid=pid,
            bootstrap_servers=self.config.bootstrap_servers,
            version=self.version,
            state_dir=self.config.state_dir,
            uptime_s=uptime,
        )

    def log_tail(self, lines: int = 40) -> str:
        """The end of the JVM's output and of the server log, for error messages and ``ics2 broker logs``."""
        parts = []
        for path, count in ((self.config.out_file, lines // 2), (self.config.server_log, lines)):
            tail = _tail(path, count)
            if tail:
                parts.append(f"--- {path} ---\n{tail}")
        return "\n".join(parts) or f"(no broker output in {self.config.state_dir})"

    def _running_pid(self) -> int | None:
        """The pid in the pid file if that process is alive and is this folder's broker; a stale file is removed."""
        pid_file = self.config.pid_file
        try:
            pid = int(pid_file.read_text(encoding="utf-8").strip())
        except (OSError, ValueError):
            return None
        if self._alive(pid) and self._is_our_broker(pid):
            return pid
        log.info("stale_pid_file_removed", pid=pid, pid_file=str(pid_file))
        pid_file.unlink(missing_ok=True)
        return None

    def _alive(self, pid: int) -> bool:
        if self._process is not None and self._process.pid == pid:
            return self._process.poll() is None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return _proc_state(pid) != "Z"

    def _is_our_broker(self, pid: int) -> bool:
        """Guards against a recycled pid: the process must run kafka.Kafka on this folder's properties."""
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return not Path("/proc/self").exists()
        args = [arg.decode(errors="replace") for arg in argv]
        return "kafka.Kafka" in args and str(self.config.properties_file) in args

    def _answers(self, request_timeout: float = 5.0) -> bool:
        return bool(_in_thread(_bootstrap_once(self.config.bootstrap_servers, request_timeout, self._probe_kwargs())))

    def _probe_kwargs(self) -> dict[str, Any]:
        """The plaintext probe as before; a secured broker is probed as its admin."""
        if self.config.security == "plaintext":
            return {}
        kwargs = self.config.admin_settings().kafka_client_kwargs()
        kwargs.pop("bootstrap_servers")
        return kwargs

    def require_free_ports(self) -> None:
        """Refuse to start (``PortInUse``) when another process holds one of this node's ports."""
        cfg = self.config
        for port in (cfg.port, cfg.controller_port, *([cfg.tls_port] if cfg.tls_port is not None else [])):
            self._require_free(port)

    def _require_free(self, port: int) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((self.config.host, port))
            except OSError as exc:
                raise PortInUse(
                    f"port {self.config.host}:{port} is taken by another process; stop it or choose other ports "
                    f"(ICS2_BOOTSTRAP_SERVERS, or --port/--controller-port)"
                ) from exc

    def _format_storage(self, java: Path, classpath: ClassPath) -> bool:
        """Format the data folder once with a fresh cluster id; False when it already was formatted."""
        if (self.config.data_dir / "meta.properties").exists():
            return False
        cluster_id = self.config.cluster_id or new_cluster_id()
        command = [
            *self._java_command(java, classpath, ("-Xmx256m",)),
            "kafka.tools.StorageTool",
            "format",
            "--cluster-id",
            cluster_id,
            "--config",
            str(self.config.properties_file),
            "--ignore-formatted",
        ]
        if self.config.security == "sasl":
            command += ["--add-scram", scram_format_argument(admin_password(self.config.state_dir))]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PlatformError(f"formatting the broker storage failed: {exc}") from exc
        if result.returncode != 0:
            output = "\n".join((result.stdout + result.stderr).strip().splitlines()[-20:])
            raise PlatformError(f"formatting the broker storage failed (exit {result.returncode}):\n{output}")
        log.info("broker_storage_formatted", cluster_id=cluster_id, data_dir=str(self.config.data_dir))
        return True

    def _launch(self, java: Path, classpath: ClassPath) -> int:
        """Start the JVM in its own session so it outlives the command that started it and ignores its Ctrl-C."""
        command = [*self._java_command(java, classpath, self.config.jvm_options), "kafka.Kafka"]
        command.append(str(self.config.properties_file))
        with self.config.out_file.open("ab") as out:
            try:
                self._process = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=self.config.state_dir,
                    start_new_session=True,
                )
            except OSError as exc:
                raise PlatformError(f"cannot start the broker JVM: {exc}") from exc
        self.config.pid_file.write_text(f"{self._process.pid}\n", encoding="utf-8")
        return self._process.pid

    def _java_command(self, java: Path, classpath: ClassPath, jvm_options: tuple[str, ...]) -> list[str]:
        return [
            str(java),
            *jvm_options,
            f"-Dlog4j2.configurationFile={LOG4J2_CONFIG}",
            f"-Dkafka.logs.dir={self.config.logs_dir}",
            "-cp",
            classpath.java_classpath,
        ]

    def wait_ready(self, pid: int, timeout: float, *, stop_on_failure: bool = True) -> None:
        """Until a client bootstraps on the JVM of ``pid``; by default it is stopped when it never answers."""
        try:
            self._await_ready(pid, timeout)
        except PlatformError:
            if stop_on_failure:
                self._terminate(pid, grace=5.0)
            raise

    def _await_ready(self, pid: int, timeout: float) -> None:
        """Poll until a client bootstraps; fail early, with the log tail, if the JVM exits meanwhile."""
        outcome = _in_thread(
            _wait_until_ready(self.config.bootstrap_servers, timeout, lambda: self._alive(pid), self._probe_kwargs())
        )
        if outcome == "ready":
            return
        if outcome == "exited":
            self.config.pid_file.unlink(missing_ok=True)
            raise PlatformError(f"the broker JVM (pid {pid}) exited during start\n{self.log_tail()}")
        raise BrokerUnavailable(
            f"the broker (pid {pid}) did not answer on {self.config.bootstrap_servers} within {timeout:.0f}s\n"
            f"{self.log_tail()}"
        )

    def _terminate(self, pid: int, grace: float, sig: signal.Signals = signal.SIGTERM) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        if not self._wait_exit(pid, grace):
            log.warning("broker_killed", pid=pid, grace_s=grace)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            if not self._wait_exit(pid, 10.0):
                raise PlatformError(f"the broker (pid {pid}) survived SIGKILL")
        self.config.pid_file.unlink(missing_ok=True)
        self._process = None

    def _wait_exit(self, pid: int, timeout: float) -> bool:
        if self._process is not None and self._process.pid == pid:
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
            return True
        deadline = time.monotonic() + timeout
        while self._alive(pid):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True


def _proc_state(pid: int) -> str | None:
    """The one-letter state in ``/proc/<pid>/stat`` ('Z' for a zombie), None where /proc is missing."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[0] if ")" in stat else None


def _tail(path: Path, lines: int) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 256 * lines))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _in_thread(coroutine: Any) -> Any:
    """Run a coroutine on a private loop in a worker thread, so callers inside a running loop are not disturbed."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="broker-probe") as pool:
        return pool.submit(asyncio.run, coroutine).result()


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


async def _bootstrap_once(
    bootstrap_servers: str, request_timeout: float, client_kwargs: Mapping[str, Any] | None = None
) -> bool:
    """One real client bootstrap plus a metadata request; only an open port is not enough."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    host, port = parse_bootstrap(bootstrap_servers)
    if not _port_open(host, port):
        return False
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers, request_timeout_ms=int(request_timeout * 1000), **(client_kwargs or {})
    )
    try:
        await admin.start()
        await admin.list_topics()
    except (TimeoutError, KafkaError, OSError):
        return False
    finally:
        with contextlib.suppress(Exception):
            await admin.close()
    return True


async def _wait_until_ready(
    bootstrap_servers: str, timeout: float, alive: Callable[[], bool], client_kwargs: Mapping[str, Any] | None = None
) -> str:
    deadline = time.monotonic() + timeout
    while True:
        if not alive():
            return "exited"
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return "timeout"
        if await _bootstrap_once(bootstrap_servers, min(5.0, max(remaining, 0.5)), client_kwargs):
            return "ready"
        await asyncio.sleep(_PROBE_INTERVAL_S)
