"""The customs simulator: registers filings, links them per MBL + carrier EORI, runs the risk script on complete
house consignments and answers with the notifications the EU would send.

It is pure and deterministic (same seed, same filings, same times: same bytes out) so that a connector can run it
behind Kafka topics and tests can run it directly. Its whole state is JSON (``to_json``/``from_json``).

Decisions made without a public source: error codes follow UN/EDIFACT 9321, from which CL723 derives (12 incorrect
value, 13 missing, 14 not supported in this position, 26 duplicate detected, 92 out of sequence); an answer to a
referral that is not open gets an IE3N01 with code 92; the IE3N02/IE3N11 pair is sent once per F14, ``grace`` after it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import structlog

from streams.domain.dates import format_datetime, parse_datetime
from streams.domain.notifications import NotificationError, mrn_check_character
from streams.errors import InputError, XMLRejected
from streams.messages import build
from streams.simulator import amendments, arrival
from streams.simulator.checks import customs_grade_errors
from streams.simulator.filing import AMENDMENTS, ANSWERS, FILINGS, FilingFacts, read_filing
from streams.simulator.risk import HouseFacts, Outcome, RiskScript

log = structlog.get_logger(__name__)

_EORI = re.compile(r"^[A-Z]{2}[A-Z0-9]{1,15}$")
_MRN = re.compile(r"^[0-9]{2}[A-Z]{2}[A-Z0-9]{14}$")
_BASE36 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
MISSING, INCORRECT, NOT_SUPPORTED, DUPLICATE, OUT_OF_SEQUENCE = "13", "12", "14", "26", "92"


@dataclass(frozen=True, slots=True)
class Outbound:
    """One notification for one party: who receives it, which message, and its XML."""

    addressee: str
    message_type: str
    xml: bytes


@dataclass(slots=True)
class FilingRecord:
    """A registered filing."""

    filing: str
    lrn: str
    mrn: str
    declarant: str
    received_at: str
    office: str
    supplementary_declarant: str | None = None
    hs_codes: list[str] = field(default_factory=list)
    descriptions: list[str] = field(default_factory=list)
    status: str = "registered"
    """registered, amended or invalidated: what an IE3R08 reports."""
    last_notification: str = "IE3R01"
    hbl: str | None = None
    mbl: str | None = None


@dataclass(slots=True)
class HouseState:
    """The filings of one house consignment and what risk analysis made of it."""

    f15: FilingRecord | None = None
    f14: FilingRecord | None = None
    f16: FilingRecord | None = None
    outcome: str | None = None
    referral: str | None = None
    chased: bool = False
    control: str | None = None
    """The control notification customs sent (IE3N08 / IE3N09): the house consignment's filings are frozen."""

    def complete(self, has_master: bool) -> bool:
        """F12 + F15, or F12 + F14 + F16; F12 + F16 alone never is."""
        return has_master and (self.f15 is not None or (self.f14 is not None and self.f16 is not None))

    @property
    def lead(self) -> FilingRecord | None:
        """The filing that carries the house consignment's MRN and filer: the F15, else the F14."""
        return self.f15 or self.f14


@dataclass(slots=True)
class LinkState:
    """Everything filed under one linking key (MBL number + carrier EORI)."""

    mbl: str
    carrier: str
    f12: FilingRecord | None = None
    houses: dict[str, HouseState] = field(default_factory=dict)
    arrived_at: str | None = None
    """When the goods' arrival was registered: every filing of the ENS is frozen from then on."""


@dataclass(slots=True)
class Referral:
    """An open RFI or RFS."""

    kind: str
    link: str
    hbl: str


def _record(data: Mapping[str, Any] | None) -> FilingRecord | None:
    return None if data is None else FilingRecord(**data)


