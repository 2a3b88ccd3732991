"""The secured local broker's configuration (listeners, authorizer, TLS files) and password files, without a JVM."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from streams.broker import BrokerConfig, LocalBroker
from streams.broker.properties import server_properties
from streams.broker.secure import admin_password, client_environment, scram_format_argument, secure_listeners
from streams.errors import PlatformError
from streams.security.acls import ADMIN_USER
from streams.security.onboarding import read_or_create_password
from streams.security.tls import ensure_tls_files, issue_client_certificate
from streams.settings import SecurityProtocol


def _properties(
    tmp_path: Path, security: str, tls_port: int | None = None, client_auth: bool = False
) -> dict[str, str]:
    config = BrokerConfig(
        state_dir=tmp_path,
        port=30001,
        controller_port=30002,
        security=security,
        tls_port=tls_port,
        client_auth=client_auth,
    )
    return LocalBroker(config)._server_properties()


class TestPlaintextUnchanged:
    def test_plaintext_properties_are_the_defaults(self, tmp_path: Path) -> None:
        """Without security the broker gets exactly the properties it always had."""
        expected = server_properties(
            node_id=1, host="127.0.0.1", client_port=30001, controller_port=30002, log_dir=tmp_path / "data"
        )
        assert _properties(tmp_path, "plaintext") == expected
        assert "authorizer.class.name" not in expected


class TestSaslProperties:
    def test_denies_by_default_with_one_super_user(self, tmp_path: Path) -> None:
        """StandardAuthorizer, no access without an ACL, the admin as the only super user."""
        props = _properties(tmp_path, "sasl")
        assert props["authorizer.class.name"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
        assert props["allow.everyone.if.no.acl.found"] == "false"
        assert props["super.users"] == f"User:{ADMIN_USER}"

    def test_every_listener_authenticates(self, tmp_path: Path) -> None:
        """Clients use SCRAM-SHA-512; the controller listener is not anonymous either."""
        props = _properties(tmp_path, "sasl")
        assert props["listener.security.protocol.map"] == "CLIENT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT"
        assert props["listener.name.client.sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
        assert props["sasl.mechanism.controller.protocol"] == "PLAIN"

    def test_tls_port_adds_a_sasl_ssl_listener(self, tmp_path: Path) -> None:
        """With a TLS port the broker also listens with SASL_SSL, using PEM files from its state folder."""
        if shutil.which("openssl") is None:
            pytest.skip("openssl is not installed")
        props = _properties(tmp_path, "sasl", tls_port=30003)
        assert "TLS://127.0.0.1:30003" in props["listeners"]
        assert "TLS:SASL_SSL" in props["listener.security.protocol.map"]
        assert Path(props["ssl.keystore.location"]).exists()

    def test_server_properties_are_private(self, tmp_path: Path) -> None:
        """The properties hold the admin password, so only the owner may read them."""
        _properties(tmp_path, "sasl")
        assert stat.S_IMODE((tmp_path / "server.properties").stat().st_mode) == 0o600

    def test_mode_cannot_change_after_format(self, tmp_path: Path) -> None:
        """A folder first started with sasl refuses a plaintext start, which would silently drop isolation."""
        _properties(tmp_path, "sasl")
        with pytest.raises(PlatformError, match="formatted with security 'sasl'"):
            _properties(tmp_path, "plaintext")

    def test_tls_port_needs_sasl(self, tmp_path: Path) -> None:
        """A separate TLS port only exists beside the SASL listener."""
        with pytest.raises(PlatformError):
            BrokerConfig(state_dir=tmp_path, security="plaintext", tls_port=30003)

    def test_unknown_mode_is_refused(self) -> None:
        """Only the listed modes exist."""
        with pytest.raises(ValueError):
            secure_listeners("kerberos", host="127.0.0.1", state_dir=Path("."), tls_port=None, password="x")


class TestAdminCredential:
    def test_password_is_generated_once_and_private(self, tmp_path: Path) -> None:
        """The first call writes a 0600 file; later calls return the same password."""
        first = admin_password(tmp_path)
        assert len(first) >= 24
        assert admin_password(tmp_path) == first
        assert stat.S_IMODE((tmp_path / "admin.password").stat().st_mode) == 0o600

    def test_scram_bootstrap_argument_names_the_admin(self) -> None:
        """The format tool gets the admin's SCRAM-SHA-512 credential."""
        assert scram_format_argument("pw") == f"SCRAM-SHA-512=[name={ADMIN_USER},password=pw]"

    def test_admin_settings_authenticate_as_admin(self, tmp_path: Path) -> None:
        """Clients of a sasl broker log in as the admin, over TLS with the CA when asked."""
        config = BrokerConfig(state_dir=tmp_path, port=30001, controller_port=30002, security="sasl", tls_port=30003)
        plain = config.admin_settings()
        assert (plain.security_protocol, plain.sasl_username) == (SecurityProtocol.SASL_PLAINTEXT, ADMIN_USER)
        assert plain.sasl_password == admin_password(tmp_path)
        tls = config.admin_settings(tls=True)
        assert (tls.security_protocol, tls.bootstrap_servers) == (SecurityProtocol.SASL_SSL, "127.0.0.1:30003")
        assert tls.ssl_cafile and tls.ssl_cafile.endswith("ca.pem")

    def test_client_environment_never_prints_the_password(self, tmp_path: Path) -> None:
        """The hint for the shell reads the password from its file."""
        password = admin_password(tmp_path)
        environment = client_environment("sasl", "127.0.0.1:1", tmp_path)
        assert password not in "".join(environment.values())
        assert environment["ICS2_SASL_USERNAME"] == ADMIN_USER


