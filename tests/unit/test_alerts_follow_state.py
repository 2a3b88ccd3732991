"""Alerts follow the ENS state: closed (resolved or superseded) when their subject changes, registered filings
never chased, escalation only at a margin reached after the alert, RFI deadlines assumed when customs gives none."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from streams.domain.dates import format_datetime
from streams.domain.deadlines import DEFAULT_RESPONSE_TIMES, answer_deadline
from streams.domain.events import Ack, AnswerSent, LifecycleEvent, Tick, event_from_json
from streams.domain.ledger import filing_record
from streams.domain.lifecycle import EnsState, FilingState, HouseState, apply, filing_key
from streams.domain.model import Consolidation
from streams.domain.notifications import Notification, NotificationError, NotificationKind
from streams.domain.planning import plan
from streams.domain.routing import alert_id
from streams.settings import Settings, SettingsError

NOW = datetime(2027, 6, 10, 8, 0, tzinfo=UTC)
DEADLINE = datetime(2027, 6, 14, 12, 0, tzinfo=UTC)
OWN = "SKC26TYO0001"
MRN = "27NL00000000000017"


def planned(consolidation: Consolidation, drop: str | None = None, version: int = 1) -> LifecycleEvent:
    event = {
        "type": "planned",
        "mbl": consolidation.mbl,
        "planning_party": consolidation.planning_party,
        "version": version,
        "deadline": format_datetime(DEADLINE),
        "filings": [
            {"ours": f.ours, "record": filing_record(consolidation, f, f"LRN{i}" if f.ours else None).to_json()}
            for i, f in enumerate(plan(consolidation).filings)
            if f.hbl != drop
        ],
    }
    return event_from_json(event)


def record(consolidation: Consolidation, hbl: str, filing: str | None = None, lrn: str = "LRN-X") -> dict:
    chosen = next(f for f in plan(consolidation).filings if f.hbl == hbl and f.ours and filing in (None, f.filing))
    return filing_record(consolidation, chosen, lrn).to_json()


def notified(
    consolidation: Consolidation, message_type: str, about: str, name: str | None = None, **fields
) -> LifecycleEvent:
    notification = Notification(message_type=message_type, notification_date=NOW, mbl=consolidation.mbl, **fields)
    event = {
        "type": "notification",
        "mbl": consolidation.mbl,
        "notification_id": name or f"{message_type}|{about}|{fields}",
        "record": record(consolidation, about),
    }
    return event_from_json(event, notification)


def progress(consolidation: Consolidation, kind: str, hbl: str, lrn: str, alerts: list | None = None) -> LifecycleEvent:
    event = {"type": kind, "mbl": consolidation.mbl, "record": record(consolidation, hbl, lrn=lrn)}
    if alerts is not None:
        event["alerts"] = alerts
    return event_from_json(event)


def tick(consolidation: Consolidation) -> LifecycleEvent:
    return Tick(consolidation.mbl)


def closing(alerts, kind: str = "RESOLVED") -> list:
    return [a for a in alerts if a.message_type == kind]


def own_f15_key(consolidation: Consolidation) -> str:
    return filing_key("F15", OWN, consolidation.planning_party)


class TestWatchdogNeverChasesRegistered:
    def test_refused_resend_leaves_the_registration_standing(self, seed):
        """Registered, then customs refuses a re-send of the same filing (IE3N01 duplicate): still registered,
        and the watchdog at 6 h says nothing about it."""
        state = apply(None, planned(seed), NOW).state
        state = apply(state, notified(seed, "IE3R01", OWN, lrn="LRN-X", mrn=MRN), NOW).state
        duplicate = NotificationError("26", "/IE3F15/LRN", "house document is already filed")
        refused = apply(state, notified(seed, "IE3N01", OWN, lrn="LRN-Y", errors=(duplicate,)), NOW)
        assert refused.state.filings[own_f15_key(seed)].state is FilingState.REGISTERED
        assert refused.alerts, "the refusal itself is still told"
        late = apply(refused.state, tick(seed), DEADLINE - timedelta(hours=5))
        chased = [a for a in late.alerts if a.message_type == "DEADLINE" and a.hbl == OWN and a.title.startswith("F15")]
        assert chased == []
        assert [a for a in late.alerts if a.message_type == "DEADLINE"], "other filings are still missing"

    def test_missing_alert_resolved_once_registered(self, seed):
        """The watchdog's alert about the F15 is resolved, with a deterministic id, when customs registers it."""
        state = apply(None, planned(seed), NOW).state
        first = apply(state, tick(seed), DEADLINE - timedelta(hours=20))
        (missing,) = [a for a in first.alerts if a.hbl == OWN and a.message_type == "DEADLINE"]
        result = apply(first.state, notified(seed, "IE3R01", OWN, lrn="LRN-X", mrn=MRN), NOW)
        (resolved,) = [a for a in closing(result.alerts) if a.closes_alert_id == missing.alert_id]
        assert resolved.party == missing.party == "ML-TYO"
        assert resolved.alert_id == alert_id(f"resolved|{missing.alert_id}", "ML-TYO")
        assert "registered" in resolved.message and MRN in resolved.message
        assert resolved.title == f"Resolved: {missing.title}"

    def test_next_margin_supersedes_the_previous_alert(self, seed):
        """At the 6 h margin the new alert about the F15 supersedes the 24 h one, naming it."""
        state = apply(None, planned(seed), NOW).state
        first = apply(state, tick(seed), DEADLINE - timedelta(hours=20))
        (old,) = [a for a in first.alerts if a.hbl == OWN and a.message_type == "DEADLINE"]
        later = apply(first.state, tick(seed), DEADLINE - timedelta(hours=5))
        (new,) = [a for a in later.alerts if a.hbl == OWN and a.message_type == "DEADLINE"]
        (superseded,) = [a for a in closing(later.alerts, "SUPERSEDED") if a.closes_alert_id == old.alert_id]
        assert new.alert_id in superseded.message and superseded.party == old.party

    def test_filing_left_out_of_the_plan_is_not_chased(self, seed):
        """A newer plan without the HBL: its filings leave the plans, and their alerts are resolved."""
        state = apply(None, planned(seed), NOW).state
        first = apply(state, tick(seed), DEADLINE - timedelta(hours=20))
        (old,) = [a for a in first.alerts if a.hbl == OWN and a.message_type == "DEADLINE"]
        replanned = apply(first.state, planned(seed, drop=OWN, version=2), NOW)
        assert any(a.closes_alert_id == old.alert_id for a in closing(replanned.alerts))
        late = apply(replanned.state, tick(seed), DEADLINE - timedelta(hours=5))
        assert not [a for a in late.alerts if a.hbl == OWN and a.message_type == "DEADLINE"]


