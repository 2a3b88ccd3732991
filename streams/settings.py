"""One frozen settings object, read from the environment at the entry point and passed down.

Every knob is an ``ICS2_*`` variable so that the same worker runs against the embedded broker, a Docker Compose
stack or an existing cluster without code changes. Secrets are kept out of ``repr`` and logs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from streams.errors import ExitCode, ICS2StreamsError

#: The repository root when running from a checkout (``make`` targets do); state and caches live below it.
PROJECT_ROOT = Path(__file__).resolve().parents[1]


class SettingsError(ICS2StreamsError):
    """A setting has a value the product cannot use."""

    exit_code = ExitCode.USAGE


#: aiokafka's wait between two attempts to reach a broker or refresh metadata.
RETRY_BACKOFF_MS = 250


class ProcessingGuarantee(StrEnum):
    """What the workers promise; at-least-once plus deduplication on message identity is the tested default."""

    AT_LEAST_ONCE = "at_least_once"
    EXACTLY_ONCE = "exactly_once"


class SecurityProtocol(StrEnum):
    PLAINTEXT = "PLAINTEXT"
    SSL = "SSL"
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"


@dataclass(frozen=True, slots=True)
class Settings:
    """Where the broker is, how to authenticate, where local state lives, what the workers guarantee."""

    bootstrap_servers: str = "127.0.0.1:19092"
    security_protocol: SecurityProtocol = SecurityProtocol.PLAINTEXT
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    topic_prefix: str = ""
    app_id: str = "ics2-streams"
    state_dir: Path = PROJECT_ROOT / ".state"
    audit_key: Path | None = None
    """The audit chain stage's Ed25519 private key (PEM); ``<state_dir>/audit/signing-key.pem`` when not set."""
    processing_guarantee: ProcessingGuarantee = ProcessingGuarantee.AT_LEAST_ONCE
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    log_format: str = "auto"
    """``json``, ``console`` or ``auto`` (JSON unless standard error is a terminal)."""
    default_partitions: int = 4
    watchdog_interval_s: float = 30.0
    """How often the deadline watchdog looks at the ENS states."""
    change_wait_s: float = 2 * 3600.0
    """How long a booking change (amendment, invalidation) waits for customs to register or reject the filing it
    concerns; then it goes to the dead-letter topic and its filer is alerted. Customs answers within minutes."""
    unmatched_wait_s: float = 900.0
    """How long a customs answer that matches no filing we know waits before it is reported (a dead letter with its
    bytes and reason, once); it stays parked and is matched if its filing appears later."""
    deadline_margins: str = "48h,24h,6h,0h"
    """Escalation margins before the lodging deadline, e.g. ``48h,24h,6h,0h`` (hours or ``m`` for minutes)."""
    operators_file: Path | None = None
    """The dashboard's operator accounts (``ics2 operators add``); None means ``<state_dir>/operators.json``."""
    operator_header: str | None = None
    """A header naming the operator, set by a reverse proxy that authenticated them (e.g. ``X-Forwarded-User``).
    Only for a worker reachable through that proxy alone: anyone reaching the port could set it."""
    rfi_response_time: str = "48h"
    """Time to answer an RFI (IE3Q02) assumed when customs gives no deadline, which the message cannot carry."""
    rfs_response_time: str = "24h"
    """Time to answer an RFS (IE3Q03, high-risk cargo screening) assumed likewise."""
    worker_id: str | None = None
    """Names this worker's own table directory; two workers on one machine need two (the web port when not set)."""
    closed_ens_retention_days: float = 60.0
    """How long a closed ENS stays in the tables after its last change and its lodging deadline (see
    ``streams.domain.retention``); then it and the plans, ledger entries and parked records keyed by it go."""
    eviction_interval_s: float = 300.0
    """How often the eviction timer looks for closed ENS."""
    evictions_per_tick: int = 500
    """At most this many ENS evicted per look, so that a backlog does not stall the worker."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read ``ICS2_*`` variables; ``overrides`` win (the CLI's options)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name in cls.__dataclass_fields__:
            raw = env.get(f"ICS2_{name.upper()}")
            if raw is not None and raw != "":
                values[name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls._coerce(values)

    @classmethod
    def _coerce(cls, values: dict[str, Any]) -> Settings:
        try:
            if "security_protocol" in values:
                values["security_protocol"] = SecurityProtocol(str(values["security_protocol"]).upper())
            if "processing_guarantee" in values:
                values["processing_guarantee"] = ProcessingGuarantee(str(values["processing_guarantee"]).lower())
            for name in ("web_port", "default_partitions", "evictions_per_tick"):
                if name in values:
                    values[name] = int(values[name])
            for name in (
                "watchdog_interval_s",
                "change_wait_s",
                "unmatched_wait_s",
                "closed_ens_retention_days",
                "eviction_interval_s",
            ):
                if name in values:
                    values[name] = float(values[name])
            for name in ("state_dir", "audit_key", "operators_file"):
                if name in values:
                    values[name] = Path(values[name])
        except ValueError as exc:
            raise SettingsError(f"invalid setting: {exc}") from exc
        settings = cls(**values)
        settings.margins  # noqa: B018 - validates the margins early, at the entry point
        settings.response_times  # noqa: B018 - and the response times
        if settings.closed_ens_retention_days <= 0 or settings.evictions_per_tick <= 0:
            raise SettingsError("ICS2_CLOSED_ENS_RETENTION_DAYS and ICS2_EVICTIONS_PER_TICK must be above 0")
        if settings.worker_id is not None and Path(settings.worker_id).name != settings.worker_id:
            raise SettingsError(f"ICS2_WORKER_ID {settings.worker_id!r} must be a plain name, not a path")
        if settings.security_protocol.value.startswith("SASL") and not (
            settings.sasl_mechanism and settings.sasl_username and settings.sasl_password
        ):
            raise SettingsError("SASL needs ICS2_SASL_MECHANISM, ICS2_SASL_USERNAME and ICS2_SASL_PASSWORD")
        return settings

    @property
    def margins(self) -> tuple[timedelta, ...]:
        """The escalation margins, widest first."""
        margins = [_duration(part, "deadline margin") for part in self.deadline_margins.split(",")]
        return tuple(sorted(margins, reverse=True))

    @property
    def closed_ens_retention(self) -> timedelta:
        return timedelta(days=self.closed_ens_retention_days)

    @property
    def table_dir(self) -> Path:
        """This worker's own table directory: RocksDB locks its files, so two workers cannot share one."""
        worker = self.worker_id or f"port-{self.web_port}"
        return self.state_dir / "faust" / self.app_id / worker

    @property
    def operators_path(self) -> Path:
        """Where the dashboard's operator accounts are kept."""
        return self.operators_file or self.state_dir / "operators.json"

    @property
    def response_times(self) -> dict[str, timedelta]:
        """Request type (``rfi``, ``rfs``) -> the time to answer assumed when customs gives no deadline."""
        return {
            "rfi": _duration(self.rfi_response_time, "RFI response time"),
            "rfs": _duration(self.rfs_response_time, "RFS response time"),
        }

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    @property
    def faust_broker_url(self) -> str:
        """Faust wants ``kafka://host:port;host:port``."""
        return ";".join(f"kafka://{server.strip()}" for server in self.bootstrap_servers.split(","))

    def kafka_client_kwargs(self) -> dict[str, Any]:
        """Connection options for aiokafka clients (producer, consumer, admin)."""
        kwargs: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.security_protocol.value,
            # aiokafka retries a lost connection or stale metadata every 100 ms by default, without growing the
            # wait; a quarter second keeps a long outage from spinning a core.
            "retry_backoff_ms": RETRY_BACKOFF_MS,
        }
        if self.security_protocol.value.startswith("SASL"):
            kwargs.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.sasl_username,
                sasl_plain_password=self.sasl_password,
            )
        if self.security_protocol in (SecurityProtocol.SSL, SecurityProtocol.SASL_SSL):
            from aiokafka.helpers import create_ssl_context

            kwargs["ssl_context"] = create_ssl_context(
                cafile=self.ssl_cafile, certfile=self.ssl_certfile, keyfile=self.ssl_keyfile
            )
        return kwargs


def _duration(text: str, what: str) -> timedelta:
    """``24h`` or ``30m`` (a decimal number of hours or minutes) as a duration."""
    value = text.strip().lower()
    unit = {"h": 3600, "m": 60}.get(value[-1:])
    try:
        if unit is None:
            raise ValueError(value)
        seconds = float(value[:-1]) * unit
    except ValueError as exc:
        raise SettingsError(f"{what} {text!r} is not like 24h or 30m") from exc
    if not 0 <= seconds < 10 * 365 * 86400:
        raise SettingsError(f"{what} {text!r} is out of range")
    return timedelta(seconds=seconds)
