"""History rebuilt from the audit trail: per consolidation, a timeline and the ENS state, plus the integrity verdict.

The input is the ``AuditRecord``s in the order they were stored (read from Kafka or from an archive), so replaying the
same records twice gives the same report, byte for byte: nothing here reads a clock. The ENS state is rebuilt by
re-applying the recorded ENS events with the lifecycle tracker's own function, each at the time the event was made;
only the times of its history lines can differ from the live state's (the worker stamps them when it processes the
event), which ``comparable_state`` leaves out.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from operator import itemgetter
from typing import Any

from streams.audit.completeness import UNCHECKED, Completeness, Sources, check, claims_of
from streams.audit.entries import UNATTRIBUTED
from streams.audit.parallel import examine_parallel, in_shares, share_of, worth_forking
from streams.audit.signing import Keyring
from streams.audit.trail import ChainHead, Examination
from streams.contracts.events import ACK, CHANGE_SENT, decode_lifecycle_event
from streams.domain.dates import format_datetime, parse_datetime
from streams.domain.events import Ack
from streams.domain.lifecycle import EnsState, apply
from streams.errors import InputError

REPORT_FORMAT = "ics2-audit-replay/1"
#: Audit kinds that are ENS lifecycle events, re-applied in recorded order to rebuild the ENS state.
LIFECYCLE_KINDS = frozenset({"plan", "filing_sent", "filing_blocked", "notification", "tick", "ack"})
HOLD_KINDS = frozenset({"do_not_load", "control", "control_aeo", "rfi", "rfs"})
LANES = ("booking", "plan", "filing", "answer", "hold", "deadline", "alert", "error")


@dataclass(frozen=True, slots=True)
class ReplayFilter:
    """Which history to rebuild; every filter given must hold. Times compare with each entry's ``occurred_at``."""

    mbl: str | None = None
    hbl: str | None = None
    party: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "mbl": self.mbl,
            "hbl": self.hbl,
            "party": self.party,
            "since": None if self.since is None else format_datetime(self.since),
            "until": None if self.until is None else format_datetime(self.until),
        }

    def in_time(self, at: str) -> bool:
        if not at or (self.since is None and self.until is None):
            return True
        when = parse_datetime(at)
        return (self.since is None or when >= self.since) and (self.until is None or when <= self.until)


def _payload(record: Mapping[str, Any]) -> dict[str, Any]:
    """The stored payload, or a marker when it is no longer JSON (a tampered record must not stop the replay)."""
    try:
        data = json.loads(record["payload"])
    except ValueError:
        return {"occurred_at": record["recorded_at"], "record": {}, "source": "", "unreadable": True}
    return data if isinstance(data, dict) else {"occurred_at": record["recorded_at"], "record": {}, "source": ""}


def _item(record: Mapping[str, Any], payload: Mapping[str, Any]) -> dict[str, Any]:
    """One timeline item (``payload``: the record's, read by ``_payload``): lane, title, the HBL and parties it
    concerns, and the facts worth keeping in a report."""
    data: dict[str, Any] = payload.get("record") or {}
    kind = record["kind"]
    item: dict[str, Any] = {
        "sequence": int(record["sequence"]),
        "kind": kind,
        "at": payload.get("occurred_at") or record["recorded_at"],
        "recorded_at": record["recorded_at"],
        "source": payload.get("source", ""),
        "hash": record["hash"],
        "hbls": [],
        "parties": [],
        "lane": "error",
        "title": kind,
        "details": {},
    }
    describe = _DESCRIBERS.get(kind)
    if describe is not None and not payload.get("unreadable"):
        try:
            describe(item, data)
        except (KeyError, TypeError, ValueError, AttributeError):
            item["title"] = f"{kind} (unreadable)"
    item["hbls"] = sorted({h for h in item["hbls"] if h})
    item["parties"] = sorted({p for p in item["parties"] if p})
    return item


def _booking(item: dict[str, Any], data: dict[str, Any]) -> None:
    item.update(lane="booking", title=f"booking version {data.get('version', 1)} from {data['planning_party']}")
    item["hbls"] = [h["hbl_number"] for h in data.get("house_bills", [])]
    item["parties"] = [data["planning_party"]]
    item["details"] = {"event_id": data["event_id"], "event_type": data["event_type"], "version": data.get("version")}