class TestBlockedAndRejected:
    def test_blocked_alert_resolved_when_the_fixed_version_is_filed(self, seed):
        """The booking's "Filing blocked" alert is resolved by the filing of the fixed version."""
        blocked = [["b1" * 12, "ML-TYO", f"Filing blocked for {OWN}: fix the booking data"]]
        state = apply(None, planned(seed), NOW).state
        state = apply(state, progress(seed, "filing_blocked", OWN, "LRN-1", blocked), NOW).state
        assert state.house_state(OWN) is HouseState.BLOCKED
        result = apply(state, progress(seed, "filing_sent", OWN, "LRN-2"), NOW)
        (resolved,) = closing(result.alerts)
        assert (resolved.closes_alert_id, resolved.party) == ("b1" * 12, "ML-TYO")
        assert "fixed version was filed as LRN-2" in resolved.message

    def test_blocked_again_supersedes(self, seed):
        """Still blocked in a newer version: the new version's alert supersedes the old one."""
        state = apply(None, planned(seed), NOW).state
        old = [["a" * 24, "ML-TYO", "Filing blocked for X: fix the booking data"]]
        new = [["c" * 24, "ML-TYO", "Filing blocked for X: fix the booking data"]]
        state = apply(state, progress(seed, "filing_blocked", OWN, "LRN-1", old), NOW).state
        result = apply(state, progress(seed, "filing_blocked", OWN, "LRN-2", new), NOW)
        (superseded,) = closing(result.alerts, "SUPERSEDED")
        assert superseded.closes_alert_id == "a" * 24 and "c" * 24 in superseded.message

    def test_rejection_resolved_when_registered(self, seed):
        """ "F15 rejected: fix and re-file" is resolved when the re-filed F15 is registered."""
        state = apply(None, planned(seed), NOW).state
        error = NotificationError("12", "/IE3F15/consignmentMasterLevel/grossMass", "incorrect")
        rejected = apply(state, notified(seed, "IE3N99", OWN, lrn="LRN-X", errors=(error,)), NOW)
        assert rejected.state.filings[own_f15_key(seed)].state is FilingState.REJECTED
        registered = apply(rejected.state, notified(seed, "IE3R01", OWN, lrn="LRN-Y", mrn=MRN), NOW)
        assert {a.closes_alert_id for a in closing(registered.alerts)} == {a.alert_id for a in rejected.alerts}


