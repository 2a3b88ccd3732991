"""Who must file what for a consolidation: the filing plan.

``plan()`` follows the seed's rules (see ``docs/``): per lowest HBL either F15 by the master loader, or
F14 by the nearest automated party above the lowest HBL's issuer plus F16 by that issuer. It never raises on a
booking that ``Consolidation.from_json`` accepted: an unusable HBL tree is reported as ``PlanError``s naming the
party that must fix it, and the HBLs concerned get no filings until it is fixed.

Decision without a source: when the planning party is the carrier, its F12 is a planned filing of ours (filer =
carrier, hbl None, first in the plan) and ``expected_from_carrier`` is empty, since nothing is expected from
another party at master level.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from streams.domain.model import Consolidation, HouseBill, Party, Role
from streams.errors import BookingError


class FilingType(StrEnum):
    """Maritime ENS filings (IE3F1x)."""

    F10 = "F10"
    F11 = "F11"
    F12 = "F12"
    F13 = "F13"
    F14 = "F14"
    F15 = "F15"
    F16 = "F16"
    F17 = "F17"

    @property
    def message_type(self) -> str:
        """The ICS2 message code, which is also the XML root element: ``IE3F15``."""
        return f"IE3{self.value}"


@dataclass(frozen=True, slots=True)
class PlannedFiling:
    """One filing the ENS needs: what, for which lowest HBL (None at master level), by whom, and why."""

    filing: FilingType
    hbl: str | None
    filer: str
    supplementary_declarant: str | None = None
    reason: str = ""
    ours: bool = False
    """True when the planning party (this deployment's user) files it; else it is expected from another party."""


@dataclass(frozen=True, slots=True)
class PlanWarning:
    code: str
    hbl: str | None
    message: str


@dataclass(frozen=True, slots=True)
class PlanError:
    code: str
    hbl: str | None
    message: str
    party: str | None = None
    """The party that must fix the booking."""


@dataclass(frozen=True, slots=True)
class FilingPlan:
    """The plan for one consolidation version."""

    mbl: str
    planning_party: str
    version: int
    filings: tuple[PlannedFiling, ...]
    expected_from_carrier: tuple[FilingType, ...] = (FilingType.F12,)
    warnings: tuple[PlanWarning, ...] = ()
    errors: tuple[PlanError, ...] = field(default=())

    def ours(self) -> tuple[PlannedFiling, ...]:
        return tuple(f for f in self.filings if f.ours)

    def expected_from_others(self) -> tuple[PlannedFiling, ...]:
        return tuple(f for f in self.filings if not f.ours)

    def for_hbl(self, hbl: str) -> tuple[PlannedFiling, ...]:
        return tuple(f for f in self.filings if f.hbl == hbl)

    @property
    def ok(self) -> bool:
        """A plan without errors can be filed."""
        return not self.errors

    def summary(self) -> tuple[tuple[str, str | None, str, str | None], ...]:
        """(filing, hbl, filer, supplementary_declarant) per filing: the shape of the seed's expected plan."""
        return tuple((f.filing.value, f.hbl, f.filer, f.supplementary_declarant) for f in self.filings)

    def to_json(self) -> dict[str, Any]:
        """The ``ics2 plan --json`` shape; the first keys are those of ``seed-coload.plan.json``."""
        return {
            "mbl": self.mbl,
            "planning_party": self.planning_party,
            "version": self.version,
            "expected_from_carrier": [f.value for f in self.expected_from_carrier],
            "filings": [
                {
                    "filing": f.filing.value,
                    "hbl": f.hbl,
                    "filer": f.filer,
                    "supplementary_declarant": f.supplementary_declarant,
                    "ours": f.ours,
                    "reason": f.reason,
                }
                for f in self.filings
            ],
            "warnings": [{"code": w.code, "hbl": w.hbl, "message": w.message} for w in self.warnings],
            "errors": [{"code": e.code, "hbl": e.hbl, "message": e.message, "party": e.party} for e in self.errors],
        }


@dataclass(frozen=True, slots=True)
class FilingDraft:
    """A planned filing made concrete: the data it draws on, its LRN and when it is issued. Rendered as XML."""

    consolidation: Consolidation
    planned: PlannedFiling
    lrn: str
    issued_at: datetime


@dataclass(frozen=True, slots=True)
class FilingChange:
    """The same filing (type, HBL, filer) planned again with another supplementary declarant or owner."""

    old: PlannedFiling
    new: PlannedFiling


@dataclass(frozen=True, slots=True)
class PlanDiff:
    """What a booking's new version changes in the plan: filings to make, to withdraw, and to amend."""

    added: tuple[PlannedFiling, ...] = ()
    removed: tuple[PlannedFiling, ...] = ()
    changed: tuple[FilingChange, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)


class ChangeKind(StrEnum):
    """What a new booking version does to a filing customs already holds.

    ``amend``: same filing, new content (IE3A1x by MRN). ``invalidate``: the plan no longer needs it (IE3Q04).
    ``replace``: a particular ICS2 does not let an amendment change (the filing's identity) changed, or another
    filing takes over its house consignment: invalidate, then file the new one right after (a house document may be
    live in one filing of the ENS only, so the new filing cannot go first).
    """

    AMEND = "amend"
    INVALIDATE = "invalidate"
    REPLACE = "replace"


def _key(f: PlannedFiling) -> tuple[FilingType, str | None, str]:
    return (f.filing, f.hbl, f.filer)


def diff_plans(old: FilingPlan, new: FilingPlan) -> PlanDiff:
    """Compare two plans filing by filing, keyed by (filing type, HBL, filer); reasons are not compared.

    A filing whose filer changes is removed and added, because the old filer's filing must be withdrawn and the
    new filer's made; one whose supplementary declarant or ``ours`` flag changes is changed (an amendment).
    """
    old_by_key = {_key(f): f for f in old.filings}
    new_by_key = {_key(f): f for f in new.filings}
    added = tuple(f for k, f in new_by_key.items() if k not in old_by_key)
    removed = tuple(f for k, f in old_by_key.items() if k not in new_by_key)
    changed = tuple(
        FilingChange(old_by_key[k], f)
        for k, f in new_by_key.items()
        if k in old_by_key
        and (old_by_key[k].supplementary_declarant, old_by_key[k].ours) != (f.supplementary_declarant, f.ours)
    )
    return PlanDiff(added=added, removed=removed, changed=changed)


def house_filers(consolidation: Consolidation) -> tuple[str, ...]:
    """The parties that file the house level (an F15 or an F14), in plan order: the F12 names them so that customs
    expects their filings. F16 filers are not among them: the F14 names those."""
    lead = (FilingType.F15, FilingType.F14)
    return tuple(dict.fromkeys(f.filer for f in plan(consolidation).filings if f.filing in lead))


def plan(consolidation: Consolidation) -> FilingPlan:
    """Who files what for every lowest HBL of the consolidation (the seed's rules); reports, never raises."""
    return _Planner(consolidation).plan()


class _Planner:
    """One planning run: collects filings, warnings and errors while walking the lowest HBLs in booking order."""

    def __init__(self, consolidation: Consolidation) -> None:
        self.c = consolidation
        self.filings: list[PlannedFiling] = []
        self.warnings: list[PlanWarning] = []
        self.errors: list[PlanError] = []
        self.blocked: set[str] = set()
        """HBLs whose own data makes every chain through them unusable."""

    def plan(self) -> FilingPlan:
        c = self.c
        expected: tuple[FilingType, ...] = (FilingType.F12,)
        self._check_parties()
        if c.planning_party == c.master.carrier:
            expected = ()
            self.filings.append(
                PlannedFiling(
                    FilingType.F12,
                    None,
                    c.master.carrier,
                    reason=f"the carrier files the master B/L level of {c.mbl}",
                    ours=True,
                )
            )
        if not c.house_bills:
            self._error("PLAN-NO-HBL", None, "the booking has no house B/L", c.planning_party)
        self._check_tree()
        master_loader = self._master_loader()
        if master_loader is not None:
            for hbl in c.lowest_hbls():
                self._plan_lowest(hbl, master_loader)
        return FilingPlan(
            mbl=c.mbl,
            planning_party=c.planning_party,
            version=c.version,
            filings=tuple(self.filings),
            expected_from_carrier=expected,
            warnings=tuple(self.warnings),
            errors=tuple(self.errors),
        )

    def _error(self, code: str, hbl: str | None, message: str, party: str | None) -> None:
        self.errors.append(PlanError(code=code, hbl=hbl, message=message, party=party))

    def _check_parties(self) -> None:
        c = self.c
        if c.carrier is None:
            self._error(
                "PLAN-UNKNOWN-CARRIER",
                None,
                f"the carrier {c.master.carrier} of master B/L {c.mbl} is not among the parties",
                c.planning_party,
            )
        if c.party(c.planning_party) is None:
            self._error(
                "PLAN-UNKNOWN-PLANNER",
                None,
                f"the planning party {c.planning_party} is not among the parties",
                c.planning_party,
            )

    def _check_tree(self) -> None:
        """Report HBLs with a missing parent, unknown issuer or an issuer that is not the parent's customer."""
        c = self.c
        reported_cycles: set[str] = set()
        for hbl in c.house_bills:
            parent = c.house_bill(hbl.parent) if hbl.parent is not None else None
            if hbl.parent is not None and parent is None:
                self._error(
                    "PLAN-MISSING-PARENT",
                    hbl.hbl_number,
                    f"house B/L {hbl.hbl_number} names parent {hbl.parent}, which is not in the booking",
                    hbl.issuer,
                )
                self.blocked.add(hbl.hbl_number)
            elif parent is not None and parent.customer != hbl.issuer:
                self._error(
                    "PLAN-ISSUER-MISMATCH",
                    hbl.hbl_number,
                    f"house B/L {hbl.hbl_number} is issued by {hbl.issuer}, but its parent {parent.hbl_number} "
                    f"was issued to {parent.customer}",
                    hbl.issuer,
                )
                self.blocked.add(hbl.hbl_number)
            if c.party(hbl.issuer) is None:
                self._error(
                    "PLAN-UNKNOWN-ISSUER",
                    hbl.hbl_number,
                    f"the issuer {hbl.issuer} of house B/L {hbl.hbl_number} is not among the parties",
                    c.planning_party,
                )
                self.blocked.add(hbl.hbl_number)
            cycle = self._cycle_from(hbl)
            if cycle and not reported_cycles.intersection(cycle):
                reported_cycles.update(cycle)
                self._error(
                    "PLAN-CYCLE",
                    hbl.hbl_number,
                    f"house B/Ls {' -> '.join(cycle)} name each other as parents",
                    c.planning_party,
                )
                self.blocked.update(cycle)

    def _cycle_from(self, hbl: HouseBill) -> tuple[str, ...]:
        """The HBL numbers of the cycle through ``hbl``, or () when following its parents leaves the tree."""
        path = [hbl.hbl_number]
        current = hbl
        while current.parent is not None:
            parent = self.c.house_bill(current.parent)
            if parent is None:
                return ()
            if parent.hbl_number == hbl.hbl_number:
                return tuple(path)
            if parent.hbl_number in path:
                return ()
            path.append(parent.hbl_number)
            current = parent
        return ()

    def _master_loader(self) -> str | None:
        """The issuer of the top-level HBLs; the planning party when it is a master loader.

        The seed's chain rule: a co-loader hands its cargo to a master loader and files at most the F16 under the
        master loader's F14 (an automated co-loader never files an F15). A top-level HBL issued by a co-loader has no
        master loader above it: that chain is inconsistent, a plan error for the co-loader and the lowest HBLs below
        it, which get no filings until the booking names their master loader.
        """
        c = self.c
        roots = [h for h in c.house_bills if h.parent is None]
        planner = c.party(c.planning_party)
        if planner is not None and planner.role is Role.MASTER_LOADER:
            master_loader = c.planning_party
        elif roots:
            loaders = [h.issuer for h in roots if self._role(h.issuer) is Role.MASTER_LOADER]
            master_loader = loaders[0] if loaders else roots[0].issuer
        else:
            if c.house_bills:
                self._error("PLAN-NO-ROOT", None, "no house B/L is at the top of the tree", c.planning_party)
            return None
        for root in roots:
            if self._role(root.issuer) is Role.CO_LOADER:
                self._no_master_loader(root)
            elif root.issuer != master_loader:
                self._error(
                    "PLAN-ROOT-ISSUER",
                    root.hbl_number,
                    f"top-level house B/L {root.hbl_number} is issued by {root.issuer}, "
                    f"not by the master loader {master_loader}",
                    c.planning_party,
                )
                self.blocked.add(root.hbl_number)
        role = self._role(master_loader)
        if role is Role.CO_LOADER:
            return None
        if role is not None and role is not Role.MASTER_LOADER:
            self.warnings.append(
                PlanWarning(
                    "PLAN-MASTER-LOADER-ROLE",
                    None,
                    f"{master_loader} issues the top-level house B/Ls but its role is {role.value}, not master_loader",
                )
            )
        return master_loader

    def _role(self, party_id: str) -> Role | None:
        party = self.c.party(party_id)
        return None if party is None else party.role

    def _no_master_loader(self, root: HouseBill) -> None:
        """One error per lowest HBL below a top-level HBL that a co-loader issued: no master loader files its F14."""
        self.blocked.add(root.hbl_number)
        below = [h for h in self.c.lowest_hbls() if root in self._chain_or_empty(h)]
        for hbl in below or [root]:
            self._error(
                "PLAN-NO-MASTER-LOADER",
                hbl.hbl_number,
                f"house B/L {hbl.hbl_number} sits below {root.hbl_number}, which the co-loader {root.issuer} issued "
                "with no master loader above it: a co-loader files only the F16 under a master loader's F14, never "
                "an F15; name the master loader's house B/L as the parent of "
                f"{root.hbl_number}",
                root.issuer,
            )

    def _chain_or_empty(self, hbl: HouseBill) -> tuple[HouseBill, ...]:
        try:
            return self.c.chain(hbl)
        except BookingError:
            return ()

    def _automated(self, party_id: str) -> bool:
        party: Party | None = self.c.party(party_id)
        return party is not None and party.automated_filer

    def _add(self, filing: FilingType, hbl: str, filer: str, reason: str, declarant: str | None = None) -> None:
        self.filings.append(
            PlannedFiling(
                filing=filing,
                hbl=hbl,
                filer=filer,
                supplementary_declarant=declarant,
                reason=reason,
                ours=filer == self.c.planning_party,
            )
        )

    def _plan_lowest(self, hbl: HouseBill, master_loader: str) -> None:
        c = self.c
        number = hbl.hbl_number
        try:
            chain = c.chain(hbl)
        except BookingError:
            return
        if any(h.hbl_number in self.blocked for h in chain):
            return
        if not hbl.goods:
            self._error(
                "PLAN-NO-GOODS",
                number,
                f"lowest house B/L {number} (issued by {hbl.issuer} to {hbl.customer}) has no goods",
                hbl.issuer,
            )
            return
        issuer = hbl.issuer
        if issuer == master_loader:
            self._add(
                FilingType.F15,
                number,
                master_loader,
                f"{master_loader} issued this house B/L to its own customer {hbl.customer}: "
                "the master loader files the complete house filing",
            )
            return
        if c.master.transhipment_ports:
            ports = ", ".join(c.master.transhipment_ports)
            self._add(
                FilingType.F15,
                number,
                master_loader,
                f"the cargo is transhipped and re-consolidated at {ports}: only F15 by the master loader "
                f"{master_loader} is accepted",
            )
            return
        if not self._automated(issuer):
            self._add(
                FilingType.F15,
                number,
                master_loader,
                f"{issuer} issued this lowest house B/L but does not file ICS2 data itself: the master loader "
                f"{master_loader} files the complete house filing for it",
            )
            return
        if hbl.f15_requested:
            self._add(
                FilingType.F15,
                number,
                master_loader,
                f"{issuer} asked the master loader {master_loader} to file F15 for this house B/L",
            )
            return
        above = chain[:-1]
        if len(above) > 1:
            self.warnings.append(
                PlanWarning(
                    "PLAN-MULTI-TIER",
                    number,
                    f"multi-tier chain above {number}: F15 by the master loader is recommended "
                    f"({len(above)} house B/Ls stand above it: {', '.join(h.hbl_number for h in above)})",
                )
            )
        skipped: list[str] = []
        f14_filer = master_loader
        for upper in reversed(above):
            if upper.issuer == master_loader or self._automated(upper.issuer):
                f14_filer = upper.issuer
                break
            skipped.append(upper.issuer)
        not_filing = f" ({', '.join(skipped)} does not file ICS2 data itself)" if skipped else ""
        self._add(
            FilingType.F14,
            number,
            f14_filer,
            f"{f14_filer} files the house data except seller and buyer, naming {issuer}, the issuer of this lowest "
            f"house B/L, as supplementary declarant{not_filing}",
            declarant=issuer,
        )
        self._add(
            FilingType.F16,
            number,
            issuer,
            f"{issuer} issued this lowest house B/L to {hbl.customer} and files its seller and buyer, completing "
            f"{f14_filer}'s F14",
        )