def _draft(item: dict[str, Any], data: dict[str, Any]) -> None:
    what = data["hbl"] or data["mbl"]
    item.update(lane="plan", title=f"{data['filing']} for {what} by {data['filer']}: {data['status']}")
    item["hbls"] = [data["hbl"]]
    item["parties"] = [data["filer"], data.get("supplementary_declarant")]
    item["details"] = {
        k: data.get(k) for k in ("lrn", "ours", "reason", "status", "version", "supplementary_declarant", "findings")
    }


def _filing(item: dict[str, Any], data: dict[str, Any]) -> None:
    what = data["hbl"] or data["mbl"]
    item.update(lane="filing", title=f"{data['message_type']} for {what} sent as {data['lrn']}")
    item["hbls"] = [data["hbl"]]
    item["parties"] = [data["filer_party_id"], data.get("supplementary_declarant")]
    item["details"] = {
        k: data.get(k) for k in ("lrn", "message_id", "message_type", "xml_sha256", "booking_version", "filer_eori")
    }


def _lifecycle(item: dict[str, Any], data: dict[str, Any]) -> None:
    payload = data["payload"]
    kind = data["type"]
    item["details"] = {"event_id": data["event_id"]}
    if kind == "planned":
        item.update(lane="plan", title=f"plan of {payload['planning_party']}: {len(payload['filings'])} filings")
        item["parties"] = [payload["planning_party"]]
        item["hbls"] = [f["record"]["hbl"] for f in payload["filings"]]
        item["details"]["deadline"] = payload.get("deadline")
    elif kind in ("filing_sent", "filing_blocked"):
        record = payload["record"]
        state = "sent" if kind == "filing_sent" else "blocked by validation"
        item.update(lane="filing", title=f"{record['filing']} for {record['hbl'] or record['mbl']} {state}")
        item["hbls"], item["parties"] = [record["hbl"]], [record["filer"]]
        item["details"]["lrn"] = record.get("lrn")
    elif kind == "notification":
        note, record = payload["notification"], payload["record"]
        lane = "hold" if note["kind"] in HOLD_KINDS else "answer"
        item.update(lane=lane, title=f"{note['message_type']} ({note['kind']}) for {record['hbl'] or record['mbl']}")
        item["hbls"] = [record["hbl"], note.get("hbl"), *note.get("hbls", [])]
        item["parties"] = [record["filer"], record.get("planning_party")]
        item["details"].update(
            {k: note.get(k) for k in ("message_type", "kind", "lrn", "mrn", "referral_reference", "deadline")},
            errors=note.get("errors", []),
            raw_sha256=note.get("raw_sha256"),
        )
    elif isinstance(payload.get(CHANGE_SENT), dict):
        change = payload[CHANGE_SENT]
        sent = change.get("message_type") or "nothing sent, not registered"
        what = f"{change['filing']} for {change.get('hbl') or data['mbl']}"
        item.update(lane="filing", title=f"{change['kind']} of {what} ({change['lrn']}): {sent}")
        item["hbls"], item["parties"] = [change.get("hbl")], [change.get("filer")]
        item["details"].update({k: change.get(k) for k in ("kind", "lrn", "mrn", "message_type")})
    elif isinstance(payload.get(ACK), dict):
        ack = payload[ACK]
        item.update(lane="alert", title=f"alert {ack.get('alert_id')} acknowledged by {ack.get('by')}")
        item["parties"] = [ack.get("by")]
        item["details"].update(alert_id=ack.get("alert_id"), by=ack.get("by"))
    else:
        item.update(lane="deadline", title="deadline watchdog tick")


def _alert(item: dict[str, Any], data: dict[str, Any]) -> None:
    item.update(lane="alert", title=f"to {data['party_id']}: {data['title']}")
    item["hbls"], item["parties"] = [data.get("hbl")], [data["party_id"], data.get("party_at_fault")]
    item["details"] = {
        k: data.get(k)
        for k in ("alert_id", "party_id", "urgency", "action", "notification_message_type", "deadline", "message")
    }


