"""Party isolation on a real secured broker (SCRAM-SHA-512, StandardAuthorizer), and TLS between clients and broker.

The module starts its own broker (``--security sasl`` with a SASL_SSL listener beside the SASL_PLAINTEXT one), so
the plaintext session broker of the other integration tests stays untouched.
"""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import NewTopic
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    TopicAuthorizationFailedError,
)

from streams.admin import admin_client, delete_topics, list_topics
from streams.broker import LocalBroker
from streams.client import publish_bookings, stop_consumer
from streams.scenarios import seed_booking
from streams.security.onboarding import list_parties, offboard_party, onboard_party, onboard_process
from streams.settings import SecurityProtocol, Settings
from streams.topics import Catalogue
from tests.integration.services import ICS2, gateway, start_broker, worker

#: What a refused client sees, depending on where aiokafka notices: the fetch, the metadata, or the group.
REFUSED = (TopicAuthorizationFailedError, GroupAuthorizationFailedError)


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """A SCRAM + ACL broker with a TLS listener, for this module only; stopped at the end."""
    broker = start_broker(
        tmp_path_factory.mktemp("kafka-secure"), "the secured Kafka broker", tls=True, security="sasl"
    )
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
async def admin(secure_broker: LocalBroker, tmp_path: Path) -> AsyncIterator[Settings]:
    """The admin's settings on a fresh prefix; the prefix's topics are deleted afterwards."""
    prefix = f"s{uuid.uuid4().hex[:8]}."
    settings = secure_broker.config.admin_settings(
        topic_prefix=prefix, app_id=f"{prefix}app", state_dir=tmp_path / "state", default_partitions=2
    )
    yield settings
    await delete_topics(settings, await list_topics(settings, prefix), wait=False)


def as_user(settings: Settings, user: str, password: str) -> Settings:
    return replace(settings, sasl_username=user, sasl_password=password)


@dataclass
class Onboarded:
    """Two parties and a worker principal, onboarded on one prefix."""

    admin: Settings
    catalogue: Catalogue
    party_a: Settings
    party_b: Settings
    worker: Settings


@pytest.fixture
async def onboarded(admin: Settings) -> Onboarded:
    catalogue = Catalogue.for_prefix(admin.topic_prefix)
    suffix = uuid.uuid4().hex[:6]
    a = await onboard_party(admin, catalogue, f"FWD-A{suffix}")
    b = await onboard_party(admin, catalogue, f"FWD-B{suffix}")
    w = await onboard_process(admin, catalogue, "worker", f"ics2-worker-{suffix}")
    assert a.password and b.password and w.password, "new users get a generated password"
    return Onboarded(
        admin=admin,
        catalogue=catalogue,
        party_a=as_user(admin, a.user, a.password),
        party_b=as_user(admin, b.user, b.password),
        worker=as_user(admin, w.user, w.password),
    )


def _party(settings: Settings) -> str:
    return (settings.sasl_username or "").removeprefix("party-")


async def produce(settings: Settings, topic: str, values: list[bytes], *, idempotent: bool = False) -> None:
    producer = AIOKafkaProducer(
        **settings.kafka_client_kwargs(), enable_idempotence=idempotent, request_timeout_ms=15000
    )
    try:
        await producer.start()
        for value in values:
            await producer.send_and_wait(topic, value=value, key=b"k")
    finally:
        await producer.stop()


async def read(settings: Settings, topic: str, count: int, timeout: float = 30.0, group: str | None = None) -> list:
    """``count`` records of ``topic`` from the start, or fewer at ``timeout``.

    The partitions come from aiokafka's metadata wait, the path ``send`` uses too: it raises the broker's
    TopicAuthorizationFailed when the topic may not even be described (an assigned consumer only logs it and
    waits forever). A topic that may be described but not read fails at the first fetch instead.
    """
    consumer = AIOKafkaConsumer(
        **settings.kafka_client_kwargs(),
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        request_timeout_ms=15000,
    )
    records: list = []
    try:
        await consumer.start()
        partitions = await consumer._client._wait_on_metadata(topic)
        consumer.assign([TopicPartition(topic, p) for p in sorted(partitions)])
        deadline = time.monotonic() + timeout
        while len(records) < count and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for part in batch.values():
                records.extend(part)
            if group is not None and records:
                await consumer.commit()
    finally:
        await stop_consumer(consumer)
    return records