class CustomsSimulator:
    """Customs in a box: ``submit`` a filing or an answer, ``advance`` the clock, collect ``Outbound`` messages."""

    def __init__(self, script: RiskScript | None = None, seed: int = 0) -> None:
        self.script = script or RiskScript()
        self.seed = seed
        self._counter = 0
        self._mrns: dict[str, str] = {}
        self._links: dict[str, LinkState] = {}
        self._referrals: dict[str, Referral] = {}
        self._rejected: list[str] = []
        """HBLs whose scripted rejection was already given: a re-filing is accepted."""
        self._invalidated: list[FilingRecord] = []
        """Filings withdrawn by an accepted IE3Q04, kept for consultation (IE3R08)."""

    def submit(self, filing_xml: bytes, now: datetime) -> list[Outbound]:
        """Answer one filing (IE3F12/14/15/16) or referral answer (IE3R02/R03) received at ``now``.

        Raises ``XMLRejected`` when the XML cannot be read safely or names no declarant to answer.
        """
        facts = read_filing(filing_xml)
        if facts.declarant is None:
            raise XMLRejected(f"{facts.message_type} names no declarant: there is nobody to answer")
        if not _EORI.match(facts.declarant.value):
            error = NotificationError(INCORRECT, facts.declarant.pointer, "declarant EORI is not valid")
            out = [self._rejection(facts, [error], now)]
        elif facts.message_type in ANSWERS:
            out = self._answer(facts, now)
        elif facts.message_type in (*FILINGS, *AMENDMENTS) and (rejected := customs_grade_errors(filing_xml)):
            out = [self._rejection(facts, rejected, now)]
        elif facts.message_type in AMENDMENTS:
            out = amendments.amend(self, facts, now)
        elif facts.message_type == "IE3Q04":
            out = amendments.invalidate(self, facts, now)
        elif facts.message_type == "IE3Q05":
            out = amendments.consult(self, facts, now)
        elif facts.message_type not in FILINGS:
            error = NotificationError(NOT_SUPPORTED, f"/{facts.message_type}", f"{facts.message_type} is not accepted")
            out = [self._rejection(facts, [error], now)]
        else:
            out = self._filing(facts, now)
        log.info(
            "customs_simulator_answered",
            filing=facts.message_type,
            lrn=facts.lrn.value if facts.lrn else None,
            mrn=facts.mrn.value if facts.mrn else None,
            messages=[o.message_type for o in out],
        )
        return out

    def advance(self, now: datetime) -> list[Outbound]:
        """Send what time triggers: IE3N02 + IE3N11 for every F14 whose F16 is still missing after the grace period."""
        out: list[Outbound] = []
        for link in self._links.values():
            for house in link.houses.values():
                f14 = house.f14
                if f14 is None or house.f16 is not None or house.chased or f14.supplementary_declarant is None:
                    continue
                if now - parse_datetime(f14.received_at) < self.script.grace:
                    continue
                house.chased = True
                missing = f14.supplementary_declarant
                n02 = build.build_ie3n02(
                    mrn=f14.mrn,
                    notified_at=now,
                    mbl=link.mbl,
                    declarant=f14.declarant,
                    office=f14.office,
                    missing_filers=[missing],
                )
                n11 = build.build_ie3n11(
                    notified_at=now, mbl=link.mbl, office=f14.office, supplementary_declarant=missing
                )
                out += [Outbound(f14.declarant, "IE3N02", n02), Outbound(missing, "IE3N11", n11)]
        return out

    def control(self, mbl: str, carrier: str, hbl: str, now: datetime, aeo: bool = False) -> list[Outbound]:
        """Announce a control of a registered house consignment (IE3N08, IE3N09 for an AEO)."""
        return arrival.announce_control(self, mbl, carrier, hbl, now, aeo)

    def arrive(self, mbl: str, carrier: str, now: datetime) -> list[Outbound]:
        """Register the arrival of the goods filed under a linking key, as an IE3N06 would (answered IE3R04)."""
        return arrival.arrive(self, mbl, carrier, now)

    def _filing(self, facts: FilingFacts, now: datetime) -> list[Outbound]:
        errors = self._structural_errors(facts) or self._scripted_errors(facts)
        if errors:
            return [self._rejection(facts, errors, now)]
        assert facts.lrn and facts.declarant and facts.mbl
        declarant = facts.declarant.value
        carrier = facts.carrier.value if facts.carrier else declarant
        key = f"{facts.mbl.value}|{carrier}"
        link = self._links.get(key) or LinkState(mbl=facts.mbl.value, carrier=carrier)
        house = link.houses.get(facts.hbl.value) if facts.hbl else None
        conflict = self._lifecycle_error(facts, link, house)
        if conflict is not None:
            return [self._lifecycle_rejection(facts, conflict, now)]

        office = facts.office.value if facts.office else link.f12.office if link.f12 else self.script.office
        record = FilingRecord(
            filing=facts.message_type,
            lrn=facts.lrn.value,
            mrn=self._next_mrn(office, now),
            declarant=declarant,
            received_at=format_datetime(now),
            office=office,
            supplementary_declarant=facts.supplementary_declarant.value if facts.supplementary_declarant else None,
            hs_codes=list(facts.hs_codes),
            descriptions=list(facts.descriptions),
            hbl=facts.hbl.value if facts.hbl else None,
            mbl=facts.mbl.value,
        )
        self._mrns[f"{declarant}|{record.lrn}"] = record.mrn
        self._links[key] = link
        if facts.message_type == "IE3F12":
            link.f12 = record
            candidates = list(link.houses)
        else:
            assert facts.hbl is not None
            house = link.houses.setdefault(facts.hbl.value, HouseState())
            setattr(house, facts.message_type[-3:].lower(), record)
            candidates = [facts.hbl.value]

        registration = {
            "lrn": record.lrn,
            "mrn": record.mrn,
            "registered_at": now,
            "circumstance": facts.message_type[-3:],
            "mbl": link.mbl,
            "carrier": carrier,
            "declarant": declarant,
            "office": office,
        }
        out = [Outbound(declarant, "IE3R01", build.build_ie3r01(**registration))]
        if facts.is_house_filing and carrier != declarant:
            out.append(Outbound(carrier, "IE3R01", build.build_ie3r01(**registration)))
        for hbl in candidates:
            out += self._assess(key, link, hbl, now)
        return out

    def _structural_errors(self, facts: FilingFacts) -> list[NotificationError]:
        """The checks customs makes before registering: presence and format of the keys."""
        errors: list[NotificationError] = []

        def missing(name: str, what: str) -> None:
            errors.append(NotificationError(MISSING, facts.expected_pointer(name), f"{what} is missing"))

        if facts.lrn is None:
            missing("lrn", "LRN")
        elif len(facts.lrn.value) > 22:
            errors.append(NotificationError(INCORRECT, facts.lrn.pointer, "LRN is longer than 22 characters"))
        for found, what in (
            (facts.declarant, "declarant"),
            (facts.carrier, "carrier"),
            (facts.supplementary_declarant, "supplementary declarant"),
        ):
            if found is not None and not _EORI.match(found.value):
                errors.append(NotificationError(INCORRECT, found.pointer, f"{what} EORI {found.value!r} is not valid"))
        if facts.mbl is None:
            missing("mbl", "master transport document number")
        if facts.is_house_filing:
            if facts.hbl is None:
                missing("hbl", "house transport document number")
            if facts.carrier is None:
                missing("carrier", "carrier (linking key)")
        if facts.filing_type == "IE3F14" and facts.supplementary_declarant is None:
            missing("supplementary_declarant", "supplementary declarant of the F16")
        if facts.message_type == "IE3F16" and not errors:
            errors += self._f16_errors(facts)
        return errors

    def _scripted_errors(self, facts: FilingFacts) -> list[NotificationError]:
        """The script's rejection of the first house filing for an HBL, pointing at the element it names."""
        if facts.hbl is None or facts.hbl.value in self._rejected:
            return []
        for rejection in self.script.rejections:
            if rejection.hbl == facts.hbl.value:
                self._rejected.append(rejection.hbl)
                pointer = f"/{facts.message_type}/consignmentMasterLevel/consignmentHouseLevel/{rejection.element}"
                return [NotificationError(rejection.code, pointer, rejection.description)]
        return []

    def _f16_errors(self, facts: FilingFacts) -> list[NotificationError]:
        """An F16 must come from the supplementary declarant that the matching F14 names."""
        assert facts.mbl and facts.carrier and facts.hbl and facts.declarant
        link = self._links.get(f"{facts.mbl.value}|{facts.carrier.value}")
        house = link.houses.get(facts.hbl.value) if link else None
        named = house.f14.supplementary_declarant if house and house.f14 else None
        if named is None or named == facts.declarant.value:
            return []
        return [
            NotificationError(
                INCORRECT,
                facts.declarant.pointer,
                f"the F14 of {facts.hbl.value} names {named} as supplementary declarant, not {facts.declarant.value}",
            )
        ]

    def _lifecycle_error(
        self, facts: FilingFacts, link: LinkState, house: HouseState | None
    ) -> NotificationError | None:
        """Checks against what is already filed: duplicate LRN, linking key or house filing."""
        assert facts.lrn and facts.declarant and facts.mbl
        if f"{facts.declarant.value}|{facts.lrn.value}" in self._mrns:
            return NotificationError(DUPLICATE, facts.lrn.pointer, f"LRN {facts.lrn.value} is already registered")
        if facts.message_type == "IE3F12" and link.f12 is not None:
            return NotificationError(DUPLICATE, facts.mbl.pointer, f"linking key {facts.mbl.value} is already used")
        if house is None or facts.hbl is None:
            return None
        taken = {
            "IE3F15": house.f15 or house.f14,
            "IE3F14": house.f15 or house.f14,
            "IE3F16": house.f16 or house.f15,
        }[facts.message_type]
        if taken is not None:
            return NotificationError(
                DUPLICATE, facts.hbl.pointer, f"house document {facts.hbl.value} is already filed ({taken.filing})"
            )
        return None

    def _rejection(self, facts: FilingFacts, errors: list[NotificationError], now: datetime) -> Outbound:
        assert facts.declarant is not None
        xml = build.build_ie3n99(
            errors=errors,
            notified_at=now,
            lrn=(facts.lrn or facts.functional_reference).value[:35]
            if facts.lrn or facts.functional_reference
            else None,
            mbl=facts.mbl.value if facts.mbl else None,
            declarant=facts.declarant.value[:17],
            office=facts.office.value if facts.office and len(facts.office.value) == 8 else None,
        )
        return Outbound(facts.declarant.value, "IE3N99", xml)

    def _lifecycle_rejection(self, facts: FilingFacts, error: NotificationError, now: datetime) -> Outbound:
        assert facts.declarant is not None
        xml = build.build_ie3n01(
            errors=[error],
            notified_at=now,
            declarant=facts.declarant.value,
            lrn=facts.lrn.value if facts.lrn else None,
            mrn=facts.mrn.value if facts.mrn and _MRN.match(facts.mrn.value) else None,
            mbl=facts.mbl.value if facts.mbl else None,
        )
        return Outbound(facts.declarant.value, "IE3N01", xml)

    def _assess(self, key: str, link: LinkState, hbl: str, now: datetime) -> list[Outbound]:
        """Run the risk script once a house consignment is complete, and notify the filer and the carrier."""
        house = link.houses[hbl]
        lead = house.lead
        if house.outcome is not None or lead is None or not house.complete(link.f12 is not None):
            return []
        parts = [r for r in (house.f15, house.f14, house.f16) if r is not None]
        facts = HouseFacts(
            hbl=hbl,
            filer=lead.declarant,
            hs_codes=tuple(c for r in parts for c in r.hs_codes),
            descriptions=tuple(d for r in parts for d in r.descriptions),
        )
        outcome = self.script.outcome_for(facts, self.seed)
        house.outcome = outcome.value
        state = lead.office[:2]
        common = {"mrn": lead.mrn, "member_state": state}
        if outcome is Outcome.ASSESSMENT_COMPLETE:
            return self._cleared(link, hbl, now)
        if outcome is Outcome.DO_NOT_LOAD:
            xml = build.build_ie3q01(
                **common, issued_at=now, hbl=hbl, mbl=link.mbl, carrier=link.carrier, declarant=lead.declarant
            )
            return self._to_filer_and_carrier(lead.declarant, link.carrier, "IE3Q01", xml)
        reference = self._next_reference(outcome, now)
        house.referral = reference
        self._referrals[reference] = Referral(kind=outcome.value, link=key, hbl=hbl)
        if outcome is Outcome.RFI:
            request = {"referral_reference": reference, "hbl": hbl, "mbl": link.mbl}
            return [
                Outbound(
                    lead.declarant,
                    "IE3Q02",
                    build.build_ie3q02(**common, **request, issued_at=now, declarant=lead.declarant),
                ),
                Outbound(
                    link.carrier, "IE3N04", build.build_ie3n04(**common, **request, issued_at=now, carrier=link.carrier)
                ),
            ]
        request = {"referral_reference": reference, "hbl": hbl, "mbl": link.mbl}
        return [
            Outbound(
                lead.declarant,
                "IE3Q03",
                build.build_ie3q03(**common, **request, issued_at=now, declarant=lead.declarant),
            ),
            Outbound(
                link.carrier, "IE3N05", build.build_ie3n05(**common, **request, issued_at=now, carrier=link.carrier)
            ),
        ]

    def _cleared(self, link: LinkState, hbl: str, now: datetime) -> list[Outbound]:
        lead = link.houses[hbl].lead
        assert lead is not None
        xml = build.build_ie3n03(
            mrn=lead.mrn,
            completed_at=now,
            member_state=lead.office[:2],
            hbls=[hbl],
            mbl=link.mbl,
            carrier=link.carrier,
            declarant=lead.declarant,
        )
        return self._to_filer_and_carrier(lead.declarant, link.carrier, "IE3N03", xml)

    @staticmethod
    def _to_filer_and_carrier(filer: str, carrier: str, message_type: str, xml: bytes) -> list[Outbound]:
        out = [Outbound(filer, message_type, xml)]
        if carrier != filer:
            out.append(Outbound(carrier, message_type, xml))
        return out

    def _answer(self, facts: FilingFacts, now: datetime) -> list[Outbound]:
        """IE3R02 answers an RFI, IE3R03 an RFS; an answer to an open referral clears the house consignment."""
        expected = {"IE3R02": Outcome.RFI.value, "IE3R03": Outcome.RFS.value}[facts.message_type]
        reference = facts.referral_reference.value if facts.referral_reference else None
        referral = self._referrals.get(reference) if reference else None
        if referral is None or referral.kind != expected:
            pointer = (
                facts.referral_reference.pointer
                if facts.referral_reference
                else facts.expected_pointer("referral_reference")
            )
            error = NotificationError(
                OUT_OF_SEQUENCE, pointer, f"no open {expected.upper()} with reference {reference}"
            )
            return [self._lifecycle_rejection(facts, error, now)]
        del self._referrals[reference]
        link = self._links[referral.link]
        house = link.houses[referral.hbl]
        house.outcome = Outcome.ASSESSMENT_COMPLETE.value
        house.referral = None
        return self._cleared(link, referral.hbl, now)

    def _next_mrn(self, office: str, now: datetime) -> str:
        """Year, country of the office of first entry, 13 characters unique per simulator, check character."""
        self._counter += 1
        digest = hashlib.sha256(f"{self.seed}:{self._counter}".encode()).digest()
        salt = "".join(_BASE36[b % 36] for b in digest[:6])
        body = f"{now.year % 100:02d}{office[:2].upper()}{salt}{_base36(self._counter, 7)}"
        return body + mrn_check_character(body)

    def _next_reference(self, outcome: Outcome, now: datetime) -> str:
        self._counter += 1
        return f"{outcome.value.upper()}{now.year % 100:02d}{_base36(self._counter, 8)}"

    def state(self) -> dict[str, Any]:
        """The whole state for a connector to persist, its parts the simulator's own dataclasses (not copies): to
        be written at once by orjson, which serialises dataclasses itself. ``dataclasses.asdict`` plus the json
        module took two thirds of the simulator's CPU in a soak, where it checkpoints after every batch."""
        return {
            "seed": self.seed,
            "counter": self._counter,
            "script": self.script.to_json(),
            "mrns": self._mrns,
            "links": self._links,
            "referrals": self._referrals,
            "rejected": self._rejected,
            "invalidated": self._invalidated,
        }

    def to_json(self) -> dict[str, Any]:
        """The whole state as plain JSON values (``from_json`` restores it)."""
        loaded: dict[str, Any] = orjson.loads(orjson.dumps(self.state()))
        return loaded

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CustomsSimulator:
        """Restore a simulator saved with ``to_json``."""
        try:
            simulator = cls(RiskScript.from_json(data["script"]), int(data["seed"]))
            simulator._counter = int(data["counter"])
            simulator._mrns = dict(data["mrns"])
            simulator._links = {k: _link(v) for k, v in data["links"].items()}
            simulator._referrals = {k: Referral(**v) for k, v in data["referrals"].items()}
            simulator._rejected = list(data.get("rejected", []))
            simulator._invalidated = [FilingRecord(**r) for r in data.get("invalidated", [])]
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"simulator state is not usable: {exc}") from exc
        return simulator


def _house(data: Mapping[str, Any]) -> HouseState:
    return HouseState(
        f15=_record(data["f15"]),
        f14=_record(data["f14"]),
        f16=_record(data["f16"]),
        outcome=data["outcome"],
        referral=data["referral"],
        chased=data["chased"],
        control=data.get("control"),
    )


def _link(data: Mapping[str, Any]) -> LinkState:
    return LinkState(
        mbl=data["mbl"],
        carrier=data["carrier"],
        f12=_record(data["f12"]),
        houses={k: _house(v) for k, v in data["houses"].items()},
        arrived_at=data.get("arrived_at"),
    )


def _base36(number: int, width: int) -> str:
    digits = ""
    while number:
        number, rest = divmod(number, 36)
        digits = _BASE36[rest] + digits
    return digits.rjust(width, "0")
