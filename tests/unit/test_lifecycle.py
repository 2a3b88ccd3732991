"""The ENS lifecycle state machine and the routing of customs answers to parties."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from streams.domain.events import LifecycleEvent, Tick, event_from_json
from streams.domain.ledger import correlation_keys, filing_record
from streams.domain.lifecycle import EnsState, FilingState, HouseState, apply
from streams.domain.model import Consolidation
from streams.domain.notifications import Action, Notification, NotificationError, Urgency
from streams.domain.planning import plan
from streams.domain.routing import recipients

NOW = datetime(2027, 6, 10, 8, 0, tzinfo=UTC)


def planned_event(consolidation: Consolidation) -> LifecycleEvent:
    filing_plan = plan(consolidation)
    event = {
        "type": "planned",
        "mbl": consolidation.mbl,
        "planning_party": consolidation.planning_party,
        "version": consolidation.version,
        "deadline": "2027-06-14T12:00:00Z",
        "filings": [
            {"ours": f.ours, "record": filing_record(consolidation, f, f"LRN{i}" if f.ours else None).to_json()}
            for i, f in enumerate(filing_plan.filings)
        ],
    }
    return event_from_json(event)


def record_for(consolidation: Consolidation, filing: str, hbl: str):
    planned = next(f for f in plan(consolidation).filings if f.filing.value == filing and f.hbl == hbl)
    return filing_record(consolidation, planned, "LRN-X")


def notify(state, consolidation, message_type: str, hbl: str, filing: str = "F14", **fields) -> object:
    record = record_for(consolidation, filing, hbl)
    notification = Notification(
        message_type=message_type, notification_date=NOW, mbl=consolidation.mbl, hbl=hbl, **fields
    )
    event = {
        "type": "notification",
        "mbl": consolidation.mbl,
        "notification_id": fields.get("mrn", "") + message_type + hbl,
        "record": record.to_json(),
    }
    return apply(state, event_from_json(event, notification), NOW)


class TestLifecycle:
    def test_plan_creates_one_house_per_lowest_hbl(self, seed):
        """A plan event tracks every lowest HBL and marks our filings planned, others' expected."""
        state = apply(None, planned_event(seed), NOW).state
        assert set(state.houses) == {h.hbl_number for h in seed.lowest_hbls()}
        states = {(f.filing, f.hbl): f.state for f in state.filings.values()}
        assert states[("F15", "SKC26TYO0001")] is FilingState.PLANNED
        assert states[("F16", "AOB26OSA1001")] is FilingState.EXPECTED
        assert state.state == HouseState.PLANNED.value

    def test_do_not_load_holds_the_house_and_the_mbl(self, seed):
        """A DNL makes the HBL held and, being the worst state, the MBL too."""
        state = apply(None, planned_event(seed), NOW).state
        result = notify(state, seed, "IE3Q01", "AOB26OSA1001", mrn="27NL00000000000017")
        assert result.state.house_state("AOB26OSA1001") is HouseState.HELD_DNL
        assert result.state.state == HouseState.HELD_DNL.value
        parties = {a.party for a in result.alerts}
        assert parties == {"ML-TYO", "CARRIER-A", "COLOADER-A"}
        assert all(a.urgency is Urgency.CRITICAL for a in result.alerts)

    def test_duplicate_notification_yields_no_second_alert(self, seed):
        """The same notification id twice: alerts once, then marked duplicate."""
        state = apply(None, planned_event(seed), NOW).state
        first = notify(state, seed, "IE3Q02", "CHY26YOK0501", referral_reference="REF1", deadline=NOW)
        second = notify(first.state, seed, "IE3Q02", "CHY26YOK0501", referral_reference="REF1", deadline=NOW)
        assert first.alerts and not second.alerts and second.duplicate

    def test_assessment_complete_clears_referrals_and_holds(self, seed):
        """An IE3N03 after an RFI closes the referral and marks the house assessed."""
        state = apply(None, planned_event(seed), NOW).state
        state = notify(state, seed, "IE3Q02", "CHY26YOK0501", referral_reference="REF1", deadline=NOW).state
        assert state.house_state("CHY26YOK0501") is HouseState.REFERRAL_OPEN
        state = notify(state, seed, "IE3N03", "CHY26YOK0501", mrn="27NL00000000000025").state
        assert state.house_state("CHY26YOK0501") is HouseState.ASSESSED

    def test_rejection_routes_to_filer_and_issuer_of_the_lowest_hbl(self, seed):
        """An IE3N99 on COLOADER-A's F14 for COLOADER-D's HBL tells both, naming the chain."""
        state = apply(None, planned_event(seed), NOW).state
        errors = (NotificationError("13", "/IE3F14/consignmentMasterLevel", "missing"),)
        result = notify(state, seed, "IE3N99", "DAI26NGO0077", lrn="LRN-X", errors=errors)
        assert {a.party for a in result.alerts} == {"COLOADER-A", "COLOADER-D"}
        alert = result.alerts[0]
        assert alert.action is Action.FIX_AND_REFILE
        assert alert.party_at_fault == "COLOADER-D"
        assert [h for h, _ in alert.hbl_chain] == ["SKC26TYO0002", "AOB26OSA1002", "DAI26NGO0077"]
        assert "code 13" in alert.message
        assert result.state.house_state("DAI26NGO0077") is HouseState.REJECTED

    def test_state_survives_json_round_trip(self, seed):
        """What the table stores reads back to the same state."""
        state = apply(None, planned_event(seed), NOW).state
        state = notify(state, seed, "IE3Q01", "AOB26OSA1001", mrn="27NL00000000000017").state
        again = EnsState.from_json(json.loads(json.dumps(state.to_json())))
        assert again.to_json() == state.to_json()


