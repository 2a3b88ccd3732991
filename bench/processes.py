"""The measured processes: children of the bench (same process tree), each with a log file, stopped by pid."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from streams.errors import ICS2StreamsError


class BenchError(ICS2StreamsError):
    """A benchmark phase could not finish: a process died or an output did not arrive in time."""


def peak_rss_kib(status_text: str) -> int | None:
    """``VmHWM`` (peak resident set size, KiB) from the text of ``/proc/<pid>/status``; None if absent."""
    for line in status_text.splitlines():
        name, _, value = line.partition(":")
        if name == "VmHWM":
            parts = value.split()
            if parts and parts[0].isdigit():
                return int(parts[0])
    return None


def cpu_seconds(stat_text: str) -> float | None:
    """utime + stime in seconds from the text of ``/proc/<pid>/stat`` (fields 14 and 15, after the command)."""
    fields = stat_text.rpartition(")")[2].split()
    try:
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (IndexError, ValueError):
        return None


@dataclass
class Child:
    """One measured subprocess."""

    name: str
    command: list[str]
    env: dict[str, str]
    log_path: Path
    cwd: Path | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    started_wall: float = 0.0
    """``time.time()`` at start, comparable with broker timestamps (both wall clock, same machine)."""

    def start(self) -> Child:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command, env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        self.started_wall = time.time()
        return self

    def require_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            code = None if self.proc is None else self.proc.returncode
            raise BenchError(f"{self.name} is not running (exit {code}):\n{self.tail()}")

    def peak_rss_kib(self) -> int | None:
        """The process's peak RSS so far; read before stopping it, while ``/proc`` still has it."""
        if self.proc is None:
            return None
        try:
            return peak_rss_kib(Path(f"/proc/{self.proc.pid}/status").read_text(encoding="ascii", errors="replace"))
        except OSError:
            return None

    def cpu_seconds(self) -> float | None:
        """User plus system CPU time the process used so far (``/proc/<pid>/stat``): a cost that the other loads
        of a shared machine do not inflate the way they inflate wall-clock rates."""
        if self.proc is None:
            return None
        try:
            return cpu_seconds(Path(f"/proc/{self.proc.pid}/stat").read_text(encoding="ascii", errors="replace"))
        except OSError:
            return None

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; always reaps the child."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
