"""When a closed ENS may leave the worker's tables, and which ledger keys leave with it.

Why: the tables hold every consolidation ever filed; a worker's memory (and a restart's replay) must stay bounded
over months of traffic. An ENS is **closed** when nothing can still be asked of anyone about it:

- every house consignment is assessed (IE3N03), registered with every live filing lodged, or withdrawn (all its
  filings invalidated or withdrawn), or there is no live filing left at all (the ENS was invalidated);
- no Do Not Load, RFI or RFS alert is unacknowledged while customs' condition still stands, and no alert about a
  missing, blocked or rejected filing still stands (a held, controlled or referred house is not final anyway).

It is **evictable** once closed and quiet for the retention period, counted from the later of its last change and
its lodging deadline: until the deadline new house filings may still join the ENS, and after it customs still
speaks about the cargo until it arrives (control notification IE3N08 at presentation, arrival IE3R04), up to the
length of a deep-sea voyage (about six weeks, hence the 60-day default). The state records no arrival, so the
retention period stands in for it. An ENS without a recorded change (no history) is never evicted.

The audit chain head of the MBL is not evicted: a late record would otherwise start a second chain from genesis
for the same MBL, a fork the verifier cannot tell from tampering. A head is a few hundred bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from streams.domain.dates import parse_datetime
from streams.domain.ledger import lrn_key, mrn_key, referral_key
from streams.domain.lifecycle import EnsState, HouseState

#: House states after which customs asks nothing more of anyone about the house consignment.
FINAL_HOUSE_STATES = frozenset({HouseState.ASSESSED, HouseState.REGISTERED, HouseState.WITHDRAWN})


@dataclass(frozen=True, slots=True)
class Eviction:
    """An ENS to remove: its MBL, why, and the ledger keys (``lrn:``, ``mrn:``, ``ref:``) of its filings."""

    mbl: str
    closed_at: datetime
    """The later of its last change and its lodging deadline: the retention period counts from here."""
    reason: str
    ledger_keys: tuple[str, ...]
    planning_parties: tuple[str, ...]


def closed_reason(state: EnsState) -> str | None:
    """Why the ENS's lifecycle is over (``invalidated`` or ``lodged``), or None while anything is still open."""
    if not state.filings or state.nagging() or state.standing:
        return None
    if not any(f.active for f in state.filings.values()):
        return "invalidated"
    if state.missing_filings():
        return None
    if all(state.house_state(hbl) in FINAL_HOUSE_STATES for hbl in state.houses):
        return "lodged"
    return None


def last_change(state: EnsState) -> datetime | None:
    """When the state last changed (its newest history line), None when it has no history."""
    times = [parse_datetime(entry[0]) for entry in state.history if entry]
    return max(times) if times else None


def eviction(state: EnsState, now: datetime, retention: timedelta) -> Eviction | None:
    """The eviction of a closed ENS quiet for ``retention``; None while it is open or within its retention."""
    reason = closed_reason(state)
    changed = last_change(state)
    if reason is None or changed is None:
        return None
    closed_at = max(changed, parse_datetime(state.deadline)) if state.deadline else changed
    if now - closed_at < retention:
        return None
    return Eviction(state.mbl, closed_at, reason, ledger_keys(state), tuple(state.planning_parties))


def ledger_keys(state: EnsState) -> tuple[str, ...]:
    """The correlation keys the ENS's filings were recorded under: LRNs, MRNs and referral references."""
    keys: list[str] = []
    for filing in state.filings.values():
        keys += [lrn_key(filing.lrn)] if filing.lrn else []
        keys += [mrn_key(filing.mrn)] if filing.mrn else []
    references = [r for h in state.houses.values() for r in h.open_referrals]
    references += [a.referral_reference for a in state.open_alerts.values() if a.referral_reference]
    keys += [referral_key(r) for r in references]
    return tuple(dict.fromkeys(keys))
