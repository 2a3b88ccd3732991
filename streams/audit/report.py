"""The replay report as one self-contained HTML file: the integrity verdict on top, a timeline per consolidation.

No external assets (inline CSS, inline SVG, no scripts), so the file can be mailed or archived with a filing and
still open years later. Every piece of data is HTML-escaped: bookings and customs answers are outside input.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from html import escape
from typing import Any

from streams.audit.replay import LANES
from streams.domain.dates import format_datetime, parse_datetime
from streams.domain.labels import (
    MESSAGE_LABELS,
    OURS_NOTE,
    filing_state_label,
    house_state_label,
    message_label,
    span,
)
from streams.errors import InputError

WIDTH = 960
LEFT = 90
RIGHT = 24
LANE_HEIGHT = 26
#: Room above the lanes for the labels of deadlines that fall inside the timeline.
TOP = 34
FONT = 11
#: A generous average glyph width of the sans-serif font, in em: labels are placed so that even this wide fits.
GLYPH_EM = 0.62
#: Axis steps to choose from, in seconds: the smallest that keeps the ticks at most ``MAX_TICKS``.
TICK_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800)
MAX_TICKS = 7
#: A timeline of one instant is drawn over this many seconds, centred, so its axis still reads.
MIN_SPAN_S = 10.0
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
LANE_COLOURS = {
    "booking": "#4c78a8",
    "plan": "#72b7b2",
    "filing": "#54a24b",
    "answer": "#9d755d",
    "hold": "#e45756",
    "deadline": "#b279a2",
    "alert": "#f58518",
    "error": "#333333",
}
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em;color:#222;max-width:1100px}
h1{font-size:1.5em}h2{margin-top:2em;border-bottom:1px solid #ccc}
.verdict{padding:.8em 1em;border-radius:6px;font-weight:600}
.intact{background:#e6f4ea;color:#1e6b34}.broken{background:#fde8e8;color:#9b1c1c}
table{border-collapse:collapse;margin:.6em 0;font-size:.85em}
td,th{border:1px solid #ddd;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f4f4f4}code{font-size:.9em}.muted{color:#777}
svg{background:#fafafa;border:1px solid #e3e3e3}dl.legend{font-size:.85em}dl.legend dt{font-weight:600}
dl.legend dd{margin:0 0 .3em 1.5em}
"""
#: Audit record kind -> what happened, for the timeline table.
KIND_LABELS = {
    "booking": "booking received",
    "draft": "filing prepared",
    "plan": "filing plan",
    "filing": "filing sent to customs",
    "filing_sent": "filing sent",
    "filing_blocked": "filing blocked",
    "notification": "customs' message",
    "ack": "alert acknowledged",
    "alert": "alert to a party",
    "dead_letter": "input refused (dead letter)",
}
#: ``IE3Q01 (do_not_load)`` in a recorded title: the code and the notification kind, worded by ``message_label``.
CODED = re.compile(r"\b(IE3[A-Z]\d\d)\b(?: \([a-z_]+\))?")


def _e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _time(value: str) -> datetime | None:
    try:
        return parse_datetime(value)
    except (InputError, TypeError, AttributeError):
        return None


def text_width(text: str, size: int = FONT) -> float:
    """An upper estimate of a label's width in pixels, to keep it inside the picture."""
    return len(text) * size * GLYPH_EM


def _anchored(x: float, text: str, size: int = FONT) -> tuple[float, str]:
    """Where and how to anchor a label meant to start at ``x`` so that it ends inside the picture."""
    if x + text_width(text, size) <= WIDTH - 4:
        return x, "start"
    return min(x, WIDTH - 4), "end"


