"""The operator's views on the worker's web server: the dashboard, its JSON views, acknowledgements, metrics.

``register_views(app, pipeline)`` adds them to a built pipeline. The view models (state -> JSON for the page) are
plain functions of this module so they are tested without a server. What they show of alerts, latencies and dead
letters comes from the topic reader of ``streams.pipeline.feed``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from html import escape
from pathlib import Path
from typing import Any

import faust
import structlog

from streams.contracts.avro import SchemaCatalogue
from streams.domain.labels import (
    OURS_NOTE,
    action_label,
    deadline_label,
    filing_state_label,
    house_state_label,
    message_label,
    relative_deadline,
)
from streams.domain.lifecycle import EnsState, NaggingKind
from streams.pipeline.acks import publish_ack
from streams.pipeline.ens_view import SOURCE_HEADER, ChangelogReader, EnsView
from streams.pipeline.feed import AlertFeed, TopicObserver, refresh_lag
from streams.pipeline.login import LOGIN_PAGE, OperatorGate, session_cookie
from streams.pipeline.metrics import CONTENT_TYPE_LATEST, PipelineMetrics
from streams.pipeline.stages.lifecycle import decode_state
from streams.security.operators import Operator, cross_site_refusal
from streams.settings import Settings

log = structlog.get_logger(__name__)

DASHBOARD = Path(__file__).with_name("dashboard.html")

Clock = Callable[[], datetime]

#: The customs message behind each open item kind, whose label names it.
NAGGING_MESSAGES: Mapping[str, str] = {
    NaggingKind.DO_NOT_LOAD.value: "IE3Q01",
    NaggingKind.RFI.value: "IE3Q02",
    NaggingKind.RFS.value: "IE3Q03",
}


def hbl_tree(state: EnsState) -> list[dict[str, Any]]:
    """The HBL tree of the consolidation from each lowest HBL's chain; the lowest carry their state and filings."""
    roots: dict[str, dict[str, Any]] = {}
    for house in state.houses.values():
        chain = house.chain or [(house.hbl, "")]
        level = roots
        node: dict[str, Any] = {}
        for hbl, issuer in chain:
            node = level.setdefault(hbl, {"hbl": hbl, "issuer": issuer, "children": {}})
            level = node["children"]
        node["state"] = state.house_state(house.hbl).value
        node["state_label"] = house_state_label(node["state"])
        node["filings"] = [
            {
                "filing": f.filing,
                "filer": f.filer,
                "ours": f.ours,
                "state": f.state.value,
                "state_label": filing_state_label(f.state.value),
                "lrn": f.lrn,
                "mrn": f.mrn,
            }
            for f in state.filings.values()
            if f.hbl == house.hbl
        ]

    def listed(nodes: Mapping[str, dict[str, Any]]) -> list[dict[str, Any]]:
        return [{**n, "children": listed(n["children"])} for n in nodes.values()]

    return listed(roots)


def open_items(state: EnsState, now: datetime) -> list[dict[str, Any]]:
    """Open DNLs, RFIs and RFSs with their deadlines (relative to ``now`` too) and who was told, acknowledged or not."""
    items: list[dict[str, Any]] = []
    for house in state.houses.values():
        conditions: list[tuple[str, str | None, str | None]] = []
        if house.do_not_load:
            conditions.append((NaggingKind.DO_NOT_LOAD.value, None, state.deadline))
        conditions.extend(("referral", ref, due) for ref, due in house.open_referrals.items())
        for kind, reference, deadline in conditions:
            alerts = [
                a
                for a in state.open_alerts.values()
                if a.hbl == house.hbl
                and (a.kind is NaggingKind.DO_NOT_LOAD if reference is None else a.referral_reference == reference)
            ]
            if reference is not None and alerts:
                kind = alerts[0].kind.value
            items.append(
                {
                    "kind": kind,
                    "kind_label": message_label(NAGGING_MESSAGES.get(kind, kind)),
                    "hbl": house.hbl,
                    "referral_reference": reference,
                    "deadline": deadline,
                    "deadline_label": deadline_label(deadline, now),
                    "alerts": [
                        {
                            "alert_id": a.alert_id,
                            "party": a.party,
                            "acknowledged_by": a.acknowledged_by,
                            "acknowledged_at": a.acknowledged_at,
                            "escalation_level": a.escalation_level,
                        }
                        for a in alerts
                    ],
                }
            )
    return items


def parties_of(state: EnsState) -> list[str]:
    """Every party the consolidation concerns: its planning parties, filers and HBL issuers (for the party filter)."""
    parties = set(state.planning_parties)
    parties.update(f.filer for f in state.filings.values())
    parties.update(issuer for house in state.houses.values() for _, issuer in house.chain)
    parties.update(a.party for a in state.open_alerts.values())
    return sorted(p for p in parties if p)


