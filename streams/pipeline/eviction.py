"""The eviction timer's work: closed ENS quiet for the retention period leave the tables, a bounded number a tick.

The domain decides what is evictable (``streams.domain.retention``); this removes the ENS state and what else is
keyed by the consolidation: the plan memories (``<mbl>|<planning party>``), the ledger entries of its filings
(``lrn:``, ``mrn:``, ``ref:``) and anything parked under them. Each removal is a table delete: a tombstone in the
compacted changelog, so a restarted or new worker does not bring the ENS back. The audit chain head stays (see
``streams.domain.retention``).

A late record about an evicted ENS is handled as for an unknown one: a customs notification whose ledger entry is
gone waits in ``parked`` (as one arriving before its filing is known), an acknowledgement is logged and dropped by
the tracker (``ack_for_unknown_ens``), and a new booking version starts a new consolidation.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Container, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog

from streams.domain.retention import Eviction, eviction
from streams.pipeline.stages import answers, changes, correlate
from streams.pipeline.stages.lifecycle import decode_state
from streams.pipeline.tables import ChangelogRecord, StateTable, key_partition

log = structlog.get_logger(__name__)

#: ENS states an eviction tick examines: with the default tick of 5 minutes, a million states are all seen within
#: about 17 hours, and a tick decodes for about a quarter of a second.
SCAN_PER_TICK = 5000

#: The tables an eviction removes keys from, in the order it removes them (the ENS state last, so that an eviction
#: cut short by a crash is found again at the next tick).
EVICTED_TABLES = ("plans", "ledger", "parked", "ens-state")


def scan_table(table: Mapping[str, bytes], after: str | None) -> Iterator[tuple[str, str, bytes]]:
    """The table's items in key order from just after ``after``, each with the cursor to resume after it: a timer
    walks a large table a slice per tick."""
    for key in sorted(table):
        if after is None or key > after:
            value = table.get(key)
            if value is not None:
                yield key, key, value


def related_keys(evicted: Eviction) -> list[tuple[str, str, str]]:
    """``(table, key, routing key)`` of everything keyed by the consolidation, the ENS state last."""
    keys = [("plans", f"{evicted.mbl}|{party}", evicted.mbl) for party in evicted.planning_parties]
    for key in evicted.ledger_keys:
        keys.append(("ledger", key, key))
        parked = (
            key,
            answers.parked_key(key),
            changes.parked_key(key),
            changes.rejected_key(key),
            correlate.unmatched_key(key),
        )
        keys += [("parked", p, key) for p in parked]
    keys.append(("ens-state", evicted.mbl, evicted.mbl))
    return keys


@dataclass
class Evictor:
    """Finds the closed ENS this worker owns and deletes them with their keys, at most ``limit`` a tick."""

    tables: Mapping[str, StateTable]
    retention: timedelta
    limit: int
    pending: Callable[[], Container[str]] = frozenset
    """MBLs whose new state is not stored yet (the tracker's batch): never evicted under it."""
    owned: Callable[[str, str], bool] = lambda table, routing_key: True
    """Whether this worker holds the table's partition of a routing key as an active (not a standby copy)."""
    scan_limit: int = SCAN_PER_TICK
    """States examined per call of ``due``."""
    cursor: str | None = None
    """Where the last call of ``due`` stopped (``None``: at the start)."""
    forget: Callable[[str], None] = lambda mbl: None
    """Told each MBL whose ENS state was deleted (the watchdog's schedule)."""
    evicted: Counter[str] = field(default_factory=Counter)
    """Keys deleted per table, and ENS per reason (``ens:<reason>``), since the worker started."""
    tombstones: list[ChangelogRecord] = field(default_factory=list)
    """The changelog tombstones of the deletions, for the timer to send (``take_tombstones``)."""

    def due(self, now: datetime) -> list[Eviction]:
        """Up to ``limit`` evictable ENS among the next ``scan_limit`` states, skipping those not owned here or with
        a state still pending; the next call goes on from there, and after the last state starts over.

        Why a slice per tick: decoding every ENS state kept for the retention period at each tick grows with the
        traffic (about 50 us a state: 50 s for a million, with the event loop stalled for as long).
        """
        pending = self.pending()
        due: list[Eviction] = []
        for examined, (cursor, mbl, raw) in enumerate(scan_table(self.tables["ens-state"], self.cursor), 1):
            if raw and mbl not in pending and self.owned("ens-state", mbl):
                found = eviction(decode_state(raw), now, self.retention)
                if found is not None:
                    due.append(found)
            if len(due) >= self.limit or examined >= self.scan_limit:
                self.cursor = cursor
                return due
        self.cursor = None
        return due

    def evict(self, now: datetime) -> list[Eviction]:
        """Deletes what ``due`` finds; returns the evicted ENS."""
        due = self.due(now)
        for evicted in due:
            held: Counter[str] = Counter()
            for table, key, routing_key in related_keys(evicted):
                if self._delete(self.tables[table], key, routing_key, elsewhere=not self.owned(table, routing_key)):
                    held[table] += 1
            self.forget(evicted.mbl)
            self.evicted.update(held)
            self.evicted[f"ens:{evicted.reason}"] += 1
            log.info(
                "ens_evicted",
                mbl=evicted.mbl,
                reason=evicted.reason,
                closed_at=evicted.closed_at.isoformat(),
                keys=dict(held),
            )
        return due

    def _delete(self, table: StateTable, key: str, routing_key: str, *, elsewhere: bool) -> bool:
        """Removes ``key`` from the worker's copy and queues its tombstone; whether it was held here.

        ``routing_key``: the key of the source records that wrote it, whose partition holds it (a plan memory
        ``<mbl>|<party>`` was written by a booking keyed by the MBL). ``elsewhere``: that partition is another
        worker's, which may hold the key; a tombstone is written even if it is not held here.
        """
        held = key in table
        if held or elsewhere:
            partition = key_partition(routing_key.encode(), table.partitions)
            self.tombstones.append(table.evict(key, partition))
        return held

    def take_tombstones(self) -> list[ChangelogRecord]:
        taken, self.tombstones = self.tombstones, []
        return taken
