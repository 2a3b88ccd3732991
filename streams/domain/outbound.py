"""From a booking version to the filings we send: plan, validate, render, and compare with the last version.

``decide_booking`` is the whole outbound decision for one booking event, as a pure function: the booking stage
only decodes, calls it with the ICS2 XML renderer (``streams.pipeline.stages.booking.process_booking``) and emits
what it returns. The renderer is a parameter so that the domain never reaches up into ``streams.messages``. What it
must remember between versions (per MBL and planning party) is a ``PlanMemory``: the version last processed and, per
filing, the LRN and content fingerprint last sent.

A new version never files again what customs already holds: a filing whose content changed is amended (IE3A1x,
under its own LRN, against the MRN the original LRN was registered under); one the plan no longer needs is
invalidated (IE3Q04); one whose identity changed (a particular an amendment cannot change, see
``streams.simulator.amendments``), or whose house consignment another of our filings takes over, is invalidated and
the new filing follows it (``ChangeKind.REPLACE``). Only customs' MRN can complete these requests, so they leave as
``FilingChangeRequest``s that the correlate stage completes once the ledger knows the MRN.

The memory keeps, per filing, the LRN of its latest request: an amendment's own LRN once amended. The correlate stage
gives that LRN's ledger entry the MRN the amendment was sent against, or, when customs had rejected the filing and
the amendment's content was filed anew under that LRN, the MRN of the re-filed filing. Either way the next version
amends (or withdraws) the filing customs holds now, never the rejected one.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from streams.domain.drafts import drafts_for
from streams.domain.model import Consolidation
from streams.domain.planning import (
    ChangeKind,
    FilingDraft,
    FilingPlan,
    FilingType,
    PlanDiff,
    PlannedFiling,
    diff_plans,
    plan,
)
from streams.domain.rules import Severity
from streams.domain.validation import Finding, ValidationReport, validate
from streams.errors import RenderError

#: Findings that never stop a filing: a late filing is still owed to customs.
NON_BLOCKING_RULES = frozenset({"ENS-DEADLINE", "ENS-DEADLINE-NEAR"})

#: Writes one filing draft as the XML sent to customs; raises ``RenderError`` when it cannot.
Renderer = Callable[[FilingDraft], bytes]

_ISSUE_DATE = re.compile(rb"<([\w.-]+:)?documentIssueDate>[^<]*<")
_DATE_NAME = b"documentIssueDate>"


def filing_key(planned: PlannedFiling) -> str:
    return f"{planned.filing.value}|{planned.hbl or '-'}|{planned.filer}"


@dataclass(frozen=True, slots=True)
class SentFiling:
    """What the memory keeps of a filing last sent: its LRN, content fingerprint and the version that sent it."""

    lrn: str
    fingerprint: str
    version: int = 1
    identity: str = ""
    """The particulars no amendment may change (``identity``); empty for memories written before it was kept."""


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
    prior_sent: Mapping[str, SentFiling] | None = None
    """What was sent before this version: a redelivered version compares with it again. None in older memories."""

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "filings": _filings_json(self.filings),
            "sent": _sent_json(self.sent),
            "prior_version": self.prior_version,
            "prior_filings": _filings_json(self.prior_filings),
            "prior_sent": None if self.prior_sent is None else _sent_json(self.prior_sent),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PlanMemory:
        prior_sent = data.get("prior_sent")
        return cls(
            version=int(data["version"]),
            filings=_filings(data.get("filings", [])),
            sent=_sent(data.get("sent", {})),
            prior_version=data.get("prior_version"),
            prior_filings=_filings(data.get("prior_filings", [])),
            prior_sent=None if prior_sent is None else _sent(prior_sent),
        )


def _sent_json(sent: Mapping[str, SentFiling]) -> dict[str, Any]:
    return {
        k: {"lrn": s.lrn, "fingerprint": s.fingerprint, "version": s.version, "identity": s.identity}
        for k, s in sent.items()
    }


def _sent(data: Mapping[str, Any]) -> dict[str, SentFiling]:
    return {
        k: SentFiling(v["lrn"], v["fingerprint"], int(v.get("version", 1)), v.get("identity", ""))
        for k, v in data.items()
    }


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
    """False when blocked, when the same content was already sent for an earlier version, or when it goes out
    through a ``FilingChangeRequest`` (an amendment, or a filing that follows an invalidation)."""

    @property
    def blocked(self) -> bool:
        return bool(self.blocking)

    @property
    def blocking(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if blocks(f))


@dataclass(frozen=True, slots=True)
class FilingChangeRequest:
    """A new version's request about a filing of ours that customs holds, completed with its MRN downstream."""

    kind: ChangeKind
    planned: PlannedFiling
    """The filing customs holds, as the plan that sent it planned it."""
    lrn: str
    """Its LRN: the ledger entry under it learns the MRN customs registered it under."""
    reason: str
    amendment: DraftOutcome | None = None
    """``amend``: the filing's new content; its draft's LRN is the amendment's own LRN."""
    replacements: tuple[DraftOutcome, ...] = ()
    """``replace``: the filings of the new version that go out right after the invalidation, in order."""

    @property
    def hbl(self) -> str | None:
        return self.planned.hbl


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
    changes: tuple[FilingChangeRequest, ...] = ()
    withdrawn: tuple[PlannedFiling, ...] = ()
    """Other parties' filings the new plan no longer needs: their filers are told to withdraw them."""

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
    return hashlib.sha256(_without_issue_date(xml.replace(draft.lrn.encode(), b"-"))).hexdigest()