class TestReferrals:
    def test_rfi_without_deadline_assumes_the_response_time(self, seed):
        """No deadline from customs: the configured response time from the issue date, said so in the alert."""
        state = apply(None, planned(seed), NOW).state
        result = apply(
            state,
            notified(seed, "IE3Q02", OWN, mrn=MRN, referral_reference="R1"),
            NOW,
            response_times={"rfi": timedelta(hours=36), "rfs": timedelta(hours=24)},
        )
        assert result.alerts and all(a.deadline == NOW + timedelta(hours=36) for a in result.alerts)
        assert all("no deadline given: 36 h assumed" in a.message for a in result.alerts)
        assert result.state.houses[OWN].open_referrals == {"R1": format_datetime(NOW + timedelta(hours=36))}

    def test_escalation_waits_for_the_next_margin(self, seed):
        """An RFI due in 24 h arrives inside two margins: no escalation at once, one at the 6 h margin."""
        state = apply(None, planned(seed), NOW).state
        due = NOW + timedelta(hours=24)
        state = apply(state, notified(seed, "IE3Q02", OWN, mrn=MRN, referral_reference="R1", deadline=due), NOW).state
        assert not [
            a for a in apply(state, tick(seed), NOW + timedelta(seconds=5)).alerts if a.message_type == "ESCALATION"
        ]
        later = apply(state, tick(seed), due - timedelta(hours=5))
        assert [a.referral_reference for a in later.alerts if a.message_type == "ESCALATION"] == ["R1"]

    def test_assessment_complete_resolves_dnl_and_its_escalations(self, seed):
        """Customs lifts the DNL: its alerts and their escalations are resolved, once."""
        state = apply(None, planned(seed), NOW).state
        dnl = apply(state, notified(seed, "IE3Q01", OWN, mrn=MRN, hbls=(OWN,), hbl=OWN), NOW)
        escalated = apply(dnl.state, tick(seed), DEADLINE - timedelta(hours=5))
        escalations = [a.alert_id for a in escalated.alerts if a.message_type == "ESCALATION"]
        assert escalations
        cleared = apply(escalated.state, notified(seed, "IE3N03", OWN, mrn=MRN, hbls=(OWN,), hbl=OWN), NOW)
        closed = {a.closes_alert_id for a in closing(cleared.alerts)}
        assert closed == {a.alert_id for a in dnl.alerts} | set(escalations)
        again = apply(cleared.state, tick(seed), DEADLINE - timedelta(hours=1))
        assert not closing(again.alerts)

    def test_refused_answer_reopens_the_referral(self, seed):
        """The answer to R1 was sent (alerts stop), then customs refused it: the alerts are open again and the
        filing is not rejected."""
        state = apply(None, planned(seed), NOW).state
        state = apply(state, notified(seed, "IE3R01", OWN, lrn="LRN-X", mrn=MRN), NOW).state
        state = apply(state, notified(seed, "IE3Q02", OWN, mrn=MRN, referral_reference="R1"), NOW).state
        state = apply(state, AnswerSent(seed.mbl, "R1"), NOW).state
        assert all(a.acknowledged for a in state.open_alerts.values())
        error = NotificationError("12", "/IE3R02/additionalInformationResponse/referralRequestReference", "bad")
        refused = apply(
            state,
            notified(seed, "IE3N99", OWN, referral_reference="R1", errors=(error,), rejected_message="IE3R02"),
            NOW,
        )
        assert not any(a.acknowledged for a in refused.state.open_alerts.values())
        assert refused.state.filings[own_f15_key(seed)].state is FilingState.REGISTERED
        assert all(a.title.startswith("IE3R02 for") for a in refused.alerts)


class TestContainerDnl:
    def test_dnl_of_a_container_holds_and_routes_each_hbl(self, seed):
        """A DNL fanned out to the HBLs of a container holds each of them and tells each HBL's issuer."""
        state = apply(None, planned(seed), NOW).state
        hbls = ("SKC26TYO0003", "CHY26YOK0501", "DAI26NGO0077")
        result = apply(
            state,
            notified(seed, "IE3Q01", OWN, mrn=MRN, hbl=hbls[0], hbls=hbls, containers=("TCNU1234565",)),
            NOW,
        )
        assert all(result.state.house_state(h) is HouseState.HELD_DNL for h in hbls)
        at_fault = {(a.hbl, a.party_at_fault) for a in result.alerts}
        assert at_fault == {("SKC26TYO0003", "ML-TYO"), ("CHY26YOK0501", "COLOADER-C"), ("DAI26NGO0077", "COLOADER-D")}
        assert {a.party for a in result.alerts if a.hbl == "DAI26NGO0077"} >= {"COLOADER-D", "CARRIER-A"}
        assert len({a.alert_id for a in result.alerts}) == len(result.alerts)
        assert all("TCNU1234565" in a.message for a in result.alerts)