def consolidation_view(state: EnsState, now: datetime) -> dict[str, Any]:
    """One consolidation as the dashboard shows it: codes for scripts, words for people."""
    return {
        "mbl": state.mbl,
        "state": state.state,
        "state_label": house_state_label(state.state),
        "deadline": state.deadline,
        "deadline_label": deadline_label(state.deadline, now),
        "planning_parties": state.planning_parties,
        "parties": parties_of(state),
        "tree": hbl_tree(state),
        "houses": {h: state.house_state(h).value for h in state.houses},
        "open": open_items(state, now),
        "missing_filings": len(state.missing_filings()),
    }


def scoped_consolidations(views: Iterable[dict[str, Any]], operator: Operator) -> list[dict[str, Any]]:
    """What a party-scoped operator may see: the consolidations concerning its party, with only its party's alerts
    on their open items; an operator of every party sees them as they are."""
    if operator.party is None:
        return list(views)
    scoped = []
    for view in views:
        if operator.party not in view["parties"]:
            continue
        items = [
            {**item, "alerts": [a for a in item["alerts"] if operator.may_see(a["party"])]} for item in view["open"]
        ]
        scoped.append({**view, "open": items})
    return scoped


def scoped_alerts(views: Iterable[dict[str, Any]], operator: Operator) -> list[dict[str, Any]]:
    """The alerts addressed to the operator's party (all of them for an operator of every party)."""
    return [view for view in views if operator.may_see(view["party"])]


def consolidations_view(states: Iterable[tuple[str, bytes]], now: datetime) -> list[dict[str, Any]]:
    """Every ENS of the deployment (the ``EnsView``), by MBL."""
    views = [consolidation_view(decode_state(raw), now) for _, raw in states if raw]
    return sorted(views, key=lambda v: v["mbl"])


def to_act_on(alert: Mapping[str, Any]) -> bool:
    """Anything but urgency info is to act on, as in the demo's queues: a carrier told of an RFI (IE3N04, high) has
    nothing to send but must watch its cargo."""
    return bool(alert["urgency"] != "info")


def alerts_view(
    alerts: Iterable[Mapping[str, Any]], state_of: Callable[[str], EnsState | None], now: datetime
) -> list[dict[str, Any]]:
    """The feed's alerts with their acknowledgement, as the ENS state of their MBL records it, and in words."""
    states: dict[str, EnsState | None] = {}
    views: list[dict[str, Any]] = []
    for alert in alerts:
        mbl = alert.get("mbl") or ""
        if mbl not in states:
            states[mbl] = state_of(mbl) if mbl else None
        state = states[mbl]
        ack = None if state is None else state.acknowledgement(alert["alert_id"])
        views.append(
            {
                "alert_id": alert["alert_id"],
                "party": alert["party_id"],
                "urgency": alert["urgency"],
                "action": alert["action"],
                "title": alert["title"],
                "message": alert["message"],
                "mbl": mbl,
                "hbl": alert.get("hbl"),
                "hbl_chain": [dict(link) for link in alert.get("hbl_chain") or ()],
                "party_at_fault": alert.get("party_at_fault"),
                "referral_reference": alert.get("referral_reference"),
                "deadline": alert.get("deadline"),
                "deadline_in": relative_deadline(alert.get("deadline"), now),
                "deadline_label": deadline_label(alert.get("deadline"), now),
                "message_type": alert.get("notification_message_type"),
                "message_label": message_label(alert.get("notification_message_type") or ""),
                "action_label": action_label(alert["action"]),
                "to_act_on": to_act_on(alert),
                "created_at": alert.get("created_at"),
                "acknowledged": ack is not None,
                "acknowledged_by": ack and ack[0],
                "acknowledged_at": ack and ack[1],
            }
        )
    return views


def partitions_by_topic(assignment: Iterable[Any], prefix: str = "") -> dict[str, list[int]]:
    """The assigned partitions per topic (``TopicPartition``s), topic names without the deployment's prefix."""
    found: dict[str, list[int]] = {}
    for tp in assignment:
        found.setdefault(tp.topic.removeprefix(prefix), []).append(tp.partition)
    return {topic: sorted(found[topic]) for topic in sorted(found)}


def worker_view(
    settings: Settings, assignment: Iterable[Any], ens_partitions: list[int] | None = None
) -> dict[str, Any]:
    """Which worker answers: host and process, app id, web address, and the partitions (so the ENS) it holds.

    With several workers each processes some MBLs only, yet every worker shows them all (``EnsView``); the header
    says which worker answers and which partitions it processes, for an operator chasing a slow or stuck one.
    """
    from streams.topics import Catalogue

    host, pid = socket.gethostname(), os.getpid()
    partitions = partitions_by_topic(assignment, settings.topic_prefix)
    ens_topic = Catalogue.for_prefix("").ens_events.name
    return {
        "worker_id": f"{host}:{pid}",
        "host": host,
        "pid": pid,
        "app_id": settings.app_id,
        "web": f"{settings.web_host}:{settings.web_port}",
        "ens_topic": ens_topic,
        "ens_partitions": partitions.get(ens_topic, []) if ens_partitions is None else ens_partitions,
        "partitions": partitions,
    }


