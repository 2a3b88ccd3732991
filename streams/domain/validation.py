"""The validator: every rule of ``rules.py`` applied to a booking and its filing plan, before anything is filed.

Each finding names the rule, a JSON path into the booking (``$.house_bills[4].goods[0].hs_code``) and the party
that must fix it, so that what customs would reject with an IE3N99 is sent to the right forwarder first.

Decisions without a source:

- HBL numbers are compared after trimming and upper-casing: ``Consolidation.from_json`` already refuses exact
  duplicates, and numbers that differ only in case or spaces would confuse the linking by house document number.
- Dates are checked by ``Consolidation.from_json`` (they are parsed values here); ``formats.check_datetime`` is for
  the strings the XML carries.
- Data of a filing party (carrier, master loader, co-loader) is for that party to fix; data of any other party
  (shipper, consignee, seller, buyer) is for the issuer of the lowest HBL that names it, the shipper's forwarder.
- ``now=None`` skips the deadline rule: the core reads no clock; the CLI passes the current time.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from streams.domain import formats
from streams.domain.dates import format_datetime
from streams.domain.deadlines import DEFAULT_MARGIN, DeadlineStatus, lodging_deadline
from streams.domain.model import (
    Address,
    Consolidation,
    Contact,
    GoodsItem,
    HouseBill,
    Mode,
    Party,
    Representative,
    Role,
)
from streams.domain.planning import FilingPlan, FilingType, PlannedFiling
from streams.domain.planning import plan as make_plan
from streams.domain.rules import (
    MASTER_BL_TYPE,
    PARTY_TEXT_LENGTHS,
    PAYMENT_METHODS,
    REPRESENTATIVE_STATUSES,
    TYPES_OF_PERSON,
    Responsible,
    Severity,
    rule,
)

_FILING_ROLES = frozenset({Role.CARRIER, Role.MASTER_LOADER, Role.CO_LOADER})
_HOUSE_LEAD = (FilingType.F15, FilingType.F14)
_CONTAINER_CODE = re.compile(r"[A-Z0-9]{1,10}")
_SHORT_CODE = re.compile(r"[A-Za-z0-9]{1,3}")
_OFFICE = re.compile(r"[A-Z]{2}[A-Z0-9]{6}")
_CONTACT_LENGTH = 512


@dataclass(frozen=True, slots=True)
class Finding:
    """One rule that a booking breaks, where, and who must fix it."""

    rule_id: str
    severity: Severity
    path: str
    message: str
    party: str | None
    hbl: str | None = None
    filing: FilingType | None = None
    error_code: int | None = None
    """The CL723 code customs would answer with, where the rule mirrors one."""

    def to_json(self) -> dict[str, Any]:
        return {
            "rule_id": self.rule_id,
            "severity": self.severity.value,
            "path": self.path,
            "message": self.message,
            "party": self.party,
            "hbl": self.hbl,
            "filing": None if self.filing is None else self.filing.value,
            "error_code": self.error_code,
        }


@dataclass(frozen=True, slots=True)
class ValidationReport:
    """All findings of one validation, in the order of the booking."""

    findings: tuple[Finding, ...] = ()

    def __iter__(self) -> Iterator[Finding]:
        return iter(self.findings)

    def __len__(self) -> int:
        return len(self.findings)

    @property
    def errors(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity is Severity.ERROR)

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity is Severity.WARNING)

    @property
    def ok(self) -> bool:
        """True when nothing blocks filing; warnings do not."""
        return not self.errors

    def by_rule(self, rule_id: str) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.rule_id == rule_id)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "findings": [f.to_json() for f in self.findings],
        }


def _finding(
    rule_id: str,
    path: str,
    party: str | None,
    hbl: str | None = None,
    filing: FilingType | None = None,
    **fields: Any,
) -> Finding:
    r = rule(rule_id)
    return Finding(
        rule_id=r.id,
        severity=r.severity,
        path=path,
        message=r.message(
            hbl="the house B/L" if hbl is None else hbl,
            filing="filing" if filing is None else filing.value,
            **fields,
        ),
        party=party,
        hbl=hbl,
        filing=filing,
        error_code=None if r.error_code is None else int(r.error_code),
    )


def validate_filing_set(
    filings: Iterable[FilingType | str],
    hbl: str | None = None,
    carrier_f12: bool = True,
    party: str | None = None,
    path: str = "$",
) -> tuple[Finding, ...]:
    """Whether these filings for one lowest HBL complete the ENS: with the carrier's F12 only F15, or F14 + F16.

    ``filings`` are the house-level filings (an F12 among them counts as the carrier's); F10 or F11 alone and
    F13 + F17 are complete on their own.
    """
    counts = Counter(FilingType(f) for f in filings)
    if counts.pop(FilingType.F12, 0):
        carrier_f12 = True
    listed = " + ".join(sorted(t.value for t in counts.elements())) or "nothing"
    problem: str | None = None
    duplicated = [t.value for t, n in counts.items() if n > 1]
    kinds = set(counts)
    if duplicated:
        problem = f"{', '.join(duplicated)} is planned more than once"
    elif kinds in ({FilingType.F10}, {FilingType.F11}, {FilingType.F13, FilingType.F17}):
        problem = None
    elif not kinds:
        problem = "no house-level filing is planned for this lowest house B/L"
    elif kinds & {FilingType.F10, FilingType.F11, FilingType.F13, FilingType.F17}:
        problem = f"{listed} mixes filings of different sets"
    elif not carrier_f12:
        problem = f"{listed} needs the carrier's F12, which is not expected"
    elif kinds == {FilingType.F16}:
        problem = "F12 + F16 is not a valid set: an F16 only completes an F14, which is missing"
    elif kinds == {FilingType.F14}:
        problem = "F12 + F14 is not a valid set: the F16 with seller and buyer is missing"
    elif FilingType.F15 in kinds and len(kinds) > 1:
        problem = f"F12 + {listed} is not a valid set: F15 already carries seller and buyer and stands alone"
    if problem is None:
        return ()
    return (_finding("ENS-VALID-SET", path, party, hbl=hbl, problem=problem),)


def validate(
    consolidation: Consolidation,
    plan: FilingPlan | None = None,
    now: datetime | None = None,
    margin: timedelta = DEFAULT_MARGIN,
    arrival_at: datetime | None = None,
) -> ValidationReport:
    """Apply every rule to the booking and its plan (made here when not given); ``now`` enables the deadline."""
    return _Validator(consolidation, plan or make_plan(consolidation)).run(now, margin, arrival_at)


class _Validator:
    def __init__(self, consolidation: Consolidation, plan: FilingPlan) -> None:
        self.c = consolidation
        self.plan = plan
        self.findings: list[Finding] = []
        self.party_index = {pid: i for i, pid in enumerate(consolidation.parties)}
        self.hbl_index = {h.hbl_number: i for i, h in enumerate(consolidation.house_bills)}
        roots = [h for h in consolidation.house_bills if h.parent is None]
        self.master_loader = roots[0].issuer if roots else consolidation.planning_party

    def run(self, now: datetime | None, margin: timedelta, arrival_at: datetime | None) -> ValidationReport:
        self._parties()
        self._master()
        self._master_data()
        self._house_bills()
        self._plan()
        if now is not None:
            self._deadline(now, margin, arrival_at)
        return ValidationReport(tuple(self.findings))

    def _emit(self, rule_id: str, path: str, party: str | None, **kwargs: Any) -> None:
        self.findings.append(_finding(rule_id, path, party, **kwargs))

    def _responsible(self, kind: Responsible, hbl: HouseBill | None = None) -> str:
        """The party a rule's responsible kind points at, for rules not about one party's own data."""
        if kind is Responsible.HBL_ISSUER and hbl is not None:
            return hbl.issuer
        if kind is Responsible.CARRIER:
            return self.c.master.carrier
        if kind is Responsible.MASTER_LOADER:
            return self.master_loader
        return self.c.planning_party

    def _owner(self, party_id: str) -> str:
        """Who fixes a party's data: a filing party itself, else the issuer of the lowest HBL naming it."""
        party = self.c.party(party_id)
        if party is not None and party.role in _FILING_ROLES:
            return party_id
        for hbl in self.c.lowest_hbls():
            if party_id in (hbl.shipper, hbl.consignee, hbl.notify_party, hbl.seller, hbl.buyer, hbl.customer):
                return hbl.issuer
        return self.c.planning_party

    def _party_path(self, party_id: str, field: str) -> str:
        index = self.party_index.get(party_id)
        return "$.parties" if index is None else f"$.parties[{index}].{field}"

    def _hbl_path(self, hbl: str | None) -> str:
        index = None if hbl is None else self.hbl_index.get(hbl)
        return "$" if index is None else f"$.house_bills[{index}]"

    def _parties(self) -> None:
        for i, party in enumerate(self.c.parties.values()):
            owner = self._owner(party.id)
            p = f"$.parties[{i}]"
            if party.eori is not None:
                problem = formats.check_eori(party.eori)
                if problem:
                    self._emit(
                        "ENS-EORI-FORMAT",
                        f"{p}.eori",
                        owner,
                        value=party.eori,
                        subject=party.id,
                        problem=problem.message,
                    )
            if party.type_of_person not in TYPES_OF_PERSON:
                self._emit(
                    "ENS-CODE-LIST",
                    f"{p}.type_of_person",
                    owner,
                    field=f"type of person of {party.id}",
                    value=party.type_of_person,
                    code_list="CL729",
                    problem=_codes(TYPES_OF_PERSON),
                )
            self._party_data(party.id, party.name, party.address, party.contact, p, owner)
            if party.representative is not None:
                self._representative(party, party.representative, f"{p}.representative", owner)

    def _party_data(
        self, subject: str, name: str, address: Address, contact: Contact | None, p: str, owner: str
    ) -> None:
        """Name, address and contact of a party or representative: R3002, lengths, scripts and the country."""
        self.findings.extend(_party_data_findings(subject, name, address, contact, p, owner))

    def _representative(self, party: Party, agent: Representative, p: str, owner: str) -> None:
        """The service provider filing for ``party``: its name, address and contact (its EORI, CL094 status and
        reachability are checked with the filings it files, so that only those wait)."""
        self._party_data(f"the representative of {party.id}", agent.name, agent.address, agent.contact, p, owner)

    def _master(self) -> None:
        c = self.c
        m = c.master
        planner = c.planning_party
        problem = formats.check_document_number(m.mbl_number)
        if problem:
            self._emit("ENS-MBL-LINK", "$.master.mbl_number", planner, problem=f"MBL number: {problem.message}")
        if m.document_type != MASTER_BL_TYPE:
            self._emit(
                "ENS-MBL-LINK",
                "$.master.document_type",
                planner,
                problem=f"the master transport document type is {m.document_type!r}, it must be {MASTER_BL_TYPE} "
                "(master bill of lading)",
            )
        carrier = c.carrier
        if carrier is None:
            self._emit(
                "ENS-MBL-LINK",
                "$.master.carrier",
                planner,
                problem=f"the carrier {m.carrier} is not among the parties, so its EORI is unknown",
            )
        elif not carrier.eori:
            self._emit(
                "ENS-MBL-LINK",
                self._party_path(carrier.id, "eori"),
                planner,
                problem=f"the carrier {carrier.id} has no EORI",
            )
        ports = [("$.master.port_of_loading", m.port_of_loading), ("$.master.port_of_discharge", m.port_of_discharge)]
        ports += [(f"$.master.transhipment_ports[{i}]", port) for i, port in enumerate(m.transhipment_ports)]
        for path, value in ports:
            problem = formats.check_unlocode(value)
            if problem:
                self._emit("ENS-LOCODE", path, planner, value=value, problem=problem.message)
        loader = self._responsible(Responsible.MASTER_LOADER)
        for i, container in enumerate(m.containers):
            problem = formats.check_container_id(container.id)
            if problem:
                self._emit(
                    "ENS-CONTAINER-ID",
                    f"$.master.containers[{i}].id",
                    loader,
                    value=container.id,
                    problem=problem.message,
                )
            for j, seal in enumerate(container.seals):
                problem = formats.check_seal(seal)
                if problem:
                    self._emit(
                        "ENS-SEAL", f"$.master.containers[{i}].seals[{j}]", loader, value=seal, problem=problem.message
                    )

    def _master_data(self) -> None:
        """What the F12 and every equipment block need from the master B/L beyond its formats."""
        m = self.c.master
        planner = self.c.planning_party
        if not _OFFICE.fullmatch(m.customs_office_of_first_entry):
            self._emit(
                "ENS-MASTER-DATA",
                "$.master.customs_office_of_first_entry",
                planner,
                value=m.mbl_number,
                problem=f"the customs office of first entry {m.customs_office_of_first_entry!r} is not a reference "
                "number of 8 characters like NL000396",
            )
        loader = self._responsible(Responsible.MASTER_LOADER)
        for i, container in enumerate(m.containers):
            for field, value, pattern in (
                ("size_type", container.size_type, _CONTAINER_CODE),
                ("packed_status", container.packed_status, _SHORT_CODE),
                ("supplier_type", container.supplier_type, _SHORT_CODE),
            ):
                if value is None or not pattern.fullmatch(value):
                    problem = "is missing" if value is None else f"{value!r} is not a code of the container lists"
                    self._emit(
                        "ENS-MASTER-DATA",
                        f"$.master.containers[{i}].{field}",
                        loader,
                        value=m.mbl_number,
                        problem=f"the {field.replace('_', ' ')} of container {container.id} {problem}",
                    )
        if self._f12_planned():
            f12 = {"filing": FilingType.F12}
            if not m.vessel_imo:
                self._emit(
                    "ENS-MASTER-DATA",
                    "$.master.vessel_imo",
                    planner,
                    value=m.mbl_number,
                    problem="the F12 names the vessel by its IMO number, which the booking does not give",
                    **f12,
                )
            if len({p[:2] for p in (m.port_of_loading, *m.transhipment_ports, m.port_of_discharge)}) < 2:
                self._emit(
                    "ENS-MASTER-DATA",
                    "$.master.port_of_discharge",
                    planner,
                    value=m.mbl_number,
                    problem="the voyage passes only one country; the F12 routes the vessel through two at least",
                    **f12,
                )

    def _f12_planned(self) -> bool:
        """Our F12 is rendered when the carrier plans; the carrier's own F12 needs the same data."""
        return FilingType.F12 in self.plan.expected_from_carrier or any(
            f.filing is FilingType.F12 for f in self.plan.filings
        )

    def _house_bills(self) -> None:
        c = self.c
        seen: dict[str, str] = {}
        for i, hbl in enumerate(c.house_bills):
            p = f"$.house_bills[{i}]"
            number = hbl.hbl_number
            problem = formats.check_document_number(number) or formats.check_script(number)
            if problem:
                self._emit(
                    "ENS-DOCUMENT-NUMBER",
                    f"{p}.hbl_number",
                    hbl.issuer,
                    hbl=number,
                    value=number,
                    problem=problem.message,
                )
            key = "".join(number.split()).upper()
            if key in seen:
                self._emit(
                    "ENS-HBL-UNIQUE",
                    f"{p}.hbl_number",
                    hbl.issuer,
                    hbl=number,
                    value=number,
                    problem=f"house B/L {seen[key]!r} has the same number",
                )
            elif key == "".join(c.mbl.split()).upper():
                self._emit(
                    "ENS-HBL-UNIQUE",
                    f"{p}.hbl_number",
                    hbl.issuer,
                    hbl=number,
                    value=number,
                    problem="it is the master B/L number",
                )
            seen.setdefault(key, number)
            if c.is_lowest(hbl):
                self._lowest(hbl, p)

    def _lowest(self, hbl: HouseBill, p: str) -> None:
        number = hbl.hbl_number
        for role in ("seller", "buyer"):
            problem = self._party_problem(getattr(hbl, role))
            if problem:
                self._emit("ENS-SELLER-BUYER", f"{p}.{role}", hbl.issuer, hbl=number, role=role, problem=problem)
        problem = self._party_problem(hbl.shipper)
        if problem:
            self._emit("ENS-HOUSE-PARTIES", f"{p}.shipper", hbl.issuer, hbl=number, role="shipper", problem=problem)
        if hbl.consignee is None and hbl.notify_party is None:
            self._emit(
                "ENS-HOUSE-PARTIES",
                f"{p}.consignee",
                hbl.issuer,
                hbl=number,
                role="consignee",
                problem="neither a consignee nor a notify party is given",
            )
        elif hbl.consignee is not None:
            problem = self._party_problem(hbl.consignee)
            if problem:
                self._emit(
                    "ENS-HOUSE-PARTIES", f"{p}.consignee", hbl.issuer, hbl=number, role="consignee", problem=problem
                )
        if hbl.notify_party is not None:
            problem = self._party_problem(hbl.notify_party)
            if problem:
                self._emit(
                    "ENS-HOUSE-PARTIES",
                    f"{p}.notify_party",
                    hbl.issuer,
                    hbl=number,
                    role="notify party",
                    problem=problem,
                )
        for field in ("place_of_acceptance", "place_of_delivery"):
            value = getattr(hbl, field)
            locode = None if value is None else formats.check_unlocode(value)
            if locode:
                self._emit("ENS-LOCODE", f"{p}.{field}", hbl.issuer, hbl=number, value=value, problem=locode.message)
            elif value is None:
                place = field.replace("_", " ")
                self._emit("ENS-HOUSE-DATA", f"{p}.{field}", hbl.issuer, hbl=number, problem=f"it names no {place}")
        m = self.c.master
        stops = (hbl.place_of_acceptance, m.port_of_loading, *m.transhipment_ports, m.port_of_discharge)
        countries = {stop[:2] for stop in (*stops, hbl.place_of_delivery) if stop}
        if hbl.place_of_acceptance and hbl.place_of_delivery and len(countries) < 2:
            self._emit(
                "ENS-HOUSE-DATA",
                f"{p}.place_of_delivery",
                hbl.issuer,
                hbl=number,
                problem=f"its route passes only {', '.join(sorted(countries))}; an ENS routes the consignment "
                "through two countries at least",
            )
        self._freight_payment(hbl, p)
        for j, goods in enumerate(hbl.goods):
            self._goods(hbl, goods, f"{p}.goods[{j}]")

    def _freight_payment(self, hbl: HouseBill, p: str) -> None:
        """Every house consignment (F14, F15) carries a CL116 method of payment of its transport charges."""
        code = hbl.freight_payment
        if code is None:
            self._emit(
                "ENS-FREIGHT-PAYMENT",
                f"{p}.freight_payment",
                hbl.issuer,
                hbl=hbl.hbl_number,
                codes=_codes(PAYMENT_METHODS),
            )
        elif code not in PAYMENT_METHODS:
            self._emit(
                "ENS-CODE-LIST",
                f"{p}.freight_payment",
                hbl.issuer,
                hbl=hbl.hbl_number,
                field="method of payment",
                value=code,
                code_list="CL116",
                problem=_codes(PAYMENT_METHODS),
            )

    def _party_problem(self, party_id: str | None) -> str | None:
        if party_id is None:
            return "it is missing"
        if self.c.party(party_id) is None:
            return f"it names {party_id}, which the booking does not describe"
        return None

    def _goods(self, hbl: HouseBill, goods: GoodsItem, p: str) -> None:
        number = hbl.hbl_number
        issuer = hbl.issuer
        text = goods.description
        problem = formats.check_description(text)
        if problem:
            self._emit("ENS-DESC-FORMAT", f"{p}.description", issuer, hbl=number, value=text, problem=problem.message)
        else:
            stop = formats.check_description_stopwords(text)
            if stop:
                self._emit(
                    "ENS-DESC-STOPWORDS", f"{p}.description", issuer, hbl=number, value=text, problem=stop.message
                )
        script = formats.check_script(text)
        if script:
            self._emit(
                "ENS-SCRIPT",
                f"{p}.description",
                issuer,
                hbl=number,
                field="description of goods",
                value=text,
                problem=script.message,
            )
        checks: tuple[tuple[str, str, Any, Callable[[Any], formats.FormatProblem | None]], ...] = (
            ("ENS-HS-CODE", "hs_code", goods.hs_code, formats.check_hs_code),
            ("ENS-PACKAGE-TYPE", "packages.type", goods.packages.type, formats.check_package_type),
            ("ENS-PACKAGE-COUNT", "packages.count", goods.packages.count, formats.check_package_count),
            ("ENS-GROSS-MASS", "gross_mass_kg", goods.gross_mass_kg, formats.check_gross_mass),
            ("ENS-UN-NUMBER", "un_number", goods.un_number, formats.check_un_number),
        )
        for rule_id, field, value, check in checks:
            problem = None if value is None else check(value)
            if problem:
                self._emit(rule_id, f"{p}.{field}", issuer, hbl=number, value=value, problem=problem.message)
        package = goods.packages.type
        if formats.check_package_type(package) is None and not formats.is_known_package_type(package):
            self._emit("ENS-PACKAGE-TYPE-UNKNOWN", f"{p}.packages.type", issuer, hbl=number, value=package)
        containers = [k.id for k in self.c.master.containers]
        if goods.container is not None and goods.container not in containers:
            listed = ", ".join(containers) or "none"
            self._emit(
                "ENS-GOODS-CONTAINER",
                f"{p}.container",
                issuer,
                hbl=number,
                problem=f"name container {goods.container}, which is not among the master B/L's containers ({listed})",
            )
        elif goods.container is None and self.c.master.mode is Mode.DEEP_SEA_CONTAINER:
            self._emit(
                "ENS-GOODS-CONTAINER",
                f"{p}.container",
                issuer,
                hbl=number,
                problem="name no container, but the master B/L is containerised",
            )

    def _plan(self) -> None:
        c = self.c
        plan = self.plan
        for error in plan.errors:
            self._emit(
                "ENS-PLAN",
                self._hbl_path(error.hbl),
                error.party or c.planning_party,
                hbl=error.hbl,
                problem=f"{error.message} [{error.code}]",
            )
        for warning in plan.warnings:
            self._emit(
                "ENS-PLAN-ADVICE",
                self._hbl_path(warning.hbl),
                c.planning_party,
                hbl=warning.hbl,
                problem=f"{warning.message} [{warning.code}]",
            )
        self._filer_eoris(plan.filings)
        self._filers(plan)
        self._f12_house_filers(plan)
        for f14 in (f for f in plan.filings if f.filing is FilingType.F14):
            self._supplementary_declarant(f14, plan.for_hbl(f14.hbl or ""))
        carrier_f12 = FilingType.F12 in plan.expected_from_carrier or any(
            f.filing is FilingType.F12 and f.hbl is None for f in plan.filings
        )
        for hbl in c.lowest_hbls():
            planned = plan.for_hbl(hbl.hbl_number)
            if not planned and plan.errors:
                continue
            self.findings.extend(
                validate_filing_set(
                    (f.filing for f in planned),
                    hbl=hbl.hbl_number,
                    carrier_f12=carrier_f12,
                    party=self._responsible(Responsible.PLANNING_PARTY),
                    path=self._hbl_path(hbl.hbl_number),
                )
            )

    def _filer_eoris(self, filings: Iterable[PlannedFiling]) -> None:
        reported: set[str] = set()
        for f in filings:
            party = self.c.party(f.filer)
            if f.filer in reported or party is None or party.eori:
                continue
            reported.add(f.filer)
            self._emit(
                "ENS-FILER-EORI",
                self._party_path(f.filer, "eori"),
                f.filer,
                hbl=f.hbl,
                filing=f.filing,
                subject=f.filer,
            )

    def _filing_parties(self, plan: FilingPlan) -> list[tuple[str, FilingType, str | None]]:
        """(filer, filing, hbl) of every filing of the plan, and the carrier's F12 when it is expected."""
        found = [(f.filer, f.filing, f.hbl) for f in plan.filings]
        if FilingType.F12 in plan.expected_from_carrier:
            found.insert(0, (self.c.master.carrier, FilingType.F12, None))
        return found

    def _filers(self, plan: FilingPlan) -> None:
        """Every filer files with an EU EORI and can be reached: customs refuses a GB or JP declarant (R3005), and
        the declarant block needs an e-mail or phone. One finding per filing, so that exactly that filing waits."""
        for filer, filing, hbl in self._filing_parties(plan):
            party = self.c.party(filer)
            if party is None:
                continue
            target = f"house B/L {hbl}" if hbl else f"master B/L {self.c.mbl}"
            where = {"hbl": hbl, "filing": filing, "subject": filer, "target": target}
            if party.eori and formats.check_eori(party.eori) is None:
                problem = formats.check_eu_eori(party.eori)
                if problem:
                    path = self._party_path(filer, "eori")
                    self._emit("ENS-FILER-EU-EORI", path, filer, value=party.eori, problem=problem.message, **where)
            if not _reachable(party.contact):
                self._emit("ENS-FILER-CONTACT", self._party_path(filer, "contact"), filer, **where)
            if party.representative is not None:
                self._representative_files(filer, party.representative, where)

    def _representative_files(self, filer: str, agent: Representative, where: dict[str, Any]) -> None:
        """A representative files with an EU EORI, a CL094 status and a way to reach it."""
        subject = f"the representative of {filer}"
        where = {**where, "subject": subject}
        problem = formats.check_eu_eori(agent.eori)
        if problem:
            path = self._party_path(filer, "representative.eori")
            self._emit("ENS-FILER-EU-EORI", path, filer, value=agent.eori, problem=problem.message, **where)
        if agent.status not in REPRESENTATIVE_STATUSES:
            self._emit(
                "ENS-CODE-LIST",
                self._party_path(filer, "representative.status"),
                filer,
                hbl=where["hbl"],
                filing=where["filing"],
                field=f"status of {subject}",
                value=agent.status,
                code_list="CL094",
                problem=_codes(REPRESENTATIVE_STATUSES),
            )
        if not _reachable(agent.contact):
            self._emit("ENS-FILER-CONTACT", self._party_path(filer, "representative.contact"), filer, **where)

    def _f12_house_filers(self, plan: FilingPlan) -> None:
        """The F12 names every house filer (F15 or F14) by its EU EORI; without one it cannot be filed."""
        if not self._f12_planned():
            return
        filers = list(dict.fromkeys(f.filer for f in plan.filings if f.filing in _HOUSE_LEAD))
        mbl = self.c.mbl
        f12 = {"filing": FilingType.F12, "value": mbl}
        if not filers:
            problem: str | None = "the plan has no house filer (F15 or F14) for the F12 to name"
            self._emit("ENS-F12-HOUSE-FILERS", "$.house_bills", self.c.planning_party, problem=problem, **f12)
            return
        for filer in filers:
            party = self.c.party(filer)
            eori = party.eori if party else None
            eu = formats.check_eu_eori(eori) if eori else None
            problem = "the booking gives it no EORI" if eori is None else eu.message if eu else None
            if problem:
                path = self._party_path(filer, "eori")
                self._emit("ENS-F12-HOUSE-FILERS", path, filer, problem=f"house filer {filer}: {problem}", **f12)

    def _supplementary_declarant(self, f14: PlannedFiling, same_hbl: tuple[PlannedFiling, ...]) -> None:
        declarant = f14.supplementary_declarant
        f16_filers = [f.filer for f in same_hbl if f.filing is FilingType.F16]
        path = self._hbl_path(f14.hbl)
        if declarant is None:
            self._emit(
                "ENS-F14-SUPP-DECL",
                path,
                f14.filer,
                hbl=f14.hbl,
                filing=FilingType.F14,
                value=declarant,
                problem="an F14 must name the filer of the F16 as supplementary declarant",
            )
            return
        if f16_filers and declarant not in f16_filers:
            self._emit(
                "ENS-F14-SUPP-DECL",
                path,
                f14.filer,
                hbl=f14.hbl,
                filing=FilingType.F14,
                value=declarant,
                problem=f"the F16 is filed by {', '.join(f16_filers)}, who must be named instead",
            )
        party = self.c.party(declarant)
        eori = party.eori if party is not None else None
        if not eori:
            problem = "the booking gives no EORI for it, and the F14 must carry it"
        else:
            eu = formats.check_eu_eori(eori)
            problem = f"its EORI {eori} cannot be named: {eu.message}" if eu is not None else ""
        if problem:
            self._emit(
                "ENS-F14-SUPP-DECL",
                self._party_path(declarant, "eori"),
                declarant,
                hbl=f14.hbl,
                filing=FilingType.F14,
                value=declarant,
                problem=problem,
            )

    def _deadline(self, now: datetime, margin: timedelta, arrival_at: datetime | None) -> None:
        deadline = lodging_deadline(self.c.master, arrival_at)
        status = deadline.status(now, margin)
        basis = deadline.basis + (" (approximate)" if deadline.approximate else "")
        fields = {
            "deadline": format_datetime(deadline.latest),
            "basis": basis,
            "now": format_datetime(now),
            "left": _duration(deadline.latest - now),
        }
        if status is DeadlineStatus.PASSED:
            self._emit("ENS-DEADLINE", "$.master.loading_at", self.c.planning_party, **fields)
        elif status is DeadlineStatus.APPROACHING:
            self._emit("ENS-DEADLINE-NEAR", "$.master.loading_at", self.c.planning_party, **fields)


def _reachable(contact: Contact | None) -> bool:
    """An e-mail or a phone: what a declarant or representative block needs (communication 1..9)."""
    return contact is not None and bool(contact.email or contact.phone)


def _codes(code_list: Mapping[Any, str]) -> str:
    """The codes of a list with their meaning, for a message a forwarder can act on."""
    return ", ".join(f"{code} {meaning}" for code, meaning in code_list.items())


def _duration(delta: timedelta) -> str:
    minutes = max(0, int(delta.total_seconds() // 60))
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


@lru_cache(maxsize=4096)
def _party_data_findings(
    subject: str, name: str, address: Address, contact: Contact | None, p: str, owner: str
) -> tuple[Finding, ...]:
    """``_Validator._party_data``'s findings, a function of its arguments alone: cached, as the same parties come
    back booking after booking (the rules and code lists it reads are reference data, fixed for the process)."""
    found: list[Finding] = []

    def emit(rule_id: str, path: str, party: str | None, **kwargs: Any) -> None:
        found.append(_finding(rule_id, path, party, **kwargs))

    problem = formats.check_address_r3002(address.street, address.number, address.po_box)
    if problem:
        emit("ENS-ADDRESS-R3002", f"{p}.address", owner, subject=subject, problem=problem.message)
    texts = (
        ("name", "name", name),
        ("address.street", "street", address.street),
        ("address.number", "number", address.number),
        ("address.po_box", "po_box", address.po_box),
        ("address.postcode", "postcode", address.postcode),
        ("address.city", "city", address.city),
        ("address.sub_division", "sub_division", address.sub_division),
    )
    for field, kind, value in texts:
        if value is None or (value == "" and kind in ("street", "po_box")):
            continue
        label = f"{kind.replace('_', ' ')} of {subject}"
        problem = formats.check_text(value, PARTY_TEXT_LENGTHS[kind])
        if problem:
            emit("ENS-TEXT", f"{p}.{field}", owner, field=label, value=value, problem=problem.message)
        problem = formats.check_script(value)
        if problem:
            emit("ENS-SCRIPT", f"{p}.{field}", owner, field=label, value=value, problem=problem.message)
    for kind, value in (("email", contact.email), ("phone", contact.phone)) if contact else ():
        if value is None:
            continue
        problem = formats.check_text(value, _CONTACT_LENGTH) or formats.check_script(value)
        if problem:
            label = f"{kind} of {subject}"
            emit("ENS-TEXT", f"{p}.contact.{kind}", owner, field=label, value=value, problem=problem.message)
    problem = formats.check_country(address.country)
    if problem:
        emit(
            "ENS-COUNTRY",
            f"{p}.address.country",
            owner,
            value=address.country,
            subject=subject,
            problem=problem.message,
        )
    return tuple(found)
