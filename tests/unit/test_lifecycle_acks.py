"""Acknowledgements of DNL/RFI/RFS alerts and the escalation of unacknowledged ones, in the pure lifecycle."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.contextvars import merge_contextvars
from structlog.testing import capture_logs

from streams.contracts.avro import SchemaCatalogue
from streams.contracts.events import ack_record, lifecycle_event
from streams.domain.dates import format_datetime
from streams.domain.events import Ack, AnswerSent, LifecycleEvent, Tick, event_from_json
from streams.domain.ledger import filing_record
from streams.domain.lifecycle import DEFAULT_MARGINS, EnsState, NaggingKind, apply
from streams.domain.model import Consolidation
from streams.domain.notifications import Action, Notification, Urgency
from streams.domain.planning import plan
from streams.pipeline.stage import Incoming
from streams.pipeline.stages.lifecycle import LifecycleTracker, TickSchedule
from streams.topics import Catalogue

NOW = datetime(2027, 6, 10, 8, 0, tzinfo=UTC)
DNL_HBL = "AOB26OSA1001"
RFI_HBL = "SKC26TYO0003"
LODGING_DEADLINE = NOW + timedelta(hours=100)
RFI_DEADLINE = NOW + timedelta(hours=30)


def planned(consolidation: Consolidation, deadline: datetime = LODGING_DEADLINE) -> LifecycleEvent:
    event = {
        "type": "planned",
        "mbl": consolidation.mbl,
        "planning_party": consolidation.planning_party,
        "version": consolidation.version,
        "deadline": format_datetime(deadline),
        "filings": [
            {"ours": f.ours, "record": filing_record(consolidation, f, f"LRN{i}" if f.ours else None).to_json()}
            for i, f in enumerate(plan(consolidation).filings)
        ],
    }
    return event_from_json(event)


def notification_event(consolidation: Consolidation, message_type: str, hbl: str, **fields) -> LifecycleEvent:
    planned_filing = next(f for f in plan(consolidation).filings if f.hbl == hbl)
    record = filing_record(consolidation, planned_filing, "LRN-X")
    notification = Notification(
        message_type=message_type, notification_date=NOW, mbl=consolidation.mbl, hbl=hbl, **fields
    )
    event = {
        "type": "notification",
        "mbl": consolidation.mbl,
        "notification_id": f"{message_type}|{hbl}|{fields.get('referral_reference', '')}",
        "record": record.to_json(),
    }
    return event_from_json(event, notification)


def ack(mbl: str, alert_id: str, by: str = "ops-anna") -> LifecycleEvent:
    return Ack(mbl, alert_id, by, format_datetime(NOW))


def tick(mbl: str) -> LifecycleEvent:
    return Tick(mbl)


def escalations(alerts) -> list:
    return [a for a in alerts if a.message_type == "ESCALATION"]


@pytest.fixture
def held(seed) -> EnsState:
    """The seed ENS planned, with a DNL on one HBL and an RFI (answer due in 30 h) on another."""
    state = apply(None, planned(seed), NOW).state
    state = apply(state, notification_event(seed, "IE3Q01", DNL_HBL), NOW).state
    rfi = notification_event(seed, "IE3Q02", RFI_HBL, referral_reference="REF-RFI-1", deadline=RFI_DEADLINE)
    return apply(state, rfi, NOW).state


class TestOpenAlerts:
    def test_dnl_opens_one_alert_per_recipient(self, seed):
        """A DNL remembers one open, unacknowledged alert per party it was sent to, with the alert's id."""
        state = apply(None, planned(seed), NOW).state
        result = apply(state, notification_event(seed, "IE3Q01", DNL_HBL), NOW)
        opened = result.state.open_alerts
        assert set(opened) == {a.alert_id for a in result.alerts}
        assert {a.party for a in opened.values()} == {a.party for a in result.alerts}
        assert all(a.kind is NaggingKind.DO_NOT_LOAD and not a.acknowledged for a in opened.values())

    def test_rfi_opens_an_alert_with_its_reference_and_deadline(self, held):
        """The RFI's open alert carries the referral reference and customs' answer deadline."""
        rfi = [a for a in held.open_alerts.values() if a.kind is NaggingKind.RFI]
        assert len(rfi) == 1
        assert rfi[0].referral_reference == "REF-RFI-1"
        assert rfi[0].deadline == format_datetime(RFI_DEADLINE)

    def test_registration_opens_nothing(self, seed):
        """Informational answers (a registration) are not nagging alerts."""
        state = apply(None, planned(seed), NOW).state
        result = apply(state, notification_event(seed, "IE3R01", DNL_HBL, mrn="27NL00000000000017"), NOW)
        assert result.alerts and not result.state.open_alerts

    def test_state_round_trips_open_alerts_and_acks(self, held):
        """Open alerts and acknowledgements survive the table's JSON form."""
        alert_id = next(iter(held.open_alerts))
        state = apply(held, ack(held.mbl, alert_id), NOW).state
        again = EnsState.from_json(json.loads(json.dumps(state.to_json())))
        assert again.to_json() == state.to_json()
        assert again.open_alerts[alert_id].acknowledged_by == "ops-anna"