class TestPartyIsolation:
    async def test_party_reads_its_own_queue(self, onboarded: Onboarded) -> None:
        """What the worker principal puts on a party's queue, that party reads."""
        queue = onboarded.catalogue.party_queue(_party(onboarded.party_a)).name
        await produce(onboarded.worker, queue, [b"alert-1", b"alert-2"], idempotent=True)
        records = await read(onboarded.party_a, queue, 2)
        assert sorted(r.value for r in records) == [b"alert-1", b"alert-2"]

    async def test_party_can_use_its_own_consumer_group(self, onboarded: Onboarded) -> None:
        """An alerting service of the party may commit offsets in a group named after the party."""
        queue = onboarded.catalogue.party_queue(_party(onboarded.party_a)).name
        await produce(onboarded.worker, queue, [b"alert"], idempotent=True)
        group = f"{onboarded.catalogue.prefix}inbox.{_party(onboarded.party_a)}:alerting"
        records = await read(onboarded.party_a, queue, 1, group=group)
        assert [r.value for r in records] == [b"alert"]

    async def test_party_cannot_read_another_partys_queue(self, onboarded: Onboarded) -> None:
        """Party A is refused on party B's queue, even though records are there."""
        queue_b = onboarded.catalogue.party_queue(_party(onboarded.party_b)).name
        await produce(onboarded.worker, queue_b, [b"for B only"], idempotent=True)
        assert [r.value for r in await read(onboarded.party_b, queue_b, 1)] == [b"for B only"]
        with pytest.raises(REFUSED):
            await read(onboarded.party_a, queue_b, 1, timeout=20)

    async def test_party_cannot_read_filing_topics(self, onboarded: Onboarded) -> None:
        """Outbound filings, bookings and the shared alerts topic are closed to a party."""
        for spec in (onboarded.catalogue.filings_outbound, onboarded.catalogue.bookings, onboarded.catalogue.alerts):
            with pytest.raises(REFUSED):
                await read(onboarded.party_a, spec.name, 1, timeout=20)

    async def test_party_cannot_use_another_partys_group(self, onboarded: Onboarded) -> None:
        """Committing in a group named after party B fails for party A, even on A's own queue."""
        queue_a = onboarded.catalogue.party_queue(_party(onboarded.party_a)).name
        await produce(onboarded.worker, queue_a, [b"alert"], idempotent=True)
        group_b = f"{onboarded.catalogue.prefix}inbox.{_party(onboarded.party_b)}"
        with pytest.raises(REFUSED):
            await read(onboarded.party_a, queue_a, 1, group=group_b, timeout=20)

    async def test_party_cannot_write_anywhere(self, onboarded: Onboarded) -> None:
        """Not its own queue, not another's, not the inbound notifications, not bookings."""
        catalogue = onboarded.catalogue
        targets = [
            catalogue.party_queue(_party(onboarded.party_a)).name,
            catalogue.party_queue(_party(onboarded.party_b)).name,
            catalogue.notifications_inbound.name,
            catalogue.bookings.name,
        ]
        for topic in targets:
            with pytest.raises(TopicAuthorizationFailedError):
                await produce(onboarded.party_a, topic, [b"forged"])

    async def test_worker_cannot_read_party_queues(self, onboarded: Onboarded) -> None:
        """The worker writes the queues but has no reason to read them, so it cannot."""
        queue = onboarded.catalogue.party_queue(_party(onboarded.party_a)).name
        with pytest.raises(REFUSED):
            await read(onboarded.worker, queue, 1, timeout=20)

    async def test_wrong_password_fails_authentication(
        self, onboarded: Onboarded, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A client with a wrong password cannot even connect: the broker refuses the SCRAM exchange."""
        wrong = as_user(onboarded.party_a, onboarded.party_a.sasl_username or "", "not-the-password")
        with pytest.raises(KafkaConnectionError):
            await read(wrong, onboarded.catalogue.party_queue(_party(wrong)).name, 1, timeout=10)
        assert "SaslAuthenticationFailed" in caplog.text


class TestOnboarding:
    async def test_onboarding_again_changes_nothing(self, onboarded: Onboarded) -> None:
        """A second onboarding adds and removes no ACL and keeps the password the party already has."""
        party = _party(onboarded.party_a)
        again = await onboard_party(onboarded.admin, onboarded.catalogue, party)
        assert (again.acls_added, again.acls_removed, again.created_user, again.password) == (0, 0, False, None)
        queue = onboarded.catalogue.party_queue(party).name
        await produce(onboarded.worker, queue, [b"still readable"], idempotent=True)
        assert [r.value for r in await read(onboarded.party_a, queue, 1)] == [b"still readable"]

    async def test_list_shows_onboarded_parties(self, onboarded: Onboarded) -> None:
        """Both parties are listed with their credential, queue and six ACLs on this prefix."""
        listings = {item.party_id: item for item in await list_parties(onboarded.admin, onboarded.catalogue)}
        for settings in (onboarded.party_a, onboarded.party_b):
            item = listings[_party(settings)]
            assert (item.has_credential, item.queue_exists, item.acls) == (True, True, 6)

    async def test_offboarded_party_can_no_longer_connect(self, onboarded: Onboarded) -> None:
        """Offboarding removes the ACLs and the credential; the queue and its records stay."""
        party = _party(onboarded.party_a)
        done = await offboard_party(onboarded.admin, onboarded.catalogue, party)
        assert (done.acls_removed, done.user_deleted, done.queue_deleted) == (6, True, False)
        with pytest.raises(KafkaConnectionError):
            await read(onboarded.party_a, onboarded.catalogue.party_queue(party).name, 1, timeout=10)
        assert onboarded.catalogue.party_queue(party).name in await list_topics(onboarded.admin, "")

    async def test_offboarding_one_deployment_keeps_the_party_on_another(self, onboarded: Onboarded) -> None:
        """A party onboarded on two prefixes keeps its login and its other queue when one prefix offboards it."""
        party = _party(onboarded.party_a)
        other_prefix = f"{onboarded.catalogue.prefix}two."
        other = Catalogue.for_prefix(other_prefix)
        second = await onboard_party(replace(onboarded.admin, topic_prefix=other_prefix), other, party)
        assert (second.created_user, second.password, second.acls_added) == (False, None, 6)
        done = await offboard_party(onboarded.admin, onboarded.catalogue, party)
        assert (done.acls_removed, done.user_deleted) == (6, False)
        other_queue = other.party_queue(party).name
        with pytest.raises(REFUSED):
            await read(onboarded.party_a, onboarded.catalogue.party_queue(party).name, 1, timeout=20)
        await produce(onboarded.admin, other_queue, [b"second deployment"])
        assert [r.value for r in await read(onboarded.party_a, other_queue, 1)] == [b"second deployment"]

    def test_cli_onboards_with_a_password_file(self, admin: Settings, tmp_path: Path) -> None:
        """``ics2 parties onboard`` writes a new password to a 0600 file, and the party reads with it."""
        password_file = tmp_path / "party.password"
        env = admin_env(admin)
        party = f"CLI-{uuid.uuid4().hex[:6]}"
        command = [ICS2, "parties", "onboard", party, "--password-file", str(password_file)]
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
        password = password_file.read_text().strip()
        assert password and password not in result.stdout
        again = subprocess.run(command[:4], env=env, capture_output=True, text=True, timeout=120, check=False)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "(exists)" in again.stdout and "password unchanged" in again.stdout, again.stdout
        queue = Catalogue.for_prefix(admin.topic_prefix).party_queue(party).name
        asyncio.run(produce(admin, queue, [b"hello"]))
        assert [r.value for r in asyncio.run(read(as_user(admin, f"party-{party}", password), queue, 1))] == [b"hello"]


def admin_env(admin: Settings) -> dict[str, str]:
    """The environment in which an ``ics2`` subprocess acts as the broker's admin on the admin's prefix."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ICS2_")}
    env.update(
        ICS2_BOOTSTRAP_SERVERS=admin.bootstrap_servers,
        ICS2_SECURITY_PROTOCOL=admin.security_protocol.value,
        ICS2_SASL_MECHANISM=admin.sasl_mechanism or "",
        ICS2_SASL_USERNAME=admin.sasl_username or "",
        ICS2_SASL_PASSWORD=admin.sasl_password or "",
        ICS2_TOPIC_PREFIX=admin.topic_prefix,
        ICS2_DEFAULT_PARTITIONS=str(admin.default_partitions),
    )
    return env


