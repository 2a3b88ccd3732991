"""The product's processes as the tests run them: real subprocesses of the ``ics2`` console script."""

from __future__ import annotations

import atexit
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from streams.broker import BrokerConfig, LocalBroker, free_tcp_port
from streams.errors import PlatformError
from streams.settings import Settings

#: A cold start (jar copy, format, JVM start; SCRAM and TLS set-up for a secured one) stays well under this.
BROKER_START_TIMEOUT_S = 180.0

ICS2 = str(Path(sys.executable).with_name("ics2"))


@dataclass
class Service:
    """A running ``ics2`` sub-command with its log file."""

    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    web_port: int | None = None
    proc: subprocess.Popen | None = field(default=None, repr=False)

    def start(self) -> Service:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen([ICS2, *self.args], env=self.env, stdout=log, stderr=subprocess.STDOUT)
        return self

    def wait_healthy(self, timeout: float = 60.0) -> dict:
        """Until the worker's health view answers; fails with the log tail when the process dies or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}/health", timeout=1) as response:
                    return json.loads(response.read())
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.3)
        raise AssertionError(f"{self.name} not healthy after {timeout}s:\n{self.tail()}")

    def check_running(self, what: str) -> None:
        """Fails with the log tail when the process has ended: ``what`` a test awaits from it can no longer happen."""
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"{what}: {self.name} exited with {self.proc.returncode}\n{self.tail()}")

    def get(self, path: str) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}{path}", timeout=5) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            body = exc.read()
            try:
                return exc.code, json.loads(body or b"{}")
            except ValueError:
                return exc.code, {"error": body.decode(errors="replace")}

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, no final commit."""
        self.stop(signal.SIGKILL)

    def tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def service_env(settings: Settings, state_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ICS2_")}
    env.update(
        ICS2_BOOTSTRAP_SERVERS=settings.bootstrap_servers,
        ICS2_TOPIC_PREFIX=settings.topic_prefix,
        ICS2_APP_ID=settings.app_id,
        ICS2_STATE_DIR=str(state_dir),
        ICS2_LOG_FORMAT="json",
        ICS2_DEFAULT_PARTITIONS=str(settings.default_partitions),
    )
    env.update(extra)
    return env


def worker(settings: Settings, tmp: Path, **extra: str) -> Service:
    port = free_tcp_port()
    env = service_env(settings, tmp / "state", ICS2_WEB_PORT=str(port), **extra)
    return Service("worker", ["worker", "--no-apply-topics"], env, tmp / "worker.log", web_port=port)


def gateway(settings: Settings, tmp: Path, *args: str, **extra: str) -> Service:
    env = service_env(settings, tmp / "state", **extra)
    return Service("gateway", ["gateway", *args], env, tmp / "gateway.log")


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_tcp_port()
        if port not in ports:
            ports.append(port)
    return ports


def start_broker(state_dir: Path, what: str, *, tls: bool = False, **config: object) -> LocalBroker:
    """A one-node broker on free loopback ports, stopped at exit at the latest; one that cannot start fails the
    test with its log tail, never skips it: in CI the broker must be there."""
    port, controller_port, tls_port = free_ports(3)
    extra = {"tls_port": tls_port} if tls else {}
    broker = LocalBroker(
        BrokerConfig(state_dir=state_dir, port=port, controller_port=controller_port, **extra, **config)  # type: ignore[arg-type]
    )
    atexit.register(broker.stop)
    try:
        broker.start(timeout=BROKER_START_TIMEOUT_S)
    except PlatformError as exc:
        broker.stop()
        pytest.fail(f"{what} did not start: {exc}", pytrace=False)
    return broker
