"""The replay report as one self-contained HTML file: the integrity verdict on top, a timeline per consolidation.

No external assets (inline CSS, inline SVG, no scripts), so the file can be mailed or archived with a filing and
still open years later. Every piece of data is HTML-escaped: bookings and customs answers are outside input.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from html import escape
from typing import Any

from streams.audit.replay import LANES
from streams.domain.model import format_datetime, parse_datetime
from streams.errors import InputError

WIDTH = 960
LEFT = 90
RIGHT = 250
LANE_HEIGHT = 26
TOP = 24
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
svg{background:#fafafa;border:1px solid #e3e3e3}
"""


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


def timeline_svg(consolidation: Mapping[str, Any]) -> str:
    """Lanes of filings, answers, holds and alerts over time, with the deadlines as red lines (or arrows beyond)."""
    items = [(i, _time(i["at"])) for i in consolidation["timeline"]]
    dated = [(i, t) for i, t in items if t is not None]
    height = TOP + LANE_HEIGHT * len(LANES) + 30
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" role="img" '
        f'aria-label="timeline of {_e(consolidation["mbl"])}">'
    ]
    for index, lane in enumerate(LANES):
        y = TOP + LANE_HEIGHT * index + LANE_HEIGHT // 2
        parts.append(f'<text x="6" y="{y + 4}" font-size="11" fill="#555">{_e(lane)}</text>')
        parts.append(f'<line x1="{LEFT}" y1="{y}" x2="{WIDTH - RIGHT}" y2="{y}" stroke="#e0e0e0"/>')
    if not dated:
        parts.append("</svg>")
        return "".join(parts)
    start = min(t for _, t in dated)
    end = max(t for _, t in dated)
    span = max((end - start).total_seconds(), 1.0)

    def x_of(when: datetime) -> float:
        return LEFT + (WIDTH - LEFT - RIGHT) * (when - start).total_seconds() / span

    bottom = TOP + LANE_HEIGHT * len(LANES)
    parts.append(f'<text x="{LEFT}" y="{bottom + 16}" font-size="11" fill="#555">{_e(format_datetime(start))}</text>')
    parts.append(
        f'<text x="{WIDTH - RIGHT}" y="{bottom + 16}" font-size="11" fill="#555" text-anchor="end">'
        f"{_e(format_datetime(end))}</text>"
    )
    for offset, deadline in enumerate(consolidation["deadlines"]):
        when = _time(deadline["at"])
        if when is None:
            continue
        label = f"{deadline['what']}: {deadline['at']}"
        if start <= when <= end:
            x = x_of(when)
            parts.append(
                f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{bottom}" stroke="#d62728" stroke-dasharray="4 3">'
                f"<title>{_e(label)}</title></line>"
            )
        else:
            after = when > end
            x = WIDTH - RIGHT + 8 if after else LEFT - 8
            arrow = "\u2192" if after else "\u2190"
            anchor = "start" if after else "end"
            parts.append(
                f'<text x="{x}" y="{TOP + 12 + 13 * offset}" font-size="10" fill="#d62728" text-anchor="{anchor}">'
                f"{arrow} {_e(deadline['what'])} {_e(deadline['at'][:16])}<title>{_e(label)}</title></text>"
            )
    for item, when in dated:
        lane = item["lane"] if item["lane"] in LANES else "error"
        y = TOP + LANE_HEIGHT * LANES.index(lane) + LANE_HEIGHT // 2
        radius = 2 if item["kind"] == "tick" else 5
        tip = f"#{item['sequence']} {item['at']} {item['title']}"
        parts.append(
            f'<circle cx="{x_of(when):.1f}" cy="{y}" r="{radius}" fill="{LANE_COLOURS[lane]}" fill-opacity="0.8">'
            f"<title>{_e(tip)}</title></circle>"
        )
    parts.append("</svg>")
    return "".join(parts)


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


def _verdict(integrity: Mapping[str, Any]) -> str:
    if integrity["intact"]:
        text = f"Trail intact: {integrity['records']} records in {integrity['chains']} chain(s) verified."
        return f'<p class="verdict intact">{_e(text)}</p>' + _signatures(integrity)
    breaks = integrity["breaks"]
    text = f"Trail BROKEN: {len(breaks)} breaks in {integrity['records']} records."
    rows = [(b["mbl"], b["sequence"], b["position"], b["kind"], b["detail"]) for b in breaks]
    return (
        f'<p class="verdict broken">{_e(text)}</p>'
        + _signatures(integrity)
        + _table(("MBL", "sequence", "position", "break", "detail"), rows)
    )


def _consolidation(c: Mapping[str, Any]) -> str:
    state = c.get("ens_state") or {}
    parts = [
        f'<section id="{_e(c["mbl"])}"><h2>Consolidation {_e(c["mbl"])}</h2>',
        f"<p>ENS state <b>{_e(state.get('state', 'unknown'))}</b>, lodging deadline {_e(state.get('deadline'))}; "
        f"{_e(c['records'])} records, chain head #{_e(c['head']['sequence'])} "
        f"<code>{_e(c['head']['hash'][:16])}</code>.</p>",
        timeline_svg(c),
    ]
    filings = [
        (f["filing"], f["hbl"] or "-", f["filer"], "yes" if f["ours"] else "", f["state"], f["lrn"], f["mrn"])
        for f in state.get("filings", [])
    ]
    if filings:
        parts.append("<h3>Filings</h3>" + _table(("filing", "HBL", "filer", "ours", "state", "LRN", "MRN"), filings))
    houses = [(h["hbl"], h["state"], " > ".join(i for _, i in h["chain"])) for h in state.get("houses", [])]
    if houses:
        parts.append("<h3>House bills</h3>" + _table(("HBL", "state", "issuer chain"), houses))
    if c["deadlines"]:
        parts.append("<h3>Deadlines</h3>" + _table(("at", "what"), [(d["at"], d["what"]) for d in c["deadlines"]]))
    alerts = [
        (party, a["sequence"], a["at"], a["urgency"], a["title"])
        for party, listed in sorted(c["alerts_by_party"].items())
        for a in listed
    ]
    if alerts:
        parts.append("<h3>Alerts per party</h3>" + _table(("party", "#", "at", "urgency", "what"), alerts))
    rows = [
        (i["sequence"], i["at"], i["kind"], i["title"], i["details"].get("xml_sha256") or "", i["hash"][:16])
        for i in c["timeline"]
        if i["kind"] != "tick"
    ]
    ticks = sum(1 for i in c["timeline"] if i["kind"] == "tick")
    parts.append(
        "<h3>Timeline</h3>"
        + _table(("#", "at", "kind", "what", "XML sha256", "record hash"), rows)
        + f'<p class="muted">{_e(ticks)} deadline watchdog ticks not listed.</p></section>'
    )
    return "".join(parts)


def render_html(report: Mapping[str, Any]) -> str:
    """The report as one HTML page; the same report always gives the same page."""
    filters = ", ".join(f"{k}={v}" for k, v in sorted(report["filters"].items()) if v) or "none"
    body = [
        "<h1>ICS2 audit trail replay</h1>",
        _verdict(report["integrity"]),
        f"<p>Filters: {_e(filters)}. {_e(len(report['consolidations']))} consolidations.</p>",
        *(_consolidation(c) for c in report["consolidations"]),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>ICS2 audit replay</title><style>{CSS}</style></head><body>" + "".join(body) + "</body></html>\n"
    )