class TestAck:
    def test_ack_records_who_and_when(self, held):
        """An ack marks the open alert acknowledged by the operator at the given time and publishes it to the alert's
        party as a record with the alert's own id and ``acknowledged`` true (docs/alerts.md)."""
        alert_id = next(iter(held.open_alerts))
        result = apply(held, ack(held.mbl, alert_id), NOW + timedelta(minutes=5))
        (published,) = result.alerts
        record = published.to_record()
        assert (record["alert_id"], record["acknowledged"]) == (alert_id, True)
        assert record["party_id"] == held.open_alerts[alert_id].party
        assert record["notification_message_type"] == "ACKNOWLEDGED"
        assert record["created_at"] == format_datetime(NOW)
        assert "ops-anna" in record["message"]
        assert result.state.open_alerts[alert_id].acknowledged_by == "ops-anna"
        assert result.state.acknowledgement(alert_id) == ("ops-anna", format_datetime(NOW))

    def test_second_ack_is_a_duplicate(self, held):
        """Acknowledging twice keeps the first acknowledgement."""
        alert_id = next(iter(held.open_alerts))
        state = apply(held, ack(held.mbl, alert_id, "first"), NOW).state
        result = apply(state, ack(held.mbl, alert_id, "second"), NOW)
        assert result.duplicate
        assert result.state.acknowledgement(alert_id)[0] == "first"

    def test_ack_of_an_informational_alert_is_remembered(self, held):
        """Any alert of the MBL can be acknowledged for the operator views, not only open ones."""
        result = apply(held, ack(held.mbl, "feedface"), NOW)
        assert result.state.acknowledgement("feedface") == ("ops-anna", format_datetime(NOW))
        assert not any(a.acknowledged for a in result.state.open_alerts.values())


