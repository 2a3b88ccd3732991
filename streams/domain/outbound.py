"""From a booking version to the filings we send: plan, validate, render, and compare with the last version.

``process_booking`` is the whole outbound decision for one booking event, as a pure function: the booking stage
only decodes, calls it and emits what it returns. What it must remember between versions (per MBL and planning
party) is a ``PlanMemory``: the version last processed and, per filing, the LRN and content fingerprint last sent,
so that a new version re-sends only the filings whose content changed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from streams.domain.drafts import drafts_for
from streams.domain.model import Consolidation
from streams.domain.planning import FilingDraft, FilingPlan, FilingType, PlanDiff, PlannedFiling, diff_plans, plan
from streams.domain.rules import Severity
from streams.domain.validation import Finding, ValidationReport, validate
from streams.errors import RenderError
from streams.messages.render import render_filing

#: Findings that never stop a filing: a late filing is still owed to customs.
NON_BLOCKING_RULES = frozenset({"ENS-DEADLINE", "ENS-DEADLINE-NEAR"})

#: Fixed LRN and date of the canonical rendering from which a filing's content fingerprint is taken.
_CANONICAL_LRN = "FINGERPRINT"
_CANONICAL_TIME = datetime(2000, 1, 1, tzinfo=UTC)


def filing_key(planned: PlannedFiling) -> str:
    return f"{planned.filing.value}|{planned.hbl or '-'}|{planned.filer}"


@dataclass(frozen=True, slots=True)
class SentFiling:
    """What the memory keeps of a filing last sent."""

    lrn: str
    fingerprint: str


@dataclass(frozen=True, slots=True)
class PlanMemory:
    """The last version processed for one (MBL, planning party) and the filings sent for it."""

    version: int
    filings: tuple[PlannedFiling, ...] = ()
    sent: Mapping[str, SentFiling] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "filings": [
                {
                    "filing": f.filing.value,
                    "hbl": f.hbl,
                    "filer": f.filer,
                    "supplementary_declarant": f.supplementary_declarant,
                    "ours": f.ours,
                }
                for f in self.filings
            ],
            "sent": {k: {"lrn": s.lrn, "fingerprint": s.fingerprint} for k, s in self.sent.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PlanMemory:
        return cls(
            version=int(data["version"]),
            filings=tuple(
                PlannedFiling(
                    FilingType(f["filing"]), f.get("hbl"), f["filer"], f.get("supplementary_declarant"), "", f["ours"]
                )
                for f in data.get("filings", [])
            ),
            sent={k: SentFiling(v["lrn"], v["fingerprint"]) for k, v in data.get("sent", {}).items()},
        )


@dataclass(frozen=True, slots=True)
class DraftOutcome:
    """One filing of ours: its findings, and its XML when nothing blocks it."""

    draft: FilingDraft
    findings: tuple[Finding, ...]
    xml: bytes | None
    """The XML to send; None when blocked or unchanged since the version that was sent."""
    fingerprint: str | None
    send: bool
    """False when blocked, or when the same content was already sent for an earlier version."""

    @property
    def blocked(self) -> bool:
        return bool(self.blocking)

    @property
    def blocking(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if blocks(f))


@dataclass(frozen=True, slots=True)
class BookingOutcome:
    consolidation: Consolidation
    plan: FilingPlan
    report: ValidationReport
    drafts: tuple[DraftOutcome, ...] = ()
    diff: PlanDiff | None = None
    stale: bool = False
    """True when an equal or newer version was already processed: nothing is sent."""
    memory: PlanMemory | None = None

    @property
    def to_send(self) -> tuple[DraftOutcome, ...]:
        return tuple(d for d in self.drafts if d.send)


def blocks(finding: Finding) -> bool:
    return finding.severity is Severity.ERROR and finding.rule_id not in NON_BLOCKING_RULES


def findings_for(report: ValidationReport, planned: PlannedFiling) -> tuple[Finding, ...]:
    """The findings on data a filing carries: its HBL's, the consolidation-wide ones, and its own."""
    return tuple(f for f in report if f.hbl in (None, planned.hbl) and (f.filing is None or f.filing is planned.filing))


def fingerprint(draft: FilingDraft) -> str:
    """A hash of what the filing says, without its LRN and issue date, to tell whether a new version changed it."""
    canonical = FilingDraft(draft.consolidation, draft.planned, _CANONICAL_LRN, _CANONICAL_TIME)
    return hashlib.sha256(render_filing(canonical)).hexdigest()


def process_booking(consolidation: Consolidation, previous: PlanMemory | None, now: datetime) -> BookingOutcome:
    """Plan, validate and render the filings of ours for one booking version."""
    filing_plan = plan(consolidation)
    report = validate(consolidation, filing_plan, now=now)
    if previous is not None and previous.version >= consolidation.version:
        return BookingOutcome(consolidation, filing_plan, report, stale=True, memory=previous)
    diff = None
    if previous is not None:
        old = FilingPlan(consolidation.mbl, consolidation.planning_party, previous.version, previous.filings)
        diff = diff_plans(old, filing_plan)
    outcomes: list[DraftOutcome] = []
    sent: dict[str, SentFiling] = {}
    for draft in drafts_for(consolidation, filing_plan, now):
        key = filing_key(draft.planned)
        findings = findings_for(report, draft.planned)
        if any(blocks(f) for f in findings):
            outcomes.append(DraftOutcome(draft, findings, None, None, send=False))
            continue
        try:
            xml = render_filing(draft)
            print_ = fingerprint(draft)
        except RenderError as exc:
            problem = Finding(
                rule_id="ENS-RENDER",
                severity=Severity.ERROR,
                path="$",
                message=f"the {draft.planned.filing.value} cannot be written as ICS2 XML: {exc}",
                party=draft.planned.filer,
                hbl=draft.planned.hbl,
                filing=draft.planned.filing,
            )
            outcomes.append(DraftOutcome(draft, (*findings, problem), None, None, send=False))
            continue
        before = previous.sent.get(key) if previous is not None else None
        if before is not None and before.fingerprint == print_:
            kept = FilingDraft(draft.consolidation, draft.planned, before.lrn, draft.issued_at)
            outcomes.append(DraftOutcome(kept, findings, None, print_, send=False))
            sent[key] = before
        else:
            outcomes.append(DraftOutcome(draft, findings, xml, print_, send=True))
            sent[key] = SentFiling(draft.lrn, print_)
    memory = PlanMemory(consolidation.version, filing_plan.filings, sent)
    return BookingOutcome(consolidation, filing_plan, report, tuple(outcomes), diff, memory=memory)