class TestTlsFiles:
    def test_server_certificate_is_signed_by_the_ca_for_the_host(self, tmp_path: Path) -> None:
        """openssl verifies the server certificate against the CA, and it names 127.0.0.1; the key is private."""
        openssl = shutil.which("openssl")
        if openssl is None:
            pytest.skip("openssl is not installed")
        files = ensure_tls_files(tmp_path, "127.0.0.1")
        cert = tmp_path / "server-only.pem"
        keystore = files.keystore.read_text()
        cert.write_text(keystore[keystore.index("-----BEGIN CERTIFICATE-----") :])
        verify = [openssl, "verify", "-CAfile", str(files.ca_cert), "-verify_ip", "127.0.0.1", str(cert)]
        result = subprocess.run(verify, capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr
        assert "PRIVATE KEY" in keystore
        assert stat.S_IMODE(files.keystore.stat().st_mode) == 0o600
        again = ensure_tls_files(tmp_path, "127.0.0.1")
        assert again.ca_cert.read_bytes() == files.ca_cert.read_bytes()


class TestMutualTls:
    def test_mtls_requires_a_client_certificate_on_the_tls_listener_only(self, tmp_path: Path) -> None:
        """The SASL_SSL listener demands a certificate; the admin's SASL_PLAINTEXT listener and the default stay."""
        if shutil.which("openssl") is None:
            pytest.skip("openssl is not installed")
        props = _properties(tmp_path, "sasl", tls_port=30003, client_auth=True)
        assert props["listener.name.tls.ssl.client.auth"] == "required"
        assert props["ssl.client.auth"] == "none"
        (tmp_path / "b").mkdir()
        assert "listener.name.tls.ssl.client.auth" not in _properties(tmp_path / "b", "sasl", tls_port=30003)

    def test_mtls_needs_the_tls_listener(self, tmp_path: Path) -> None:
        with pytest.raises(PlatformError, match="TLS port"):
            BrokerConfig(state_dir=tmp_path, security="sasl", client_auth=True)
        with pytest.raises(ValueError, match="mutual TLS"):
            secure_listeners(
                "ssl", host="127.0.0.1", state_dir=tmp_path, tls_port=None, password=None, client_auth=True
            )

    def test_client_certificate_is_signed_by_the_ca_for_client_auth(self, tmp_path: Path) -> None:
        """openssl verifies the party's certificate for client authentication; its key is private."""
        openssl = shutil.which("openssl")
        if openssl is None:
            pytest.skip("openssl is not installed")
        files = ensure_tls_files(tmp_path / "tls", "127.0.0.1")
        assert stat.S_IMODE(files.ca_key.stat().st_mode) == 0o600
        issued = issue_client_certificate(tmp_path / "tls", "party-FWD-1", tmp_path / "certs")
        verify = [openssl, "verify", "-CAfile", str(files.ca_cert), "-purpose", "sslclient", str(issued.cert)]
        result = subprocess.run(verify, capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr
        subject = subprocess.run(
            [openssl, "x509", "-noout", "-subject", "-in", str(issued.cert)], capture_output=True, text=True, check=True
        )
        assert "CN = party-FWD-1" in subject.stdout or "CN=party-FWD-1" in subject.stdout
        assert stat.S_IMODE(issued.key.stat().st_mode) == 0o600
        server = [openssl, "verify", "-CAfile", str(files.ca_cert), "-purpose", "sslserver", str(issued.cert)]
        assert subprocess.run(server, capture_output=True, text=True, check=False).returncode != 0, "client only"

    def test_no_ca_key_no_client_certificate(self, tmp_path: Path) -> None:
        with pytest.raises(PlatformError, match="no CA key"):
            issue_client_certificate(tmp_path / "tls", "party-FWD-1", tmp_path / "certs")


class TestPasswordFile:
    def test_new_file_gets_a_generated_private_password(self, tmp_path: Path) -> None:
        """A missing file is created with mode 0600 and a fresh password; a second read returns the same one."""
        path = tmp_path / "party.password"
        password, created = read_or_create_password(path)
        assert created and len(password) >= 32
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert read_or_create_password(path) == (password, False)

    def test_existing_file_is_used_as_is(self, tmp_path: Path) -> None:
        """An operator's own password file wins (trailing newline stripped)."""
        path = tmp_path / "given"
        path.write_text("chosen-secret\n")
        assert read_or_create_password(path) == ("chosen-secret", False)

    def test_empty_file_is_refused(self, tmp_path: Path) -> None:
        """An empty file would set an empty password; refused."""
        path = tmp_path / "empty"
        path.write_text("\n")
        with pytest.raises(ValueError, match="empty"):
            read_or_create_password(path)


class TestBrokerCommand:
    def test_mtls_option_reaches_the_broker_config(self, tmp_path: Path) -> None:
        """``ics2 broker start --mtls`` asks the broker for client certificates on its TLS listener."""
        from streams.cli.broker import _broker

        assert _broker(tmp_path, 30001, None, "sasl", 30003, True).config.client_auth is True
        assert _broker(tmp_path, 30001, None, "sasl", 30003).config.client_auth is False
