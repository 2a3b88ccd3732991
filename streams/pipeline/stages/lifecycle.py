"""The lifecycle stage: ENS events -> the ENS state table and the alerts each event calls for."""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

import orjson
import structlog

from streams.contracts.avro import SchemaCatalogue
from streams.contracts.events import decode_lifecycle_event
from streams.domain.deadlines import DEFAULT_RESPONSE_TIMES
from streams.domain.events import Ack, NotificationReceived
from streams.domain.lifecycle import DEFAULT_MARGINS, EnsState, apply
from streams.pipeline.stage import Emit, Incoming
from streams.pipeline.stages.base import Clock, EmittingStage
from streams.topics import Catalogue

log = structlog.get_logger(__name__)

#: How many decoded ENS states the batched tracker keeps between batches (least recently used dropped first).
DECODED_LIMIT = 2048


def encode_state(state: EnsState) -> bytes:
    """An ENS state as the ens-state table holds it (JSON, written with orjson: a tenth of the json module's time)."""
    return orjson.dumps(state.to_json())


def decode_state(raw: bytes) -> EnsState:
    """An ENS state from the ens-state table's value; every reader of the table goes through here."""
    return EnsState.from_json(orjson.loads(raw))


class TickSchedule:
    """When each ENS of this worker next needs the watchdog, kept as the tracker stores states.

    Why: the watchdog decoded every ENS state of the table at each tick (every 30 s), which grows with the ENS kept
    for their retention (60 days) and stalled the event loop for seconds in a soak of 30,000 consolidations. A
    state's due time changes only when the state does, so it is noted when the tracker stores the state. States
    that arrive otherwise (recovered from the changelog after a rebalance) are picked up by ``rebuild``, which the
    worker asks for after every rebalance: the schedule is then marked out of date.
    """

    def __init__(self, widest_margin: timedelta) -> None:
        self.widest_margin = widest_margin
        self.due: dict[str, datetime] = {}
        """MBL -> from when on its ENS needs a tick; ENS that never will are left out."""
        self.current = False
        """Whether ``due`` reflects the table (false until the first ``rebuild``, and after each rebalance)."""

    def note(self, mbl: str, state: EnsState | None) -> None:
        """``state`` is what the table holds for ``mbl`` now (``None``: nothing)."""
        at = None if state is None else state.tick_due_at(self.widest_margin)
        if at is None:
            self.due.pop(mbl, None)
        else:
            self.due[mbl] = at

    def rebuild(self, states: Iterable[tuple[str, bytes]]) -> None:
        """Every state of the table decoded once: after a rebalance, the table holds states no tracker stored."""
        self.due.clear()
        for mbl, raw in states:
            if raw:
                self.note(mbl, decode_state(raw))
        self.current = True

    def outdated(self) -> None:
        """The table's partitions changed (a rebalance and its recovery): rebuild before the next use."""
        self.current = False

    def due_now(self, now: datetime) -> list[str]:
        """The MBLs to tick at ``now``, in order."""
        return sorted(mbl for mbl, at in self.due.items() if now >= at)


class LifecycleTracker(EmittingStage):
    """ENS events -> the ENS state table and the alerts each event calls for.

    With ``batched`` (the worker's batching runner), an MBL's state is read from the table once per batch, kept
    decoded while the batch's events are applied (``pending``), and stored once, after the broker acknowledged
    every alert of the batch (``StageRunner.flush`` calls ``acknowledged``). Why: decoding and encoding a whole
    ENS state as JSON for each event cost a third of the worker's time in a burst of notifications on one
    consolidation. Storing after the alerts are written also means that a crash in between makes the redelivered
    events apply again and give the same alerts (same ids), instead of finding them seen and their alerts lost.
    """

    def __init__(
        self,
        schemas: SchemaCatalogue,
        catalogue: Catalogue,
        clock: Clock,
        states: MutableMapping[str, bytes],
        margins: Sequence[timedelta] = DEFAULT_MARGINS,
        response_times: Mapping[str, timedelta] = DEFAULT_RESPONSE_TIMES,
        *,
        batched: bool = False,
        schedule: TickSchedule | None = None,
    ) -> None:
        super().__init__(schemas, catalogue, clock)
        self.states = states
        self.schedule = schedule
        """Told each state stored, for the watchdog."""
        self.margins = tuple(margins)
        self.response_times = dict(response_times)
        self.batched = batched
        self.pending: dict[str, EnsState] = {}
        """MBL -> its state after the batch in flight, not stored yet (``batched`` only)."""
        self.decoded: OrderedDict[str, tuple[bytes, EnsState]] = OrderedDict()
        """MBL -> the bytes last stored and the state they hold (``batched`` only): an MBL busy over several
        batches is not decoded again while the table still holds exactly those bytes (recovery, eviction or another
        worker's write change them)."""

    def _state(self, mbl: str) -> EnsState | None:
        if mbl in self.pending:
            return self.pending[mbl]
        stored = self.states.get(mbl)
        if stored is None:
            self.decoded.pop(mbl, None)
            return None
        cached = self.decoded.get(mbl)
        if cached is not None and cached[0] == stored:
            self.decoded.move_to_end(mbl)
            return cached[1]
        return decode_state(stored)

    def _store(self, mbl: str, state: EnsState) -> bytes:
        stored = encode_state(state)
        self.states[mbl] = stored
        if self.schedule is not None:
            self.schedule.note(mbl, state)
        return stored

    def acknowledged(self) -> None:
        """Every alert of the batch is written: store each MBL's state once, and keep it decoded."""
        for mbl, state in self.pending.items():
            self.decoded[mbl] = (self._store(mbl, state), state)
            self.decoded.move_to_end(mbl)
        while len(self.decoded) > DECODED_LIMIT:
            self.decoded.popitem(last=False)
        self.pending.clear()

    def abandoned(self) -> None:
        """The batch will be delivered again: forget what it did, the table still holds the state before it (the
        decoded states it changed in place are dropped with it)."""
        for mbl in self.pending:
            self.decoded.pop(mbl, None)
        self.pending.clear()

    def __call__(self, incoming: Incoming) -> list[Emit]:
        record = self.schemas.decode(incoming.value, reader="EnsEvent").record
        payload = json.loads(record["payload"])
        event = decode_lifecycle_event(record["type"], record["mbl"], payload)
        ids = {k: payload["record"].get(k) for k in ("hbl", "lrn", "mrn")} if "record" in payload else {}
        with structlog.contextvars.bound_contextvars(mbl=record["mbl"], **ids):
            state = self._state(record["mbl"])
            if state is None and isinstance(event, Ack):
                log.warning("ack_for_unknown_ens", alert_id=event.alert_id)
                return []
            transition = apply(state, event, self.clock(), self.margins, self.response_times)
            if self.batched:
                self.pending[record["mbl"]] = transition.state
            else:
                self._store(record["mbl"], transition.state)
            if transition.duplicate:
                log.info("duplicate_suppressed", event_id=record["event_id"])
            elif isinstance(event, Ack):
                log.info("alert_acknowledged", alert_id=event.alert_id, by=event.by)
            emits = self.alert_emits(transition.alerts, incoming)
        if isinstance(event, NotificationReceived):
            # The alerts' latency is measured from the notification's arrival (streams.pipeline.metrics).
            tag = ("ics2-notification-id", str(payload["notification_id"]).encode())
            emits = [replace(e, headers=(*e.headers, tag)) for e in emits]
        return emits