def _dead_letter(item: dict[str, Any], data: dict[str, Any]) -> None:
    item.update(lane="error", title=f"dead letter from {data['stage']}: {data['reason']}")
    item["parties"] = [data.get("responsible_party")]
    item["details"] = {k: data.get(k) for k in ("stage", "reason", "source_topic", "source_partition", "source_offset")}


_DESCRIBERS = {
    "booking": _booking,
    "draft": _draft,
    "filing": _filing,
    "plan": _lifecycle,
    "filing_sent": _lifecycle,
    "filing_blocked": _lifecycle,
    "notification": _lifecycle,
    "tick": _lifecycle,
    "ack": _lifecycle,
    "alert": _alert,
    "dead_letter": _dead_letter,
}


def ens_state(
    records: Sequence[Mapping[str, Any]],
    until: datetime | None = None,
    payloads: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any] | None:
    """The ENS state after the recorded lifecycle events (up to ``until``), applied as the tracker applied them;
    ``payloads``, when given, are the records' payloads already read (each is parsed once per consolidation)."""
    state: EnsState | None = None
    for index, record in enumerate(records):
        if record["kind"] not in LIFECYCLE_KINDS:
            continue
        data = (_payload(record) if payloads is None else payloads[index]).get("record") or {}
        try:
            at = parse_datetime(data["at"])
            if until is not None and at > until:
                continue
            event = decode_lifecycle_event(data["type"], data["mbl"], data["payload"])
            if state is None and isinstance(event, Ack):
                continue
            state = apply(state, event, at).state
        except (KeyError, TypeError, ValueError, InputError):
            continue
    return None if state is None else state.to_json()