def _credentials_env(settings: Settings) -> dict[str, str]:
    return {
        "ICS2_SECURITY_PROTOCOL": settings.security_protocol.value,
        "ICS2_SASL_MECHANISM": settings.sasl_mechanism or "",
        "ICS2_SASL_USERNAME": settings.sasl_username or "",
        "ICS2_SASL_PASSWORD": settings.sasl_password or "",
    }


class TestProcessPrincipals:
    async def test_worker_and_gateway_run_a_booking_through_under_their_own_principals(
        self, onboarded: Onboarded, tmp_path: Path
    ) -> None:
        """The real ``ics2 worker`` and ``ics2 gateway``, each with only its grants, get an alert to the filer."""
        admin, catalogue = onboarded.admin, onboarded.catalogue
        filer = await onboard_party(admin, catalogue, "ML-TYO")
        gateway_access = await onboard_process(admin, catalogue, "gateway", f"ics2-gateway-{uuid.uuid4().hex[:6]}")
        gateway_user = as_user(admin, gateway_access.user, gateway_access.password or "")
        customs = gateway(admin, tmp_path, "--poll-interval", "1", **_credentials_env(gateway_user)).start()
        pipeline = worker(admin, tmp_path, **_credentials_env(onboarded.worker)).start()
        try:
            await asyncio.to_thread(pipeline.wait_healthy, 120.0)
            await publish_bookings(admin, [seed_booking()])
            reader = as_user(admin, filer.user, filer.password or "")
            alerts = await read(reader, catalogue.party_queue("ML-TYO").name, 1, timeout=120)
            logs = pipeline.tail(10_000) + customs.tail(10_000)
            assert alerts, f"no alert reached the filer's queue:\n{pipeline.tail()}\n{customs.tail()}"
            assert "AuthorizationFailed" not in logs
        finally:
            pipeline.stop()
            customs.stop()


