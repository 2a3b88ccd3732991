"""The local broker's security modes: SCRAM authentication with ACLs, TLS, or both.

``sasl``: the client listener speaks SASL_PLAINTEXT with SCRAM-SHA-512; ``StandardAuthorizer`` denies whatever no
ACL allows; the admin user ``ics2-admin`` is the only super user, its password generated once and kept in the
state folder (0600). Its SCRAM credential is written at storage format time, so the broker never runs a moment
without it. The controller listener, on loopback, authenticates with SASL PLAIN as the same admin: a PLAINTEXT
controller listener would have to make the anonymous user a super user, and anyone on the machine could then
send admin requests to the controller port.

``ssl``: the client listener speaks TLS with a certificate from a private CA (``streams.security.tls``), no
authentication. With ``sasl`` and a ``tls_port``, a second listener speaks SASL_SSL with the same users and ACLs.

Mutual TLS (``client_auth``, ``ics2 broker start --mtls``): the SASL_SSL listener also demands a client certificate
signed by the private CA, a second factor beside the SCRAM password (``ics2 parties onboard --client-cert`` issues
one); the SCRAM user stays the principal the ACLs name. The admin's SASL_PLAINTEXT listener is unchanged.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from streams.broker.properties import CLIENT_LISTENER, CONTROLLER_LISTENER, Listener
from streams.security.acls import ADMIN_USER
from streams.security.tls import TlsFiles, ensure_tls_files

SECURITY_MODES = ("plaintext", "sasl", "ssl")
SCRAM_MECHANISM = "SCRAM-SHA-512"
TLS_LISTENER = "TLS"
ADMIN_PASSWORD_FILE = "admin.password"
#: Records the mode the storage was formatted in: SCRAM users exist only if it was formatted with them.
SECURITY_MARKER = "security"
_SCRAM_LOGIN = "org.apache.kafka.common.security.scram.ScramLoginModule"
_PLAIN_LOGIN = "org.apache.kafka.common.security.plain.PlainLoginModule"


@dataclass(frozen=True, slots=True)
class SecureListeners:
    """What ``server_properties`` needs for one security mode."""

    client_protocol: str
    controller_protocol: str
    extra_listeners: tuple[Listener, ...]
    overrides: dict[str, str]


def admin_password(state_dir: Path) -> str:
    """The admin's password, generated on first use and kept in a file only the owner can read."""
    path = state_dir / ADMIN_PASSWORD_FILE
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    password = secrets.token_urlsafe(24)
    state_dir.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(password + "\n")
    return password


def scram_format_argument(password: str) -> str:
    """The ``--add-scram`` value of ``kafka-storage format`` that bootstraps the admin's credential."""
    return f"{SCRAM_MECHANISM}=[name={ADMIN_USER},password={password}]"


def secure_listeners(
    security: str,
    *,
    host: str,
    state_dir: Path,
    tls_port: int | None,
    password: str | None,
    client_auth: bool = False,
) -> SecureListeners:
    """Listener protocols and broker settings of a security mode other than ``plaintext``."""
    if client_auth and (security != "sasl" or tls_port is None):
        raise ValueError("mutual TLS is for the SASL_SSL listener: security sasl with a TLS port")
    overrides: dict[str, str] = {}
    extra: tuple[Listener, ...] = ()
    tls: TlsFiles | None = None
    if security == "ssl" or tls_port is not None:
        tls = ensure_tls_files(state_dir / "tls", host)
        overrides.update(
            {
                "ssl.keystore.type": "PEM",
                "ssl.keystore.location": str(tls.keystore),
                "ssl.truststore.type": "PEM",
                "ssl.truststore.location": str(tls.ca_cert),
                "ssl.client.auth": "none",
            }
        )
    if security == "ssl":
        return SecureListeners("SSL", "PLAINTEXT", extra, overrides)
    if security != "sasl" or password is None:
        raise ValueError(f"security mode {security!r} is not one of {SECURITY_MODES} (sasl needs a password)")
    scram_client = f'{_SCRAM_LOGIN} required username="{ADMIN_USER}" password="{password}";'
    plain = f'{_PLAIN_LOGIN} required username="{ADMIN_USER}" password="{password}" user_{ADMIN_USER}="{password}";'
    client = CLIENT_LISTENER.lower()
    controller = CONTROLLER_LISTENER.lower()
    overrides.update(
        {
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": f"User:{ADMIN_USER}",
            "allow.everyone.if.no.acl.found": "false",
            "sasl.mechanism.inter.broker.protocol": SCRAM_MECHANISM,
            f"listener.name.{client}.sasl.enabled.mechanisms": SCRAM_MECHANISM,
            f"listener.name.{client}.{SCRAM_MECHANISM.lower()}.sasl.jaas.config": scram_client,
            "sasl.mechanism.controller.protocol": "PLAIN",
            f"listener.name.{controller}.sasl.enabled.mechanisms": "PLAIN",
            f"listener.name.{controller}.plain.sasl.jaas.config": plain,
        }
    )
    if tls_port is not None:
        extra = (Listener(TLS_LISTENER, host, tls_port, "SASL_SSL"),)
        tls_name = TLS_LISTENER.lower()
        overrides[f"listener.name.{tls_name}.sasl.enabled.mechanisms"] = SCRAM_MECHANISM
        overrides[f"listener.name.{tls_name}.{SCRAM_MECHANISM.lower()}.sasl.jaas.config"] = f"{_SCRAM_LOGIN} required;"
        if client_auth:
            overrides[f"listener.name.{tls_name}.ssl.client.auth"] = "required"
    return SecureListeners("SASL_PLAINTEXT", "SASL_PLAINTEXT", extra, overrides)


def recorded_security(state_dir: Path) -> str | None:
    """The mode a state folder was started in (None before its first secured start), for ``status`` and ``stop``."""
    marker = Path(state_dir) / SECURITY_MARKER
    return marker.read_text(encoding="utf-8").strip() if marker.exists() else None


def client_environment(security: str, bootstrap_servers: str, state_dir: Path) -> dict[str, str]:
    """The ``ICS2_*`` variables with which ``ics2`` commands reach this broker as its admin (password by file)."""
    environment = {"ICS2_BOOTSTRAP_SERVERS": bootstrap_servers}
    if security == "ssl":
        environment.update(ICS2_SECURITY_PROTOCOL="SSL", ICS2_SSL_CAFILE=str(Path(state_dir) / "tls" / "ca.pem"))
    elif security == "sasl":
        environment.update(
            ICS2_SECURITY_PROTOCOL="SASL_PLAINTEXT",
            ICS2_SASL_MECHANISM=SCRAM_MECHANISM,
            ICS2_SASL_USERNAME=ADMIN_USER,
            ICS2_SASL_PASSWORD=f"$(cat {Path(state_dir) / ADMIN_PASSWORD_FILE})",
        )
    return environment