def comparable_state(state: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """An ENS state without what the tracker stamps with its own clock, so a rebuilt and a live state compare.

    The worker stamps history lines and the raising of open alerts when it processes an event; the replay can only
    use the time the event was made. A record redelivered to the worker after a rebalance (at-least-once) logs its
    history line again, while the trail chains each source record once: history lines compare without repeats.
    Everything else, including escalation levels and acknowledgements, must match.
    """
    if state is None:
        return None
    comparable = {**state, "history": list(dict.fromkeys(line[-1] for line in state.get("history", [])))}
    if "open_alerts" in state:
        comparable["open_alerts"] = [{k: v for k, v in a.items() if k != "raised_at"} for a in state["open_alerts"]]
    return comparable


def _deadlines(items: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    found: dict[tuple[str, str], None] = {}
    for item in items:
        details = item["details"]
        if item["kind"] == "plan" and details.get("deadline"):
            found[(details["deadline"], "ENS lodging deadline")] = None
        elif item["kind"] == "notification" and details.get("deadline"):
            reference = details.get("referral_reference")
            what = f"referral {reference} answer due" if reference else f"{details.get('kind')} deadline"
            found[(details["deadline"], what)] = None
    return [{"at": at, "what": what} for at, what in sorted(found)]


def _selected(item: Mapping[str, Any], filters: ReplayFilter) -> bool:
    if filters.hbl is not None and item["hbls"] and filters.hbl not in item["hbls"]:
        return False
    if filters.party is not None and filters.party not in item["parties"]:
        return False
    return filters.in_time(item["at"])


def consolidation(mbl: str, records: Sequence[Mapping[str, Any]], filters: ReplayFilter) -> dict[str, Any] | None:
    """The history of one MBL, or None when the filters leave nothing of it.

    An HBL filter keeps the items about that HBL and those about the whole consolidation; the ENS state is always
    the whole consolidation's, since an HBL's state depends on the master level too.
    """
    payloads = [_payload(r) for r in records]
    items = [_item(r, p) for r, p in zip(records, payloads, strict=True)]
    mentioned = {h for i in items for h in i["hbls"]}
    if filters.hbl is not None and filters.hbl not in mentioned:
        return None
    shown = [i for i in items if _selected(i, filters)]
    if not shown:
        return None
    alerts: dict[str, list[dict[str, Any]]] = {}
    for item in shown:
        if item["kind"] == "alert":
            alerts.setdefault(item["details"]["party_id"], []).append(
                {k: item[k] for k in ("sequence", "at", "title")} | {"urgency": item["details"]["urgency"]}
            )
    state = ens_state(records, filters.until, payloads)
    return {
        "mbl": mbl,
        "records": len(records),
        "head": {"sequence": int(records[-1]["sequence"]), "hash": records[-1]["hash"]},
        "hbls": sorted(mentioned),
        "timeline": shown,
        "deadlines": _deadlines(items),
        "alerts_by_party": alerts,
        "ens_state": state,
    }


def _consolidations(
    mbls: Sequence[str], chains: Mapping[str, Sequence[Mapping[str, Any]]], filters: ReplayFilter, workers: int
) -> list[dict[str, Any]]:
    """The history of each MBL (in the order given), built in ``workers`` processes: each is a pure function of its
    chain, so where it is built changes nothing."""
    if workers <= 1:
        built = [consolidation(m, chains[m], filters) for m in mbls]
        return [c for c in built if c is not None]

    def share(index: int) -> list[tuple[int, dict[str, Any] | None]]:
        return [(n, consolidation(m, chains[m], filters)) for n, m in enumerate(mbls) if share_of(m, workers) == index]

    parts = in_shares(share, workers)
    return [c for _, c in sorted((p for part in parts for p in part), key=itemgetter(0)) if c is not None]


def build_report(
    records: Iterable[Mapping[str, Any]],
    filters: ReplayFilter | None = None,
    heads: Mapping[str, ChainHead] | None = None,
    keys: Keyring | None = None,
    accept_unsigned: bool = False,
    workers: int | None = None,
    sources: Sources | None = None,
) -> dict[str, Any]:
    """The whole replay: the integrity of every chain read, then each selected consolidation's history.

    Records stored twice byte for byte (chained again after a crash) are counted as duplicates and replayed once.
    With ``keys`` every record must be signed by one of them (``streams.audit.trail.examine``); without, signatures
    are not checked and the report says so. With ``sources`` (the recorded topics as read), every source record must
    be chained once and every record true to its source (``streams.audit.completeness``); without, the report says
    completeness was not checked. The chains are verified, and the histories built, in ``workers`` processes
    (default: one per CPU; ``streams.audit.parallel``), which changes nothing in the report.
    """
    filters = filters or ReplayFilter()
    stored = list(records)
    found = examine_parallel(stored, heads, keys, accept_unsigned, workers)
    chains = by_chain(found.unique)
    selected = selected_chains(chains, filters)
    workers = worth_forking(sum(len(chains[m]) for m in selected), workers)
    consolidations = _consolidations(selected, chains, filters, workers)
    complete = None if sources is None else check([claims_of(found.unique)], sources)
    return assemble_report(filters, found, len(stored), len(chains), keys, consolidations, complete)


def by_chain(records: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """The records of each MBL's chain, in the order given."""
    chains: dict[str, list[Mapping[str, Any]]] = {}
    for record in records:
        chains.setdefault(record["mbl"], []).append(record)
    return chains


def selected_chains(chains: Iterable[str], filters: ReplayFilter) -> list[str]:
    """The MBLs whose history the report shows, sorted (the chain of unattributed records is no consolidation)."""
    return [m for m in sorted(chains) if (filters.mbl is None or m == filters.mbl) and m != UNATTRIBUTED]


def assemble_report(
    filters: ReplayFilter,
    found: Examination,
    records: int,
    chains: int,
    keys: Keyring | None,
    consolidations: list[dict[str, Any]],
    completeness: Completeness | None = None,
) -> dict[str, Any]:
    """The report from the chains' findings (``found.unique`` is not read), what completeness found when it was
    checked, and the consolidations' histories."""
    lacking = completeness is not None and bool(completeness.lacks)
    return {
        "format": REPORT_FORMAT,
        "filters": filters.to_json(),
        "integrity": {
            "intact": not found.breaks and not lacking,
            "records": records,
            "chains": chains,
            "breaks": [b.to_json() for b in found.breaks],
            "duplicates": [d.to_json() for d in found.duplicates],
            "signatures": {
                "checked": keys is not None,
                "trusted_keys": sorted(keys.keys) if keys is not None else [],
                "unsigned_accepted": found.unsigned_accepted,
            },
            "completeness": dict(UNCHECKED) if completeness is None else completeness.to_json(),
        },
        "consolidations": consolidations,
    }


def report_json(report: Mapping[str, Any]) -> str:
    """The report as stable text: sorted keys, two-space indent, a final newline."""
    return json.dumps(report, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
