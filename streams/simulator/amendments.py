"""What the customs simulator does with requests about registered filings: amendments (IE3A1x), invalidations
(IE3Q04) and consultations (IE3Q05).

Sources: the trader message catalogue (IE3A10-IE3A19 amend a filing by its MRN and are answered by IE3N10, the
amendment notification; IE3Q04 is answered by IE3R07, invalidation acceptance; IE3Q05 by IE3R08, consultation
results). When customs refuses: the Union Customs Code, article 129, allows no amendment once customs has told the
person it will examine the goods, found the particulars incorrect or the goods were presented, and invalidation only
of goods not brought in. So a Do Not Load (IE3Q01) or an announced control (IE3N08 / IE3N09) freezes the house
consignment's filings, and a registered arrival (``streams.simulator.arrival``) every filing of the ENS, the F12
too. Non-amendable particulars (the identity of a filing: its declarant, filing type, master and house transport
documents, carrier as linking key, and the supplementary declarant an F14 names) need invalidation and a new filing
(customs-declarations.uk, "ICS2 Declaration - Non-Amendable Fields").

Decisions without a public source: refusals of an amendment are IE3N01 (lifecycle) errors with code 92 (out of
sequence) for the state and 12 (incorrect value) for a non-amendable particular; refusals of an invalidation are
IE3N99 quoting the request's ``functionalReference``; an amendment does not re-run risk analysis.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from streams.domain.notifications import NotificationError
from streams.messages import build
from streams.simulator.filing import FilingFacts
from streams.simulator.risk import Outcome

if TYPE_CHECKING:
    from streams.simulator.customs import CustomsSimulator, FilingRecord, HouseState, LinkState, Outbound

INCORRECT, MISSING, OUT_OF_SEQUENCE = "12", "13", "92"
#: House outcomes after which customs refuses amendments and invalidations (UCC art. 129).
FROZEN = frozenset({Outcome.DO_NOT_LOAD.value})
SLOTS = ("f15", "f14", "f16")


@dataclass(frozen=True, slots=True)
class Registered:
    """A registered filing found by its MRN, with the link and house it sits in."""

    link: LinkState
    house: HouseState | None
    hbl: str | None
    slot: str
    record: FilingRecord


def find(sim: CustomsSimulator, mrn: str) -> Registered | None:
    """The live filing registered under ``mrn``; None when unknown or invalidated."""
    for link in sim._links.values():
        if link.f12 is not None and link.f12.mrn == mrn:
            return Registered(link, None, None, "f12", link.f12)
        for hbl, house in link.houses.items():
            for slot in SLOTS:
                record = getattr(house, slot)
                if record is not None and record.mrn == mrn:
                    return Registered(link, house, hbl, slot, record)
    return None


def _frozen(found: Registered) -> str | None:
    """Why customs no longer lets the filing change or be withdrawn: the goods arrived, or its house consignment is
    under a Do Not Load or an announced control."""
    if found.link.arrived_at is not None:
        return f"the goods of master B/L {found.link.mbl} arrived ({found.link.arrived_at})"
    if found.house is None:
        return None
    if found.house.outcome in FROZEN:
        return f"house consignment {found.hbl} is under a Do Not Load"
    if found.house.control is not None:
        return f"customs announced a control of house consignment {found.hbl} ({found.house.control})"
    return None


def amend(sim: CustomsSimulator, facts: FilingFacts, now: datetime) -> list[Outbound]:
    """Register an IE3A1x against the filing its MRN names and answer IE3N10; refuse with IE3N01 when ICS2 would."""
    from streams.simulator.customs import Outbound

    errors = sim._structural_errors(facts)
    if facts.mrn is None:
        errors.append(NotificationError(MISSING, facts.expected_pointer("mrn"), "MRN of the amended filing is missing"))
    if errors:
        return [sim._rejection(facts, errors, now)]
    assert facts.mrn and facts.lrn and facts.declarant
    found = find(sim, facts.mrn.value)
    refusal = _amendment_refusal(sim, facts, found)
    if refusal is not None:
        return [sim._lifecycle_rejection(facts, refusal, now)]
    assert found is not None
    record = found.record
    record.hs_codes, record.descriptions = list(facts.hs_codes), list(facts.descriptions)
    record.status, record.last_notification = "amended", "IE3N10"
    sim._mrns[f"{facts.declarant.value}|{facts.lrn.value}"] = record.mrn
    xml = build.build_ie3n10(
        mrn=record.mrn, completed_at=now, declarant=record.declarant, mbl=found.link.mbl, office=record.office
    )
    return [Outbound(record.declarant, "IE3N10", xml)]


def _amendment_refusal(sim: CustomsSimulator, facts: FilingFacts, found: Registered | None) -> NotificationError | None:
    assert facts.mrn and facts.lrn and facts.declarant
    if found is None:
        return NotificationError(INCORRECT, facts.mrn.pointer, f"no live filing is registered under {facts.mrn.value}")
    record = found.record
    if f"{facts.declarant.value}|{facts.lrn.value}" in sim._mrns:
        return NotificationError("26", facts.lrn.pointer, f"LRN {facts.lrn.value} is already registered")
    if facts.declarant.value != record.declarant:
        return NotificationError(
            INCORRECT, facts.declarant.pointer, f"only {record.declarant}, who filed {record.mrn}, may amend it"
        )
    if facts.filing_type != record.filing:
        return NotificationError(
            INCORRECT, f"/{facts.message_type}", f"{facts.message_type} cannot amend an {record.filing}"
        )
    changed = _identity_changes(facts, found)
    if changed:
        pointer, what = changed
        return NotificationError(INCORRECT, pointer, f"{what} cannot be amended: invalidate {record.mrn} and file anew")
    frozen = _frozen(found)
    if frozen:
        return NotificationError(OUT_OF_SEQUENCE, facts.mrn.pointer, f"{record.mrn} can no longer be amended: {frozen}")
    return None


def _identity_changes(facts: FilingFacts, found: Registered) -> tuple[str, str] | None:
    """The first non-amendable particular the amendment changes, as (pointer, what)."""
    record, link = found.record, found.link
    checks = (
        (facts.mbl, link.mbl, "the master transport document"),
        (facts.hbl, found.hbl, "the house transport document"),
        (facts.carrier if facts.is_house_filing else None, link.carrier, "the carrier (linking key)"),
        (facts.supplementary_declarant, record.supplementary_declarant, "the supplementary declarant"),
    )
    for given, registered, what in checks:
        if given is not None and registered is not None and given.value != registered:
            return given.pointer, what
    return None


def invalidate(sim: CustomsSimulator, facts: FilingFacts, now: datetime) -> list[Outbound]:
    """Withdraw the filing an IE3Q04 names and answer IE3R07; refuse with IE3N99 when ICS2 would."""
    from streams.simulator.customs import Outbound

    assert facts.declarant is not None
    error = _invalidation_refusal(sim, facts)
    if error is not None:
        return [sim._rejection(facts, [error], now)]
    assert facts.mrn is not None
    found = find(sim, facts.mrn.value)
    assert found is not None
    record = found.record
    if found.house is None:
        found.link.f12 = None
    else:
        setattr(found.house, found.slot, None)
        if found.house.lead is None:
            found.house.outcome = found.house.referral = None
            found.house.chased = False
    record.status, record.last_notification = "invalidated", "IE3R07"
    sim._invalidated.append(record)
    xml = build.build_ie3r07(
        mrn=record.mrn, completed_at=now, declarant=record.declarant, mbl=found.link.mbl, office=record.office
    )
    return [Outbound(record.declarant, "IE3R07", xml)]


def _invalidation_refusal(sim: CustomsSimulator, facts: FilingFacts) -> NotificationError | None:
    assert facts.declarant is not None
    if facts.functional_reference is None:
        return NotificationError(MISSING, "/IE3Q04/functionalReference", "functional reference is missing")
    if facts.mrn is None:
        return NotificationError(MISSING, "/IE3Q04/MRN", "MRN of the filing to invalidate is missing")
    found = find(sim, facts.mrn.value)
    if found is None:
        gone = any(r.mrn == facts.mrn.value for r in sim._invalidated)
        why = "is already invalidated" if gone else "is not registered"
        return NotificationError(OUT_OF_SEQUENCE if gone else INCORRECT, facts.mrn.pointer, f"{facts.mrn.value} {why}")
    if facts.declarant.value != found.record.declarant:
        return NotificationError(
            INCORRECT, facts.declarant.pointer, f"only {found.record.declarant} may invalidate {found.record.mrn}"
        )
    frozen = _frozen(found)
    if frozen:
        return NotificationError(
            OUT_OF_SEQUENCE, facts.mrn.pointer, f"{found.record.mrn} cannot be invalidated: {frozen}"
        )
    return None


def consult(sim: CustomsSimulator, facts: FilingFacts, now: datetime) -> list[Outbound]:
    """Answer an IE3Q05 with IE3R08: the requester's filings (as declarant or carrier) under the MRN or MBL asked."""
    from streams.simulator.customs import Outbound

    assert facts.declarant is not None
    requester = facts.declarant.value
    reference = facts.functional_reference.value if facts.functional_reference else None
    if reference is None or not (facts.mrn or facts.mbl or facts.hbl):
        pointer = "/IE3Q05/functionalReference" if reference is None else "/IE3Q05/MRN"
        error = NotificationError(MISSING, pointer, "a consultation needs a functional reference and an MRN or a B/L")
        return [sim._rejection(facts, [error], now)]
    records: list[tuple[FilingRecord, str]] = []
    for link in sim._links.values():
        parts = [link.f12] + [getattr(h, s) for h in link.houses.values() for s in SLOTS]
        records += [(r, link.carrier) for r in parts if r is not None]
    carriers = {link.mbl: link.carrier for link in sim._links.values()}
    records += [(r, carriers.get(r.mbl or "", "")) for r in sim._invalidated]
    wanted = [
        r
        for r, carrier in records
        if requester in (r.declarant, carrier)
        and (facts.mrn is None or r.mrn == facts.mrn.value)
        and (facts.hbl is None or r.hbl == facts.hbl.value)
        and (facts.mrn is not None or facts.hbl is not None or r.mbl == (facts.mbl.value if facts.mbl else None))
    ]
    filings = [
        build.ConsultedFiling(
            mrn=r.mrn,
            filing=r.filing[-3:],
            status=r.status,
            declarant=r.declarant,
            lrn=r.lrn,
            hbl=r.hbl,
            last_notification=r.last_notification,
        )
        for r in sorted(wanted, key=lambda r: r.mrn)
    ]
    mbl = facts.mbl.value if facts.mbl else next((r.mbl for r in wanted if r.mbl), None)
    xml = build.build_ie3r08(reference=reference, consulted_at=now, requester=requester, filings=filings, mbl=mbl)
    return [Outbound(requester, "IE3R08", xml)]
