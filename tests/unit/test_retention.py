"""Which closed ENS leave the tables, when, and with which ledger keys (``streams.domain.retention``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from streams.domain.dates import format_datetime
from streams.domain.lifecycle import (
    EnsState,
    FilingState,
    FilingStatus,
    HouseState,
    HouseStatus,
    NaggingKind,
    OpenAlert,
    StandingAlert,
    StandingKind,
    apply,
)
from streams.domain.retention import FINAL_HOUSE_STATES, closed_reason, eviction, last_change, ledger_keys
from tests.unit.test_lifecycle import NOW, notify, planned_event

RETENTION = timedelta(days=60)
#: The lodging deadline of ``planned_event``.
DEADLINE = datetime(2027, 6, 14, 12, 0, tzinfo=UTC)


def lodged_and_assessed(seed) -> EnsState:
    """The seed's ENS after customs registered every filing and assessed every house consignment."""
    state = apply(None, planned_event(seed), NOW).state
    for number, filing in enumerate(state.filings.values()):
        filing.state = FilingState.REGISTERED
        filing.mrn = f"27NL{number:014d}"
    for house in state.houses.values():
        house.assessed = True
    return state


class TestClosed:
    def test_a_lodged_and_assessed_ens_is_closed(self, seed):
        assert closed_reason(lodged_and_assessed(seed)) == "lodged"

    def test_a_planned_ens_is_open(self, seed):
        """Filings still to be sent: the ENS is missing filings."""
        assert closed_reason(apply(None, planned_event(seed), NOW).state) is None

    def test_a_do_not_load_keeps_it_open(self, seed):
        """A DNL holds the house: not final, and its alert is unacknowledged."""
        held = notify(lodged_and_assessed(seed), seed, "IE3Q01", "AOB26OSA1001", mrn="27NL00000000000017").state
        assert closed_reason(held) is None

    def test_a_standing_alert_keeps_it_open(self, seed):
        state = lodged_and_assessed(seed)
        state.standing["a1"] = StandingAlert("a1", StandingKind.REJECTED, "ML-TYO", ["F15|X|ML-TYO"], "Rejected")
        assert closed_reason(state) is None

    def test_an_invalidated_ens_is_closed(self, seed):
        state = apply(None, planned_event(seed), NOW).state
        for filing in state.filings.values():
            filing.state = FilingState.INVALIDATED
        assert closed_reason(state) == "invalidated"

    def test_a_filed_but_unregistered_house_keeps_it_open(self, seed):
        state = lodged_and_assessed(seed)
        house = next(iter(state.houses.values()))
        house.assessed = False
        filing = next(f for f in state.filings.values() if f.hbl == house.hbl)
        filing.state, filing.mrn = FilingState.SENT, None
        assert closed_reason(state) is None


class TestEviction:
    def test_evicted_once_quiet_for_the_retention_after_the_deadline(self, seed):
        state = lodged_and_assessed(seed)
        assert eviction(state, DEADLINE + RETENTION - timedelta(seconds=1), RETENTION) is None
        evicted = eviction(state, DEADLINE + RETENTION, RETENTION)
        assert evicted is not None
        assert (evicted.mbl, evicted.reason, evicted.closed_at) == (seed.mbl, "lodged", DEADLINE)
        assert evicted.planning_parties == (seed.planning_party,)

    def test_a_late_change_restarts_the_retention(self, seed):
        state = lodged_and_assessed(seed)
        late = DEADLINE + timedelta(days=20)
        state.history.append([format_datetime(late), "IE3N08 control notification"])
        assert eviction(state, DEADLINE + RETENTION, RETENTION) is None
        assert eviction(state, late + RETENTION, RETENTION) is not None

    def test_without_history_never(self, seed):
        state = lodged_and_assessed(seed)
        state.history.clear()
        assert last_change(state) is None
        assert eviction(state, DEADLINE + 10 * RETENTION, RETENTION) is None

    def test_ledger_keys_name_every_lrn_mrn_and_referral(self, seed):
        state = lodged_and_assessed(seed)
        rfi = OpenAlert("r1", NaggingKind.RFI, "ML-TYO", None, "REF-9", None, "", "RFI", closed=True)
        state.open_alerts["r1"] = rfi
        keys = ledger_keys(state)
        lrns = {f"lrn:{f.lrn}" for f in state.filings.values() if f.lrn}
        mrns = {f"mrn:{f.mrn}" for f in state.filings.values()}
        assert lrns and set(keys) == lrns | mrns | {"ref:REF-9"}
        assert len(keys) == len(set(keys))


FILING_STATES = st.sampled_from(list(FilingState))


@st.composite
def ens_states(draw: st.DrawFn) -> EnsState:
    """Any mix of filing states, house flags, alerts and history around the deadline."""
    state = EnsState(mbl="MBL1", deadline=format_datetime(DEADLINE))
    for index in range(draw(st.integers(1, 4))):
        hbl = f"HBL{index}"
        state.houses[hbl] = HouseStatus(
            hbl,
            assessed=draw(st.booleans()),
            do_not_load=draw(st.booleans()),
            controlled=draw(st.booleans()),
            open_referrals=draw(st.sampled_from([{}, {f"REF{index}": None}])),
        )
        for filing in draw(st.lists(st.sampled_from(["F14", "F15", "F16"]), min_size=1, max_size=2, unique=True)):
            status = FilingStatus(filing, hbl, "ML-TYO", True, draw(FILING_STATES), lrn=f"L{index}{filing}")
            status.mrn = f"M{index}{filing}" if status.state in (FilingState.REGISTERED, FilingState.AMENDED) else None
            state.filings[status.key] = status
    if draw(st.booleans()):
        state.open_alerts["q1"] = OpenAlert("q1", NaggingKind.DO_NOT_LOAD, "ML-TYO", "HBL0", None, None, "", "DNL")
    for offset in draw(st.lists(st.integers(-30, 120), max_size=3)):
        state.history.append([format_datetime(DEADLINE + timedelta(days=offset)), "change"])
    return state


@given(ens_states(), st.integers(0, 400))
def test_only_closed_and_quiet_ens_are_evicted(state: EnsState, days: int) -> None:
    """Whatever the state: an evicted ENS has nothing open and was quiet for the retention after its deadline."""
    now = DEADLINE + timedelta(days=days)
    evicted = eviction(state, now, RETENTION)
    if evicted is None:
        return
    assert not state.nagging() and not state.standing
    live = [f for f in state.filings.values() if f.active]
    assert not live or all(state.house_state(h) in FINAL_HOUSE_STATES for h in state.houses)
    assert not state.missing_filings()
    changes = [datetime.fromisoformat(h[0].replace("Z", "+00:00")) for h in state.history]
    assert now - max([*changes, DEADLINE]) >= RETENTION


@given(ens_states(), st.integers(0, 400), st.integers(0, 400))
def test_once_evictable_it_stays_evictable(state: EnsState, days: int, later: int) -> None:
    """Eviction depends on time only through the retention: a later look never keeps what an earlier one evicted."""
    now = DEADLINE + timedelta(days=days)
    if eviction(state, now, RETENTION) is not None:
        assert eviction(state, now + timedelta(days=later), RETENTION) is not None


@given(ens_states())
def test_a_held_house_is_never_closed(state: EnsState) -> None:
    held = any(state.house_state(h) in (HouseState.HELD_DNL, HouseState.CONTROLLED) for h in state.houses)
    live = any(f.active for f in state.filings.values())
    if held and live:
        assert closed_reason(state) is None