def dashboard_html() -> str:
    """The self-contained page (inline CSS and JS, nothing from a CDN), shipped as package data.

    Its legend explains "ours" in the words of ``OURS_NOTE``, as the CLI and the audit report do.
    """
    return DASHBOARD.read_text(encoding="utf-8").replace("<!--ours-note-->", escape(OURS_NOTE))


@dataclass
class Dashboard:
    """What the views share: the feed, the metrics, the ENS table and how to publish an ack."""

    settings: Settings
    feed: AlertFeed
    metrics: PipelineMetrics
    states: Any
    clock: Clock

    def state_of(self, mbl: str) -> EnsState | None:
        raw = self.states.get(mbl)
        return None if raw is None else decode_state(raw)

    def alert_of(self, alert_id: str, mbl: str | None) -> tuple[str, str] | None:
        """The MBL and party of an alert: from the feed, else from the open alerts of ``mbl``'s ENS; None if unknown."""
        alert = self.feed.get(alert_id)
        if alert is not None and alert.get("mbl"):
            return alert["mbl"], alert["party_id"]
        state = self.state_of(mbl) if mbl else None
        owner = None if state is None else state.owner_of(alert_id)
        return None if owner is None or not mbl else (mbl, owner.party)

    async def acknowledge(self, alert_id: str, by: str, mbl: str) -> None:
        """Publish the ack keyed by the alert's MBL."""
        await publish_ack(self.settings, mbl, alert_id, by, self.clock())
        log.info("ack_published", alert_id=alert_id, mbl=mbl, by=by)


def is_https(request: Any) -> bool:
    """Whether the browser speaks HTTPS to us (directly or to the proxy in front), so the cookie is marked Secure."""
    return bool(request.scheme == "https" or request.headers.get("X-Forwarded-Proto") == "https")