class TestDeadlineWatchdog:
    def test_escalates_once_per_margin(self, seed):
        """Crossing the 24 h margin alerts once; the next tick at the same level is silent."""
        state = apply(None, planned_event(seed), NOW).state
        deadline = datetime(2027, 6, 14, 12, 0, tzinfo=UTC)
        first = apply(state, Tick(seed.mbl), deadline - timedelta(hours=20))
        assert first.alerts
        again = apply(first.state, Tick(seed.mbl), deadline - timedelta(hours=19))
        assert not again.alerts
        late = apply(again.state, Tick(seed.mbl), deadline + timedelta(minutes=5))
        deadline_alerts = [a for a in late.alerts if a.message_type == "DEADLINE"]
        assert deadline_alerts and all(a.urgency is Urgency.CRITICAL for a in deadline_alerts)

    def test_expected_filings_alert_their_filer_and_the_planning_party(self, seed):
        """A co-loader's missing F16 goes to the co-loader and to the master loader that planned around it."""
        state = apply(None, planned_event(seed), NOW).state
        deadline = datetime(2027, 6, 14, 12, 0, tzinfo=UTC)
        alerts = apply(state, Tick(seed.mbl), deadline - timedelta(hours=1)).alerts
        f16 = [a for a in alerts if a.hbl == "CHY26YOK0501" and a.title.startswith("F16")]
        assert {a.party for a in f16} == {"COLOADER-C", "ML-TYO"}

    def test_nothing_missing_means_no_alert(self, seed):
        """When every filing is registered the watchdog stays silent."""
        state = apply(None, planned_event(seed), NOW).state
        for f in state.filings.values():
            f.state = FilingState.REGISTERED
        deadline = datetime(2027, 6, 14, 12, 0, tzinfo=UTC)
        assert not apply(state, Tick(seed.mbl), deadline).alerts


class TestCorrelationKeys:
    def test_lrn_first_then_mrn(self):
        """A registration is found by its LRN before its MRN."""
        n = Notification("IE3R01", NOW, lrn="L1", mrn="27NL00000000000017")
        assert correlation_keys(n) == ("lrn:L1", "mrn:27NL00000000000017")

    def test_pending_notice_goes_to_the_missing_party(self, seed):
        """An IE3N11 naming COLOADER-C's EORI is routed to COLOADER-C."""
        record = record_for(seed, "F14", "CHY26YOK0501")
        n = Notification("IE3N11", NOW, mbl=seed.mbl, addressee=seed.parties["COLOADER-C"].eori)
        assert recipients(n, record) == ("COLOADER-C",)
