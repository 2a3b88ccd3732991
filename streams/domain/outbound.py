"""From a booking version to the filings we send: plan, validate, render, and compare with the last version.

``process_booking`` is the whole outbound decision for one booking event, as a pure function: the booking stage
only decodes, calls it and emits what it returns. What it must remember between versions (per MBL and planning
party) is a ``PlanMemory``: the version last processed and, per filing, the LRN and content fingerprint last sent,
so that a new version re-sends only the filings whose content changed.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
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

_ISSUE_DATE = re.compile(rb"<([\w.-]+:)?documentIssueDate>[^<]*<")


def filing_key(planned: PlannedFiling) -> str:
    return f"{planned.filing.value}|{planned.hbl or '-'}|{planned.filer}"


@dataclass(frozen=True, slots=True)
class SentFiling:
    """What the memory keeps of a filing last sent: its LRN, content fingerprint and the version that sent it."""

    lrn: str
    fingerprint: str
    version: int = 1


@dataclass(frozen=True, slots=True)
class PlanMemory:
    """The last version processed for one (MBL, planning party), the filings sent for it, and the plan before it.

    The plan before it (``prior_*``) lets a redelivered version (a replay after a crash) be processed again to the
    same outputs: same filings re-sent, same diff, same alerts, all deduplicated downstream by their identity.
    """

    version: int
    filings: tuple[PlannedFiling, ...] = ()
    sent: Mapping[str, SentFiling] = field(default_factory=dict)
    prior_version: int | None = None
    prior_filings: tuple[PlannedFiling, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "filings": _filings_json(self.filings),
            "sent": {
                k: {"lrn": s.lrn, "fingerprint": s.fingerprint, "version": s.version} for k, s in self.sent.items()
            },
            "prior_version": self.prior_version,
            "prior_filings": _filings_json(self.prior_filings),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PlanMemory:
        return cls(
            version=int(data["version"]),
            filings=_filings(data.get("filings", [])),
            sent={
                k: SentFiling(v["lrn"], v["fingerprint"], int(v.get("version", 1)))
                for k, v in data.get("sent", {}).items()
            },
            prior_version=data.get("prior_version"),
            prior_filings=_filings(data.get("prior_filings", [])),
        )


def _filings_json(filings: tuple[PlannedFiling, ...]) -> list[dict[str, Any]]:
    return [
        {
            "filing": f.filing.value,
            "hbl": f.hbl,
            "filer": f.filer,
            "supplementary_declarant": f.supplementary_declarant,
            "ours": f.ours,
        }
        for f in filings
    ]


def _filings(data: list[Mapping[str, Any]]) -> tuple[PlannedFiling, ...]:
    return tuple(
        PlannedFiling(
            FilingType(f["filing"]), f.get("hbl"), f["filer"], f.get("supplementary_declarant"), "", f["ours"]
        )
        for f in data
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
    """True when a newer version was already processed: nothing is sent. An equal version is a redelivery."""
    memory: PlanMemory | None = None

    @property
    def to_send(self) -> tuple[DraftOutcome, ...]:
        return tuple(d for d in self.drafts if d.send)


def blocks(finding: Finding) -> bool:
    return finding.severity is Severity.ERROR and finding.rule_id not in NON_BLOCKING_RULES


def findings_for(report: ValidationReport, planned: PlannedFiling) -> tuple[Finding, ...]:
    """The findings on data a filing carries: its HBL's, the consolidation-wide ones, and its own."""
    return tuple(f for f in report if f.hbl in (None, planned.hbl) and (f.filing is None or f.filing is planned.filing))


def fingerprint(draft: FilingDraft, xml: bytes) -> str:
    """A hash of what the filing says, without its LRN and issue date, to tell whether a new version changed it."""
    canonical = _ISSUE_DATE.sub(rb"<\1documentIssueDate>-<", xml.replace(draft.lrn.encode(), b"-"))
    return hashlib.sha256(canonical).hexdigest()


def process_booking(consolidation: Consolidation, previous: PlanMemory | None, now: datetime) -> BookingOutcome:
    """Plan, validate and render the filings of ours for one booking version.

    The filings are issued at the booking version's ``occurred_at``, not at ``now``: the same booking always
    renders the same XML, so a replay after a crash sends byte-identical filings that the gateway recognises.
    ``now`` only serves the deadline rules.
    """
    filing_plan = plan(consolidation)
    report = validate(consolidation, filing_plan, now=now)
    if previous is not None and previous.version > consolidation.version:
        return BookingOutcome(consolidation, filing_plan, report, stale=True, memory=previous)
    redelivered = previous is not None and previous.version == consolidation.version
    base_version = previous.prior_version if previous and redelivered else previous.version if previous else None
    base_filings = (previous.prior_filings if redelivered else previous.filings) if previous else ()
    diff = None
    if base_version is not None:
        old = FilingPlan(consolidation.mbl, consolidation.planning_party, base_version, base_filings)
        diff = diff_plans(old, filing_plan)
    outcomes: list[DraftOutcome] = []
    sent: dict[str, SentFiling] = {}
    for draft in drafts_for(consolidation, filing_plan, consolidation.occurred_at):
        key = filing_key(draft.planned)
        findings = findings_for(report, draft.planned)
        if any(blocks(f) for f in findings):
            outcomes.append(DraftOutcome(draft, findings, None, None, send=False))
            continue
        try:
            xml = render_filing(draft)
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
        print_ = fingerprint(draft, xml)
        before = previous.sent.get(key) if previous is not None else None
        if before is not None and before.fingerprint == print_ and before.version < consolidation.version:
            kept = FilingDraft(draft.consolidation, draft.planned, before.lrn, draft.issued_at)
            outcomes.append(DraftOutcome(kept, findings, None, print_, send=False))
            sent[key] = before
        else:
            outcomes.append(DraftOutcome(draft, findings, xml, print_, send=True))
            sent[key] = SentFiling(draft.lrn, print_, consolidation.version)
    memory = PlanMemory(consolidation.version, filing_plan.filings, sent, base_version, base_filings)
    return BookingOutcome(consolidation, filing_plan, report, tuple(outcomes), diff, memory=memory)