class TestTls:
    async def test_client_with_the_ca_produces_and_consumes(self, secure_broker: LocalBroker, admin: Settings) -> None:
        """Over the SASL_SSL listener, a client that trusts the broker's CA writes and reads a record."""
        tls = secure_broker.config.admin_settings(tls=True, topic_prefix=admin.topic_prefix, default_partitions=2)
        assert tls.security_protocol is SecurityProtocol.SASL_SSL
        topic = f"{admin.topic_prefix}tls-check"
        async with admin_client(tls) as client:
            await client.create_topics([NewTopic(topic, 2, 1)])
        await produce(tls, topic, [b"over tls"])
        assert [r.value for r in await read(tls, topic, 1)] == [b"over tls"]

    async def test_client_without_the_ca_cannot_connect(
        self, secure_broker: LocalBroker, admin: Settings, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Without the private CA the certificate is not trusted and no connection is made."""
        tls = secure_broker.config.admin_settings(tls=True, topic_prefix=admin.topic_prefix)
        untrusting = replace(tls, ssl_cafile=None)
        with pytest.raises(KafkaConnectionError):
            await produce(untrusting, f"{admin.topic_prefix}tls-check", [b"x"])
        assert "CERTIFICATE_VERIFY_FAILED" in caplog.text


#: The first librdkafka whose SCRAM works against Kafka 4 (2.0.2, Debian's kcat, fails even as admin).
LIBRDKAFKA_MIN = (2, 6, 1)
PUBLISHED = Path(__file__).resolve().parents[2] / "schemas" / "avro"


def librdkafka_config(settings: Settings, **extra: object) -> dict[str, object]:
    """The settings as a librdkafka client (confluent-kafka, kcat, Go, .NET) is configured, SCRAM over TLS or not."""
    config: dict[str, object] = {
        "bootstrap.servers": settings.bootstrap_servers,
        "security.protocol": settings.security_protocol.value,
        "sasl.mechanisms": settings.sasl_mechanism,
        "sasl.username": settings.sasl_username,
        "sasl.password": settings.sasl_password,
        "socket.timeout.ms": 15000,
        **extra,
    }
    if settings.ssl_cafile:
        config["ssl.ca.location"] = settings.ssl_cafile
    return config


def crc64_avro(data: bytes) -> int:
    """The Avro specification's CRC-64-AVRO ("Schema Fingerprints"), written out so the test trusts no library's."""
    empty = 0xC15D213AA4D7A795
    table = []
    for byte in range(256):
        fp = byte
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


def decode_published(value: bytes, name: str) -> dict:
    """A single-object Avro message decoded as a party's service would: the published schema file, its fingerprint
    from the specification, and fastavro, not the product's own catalogue."""
    import io
    import json as jsonlib

    from fastavro import parse_schema, schemaless_reader
    from fastavro.schema import to_parsing_canonical_form

    schema = parse_schema(jsonlib.loads((PUBLISHED / f"{name}.avsc").read_text()), _write_hint=False)
    fingerprint = crc64_avro(to_parsing_canonical_form(schema).encode()).to_bytes(8, "little")
    assert value[:2] == b"\xc3\x01", "the single-object marker"
    assert value[2:10] == fingerprint, "written with the published schema"
    return schemaless_reader(io.BytesIO(value[10:]), schema, None)


def poll_librdkafka(consumer: object, count: int, timeout: float) -> tuple[list, list]:
    """Up to ``count`` messages, and the errors seen, until ``timeout``."""
    messages: list = []
    errors: list = []
    deadline = time.monotonic() + timeout
    while len(messages) < count and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is None:
            continue
        if message.error():
            errors.append(message.error())
            if not message.error().retriable():
                break
        else:
            messages.append(message)
    return messages, errors


def party_alert(alert_id: str, party: str, mbl: str) -> dict:
    return {
        "alert_id": alert_id,
        "party_id": party,
        "urgency": "critical",
        "action": "do_not_load",
        "title": "Do not load",
        "message": "customs holds the cargo",
        "mbl": mbl,
        "hbl": "HBL-1",
        "created_at": "2027-06-10T08:00:00Z",
    }


class TestLibrdkafkaClient:
    """A party's alerting service on librdkafka (confluent-kafka-python) reads its queue, and only its queue."""

    def test_librdkafka_is_recent_enough_for_scram_on_kafka_4(self) -> None:
        import confluent_kafka

        version, _ = confluent_kafka.libversion()
        assert tuple(int(part) for part in version.split("-")[0].split(".")[:3]) >= LIBRDKAFKA_MIN, version

    @pytest.mark.parametrize("tls", [False, True], ids=["sasl-plaintext", "sasl-ssl"])
    async def test_reads_and_decodes_its_own_queue(
        self, secure_broker: LocalBroker, onboarded: Onboarded, tls: bool
    ) -> None:
        """Under SCRAM-SHA-512 (and over TLS with the broker's CA), in the party's own consumer group, a real
        PartyAlert comes back decoded with the published schema; only the party's queue is listed."""
        from confluent_kafka import Consumer

        from streams.contracts.avro import SchemaCatalogue

        party = _party(onboarded.party_a)
        queue = onboarded.catalogue.party_queue(party).name
        alert = party_alert(f"a{uuid.uuid4().hex[:23]}", party, "OCLU26LIBRD0001")
        await produce(onboarded.worker, queue, [SchemaCatalogue.load().encode("PartyAlert", alert)], idempotent=True)
        settings = onboarded.party_a
        if tls:
            over_tls = secure_broker.config.admin_settings(tls=True)
            settings = replace(
                settings,
                bootstrap_servers=over_tls.bootstrap_servers,
                security_protocol=over_tls.security_protocol,
                ssl_cafile=over_tls.ssl_cafile,
            )
        group = f"{onboarded.catalogue.prefix}inbox.{party}:librdkafka"
        config = librdkafka_config(
            settings, **{"group.id": group, "auto.offset.reset": "earliest", "enable.auto.commit": False}
        )

        def consume() -> tuple[list, list, set[str]]:
            consumer = Consumer(config)
            try:
                listed = set(consumer.list_topics(timeout=15).topics)
                consumer.subscribe([queue])
                messages, errors = poll_librdkafka(consumer, 1, 60)
                if messages:
                    consumer.commit(message=messages[-1], asynchronous=False)
                return messages, errors, listed
            finally:
                consumer.close()

        messages, errors, listed = await asyncio.to_thread(consume)
        assert messages, f"nothing read: {errors}"
        decoded = decode_published(messages[0].value(), "PartyAlert")
        assert {k: decoded[k] for k in alert} == alert and decoded["acknowledged"] is False
        assert messages[0].key() == b"k"
        ours = {t for t in listed if t.startswith(onboarded.catalogue.prefix)}
        assert ours == {queue}, "another party's queue, the alerts topic or the filings are not even listed"

    async def test_is_refused_other_queues_the_alerts_topic_and_any_write(self, onboarded: Onboarded) -> None:
        """Another party's queue and the alerts topic cannot be read; no topic, its own queue included, written."""
        from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

        catalogue = onboarded.catalogue
        queue_b = catalogue.party_queue(_party(onboarded.party_b)).name
        await produce(onboarded.worker, queue_b, [b"for B only"], idempotent=True)
        refused = {KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.GROUP_AUTHORIZATION_FAILED}

        def read_refused(topic: str) -> list:
            consumer = Consumer(librdkafka_config(onboarded.party_a, **{"group.id": f"{catalogue.prefix}x"}))
            try:
                consumer.assign([TopicPartition(topic, 0, 0)])
                messages, errors = poll_librdkafka(consumer, 1, 30)
                assert not messages, f"{topic} was readable"
                return [e.code() for e in errors]
            finally:
                consumer.close()

        for topic in (queue_b, catalogue.alerts.name):
            codes = await asyncio.to_thread(read_refused, topic)
            assert refused & set(codes), f"{topic}: {codes}"

        def write(topic: str) -> object:
            producer = Producer(librdkafka_config(onboarded.party_a, **{"message.timeout.ms": 20000}))
            reports: list = []
            producer.produce(topic, b"forged", key=b"k", on_delivery=lambda err, msg: reports.append(err))
            producer.flush(30)
            return reports[0] if reports else None

        for topic in (catalogue.party_queue(_party(onboarded.party_a)).name, queue_b, catalogue.bookings.name):
            error = await asyncio.to_thread(write, topic)
            assert error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, f"{topic}: {error}"