class TestEscalation:
    def test_nothing_escalates_before_the_widest_margin(self, seed):
        """An RFI due in 60 h (widest margin 48 h) is not escalated yet."""
        state = apply(None, planned(seed, NOW + timedelta(days=30)), NOW).state
        rfi = notification_event(seed, "IE3Q02", RFI_HBL, referral_reference="R", deadline=NOW + timedelta(hours=60))
        state = apply(state, rfi, NOW).state
        assert escalations(apply(state, tick(seed.mbl), NOW).alerts) == []
        assert not state.needs_tick(NOW, DEFAULT_MARGINS[0])

    def test_unacknowledged_rfi_escalates_to_its_party(self, held):
        """Within 30 h of the RFI's deadline, 48 h and 24 h margins are reached: one escalation to the RFI's party."""
        rfi = next(a for a in held.open_alerts.values() if a.kind is NaggingKind.RFI)
        result = apply(held, tick(held.mbl), NOW + timedelta(hours=7))
        mine = [a for a in escalations(result.alerts) if a.referral_reference == "REF-RFI-1"]
        assert [(a.party, a.action, a.urgency) for a in mine] == [(rfi.party, Action.ANSWER_RFI, Urgency.HIGH)]
        assert mine[0].deadline == RFI_DEADLINE
        assert result.state.open_alerts[rfi.alert_id].escalations == [mine[0].alert_id]

    def test_replayed_tick_does_not_escalate_twice(self, held):
        """A second tick at the same margin raises nothing new."""
        first = apply(held, tick(held.mbl), NOW + timedelta(hours=7))
        again = apply(first.state, tick(held.mbl), NOW + timedelta(hours=8))
        assert escalations(first.alerts) and escalations(again.alerts) == []

    def test_escalation_ids_are_deterministic(self, held):
        """The same state ticked at the same margin gives the same escalation ids (replays deduplicate)."""
        one = apply(copy.deepcopy(held), tick(held.mbl), NOW + timedelta(hours=7))
        two = apply(copy.deepcopy(held), tick(held.mbl), NOW + timedelta(hours=9))
        assert [a.alert_id for a in escalations(one.alerts)] == [a.alert_id for a in escalations(two.alerts)]

    def test_next_margin_escalates_again_with_a_new_id(self, held):
        """Crossing the 6 h margin raises a new, critical escalation for the still unacknowledged RFI."""
        first = apply(held, tick(held.mbl), NOW + timedelta(hours=7))
        later = apply(first.state, tick(held.mbl), RFI_DEADLINE - timedelta(hours=5))
        rfi_escalations = [a for a in escalations(later.alerts) if a.referral_reference == "REF-RFI-1"]
        assert len(rfi_escalations) == 1
        assert rfi_escalations[0].alert_id not in {a.alert_id for a in first.alerts}
        past = apply(later.state, tick(held.mbl), RFI_DEADLINE + timedelta(minutes=1))
        assert [a.urgency for a in escalations(past.alerts) if a.referral_reference == "REF-RFI-1"] == [
            Urgency.CRITICAL
        ]

    def test_acknowledged_alert_stops_escalating(self, held):
        """Once its party acknowledges the RFI, ticks no longer escalate it."""
        rfi = next(a for a in held.open_alerts.values() if a.kind is NaggingKind.RFI)
        state = apply(held, ack(held.mbl, rfi.alert_id), NOW).state
        result = apply(state, tick(held.mbl), RFI_DEADLINE)
        assert [a for a in escalations(result.alerts) if a.referral_reference == "REF-RFI-1"] == []

    def test_dnl_escalates_each_unacknowledging_party_by_the_lodging_deadline(self, held):
        """A DNL has no answer deadline: it escalates by the ENS lodging deadline, only to parties not acknowledging."""
        dnl = [a for a in held.open_alerts.values() if a.kind is NaggingKind.DO_NOT_LOAD]
        state = apply(held, ack(held.mbl, dnl[0].alert_id), NOW).state
        result = apply(state, tick(held.mbl), LODGING_DEADLINE - timedelta(hours=47))
        dnl_escalations = [a for a in escalations(result.alerts) if a.hbl == DNL_HBL]
        assert {a.party for a in dnl_escalations} == {a.party for a in dnl[1:]}
        assert all(a.urgency is Urgency.CRITICAL and a.action is Action.STOP_LOADING for a in dnl_escalations)
        assert all(a.deadline == LODGING_DEADLINE for a in dnl_escalations)

    def test_ack_of_an_escalation_acknowledges_the_original(self, held):
        """Acknowledging the escalation alert closes the nagging of the alert it escalated."""
        rfi = next(a for a in held.open_alerts.values() if a.kind is NaggingKind.RFI)
        first = apply(held, tick(held.mbl), NOW + timedelta(hours=7))
        escalation_id = first.state.open_alerts[rfi.alert_id].escalations[0]
        state = apply(first.state, ack(held.mbl, escalation_id), NOW).state
        assert state.open_alerts[rfi.alert_id].acknowledged
        assert state.acknowledgement(rfi.alert_id) == ("ops-anna", format_datetime(NOW))

    def test_assessment_complete_ends_the_nagging(self, held, seed):
        """When customs completes the assessment the referral closes and the RFI no longer escalates."""
        done = apply(held, notification_event(seed, "IE3N03", RFI_HBL), NOW).state
        assert [a for a in done.nagging() if a.hbl == RFI_HBL] == []
        result = apply(done, tick(held.mbl), RFI_DEADLINE)
        assert [a for a in escalations(result.alerts) if a.hbl == RFI_HBL] == []

    def test_nagging_alone_makes_the_watchdog_tick(self, held):
        """With every filing registered, an unacknowledged RFI near its deadline still calls for a tick."""
        state = copy.deepcopy(held)
        for status in state.filings.values():
            status.state = status.state.REGISTERED
        raw = json.dumps(state.to_json()).encode()
        assert ticks_due([(state.mbl, raw)], NOW + timedelta(hours=7), DEFAULT_MARGINS[0]) == [state.mbl]
        for alert in state.open_alerts.values():
            alert.acknowledged_by = "ops"
        raw = json.dumps(state.to_json()).encode()
        assert ticks_due([(state.mbl, raw)], NOW + timedelta(hours=7), DEFAULT_MARGINS[0]) == []

    @settings(max_examples=150, deadline=None)
    @given(
        offsets=st.lists(st.integers(min_value=0, max_value=40 * 60), min_size=1, max_size=12),
        ack_after=st.one_of(st.none(), st.integers(min_value=0, max_value=11)),
    )
    def test_at_most_one_escalation_per_margin_and_none_after_ack(self, held_state, offsets, ack_after):
        """Any sequence of ticks raises each escalation id once, at most one per margin, and nothing after the ack."""
        state = copy.deepcopy(held_state)
        rfi = next(a for a in state.open_alerts.values() if a.kind is NaggingKind.RFI)
        seen: list[str] = []
        acked = False
        for i, minutes in enumerate(sorted(offsets)):
            if ack_after is not None and i == ack_after:
                state = apply(state, ack(state.mbl, rfi.alert_id), NOW).state
                acked = True
            result = apply(state, tick(state.mbl), NOW + timedelta(minutes=minutes))
            state = result.state
            mine = [a.alert_id for a in escalations(result.alerts) if a.referral_reference == "REF-RFI-1"]
            assert not (acked and mine)
            seen.extend(mine)
        assert len(seen) == len(set(seen)) <= len(DEFAULT_MARGINS)


