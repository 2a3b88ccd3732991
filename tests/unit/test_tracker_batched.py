"""The worker's tracker keeps a batch's ENS states decoded and stores each once, after the batch's alerts are written.

Fed the same ENS events, the batched tracker must emit exactly the alerts of the one-event-at-a-time tracker and
end with the same stored state; before the batch is acknowledged nothing is stored, and an abandoned batch leaves
the table as it was so that the redelivered events give the same alerts again.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import orjson

from streams.contracts.events import ack_record
from streams.contracts.records import ens_event
from streams.domain.dates import parse_datetime
from streams.domain.lifecycle import DEFAULT_MARGINS, EnsState
from streams.pipeline.stage import Emit, Incoming
from streams.pipeline.stages.lifecycle import LifecycleTracker, TickSchedule, decode_state
from streams.simulator import Outcome, RiskRule, RiskScript
from tests.data import seed_json_with_carrier_contact
from tests.unit.test_handlers import NOW, Pump

MBL = "OCLU26TYO7781234"


def _seed_events() -> tuple[Pump, list[Incoming]]:
    """Every ENS event of the seed booked by the master loader, a co-loader and the carrier: plans, filings,
    registrations, and a Do Not Load on the co-loader's house."""
    pump = Pump(RiskScript(rules=(RiskRule(Outcome.DO_NOT_LOAD, hbl="CHY26YOK0501"),)))
    data = seed_json_with_carrier_contact()
    pump.book(data)
    pump.book(dict(data, planning_party="COLOADER-C", event_id="e-c"))
    pump.book(dict(data, planning_party="CARRIER-A", event_id="e-carrier"))
    pump.run()
    topic = pump.catalogue.ens_events.name
    events = [Incoming(e.topic, 0, i, e.key, e.value, e.headers) for i, e in enumerate(pump.topics[topic])]
    return pump, events


def _tracker(pump: Pump, states: dict[str, bytes], *, batched: bool) -> LifecycleTracker:
    return LifecycleTracker(pump.schemas, pump.catalogue, lambda: NOW, states, batched=batched)


def _run(tracker: LifecycleTracker, events: list[Incoming]) -> list[Emit]:
    return [emit for incoming in events for emit in tracker(incoming)]


def test_a_batch_gives_the_alerts_and_state_of_one_event_at_a_time() -> None:
    pump, events = _seed_events()
    assert len(events) > 5
    one_by_one: dict[str, bytes] = {}
    expected = _run(_tracker(pump, one_by_one, batched=False), events)
    assert any(pump.schemas.decode(e.value).record.get("urgency") == "critical" for e in expected if "alert" in e.topic)

    batched_states: dict[str, bytes] = {}
    tracker = _tracker(pump, batched_states, batched=True)
    half = len(events) // 2
    first = _run(tracker, events[:half])
    assert batched_states == {}, "nothing is stored before the batch's alerts are acknowledged"
    tracker.acknowledged()
    assert set(batched_states) == {MBL}
    second = _run(tracker, events[half:])
    tracker.acknowledged()

    assert first + second == expected
    assert batched_states == one_by_one
    assert tracker.pending == {}


def test_an_abandoned_batch_leaves_the_table_and_gives_the_same_alerts_again() -> None:
    pump, events = _seed_events()
    states: dict[str, bytes] = {}
    tracker = _tracker(pump, states, batched=True)
    half = len(events) // 2
    _run(tracker, events[:half])
    tracker.acknowledged()
    before = dict(states)

    delivered = _run(tracker, events[half:])
    tracker.abandoned()
    assert states == before
    assert tracker.pending == {}

    redelivered = _run(tracker, events[half:])
    assert redelivered == delivered
    tracker.acknowledged()
    reference: dict[str, bytes] = {}
    _run(_tracker(pump, reference, batched=False), events)
    assert states == reference


def test_a_state_changed_in_the_table_is_read_again_not_taken_from_the_decoded_ones() -> None:
    """Eviction (a delete) or a recovered changelog changes the table behind the tracker: the table wins."""
    pump, events = _seed_events()
    states: dict[str, bytes] = {}
    tracker = _tracker(pump, states, batched=True)
    _run(tracker, events)
    tracker.acknowledged()
    assert MBL in tracker.decoded and orjson.loads(states[MBL])["filings"]

    del states[MBL]
    now = NOW.isoformat()
    tick = pump.schemas.encode("EnsEvent", ens_event(MBL, "tick", NOW, {}, f"test:{now}"))
    _run(tracker, [Incoming(pump.catalogue.ens_events.name, 0, 10_000, MBL.encode(), tick, ())])
    tracker.acknowledged()
    assert orjson.loads(states[MBL])["filings"] == [], "a fresh ENS, not the decoded state of the evicted one"


def _needs_tick_by_the_rule(state: EnsState, now: datetime, margin: timedelta) -> bool:
    """The watchdog's rule spelled out: missing filings, or a nagging alert, with its deadline within the margin."""
    deadline = parse_datetime(state.deadline) if state.deadline else None
    if deadline is not None and state.missing_filings() and now >= deadline - margin:
        return True
    return any((d := state.alert_deadline(alert)) is not None and now >= d - margin for alert in state.nagging())


def test_the_schedule_follows_every_stored_state_and_agrees_with_the_rule() -> None:
    """After each event the schedule holds the MBL exactly when its state will need a tick, from the right time:
    the watchdog reads the schedule, not every state, and must tick what the rule says at any moment."""
    pump, events = _seed_events()
    margin = max(DEFAULT_MARGINS)
    states: dict[str, bytes] = {}
    schedule = TickSchedule(margin)
    tracker = LifecycleTracker(pump.schemas, pump.catalogue, lambda: NOW, states, batched=True, schedule=schedule)
    moments = [NOW + timedelta(hours=h) for h in (-1000, 0, 24, 24 * 10, 24 * 60)]
    for incoming in events:
        tracker(incoming)
        tracker.acknowledged()
        state = decode_state(states[MBL])
        for now in moments:
            assert (MBL in schedule.due_now(now)) == _needs_tick_by_the_rule(state, now, margin), now
    assert MBL in schedule.due, "the seed's Do Not Load nags until acknowledged"

    rebuilt = TickSchedule(margin)
    assert not rebuilt.current
    rebuilt.rebuild(states.items())
    assert rebuilt.current and rebuilt.due == schedule.due
    rebuilt.outdated()
    assert not rebuilt.current

    for alert in decode_state(states[MBL]).nagging():
        value = pump.schemas.encode("EnsEvent", ack_record(MBL, alert.alert_id, "ops-anna", NOW))
        tracker(Incoming(pump.catalogue.ens_events.name, 0, 10_000, MBL.encode(), value))
    tracker.acknowledged()
    state = decode_state(states[MBL])
    assert state.nagging() == [] and state.missing_filings(), "a co-loader's F16 is still missing"
    assert schedule.due[MBL] == parse_datetime(state.deadline or "") - margin

    for status in state.filings.values():
        status.state = status.state.REGISTERED
    schedule.note(MBL, state)
    assert MBL not in schedule.due, "nothing left to chase: the ENS leaves the schedule"


def test_an_abandoned_batch_leaves_the_schedule_as_the_table() -> None:
    pump, events = _seed_events()
    schedule = TickSchedule(max(DEFAULT_MARGINS))
    tracker = LifecycleTracker(pump.schemas, pump.catalogue, lambda: NOW, {}, batched=True, schedule=schedule)
    _run(tracker, events)
    tracker.abandoned()
    assert schedule.due == {}
