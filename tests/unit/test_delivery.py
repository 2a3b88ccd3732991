"""The delivery stage: an alert for a party without a queue is kept, in order, and delivered once the queue exists."""

from __future__ import annotations

from datetime import UTC, datetime

from streams.contracts.avro import SchemaCatalogue
from streams.domain.notifications import Action, Urgency
from streams.domain.routing import PartyAlert
from streams.pipeline.stage import Incoming
from streams.pipeline.stages.delivery import KnownQueues, QueueDelivery
from streams.pipeline.tables import StateTable
from streams.settings import Settings
from streams.topics import Catalogue

SCHEMAS = SchemaCatalogue.load()
CATALOGUE = Catalogue.for_prefix("d.")
NOW = datetime(2027, 6, 1, 9, 0, tzinfo=UTC)


def alert(number: int, party: str = "COLOADER-D") -> Incoming:
    made = PartyAlert(
        alert_id=f"a{number}",
        party=party,
        urgency=Urgency.CRITICAL,
        action=Action.STOP_LOADING,
        title=f"alert {number}",
        message="keep the container off the vessel",
        mbl="OCLU26TYO7781234",
        hbl=None,
        hbl_chain=(),
        party_at_fault=None,
        lrn=None,
        mrn=None,
        referral_reference=None,
        deadline=None,
        message_type="IE3Q01",
        created_at=NOW,
    )
    value = SCHEMAS.encode("PartyAlert", made.to_record())
    headers = (("ics2-party", party.encode()), ("ics2-alert-id", made.alert_id.encode()))
    return Incoming(CATALOGUE.alerts.name, 0, number, party.encode(), value, headers)


def delivery() -> tuple[QueueDelivery, StateTable, KnownQueues]:
    waiting = StateTable("waiting", "d.waiting", 4)
    waiting.held = set(range(4))
    queues = KnownQueues(Settings(), CATALOGUE)
    return QueueDelivery(SCHEMAS, CATALOGUE, waiting, queues), waiting, queues


def ids(emits) -> list[str]:
    return [dict(e.headers)["ics2-alert-id"].decode() for e in emits]


class TestQueueDelivery:
    def test_an_onboarded_party_gets_the_alert_on_its_queue_keyed_by_mbl(self):
        stage, _, queues = delivery()
        queues.names = {CATALOGUE.party_queue("COLOADER-D").name}
        [emit] = stage(alert(1))
        assert emit.topic == CATALOGUE.party_queue("COLOADER-D").name and emit.key == b"OCLU26TYO7781234"
        assert emit.value == alert(1).value

    def test_no_queue_keeps_every_alert_in_order_and_delivers_them_first_once_it_exists(self):
        stage, waiting, queues = delivery()
        assert stage(alert(1)) == [] and stage(alert(2)) == []
        waiting.saved()
        assert stage.waiting_count() == 2
        queues.names = {CATALOGUE.party_queue("COLOADER-D").name}
        assert ids(stage(alert(3))) == ["a1", "a2", "a3"]
        waiting.saved()
        assert stage.waiting_count() == 0 and ids(stage(alert(4))) == ["a4"], "delivered once"

    def test_the_timer_releases_what_waits_once_the_queue_appears(self):
        stage, waiting, queues = delivery()
        stage(alert(1))
        stage(alert(2, party="COLOADER-A"))
        waiting.saved()
        assert stage.deliverable() == []
        queues.names = {CATALOGUE.party_queue("COLOADER-A").name}
        assert stage.deliverable() == ["COLOADER-A"]
        assert ids(stage.release(["COLOADER-A"])) == ["a2"]
        waiting.saved()
        assert list(waiting) == ["COLOADER-D"]

    def test_kept_alerts_survive_a_failed_batch_only_once_saved(self):
        """The engine's rule: an abandoned batch keeps nothing, and is read again."""
        stage, waiting, _ = delivery()
        stage(alert(1))
        waiting.abandon()
        assert stage.waiting_count() == 0