def ticks_due(states: list[tuple[str, bytes]], now: datetime, widest_margin: timedelta) -> list[str]:
    """What the watchdog ticks at ``now`` after a worker (re)built its schedule from the table."""
    schedule = TickSchedule(widest_margin)
    schedule.rebuild(states)
    return schedule.due_now(now)


@pytest.fixture(scope="module")
def held_state(seed) -> EnsState:
    """The ``held`` state, once per module, for the property test (hypothesis reuses it across examples)."""
    state = apply(None, planned(seed), NOW).state
    state = apply(state, notification_event(seed, "IE3Q01", DNL_HBL), NOW).state
    rfi = notification_event(seed, "IE3Q02", RFI_HBL, referral_reference="REF-RFI-1", deadline=RFI_DEADLINE)
    return apply(state, rfi, NOW).state


class TestAckOnTheWire:
    def test_ack_travels_as_a_tick_and_becomes_an_ack(self):
        """The EnsEvent of an ack is a tick (no new enum symbol) that the tracker reads as the lifecycle's ack."""
        record = ack_record("MBL1", "a1", "ops", NOW)
        assert record["type"] == "tick"
        event = lifecycle_event(record["type"], record["mbl"], json.loads(record["payload"]))
        assert event == {"type": "ack", "mbl": "MBL1", "alert_id": "a1", "by": "ops", "at": format_datetime(NOW)}

    def test_watchdog_tick_stays_a_tick(self):
        """A plain tick is not mistaken for an ack."""
        assert lifecycle_event("tick", "MBL1", {}) == {"type": "tick", "mbl": "MBL1"}


