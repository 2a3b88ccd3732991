"""A private certificate authority and a server certificate for the local broker's TLS listener.

Made with the ``openssl`` command line (present wherever the broker's Java is) instead of a Python crypto library,
so the product gains no dependency for a development feature. Kafka reads the PEM files directly
(``ssl.keystore.type=PEM``), so no Java keystore is involved; clients trust ``ca.pem`` (``ICS2_SSL_CAFILE``).

The CA's key stays in the folder (``ca.key``, 0600) so that ``issue_client_certificate`` can sign the client
certificates of mutual TLS (``ics2 broker start --mtls``, ``ics2 parties onboard --client-cert``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from streams.errors import PlatformError

#: Long enough for a development machine, short enough that a leaked key does not live forever.
VALID_DAYS = 825


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """The CA certificate clients trust and the broker's PEM keystore (private key, then certificate chain)."""

    ca_cert: Path
    keystore: Path
    ca_key: Path

    def exist(self) -> bool:
        return self.ca_cert.exists() and self.keystore.exists()


def tls_files(folder: Path) -> TlsFiles:
    return TlsFiles(ca_cert=folder / "ca.pem", keystore=folder / "broker-keystore.pem", ca_key=folder / "ca.key")


def ensure_tls_files(folder: Path, host: str) -> TlsFiles:
    """Create the CA and a certificate for ``host`` once; kept across restarts so clients keep trusting them."""
    files = tls_files(folder)
    if files.exist():
        return files
    openssl = shutil.which("openssl")
    if openssl is None:
        raise PlatformError("openssl not found: the broker's TLS listener needs it once to make its certificates")
    folder.mkdir(parents=True, exist_ok=True)
    work = folder / "tls.partial"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(mode=0o700)
    san = f"IP:{host}" if _is_ip(host) else f"DNS:{host}"
    extensions = work / "server.ext"
    extensions.write_text(
        f"subjectAltName={san}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n",
        encoding="ascii",
    )
    steps = [
        ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "ca.key"],
        [
            *("req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=ics2-streams local CA", "-days", str(VALID_DAYS)),
            *("-out", "ca.pem", "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=keyCertSign"),
        ],
        ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "server.key"],
        ["req", "-new", "-key", "server.key", "-subj", f"/CN={host}", "-out", "server.csr"],
        [
            *("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial"),
            *("-days", str(VALID_DAYS), "-extfile", "server.ext", "-out", "server.pem"),
        ],
    ]
    for step in steps:
        _openssl(openssl, step, work)
    keystore = (work / "server.key").read_text(encoding="ascii") + (work / "server.pem").read_text(encoding="ascii")
    _write_private(files.keystore, keystore)
    _write_private(files.ca_key, (work / "ca.key").read_text(encoding="ascii"))
    (work / "ca.pem").replace(files.ca_cert)
    shutil.rmtree(work)
    return files


@dataclass(frozen=True, slots=True)
class ClientCertificate:
    """A client's certificate and private key (PEM), for ``ICS2_SSL_CERTFILE`` and ``ICS2_SSL_KEYFILE``."""

    cert: Path
    key: Path


def issue_client_certificate(folder: Path, common_name: str, out_dir: Path) -> ClientCertificate:
    """A client certificate for ``common_name`` signed by the local CA of ``folder``, written to ``out_dir``.

    The key is written 0600; the certificate is for client authentication only (``extendedKeyUsage=clientAuth``).
    """
    files = tls_files(folder)
    if not files.ca_cert.exists() or not files.ca_key.exists():
        raise PlatformError(
            f"no CA key in {folder}: start the broker with a TLS listener first (TLS files made by an older version "
            "kept no CA key: remove the folder to make new ones, and give clients the new ca.pem)"
        )
    openssl = shutil.which("openssl")
    if openssl is None:
        raise PlatformError("openssl not found: it signs the client certificate")
    out_dir.mkdir(parents=True, exist_ok=True)
    work = out_dir / f".{common_name}.partial"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(mode=0o700)
    (work / "client.ext").write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n", encoding="ascii"
    )
    steps = [
        ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "client.key"],
        ["req", "-new", "-key", "client.key", "-subj", f"/CN={common_name}", "-out", "client.csr"],
        [
            *("x509", "-req", "-in", "client.csr", "-CA", str(files.ca_cert), "-CAkey", str(files.ca_key)),
            *("-CAcreateserial", "-CAserial", "ca.srl", "-days", str(VALID_DAYS), "-extfile", "client.ext"),
            *("-out", "client.pem"),
        ],
    ]
    try:
        for step in steps:
            _openssl(openssl, step, work)
        result = ClientCertificate(cert=out_dir / f"{common_name}.pem", key=out_dir / f"{common_name}.key")
        _write_private(result.key, (work / "client.key").read_text(encoding="ascii"))
        (work / "client.pem").replace(result.cert)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result


def _openssl(openssl: str, args: list[str], cwd: Path) -> None:
    try:
        result = subprocess.run([openssl, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PlatformError(f"openssl {args[0]} failed: {exc}") from exc
    if result.returncode != 0:
        raise PlatformError(f"openssl {args[0]} failed (exit {result.returncode}): {result.stderr.strip()[-500:]}")


def _write_private(path: Path, text: str) -> None:
    """Written with mode 0600 from the start, never readable by others even for a moment."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)


def _is_ip(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