def _without_issue_date(xml: bytes) -> bytes:
    """``_ISSUE_DATE`` blanked as ``re.sub`` would, but tried only where the element's name occurs: the pattern,
    tried at every ``<`` of a filing, cost more than hashing it."""
    parts: list[bytes] = []
    done = 0
    at = xml.find(_DATE_NAME)
    while at >= 0:
        start = xml.rfind(b"<", done, at)  # a match opens at the last "<" before the name, after the last match
        match = _ISSUE_DATE.match(xml, start) if start >= 0 else None
        if match is not None:
            parts += (xml[done:start], b"<", match.group(1) or b"", b"documentIssueDate>-<")
            done = match.end()
        at = xml.find(_DATE_NAME, max(at + 1, done))
    parts.append(xml[done:])
    return b"".join(parts)


def identity(draft: FilingDraft) -> str:
    """The particulars of a filing that an amendment cannot change beyond its key (type, HBL, filer): the master
    B/L and carrier that link it, and the supplementary declarant an F14 names."""
    c = draft.consolidation
    carrier = c.party(c.master.carrier)
    declarant = c.party(draft.planned.supplementary_declarant or "")
    return "|".join(
        (c.master.mbl_number, carrier.eori or "" if carrier else "", declarant.eori or "" if declarant else "")
    )


def _linking_key(identity_: str) -> str:
    """The master B/L and carrier part of an ``identity``: the key customs links an ENS's filings by."""
    return identity_.rsplit("|", 1)[0]