class TestTrackerAcks:
    @pytest.fixture(autouse=True)
    def fresh_logger(self, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
        """Default structlog and an uncached logger, so ``capture_logs`` sees info lines whatever ran before."""
        saved = structlog.get_config()
        structlog.reset_defaults()
        monkeypatch.setattr(
            "streams.pipeline.stages.lifecycle.log", structlog.get_logger("streams.pipeline.stages.lifecycle")
        )
        yield
        structlog.configure(**saved)

    @pytest.fixture
    def tracker(self) -> LifecycleTracker:
        return LifecycleTracker(SchemaCatalogue.load(), Catalogue.for_prefix("u."), lambda: NOW, {})

    def incoming(self, tracker: LifecycleTracker, record: dict, offset: int = 0) -> Incoming:
        value = tracker.schemas.encode("EnsEvent", record)
        return Incoming(tracker.catalogue.ens_events.name, 0, offset, record["mbl"].encode(), value)

    def test_tracker_applies_an_ack_to_the_table(self, tracker, held):
        """An ack record on ens-events marks the alert acknowledged in the ENS state table and publishes the
        acknowledgement on the alerts topic (the delivery stage puts it on the party's queue)."""
        tracker.states[held.mbl] = json.dumps(held.to_json()).encode()
        alert_id = next(iter(held.open_alerts))
        emits = tracker(self.incoming(tracker, ack_record(held.mbl, alert_id, "ops-ben", NOW)))
        party = held.open_alerts[alert_id].party
        catalogue = tracker.catalogue
        assert [e.topic for e in emits] == [catalogue.alerts.name]
        assert dict(emits[0].headers)["ics2-party"] == party.encode()
        assert all(dict(e.headers)["ics2-alert-id"] == alert_id.encode() for e in emits)
        state = EnsState.from_json(json.loads(tracker.states[held.mbl]))
        assert state.acknowledgement(alert_id) == ("ops-ben", format_datetime(NOW))

    def test_tracker_log_lines_name_the_mbl_and_filing(self, tracker, seed):
        """An ack's log line carries the MBL it was applied to (structlog contextvars)."""
        tracker.states[seed.mbl] = json.dumps(apply(None, planned(seed), NOW).state.to_json()).encode()
        with capture_logs(processors=[merge_contextvars]) as logs:
            tracker(self.incoming(tracker, ack_record(seed.mbl, "any-alert", "ops", NOW)))
        acked = [entry for entry in logs if entry["event"] == "alert_acknowledged"]
        assert acked and acked[0]["mbl"] == seed.mbl and acked[0]["by"] == "ops"

    def test_ack_for_an_unknown_ens_creates_no_state(self, tracker):
        """An ack naming an MBL the worker has no ENS for leaves the table untouched."""
        assert tracker(self.incoming(tracker, ack_record("NOPE", "a1", "ops", NOW))) == []
        assert tracker.states == {}

    def test_notification_log_lines_carry_the_filing_ids(self, tracker, seed):
        """A notification event's log lines carry the HBL and LRN of the filing it answers."""
        from streams.contracts.records import ens_event, notification_record

        tracker.states[seed.mbl] = json.dumps(apply(None, planned(seed), NOW).state.to_json()).encode()
        event = notification_event(seed, "IE3Q01", DNL_HBL)
        payload = {
            "notification_id": "n-1",
            "notification": notification_record(event.notification, b"<x/>"),
            "record": event.record.to_json(),
        }
        incoming = self.incoming(tracker, ens_event(seed.mbl, "notification", NOW, payload, "s"))
        tracker(incoming)
        with capture_logs(processors=[merge_contextvars]) as logs:
            tracker(incoming)
        duplicate = [entry for entry in logs if entry["event"] == "duplicate_suppressed"]
        assert duplicate and (duplicate[0]["mbl"], duplicate[0]["hbl"], duplicate[0]["lrn"]) == (
            seed.mbl,
            DNL_HBL,
            "LRN-X",
        )

    def test_alerts_of_a_notification_name_it(self, tracker, seed):
        """Alerts caused by a notification carry its id in a header, for the alert latency metric."""
        from streams.contracts.records import ens_event, notification_record

        tracker.states[seed.mbl] = json.dumps(apply(None, planned(seed), NOW).state.to_json()).encode()
        event = notification_event(seed, "IE3Q01", DNL_HBL)
        payload = {
            "notification_id": "n-123",
            "notification": notification_record(event.notification, b"<xml/>"),
            "record": event.record.to_json(),
        }
        emits = tracker(self.incoming(tracker, ens_event(seed.mbl, "notification", NOW, payload, "src")))
        assert emits
        assert all(dict(e.headers)["ics2-notification-id"] == b"n-123" for e in emits)


class TestAnswerSent:
    def answered(self, mbl: str, reference: str = "REF-RFI-1") -> LifecycleEvent:
        return AnswerSent(mbl, reference, filer="ML-TYO", message_type="IE3R02")

    def test_answered_rfi_stops_escalating_and_shows_in_history(self, held):
        """The filer answered the RFI: the referral stays open for customs, its alert no longer escalates."""
        state = apply(held, self.answered(held.mbl), NOW).state
        assert "REF-RFI-1" in {r for h in state.houses.values() for r in h.open_referrals}
        assert any("IE3R02 answered referral REF-RFI-1" in text for _, text in state.history)
        result = apply(state, tick(held.mbl), RFI_DEADLINE)
        assert [a for a in escalations(result.alerts) if a.referral_reference == "REF-RFI-1"] == []

    def test_answer_to_another_referral_leaves_this_one_nagging(self, held):
        """Only the referral answered stops escalating."""
        state = apply(held, self.answered(held.mbl, "REF-OTHER"), NOW).state
        result = apply(state, tick(held.mbl), NOW + timedelta(hours=7))
        assert [a for a in escalations(result.alerts) if a.referral_reference == "REF-RFI-1"]

    def test_answer_travels_as_a_tick(self):
        """The answer's EnsEvent is a tick whose payload the tracker reads as ``answer_sent``."""
        event = lifecycle_event("tick", "MBL1", {"answer_sent": {"referral_reference": "R1", "filer": "F"}})
        assert event == {"type": "answer_sent", "mbl": "MBL1", "referral_reference": "R1", "filer": "F"}