def register_views(app: faust.App, pipeline: Any, schemas: SchemaCatalogue, clock: Clock) -> Dashboard:
    """Add ``/ens/<mbl>``, ``/metrics``, ``/login``, ``/logout``, ``/dashboard``, ``/api/session``,
    ``/api/consolidations``, ``/api/alerts``, ``/api/worker`` and the ack view (the last six for logged-in operators
    only; ``/ens/<mbl>``, ``/metrics`` and ``/health`` are the machine views of ``ics2 status`` and Prometheus)."""
    table = pipeline.tables["ens-state"]
    evicted = pipeline.evictor.evicted if pipeline.evictor is not None else None
    delivery = pipeline.runners["deliver-alerts"].handler if "deliver-alerts" in pipeline.runners else None
    waiting = getattr(delivery, "waiting_count", lambda: 0)
    metrics = PipelineMetrics(pipeline.stats, lambda: [raw for _, raw in table.items() if raw], evicted, waiting)
    ens_topic = pipeline.catalogue.ens_events.name

    def owned() -> set[int]:
        """The ENS partitions this worker processes now: its own table is the freshest for their MBLs (none before
        the engine has joined its groups, when every state comes from the changelog)."""
        tracker = pipeline.engine.processors.get("track-ens")
        return {tp.partition for tp in tracker.ready if tp.topic == ens_topic} if tracker is not None else set()

    states = EnsView(table, owned)
    reader = ChangelogReader(pipeline.settings, pipeline.catalogue.ens_state_changelog.name, states)
    dashboard = Dashboard(pipeline.settings, AlertFeed(), metrics, states, clock)
    observer = TopicObserver(pipeline.settings, schemas, dashboard.feed, metrics)
    gate = OperatorGate(pipeline.settings.operators_path, pipeline.settings.operator_header)

    def operator_of(request: Any) -> Operator | None:
        return gate.identify(request.headers, request.cookies)

    def not_logged_in(web: Any) -> Any:
        hint = "log in on /login" if gate.has_accounts else "no operator accounts yet: run `ics2 operators add NAME`"
        return web.json({"error": f"not logged in: {hint}"}, status=401)

    @app.task
    async def observe_topics() -> None:
        await observer.run()

    @app.task
    async def follow_ens_states() -> None:
        await reader.run()

    @app.page("/ens/{mbl}")
    async def ens_status(web: Any, request: Any, mbl: str) -> Any:
        """The ENS state of any MBL of the deployment, whichever worker holds it (``streams.pipeline.ens_view``);
        the ``X-ICS2-ENS-Source`` header says whether this worker's table or the changelog answered."""
        raw, source = states.lookup(mbl)
        if raw is None:
            return web.json({"error": f"no ENS known for MBL {mbl}"}, status=404)
        return web.json(decode_state(raw).to_json(), headers={SOURCE_HEADER: source})

    @app.page("/login")
    class LoginView(faust.web.View):
        """``GET``: the login form; ``POST {"name", "password"}`` from that form: the session cookie."""

        async def get(self, request: Any) -> Any:
            return self.html(LOGIN_PAGE)

        async def post(self, request: Any) -> Any:
            refusal = cross_site_refusal(request.method, request.headers, request.host)
            if refusal is not None:
                return self.json({"error": refusal}, status=403)
            try:
                body = await request.json()
            except ValueError:
                body = {}
            body = body if isinstance(body, dict) else {}
            name = str(body.get("name") or "")
            wait = gate.locked_for(name)
            if wait > 0:
                return self.json(
                    {"error": f"too many wrong passwords for {name[:64]}: try again in {wait:.0f} s"},
                    status=429,
                    headers={"Retry-After": str(int(wait) + 1)},
                )
            session = gate.log_in(name, str(body.get("password") or ""))
            if session is None:
                return self.json({"error": "wrong operator name or password"}, status=401)
            operator, token = session
            cookie = session_cookie(token, secure=is_https(request))
            return self.json({"operator": operator.to_json()}, headers={"Set-Cookie": cookie})

    @app.page("/logout")
    class LogoutView(faust.web.View):
        async def post(self, request: Any) -> Any:
            refusal = cross_site_refusal(request.method, request.headers, request.host)
            if refusal is not None:
                return self.json({"error": refusal}, status=403)
            return self.json({"logged_out": True}, headers={"Set-Cookie": session_cookie("", False, max_age=0)})

    @app.page("/dashboard")
    async def dashboard_page(web: Any, request: Any) -> Any:
        if operator_of(request) is None:
            return web.html("", status=303, headers={"Location": "/login?next=/dashboard"})
        return web.html(dashboard_html())

    @app.page("/api/session")
    async def session(web: Any, request: Any) -> Any:
        operator = operator_of(request)
        return not_logged_in(web) if operator is None else web.json({"operator": operator.to_json()})

    @app.page("/api/consolidations")
    async def consolidations(web: Any, request: Any) -> Any:
        operator = operator_of(request)
        if operator is None:
            return not_logged_in(web)
        views = consolidations_view(states.items(), clock())
        return web.json({"consolidations": scoped_consolidations(views, operator)})

    @app.page("/api/alerts")
    async def alerts(web: Any, request: Any) -> Any:
        operator = operator_of(request)
        if operator is None:
            return not_logged_in(web)
        views = alerts_view(dashboard.feed.latest(), dashboard.state_of, clock())
        return web.json({"alerts": scoped_alerts(views, operator)})

    @app.page("/api/worker")
    async def worker(web: Any, request: Any) -> Any:
        if operator_of(request) is None:
            return not_logged_in(web)
        return web.json(worker_view(pipeline.settings, pipeline.engine.assignment(), sorted(owned())))

    @app.page("/metrics")
    async def prometheus(web: Any, request: Any) -> Any:
        await refresh_lag(pipeline.engine, metrics)
        return web.bytes(metrics.render(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/api/alerts/{alert_id}/ack")
    class AckView(faust.web.View):
        """``POST {"mbl": MBL}`` from the dashboard: publish an ack by the logged-in operator; the lifecycle tracker
        records it in the ENS state. The MBL is needed only for an alert no longer in the feed."""

        async def post(self, request: Any, alert_id: str) -> Any:
            operator = operator_of(request)
            if operator is None:
                return not_logged_in(self)
            refusal = cross_site_refusal(request.method, request.headers, request.host)
            if refusal is not None:
                log.warning("ack_refused_cross_site", alert_id=alert_id, operator=operator.name, reason=refusal)
                return self.json({"error": refusal}, status=403)
            try:
                body = await request.json()
            except ValueError:
                body = {}
            body = body if isinstance(body, dict) else {}
            found = dashboard.alert_of(alert_id, body.get("mbl"))
            if found is None:
                return self.json({"error": f"alert {alert_id} is not in the feed; give its mbl"}, status=404)
            mbl, party = found
            if not operator.may_see(party):
                log.warning("ack_refused_party", alert_id=alert_id, operator=operator.name, mbl=mbl)
                return self.json(
                    {"error": f"not authorised: operator {operator.name} acts for {operator.party} only"}, status=403
                )
            await dashboard.acknowledge(alert_id, operator.name, mbl)
            return self.json({"alert_id": alert_id, "mbl": mbl, "by": operator.name, "status": "published"}, status=202)

    return dashboard