class TestAnswerDeadline:
    def test_given_deadline_is_kept(self):
        """A deadline customs gave is used as is, with no note."""
        given = Notification("IE3Q02", NOW, deadline=NOW + timedelta(hours=5))
        deadline = answer_deadline(given, NOW)
        assert (deadline.latest, deadline.assumed, deadline.note) == (NOW + timedelta(hours=5), False, "")

    @pytest.mark.parametrize(("code", "hours"), [("IE3Q02", 48), ("IE3N04", 48), ("IE3Q03", 24), ("IE3N05", 24)])
    def test_assumed_per_request_type(self, code, hours):
        """RFI and its carrier notice: 48 h; RFS and its notice: 24 h, from the issue date, said so."""
        deadline = answer_deadline(Notification(code, NOW), NOW + timedelta(hours=1))
        assert (deadline.latest, deadline.assumed) == (NOW + timedelta(hours=hours), True)
        assert deadline.note == f"no deadline given: {hours} h assumed"

    def test_nothing_to_answer(self):
        """A DNL or a registration asks for no answer: no answer deadline."""
        assert answer_deadline(Notification("IE3Q01", NOW), NOW) is None
        assert Notification("IE3Q02", NOW).kind is NotificationKind.RFI and DEFAULT_RESPONSE_TIMES["rfi"]

    def test_settings_configure_response_times(self):
        """``ICS2_RFI_RESPONSE_TIME`` / ``ICS2_RFS_RESPONSE_TIME`` set them; nonsense is refused at start."""
        settings = Settings.from_env({"ICS2_RFI_RESPONSE_TIME": "90m", "ICS2_RFS_RESPONSE_TIME": "12h"})
        assert settings.response_times == {"rfi": timedelta(minutes=90), "rfs": timedelta(hours=12)}
        with pytest.raises(SettingsError, match="RFI response time"):
            Settings.from_env({"ICS2_RFI_RESPONSE_TIME": "soon"})


def test_state_with_standing_alerts_round_trips(seed):
    """Standing alerts and the plan bookkeeping survive the table's JSON form."""
    state = apply(None, planned(seed), NOW).state
    state = apply(state, tick(seed), DEADLINE - timedelta(hours=20)).state
    state = apply(state, planned(seed, drop=OWN, version=2), NOW).state
    assert state.standing
    again = EnsState.from_json(json.loads(json.dumps(state.to_json())))
    assert again.to_json() == state.to_json()


def test_refused_answer_without_its_reference_reopens_nothing(seed):
    """An IE3N01 refusing an answer names no referral: no alert (a DNL's has no reference either) is reopened."""
    state = apply(None, planned(seed), NOW).state
    state = apply(state, notified(seed, "IE3Q01", OWN, mrn=MRN, hbls=(OWN,), hbl=OWN), NOW).state
    dnl = next(iter(state.open_alerts))
    state = apply(state, Ack(seed.mbl, dnl, "ops"), NOW).state
    error = NotificationError("92", "/IE3R02/additionalInformationResponse/referralRequestReference", "closed")
    refused = apply(state, notified(seed, "IE3N01", OWN, mrn=MRN, errors=(error,), rejected_message="IE3R02"), NOW)
    assert refused.state.open_alerts[dnl].acknowledged
    assert refused.state.filings[own_f15_key(seed)].state is not FilingState.REJECTED


def test_assessment_complete_means_the_others_filings_are_registered(seed):
    """COLOADER-C's F16 registration goes to COLOADER-C, not to us; customs assessing the HBL shows the ENS was
    complete, so neither the F16 nor the carrier's F12 is chased any more, and their alerts are resolved."""
    hbl = "CHY26YOK0501"
    state = apply(None, planned(seed), NOW).state
    chased = apply(state, tick(seed), DEADLINE - timedelta(hours=20))
    f16 = [a for a in chased.alerts if a.hbl == hbl and a.title.startswith("F16")]
    assert {a.party for a in f16} == {"COLOADER-C", "ML-TYO"}
    assessed = apply(chased.state, notified(seed, "IE3N03", hbl, mrn=MRN, hbls=(hbl,), hbl=hbl), NOW)
    assert {a.alert_id for a in f16} <= {a.closes_alert_id for a in closing(assessed.alerts)}
    missing = {(f.filing, f.hbl) for f in assessed.state.missing_filings()}
    assert ("F16", hbl) not in missing and ("F12", None) not in missing
    assert ("F16", "AOB26OSA1001") in missing


def test_dnl_about_no_known_hbl_is_not_resolved_at_once(seed):
    """A DNL naming no HBL (at master level) has no house whose hold could lift: it is not "resolved" on arrival."""
    state = apply(None, planned(seed), NOW).state
    event = notified(seed, "IE3Q01", OWN, mrn=MRN)
    event = replace(event, record=replace(event.record, hbl=None, hbl_chain=()))
    result = apply(state, event, NOW)
    assert result.alerts and not closing(result.alerts)