def axis_ticks(start: datetime, end: datetime) -> tuple[list[datetime], str]:
    """Round times between ``start`` and ``end``, at most ``MAX_TICKS``, and the strftime format their labels use."""
    seconds = (end - start).total_seconds()
    step = next((s for s in TICK_STEPS if seconds / s <= MAX_TICKS - 1), None)
    if step is None:
        days = int(seconds // 86400 // (MAX_TICKS - 1)) + 1
        step = days * 86400
    midnight = start.replace(hour=0, minute=0, second=0, microsecond=0)
    first = midnight + timedelta(seconds=-(-(start - midnight).total_seconds() // step) * step)
    ticks = []
    when = first
    while when <= end:
        ticks.append(when)
        when += timedelta(seconds=step)
    if step < 60:
        return ticks, "%H:%M:%S"
    if seconds < 86400 and start.date() == end.date():
        return ticks, "%H:%M"
    return ticks, "%d %b %H:%M" if step < 86400 else "%d %b"


def duration(delta: timedelta) -> str:
    """Seconds under a minute (a replay of a quick story spans seconds), then as deadlines read."""
    seconds = delta.total_seconds()
    return f"{seconds:.0f} s" if seconds < 60 else span(delta)


def _relative(when: datetime, start: datetime, end: datetime) -> str:
    if when > end:
        return f"{span(when - end)} after the last event"
    return f"{span(start - when)} before the first event"


def timeline_svg(consolidation: Mapping[str, Any]) -> str:
    """Lanes of filings, answers, holds and alerts over time, one time axis, and the deadlines.

    Deadlines inside the span are red dashed lines labelled above the lanes; those before or after it are listed
    under the axis with how far they are from the events, so no label is cut whatever the span (a second or weeks).
    """
    items = [(i, _time(i["at"])) for i in consolidation["timeline"]]
    dated = [(i, t) for i, t in items if t is not None]
    timed = [(d, _time(d["at"])) for d in consolidation["deadlines"]]
    deadlines = [(d, t) for d, t in timed if t is not None]
    bottom = TOP + LANE_HEIGHT * len(LANES)
    parts: list[str] = []
    for index, lane in enumerate(LANES):
        y = TOP + LANE_HEIGHT * index + LANE_HEIGHT // 2
        parts.append(f'<text x="6" y="{y + 4}" font-size="{FONT}" fill="#555">{_e(lane)}</text>')
        parts.append(f'<line x1="{LEFT}" y1="{y}" x2="{WIDTH - RIGHT}" y2="{y}" stroke="#e0e0e0"/>')
    height = bottom + 10
    if dated:
        first, last = min(t for _, t in dated), max(t for _, t in dated)
        start, end = first, last
        if (end - start).total_seconds() < MIN_SPAN_S:
            pad = timedelta(seconds=(MIN_SPAN_S - (end - start).total_seconds()) / 2)
            start, end = start - pad, end + pad
        seconds = (end - start).total_seconds()

        def x_of(when: datetime) -> float:
            return LEFT + (WIDTH - LEFT - RIGHT) * (when - start).total_seconds() / seconds

        parts.append(f'<line x1="{LEFT}" y1="{bottom}" x2="{WIDTH - RIGHT}" y2="{bottom}" stroke="#999"/>')
        ticks, pattern = axis_ticks(start, end)
        for tick in ticks:
            x = x_of(tick)
            label = tick.strftime(pattern)
            half = text_width(label) / 2
            anchor = "end" if x + half > WIDTH - 4 else "start" if x - half < 4 else "middle"
            parts.append(f'<line x1="{x:.1f}" y1="{bottom}" x2="{x:.1f}" y2="{bottom + 4}" stroke="#999"/>')
            parts.append(
                f'<text class="tick" x="{x:.1f}" y="{bottom + 16}" font-size="{FONT}" fill="#555" '
                f'text-anchor="{anchor}">{_e(label)}</text>'
            )
        caption = f"time (UTC), {format_datetime(first)} to {format_datetime(last)}: {duration(last - first)}"
        if last == first:
            caption = f"time (UTC), every event at {format_datetime(first)}"
        parts.append(
            f'<text class="axis" x="{LEFT}" y="{bottom + 32}" font-size="{FONT}" fill="#333">{_e(caption)}</text>'
        )
        height = bottom + 42
        outside = [(d, t) for d, t in deadlines if not start <= t <= end]
        for offset, (deadline, when) in enumerate(d for d in deadlines if start <= d[1] <= end):
            x = x_of(when)
            label = f"{deadline['what']} {format_datetime(when)}"
            lx, anchor = _anchored(x + 3, label, 10)
            if anchor == "end":
                lx = x - 3
            parts.append(
                f'<line x1="{x:.1f}" y1="{TOP - 4}" x2="{x:.1f}" y2="{bottom}" stroke="#d62728" '
                f'stroke-dasharray="4 3"><title>{_e(label)}</title></line>'
            )
            parts.append(
                f'<text class="deadline" x="{lx:.1f}" y="{12 + 11 * (offset % 2)}" font-size="10" fill="#d62728" '
                f'text-anchor="{anchor}">{_e(label)}</text>'
            )
        for offset, (deadline, when) in enumerate(outside):
            arrow = "\u2192" if when > end else "\u2190"
            label = f"{arrow} {deadline['what']}: {format_datetime(when)}, {_relative(when, first, last)}"
            parts.append(
                f'<text class="deadline" x="{LEFT}" y="{height + 6 + 14 * offset}" font-size="{FONT}" '
                f'fill="#d62728">{_e(label)}</text>'
            )
        height += 14 * len(outside) + (8 if outside else 0)
        for item, when in dated:
            lane = item["lane"] if item["lane"] in LANES else "error"
            y = TOP + LANE_HEIGHT * LANES.index(lane) + LANE_HEIGHT // 2
            radius = 2 if item["kind"] == "tick" else 5
            tip = f"#{item['sequence']} {item['at']} {plain_title(item['title'])}"
            parts.append(
                f'<circle cx="{x_of(when):.1f}" cy="{y}" r="{radius}" fill="{LANE_COLOURS[lane]}" fill-opacity="0.8">'
                f"<title>{_e(tip)}</title></circle>"
            )
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" role="img" '
        f'aria-label="timeline of {_e(consolidation["mbl"])}">'
    )
    return head + "".join(parts) + "</svg>"


def plain_title(title: str) -> str:
    """A recorded title with its ICS2 message codes followed by their meaning (an unknown code stays as it is)."""
    return CODED.sub(lambda m: message_label(m.group(1)) if m.group(1) in MESSAGE_LABELS else m.group(0), title)


def time_ordered(items: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """By when it happened, then by its place in the chain (items of one second keep their recorded order)."""

    def key(item: Mapping[str, Any]) -> tuple[bool, datetime, int]:
        when = _time(item["at"])
        return when is None, when or EPOCH, item["sequence"]

    return sorted(items, key=key)


def _signatures(integrity: Mapping[str, Any]) -> str:
    """How the records' signatures were checked, and records stored twice, in one line under the verdict."""
    signatures = integrity.get("signatures") or {}
    if signatures.get("checked"):
        text = f"Signatures verified with {', '.join(signatures['trusted_keys']) or 'no key'}"
        if signatures.get("unsigned_accepted"):
            text += f"; {signatures['unsigned_accepted']} unsigned record(s) from before signing accepted"
    else:
        text = "Signatures not checked (no public key given)"
    duplicates = len(integrity.get("duplicates") or [])
    if duplicates:
        text += f"; {duplicates} record(s) stored twice byte for byte (chained again after a crash), shown once"
    return f'<p class="muted">{_e(text)}.</p>'


def _completeness(integrity: Mapping[str, Any]) -> str:
    """How far every record of the audited topics was checked to be chained, in one line under the verdict."""
    completeness = integrity.get("completeness") or {}
    if not completeness.get("checked"):
        return '<p class="muted">Completeness not checked (the audited topics were not read).</p>'
    to = "the worker's committed positions" if completeness["to"] == "committed" else "the topics' ends"
    text = f"Completeness: {completeness['records_checked']} source record(s) checked to {to}, each chained once"
    pending = sum(p["records"] for p in completeness.get("pending", []))
    if pending:
        text += f"; {pending} record(s) whose entries are not chained yet"
    if completeness.get("expired"):
        text += f"; {completeness['expired']} chained from records retention has removed"
    return f'<p class="muted">{_e(text)}.</p>'


def _lack_rows(integrity: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    rows = []
    for lack in (integrity.get("completeness") or {}).get("lacks", []):
        offsets = lack["first"] if lack["first"] == lack["last"] else f"{lack['first']}..{lack['last']}"
        entries = ", ".join(f"{e['mbl']} #{e['sequence']}" for e in lack["entries"])
        rows.append((lack["kind"], lack["topic"] or "", lack["partition"], offsets, entries, lack["detail"]))
    return rows


def _verdict(integrity: Mapping[str, Any]) -> str:
    if integrity["intact"]:
        text = f"Trail intact: {integrity['records']} records in {integrity['chains']} chain(s) verified."
        return f'<p class="verdict intact">{_e(text)}</p>' + _signatures(integrity) + _completeness(integrity)
    breaks = integrity["breaks"]
    lacks = _lack_rows(integrity)
    text = f"Trail BROKEN: {len(breaks)} breaks in {integrity['records']} records."
    if lacks:
        text = (
            f"Trail BROKEN: {len(breaks)} breaks in {integrity['records']} records, {len(lacks)} completeness findings."
        )
    rows = [(b["mbl"], b["sequence"], b["position"], b["kind"], b["detail"]) for b in breaks]
    page = f'<p class="verdict broken">{_e(text)}</p>' + _signatures(integrity) + _completeness(integrity)
    if rows or not lacks:
        page += _table(("MBL", "sequence", "position", "break", "detail"), rows)
    if lacks:
        page += _table(("finding", "topic", "partition", "offsets", "chained records", "detail"), lacks)
    return page


def _deadline_text(at: str | None, items: Sequence[Mapping[str, Any]]) -> str:
    """``2027-06-14T12:00:00Z (3 d after the last event)``: absolute, and relative to the recorded history."""
    when = _time(at or "")
    dated = [t for t in (_time(i["at"]) for i in items) if t is not None]
    if when is None or not dated:
        return at or "unknown"
    first, last = min(dated), max(dated)
    if first <= when <= last:
        return f"{at} (during the recorded events)"
    return f"{at} ({_relative(when, first, last)})"


def _ours_note(state: Mapping[str, Any]) -> str:
    planners = ", ".join(state.get("planning_parties") or []) or "none"
    return f'<p class="muted">{_e(OURS_NOTE)}. Planning parties here: {_e(planners)}.</p>'


def _consolidation(c: Mapping[str, Any]) -> str:
    state = c.get("ens_state") or {}
    code = state.get("state", "unknown")
    items = c["timeline"]
    parts = [
        f'<section id="{_e(c["mbl"])}"><h2>Consolidation {_e(c["mbl"])}</h2>',
        f'<p>ENS state <b>{_e(house_state_label(code))}</b> <span class="muted">({_e(code)})</span>, lodging '
        f"deadline {_e(_deadline_text(state.get('deadline'), items))}; {_e(c['records'])} records, chain head "
        f"#{_e(c['head']['sequence'])} <code>{_e(c['head']['hash'][:16])}</code>.</p>",
        timeline_svg(c),
    ]
    filings = [
        (
            f["filing"],
            f["hbl"] or "-",
            f["filer"],
            "yes" if f["ours"] else "",
            filing_state_label(f["state"]),
            f["lrn"],
            f["mrn"],
        )
        for f in state.get("filings", [])
    ]
    if filings:
        headers = ("filing", "HBL", "filer", "ours", "state", "LRN", "MRN")
        parts.append("<h3>Filings</h3>" + _table(headers, filings) + _ours_note(state))
    houses = [
        (h["hbl"], house_state_label(h["state"]), " > ".join(i for _, i in h["chain"])) for h in state.get("houses", [])
    ]
    if houses:
        parts.append("<h3>House bills</h3>" + _table(("HBL", "state", "issuer chain"), houses))
    if c["deadlines"]:
        deadline_rows = [(_deadline_text(d["at"], items), d["what"]) for d in c["deadlines"]]
        parts.append("<h3>Deadlines</h3>" + _table(("at (UTC)", "what"), deadline_rows))
    alerts = [
        (party, a["sequence"], a["at"], a["urgency"], plain_title(a["title"]))
        for party, listed in sorted(c["alerts_by_party"].items())
        for a in time_ordered(listed)
    ]
    if alerts:
        parts.append("<h3>Alerts per party</h3>" + _table(("party", "#", "at (UTC)", "urgency", "what"), alerts))
    rows = [
        (
            i["sequence"],
            i["at"],
            KIND_LABELS.get(i["kind"], i["kind"]),
            plain_title(i["title"]),
            i["details"].get("xml_sha256") or "",
            i["hash"][:16],
        )
        for i in time_ordered(items)
        if i["kind"] != "tick"
    ]
    ticks = sum(1 for i in items if i["kind"] == "tick")
    parts.append(
        "<h3>Timeline</h3>"
        + _table(("#", "at (UTC)", "what happened", "details", "XML sha256", "record hash"), rows)
        + f'<p class="muted">In time order (# is the place in the audit chain). {_e(ticks)} deadline watchdog '
        "ticks not listed.</p></section>"
    )
    return "".join(parts)


def _legend(report: Mapping[str, Any]) -> str:
    """The ICS2 message codes the page mentions, with their meaning."""
    text = " ".join(i["title"] for c in report["consolidations"] for i in c["timeline"])
    codes = sorted({m.group(1) for m in CODED.finditer(text)} & set(MESSAGE_LABELS))
    if not codes:
        return ""
    entries = "".join(f"<dt>{_e(code)}</dt><dd>{_e(MESSAGE_LABELS[code])}</dd>" for code in codes)
    return f'<h2>ICS2 messages on this page</h2><dl class="legend">{entries}</dl>'


def render_html(report: Mapping[str, Any]) -> str:
    """The report as one HTML page; the same report always gives the same page."""
    filters = ", ".join(f"{k}={v}" for k, v in sorted(report["filters"].items()) if v) or "none"
    body = [
        "<h1>ICS2 audit trail replay</h1>",
        _verdict(report["integrity"]),
        f"<p>Filters: {_e(filters)}. {_e(len(report['consolidations']))} consolidations.</p>",
        *(_consolidation(c) for c in report["consolidations"]),
        _legend(report),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>ICS2 audit replay</title><style>{CSS}</style></head><body>" + "".join(body) + "</body></html>\n"
    )
