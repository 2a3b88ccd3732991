"""Mutual TLS for parties on a real broker (``--security sasl`` with a TLS port and ``--mtls``).

The module starts its own broker, since the TLS listener's client authentication is fixed at start. A party
onboarded with ``ics2 parties onboard --client-cert`` reads its queue over TLS with its certificate and SCRAM
password; without a certificate, or with one of another CA, the TLS handshake fails and nothing is read.
"""

from __future__ import annotations

import stat
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from aiokafka.errors import KafkaConnectionError

from streams.broker import LocalBroker
from streams.security.tls import ensure_tls_files, issue_client_certificate
from streams.topics import Catalogue
from tests.integration.services import ICS2, start_broker
from tests.integration.test_security import admin_env, produce, read


@pytest.fixture(scope="module")
def mtls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    broker = start_broker(
        tmp_path_factory.mktemp("kafka-mtls"), "the mutual-TLS broker", tls=True, security="sasl", client_auth=True
    )
    try:
        yield broker
    finally:
        broker.stop()


class TestMutualTls:
    async def test_party_needs_its_certificate_on_the_tls_listener(self, mtls_broker: LocalBroker, tmp_path: Path):
        """With the certificate from ``ics2 parties onboard --client-cert`` the party reads its queue over TLS;
        without one, or with a certificate of another CA, it cannot connect; the password alone is not enough."""
        prefix = f"m{uuid.uuid4().hex[:8]}."
        admin = mtls_broker.config.admin_settings(topic_prefix=prefix, default_partitions=1)
        party = f"MTLS-{uuid.uuid4().hex[:6]}"
        password_file, certs = tmp_path / "party.password", tmp_path / "certs"
        tls_dir = mtls_broker.config.state_dir / "tls"
        command = [ICS2, "parties", "onboard", party, "--password-file", str(password_file)]
        command += ["--client-cert", str(certs), "--ca-dir", str(tls_dir)]
        done = subprocess.run(command, env=admin_env(admin), capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        cert, key = certs / f"party-{party}.pem", certs / f"party-{party}.key"
        assert cert.exists() and stat.S_IMODE(key.stat().st_mode) == 0o600
        queue = Catalogue.for_prefix(prefix).party_queue(party).name
        await produce(admin, queue, [b"over mutual tls"])

        over_tls = mtls_broker.config.admin_settings(tls=True)
        party_tls = replace(
            over_tls,
            sasl_username=f"party-{party}",
            sasl_password=password_file.read_text().strip(),
            ssl_certfile=str(cert),
            ssl_keyfile=str(key),
        )
        assert [r.value for r in await read(party_tls, queue, 1)] == [b"over mutual tls"]

        without = replace(party_tls, ssl_certfile=None, ssl_keyfile=None)
        with pytest.raises(KafkaConnectionError):
            await read(without, queue, 1, timeout=15)

        stranger_ca = ensure_tls_files(tmp_path / "other-ca", "127.0.0.1")
        assert stranger_ca.ca_cert.read_bytes() != (tls_dir / "ca.pem").read_bytes()
        forged = issue_client_certificate(tmp_path / "other-ca", f"party-{party}", tmp_path / "forged")
        with pytest.raises(KafkaConnectionError):
            await read(replace(party_tls, ssl_certfile=str(forged.cert), ssl_keyfile=str(forged.key)), queue, 1, 15)