def decide_booking(
    consolidation: Consolidation, previous: PlanMemory | None, now: datetime, render: Renderer
) -> BookingOutcome:
    """Plan, validate and render (with ``render``) the filings of ours for one booking version, and what it
    changes for customs.

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
    base_sent: Mapping[str, SentFiling] = {}
    if previous is not None:
        base_sent = previous.prior_sent if redelivered and previous.prior_sent is not None else previous.sent
    diff = None
    if base_version is not None:
        diff = diff_plans(
            FilingPlan(consolidation.mbl, consolidation.planning_party, base_version, base_filings), filing_plan
        )
    outcomes: list[DraftOutcome] = []
    sent: dict[str, SentFiling] = {}
    changes: list[FilingChangeRequest] = []
    base_planned = {filing_key(f): f for f in base_filings}
    for draft in drafts_for(consolidation, filing_plan, consolidation.occurred_at):
        key = filing_key(draft.planned)
        findings = findings_for(report, draft.planned)
        if any(blocks(f) for f in findings):
            outcomes.append(DraftOutcome(draft, findings, None, None, send=False))
            if key in base_sent:
                sent[key] = base_sent[key]
            continue
        try:
            xml = render(draft)
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
            if key in base_sent:
                sent[key] = base_sent[key]
            continue
        print_, ident = fingerprint(draft, xml), identity(draft)
        before = base_sent.get(key)
        if before is None or before.version >= consolidation.version:
            outcomes.append(DraftOutcome(draft, findings, xml, print_, send=True))
            sent[key] = SentFiling(draft.lrn, print_, consolidation.version, ident)
        elif before.fingerprint == print_:
            kept = FilingDraft(draft.consolidation, draft.planned, before.lrn, draft.issued_at)
            outcomes.append(DraftOutcome(kept, findings, None, print_, send=False))
            sent[key] = before
        elif before.identity and before.identity != ident:
            old = base_planned.get(key, draft.planned)
            if _linking_key(before.identity) != _linking_key(ident):
                # Another linking key is another ENS: the new filing goes first, the old one is withdrawn after it.
                outcomes.append(DraftOutcome(draft, findings, xml, print_, send=True))
                reason = f"the {old.filing.value} is filed anew under a new master B/L or carrier, {draft.lrn}"
                changes.append(FilingChangeRequest(ChangeKind.INVALIDATE, old, before.lrn, reason))
            else:
                outcome = DraftOutcome(draft, findings, xml, print_, send=False)
                outcomes.append(outcome)
                reason = f"the {old.filing.value} names particulars no amendment may change; it is filed anew"
                request = FilingChangeRequest(ChangeKind.REPLACE, old, before.lrn, reason, replacements=(outcome,))
                changes.append(request)
            sent[key] = SentFiling(draft.lrn, print_, consolidation.version, ident)
        else:
            outcome = DraftOutcome(draft, findings, xml, print_, send=False)
            outcomes.append(outcome)
            reason = f"booking version {consolidation.version} changes its content"
            changes.append(FilingChangeRequest(ChangeKind.AMEND, draft.planned, before.lrn, reason, amendment=outcome))
            # The next version's requests go under the amendment's LRN: its ledger entry learns the registered
            # filing's MRN, or, customs having rejected the filing, it is the LRN the filing was re-filed under.
            sent[key] = SentFiling(draft.lrn, print_, consolidation.version, ident)
    changes += _withdrawals(diff, base_sent, outcomes, consolidation.version)
    withdrawn = tuple(f for f in diff.removed if not f.ours) if diff is not None else ()
    memory = PlanMemory(consolidation.version, filing_plan.filings, sent, base_version, base_filings, base_sent)
    return BookingOutcome(
        consolidation,
        filing_plan,
        report,
        tuple(outcomes),
        diff,
        memory=memory,
        changes=tuple(changes),
        withdrawn=withdrawn,
    )


def _withdrawals(
    diff: PlanDiff | None, base_sent: Mapping[str, SentFiling], outcomes: list[DraftOutcome], version: int
) -> list[FilingChangeRequest]:
    """Our filings the new plan drops: invalidated, and the new filings of ours for the same house consignment
    (say an F15 that takes over from an F14) held back to follow the invalidation."""
    if diff is None:
        return []
    requests: list[FilingChangeRequest] = []
    for old in diff.removed:
        before = base_sent.get(filing_key(old))
        if not old.ours or before is None:
            continue
        followers = [
            i
            for i, d in enumerate(outcomes)
            if d.send and old.hbl is not None and d.draft.planned.hbl == old.hbl and d.xml is not None
        ]
        held = tuple(replace(outcomes[i], send=False) for i in followers)
        for i, outcome in zip(followers, held, strict=True):
            outcomes[i] = outcome
        if held:
            taken = ", ".join(f"{d.draft.planned.filing.value} by {d.draft.planned.filer}" for d in held)
            reason = f"booking version {version} files the house consignment {old.hbl} as {taken}"
            requests.append(FilingChangeRequest(ChangeKind.REPLACE, old, before.lrn, reason, replacements=held))
        else:
            where = f"house B/L {old.hbl}" if old.hbl else "the master level"
            reason = f"booking version {version} no longer needs this {old.filing.value} for {where}"
            requests.append(FilingChangeRequest(ChangeKind.INVALIDATE, old, before.lrn, reason))
    return requests
