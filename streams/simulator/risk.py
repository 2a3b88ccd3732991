"""The risk script: which outcome customs' risk analysis gives a complete house consignment.

Rules come first (a test or a demo wants a DNL on one HBL); the seed decides the rest, so a run with the same seed
and the same filings always gives the same answers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import Any

from streams.errors import InputError


class Outcome(StrEnum):
    """Result of risk analysis for one house consignment."""

    ASSESSMENT_COMPLETE = "assessment_complete"
    DO_NOT_LOAD = "do_not_load"
    RFI = "rfi"
    RFS = "rfs"


@dataclass(frozen=True, slots=True)
class HouseFacts:
    """What risk rules can look at: the data of a complete house consignment."""

    hbl: str
    filer: str
    hs_codes: tuple[str, ...] = ()
    descriptions: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RiskRule:
    """An outcome for every house that matches all the criteria given (criteria left None match anything)."""

    outcome: Outcome
    hbl: str | None = None
    hs_prefix: str | None = None
    description_word: str | None = None
    filer: str | None = None

    def matches(self, house: HouseFacts) -> bool:
        words = {w.strip(".,;:()").lower() for d in house.descriptions for w in d.split()}
        return (
            (self.hbl is None or self.hbl == house.hbl)
            and (self.hs_prefix is None or any(c.startswith(self.hs_prefix) for c in house.hs_codes))
            and (self.description_word is None or self.description_word.lower() in words)
            and (self.filer is None or self.filer == house.filer)
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome.value,
            "hbl": self.hbl,
            "hs_prefix": self.hs_prefix,
            "description_word": self.description_word,
            "filer": self.filer,
        }


@dataclass(frozen=True, slots=True)
class ScriptedRejection:
    """Customs rejects the first filing for this HBL with this error (a case our validator cannot foresee)."""

    hbl: str
    code: str = "12"
    element: str = "goodsItem/commodity/descriptionOfGoods"
    description: str = "description of goods is not precise enough"

    def to_json(self) -> dict[str, Any]:
        return {"hbl": self.hbl, "code": self.code, "element": self.element, "description": self.description}


#: Order in which seeded rates are laid on the unit interval; fixed so a seed means the same thing everywhere.
_RATE_ORDER = (Outcome.DO_NOT_LOAD, Outcome.RFI, Outcome.RFS)


@dataclass(frozen=True, slots=True)
class RiskScript:
    """Scripted risk outcomes and the simulator's timing.

    ``rates`` gives, per non-default outcome, the share of houses (0..1) that the seed sends that way when no rule
    matches. ``grace`` is how long an F14 waits for its F16 before IE3N02/IE3N11 (an RFI carries no answer
    deadline: real IE3Q02s cannot). ``office`` is the customs office of first entry used when a filing names none.
    """

    rules: tuple[RiskRule, ...] = ()
    rates: Mapping[Outcome, float] = field(default_factory=dict)
    rejections: tuple[ScriptedRejection, ...] = ()
    grace: timedelta = timedelta(hours=2)
    office: str = "NL000396"

    def __post_init__(self) -> None:
        if any(o not in _RATE_ORDER for o in self.rates):
            raise InputError(f"rates apply to {', '.join(_RATE_ORDER)} only")
        if any(r < 0 for r in self.rates.values()) or sum(self.rates.values()) > 1:
            raise InputError("rates must be non-negative and sum to at most 1")
        if len(self.office) != 8:
            raise InputError(f"office {self.office!r} is not an 8-character customs office reference")

    def outcome_for(self, house: HouseFacts, seed: int) -> Outcome:
        """The first matching rule's outcome, else a seeded draw over ``rates``, else assessment complete."""
        for rule in self.rules:
            if rule.matches(house):
                return rule.outcome
        digest = hashlib.sha256(f"{seed}:{house.hbl}".encode()).digest()
        draw = int.from_bytes(digest[:8], "big") / 2**64
        threshold = 0.0
        for outcome in _RATE_ORDER:
            threshold += self.rates.get(outcome, 0.0)
            if draw < threshold:
                return outcome
        return Outcome.ASSESSMENT_COMPLETE

    def to_json(self) -> dict[str, Any]:
        return {
            "rules": [r.to_json() for r in self.rules],
            "rates": {o.value: r for o, r in self.rates.items()},
            "rejections": [r.to_json() for r in self.rejections],
            "grace_seconds": self.grace.total_seconds(),
            "office": self.office,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RiskScript:
        """Inverse of ``to_json``; also the shape of a script file given to the simulator."""
        try:
            return cls(
                rules=tuple(
                    RiskRule(
                        outcome=Outcome(r["outcome"]),
                        hbl=r.get("hbl"),
                        hs_prefix=r.get("hs_prefix"),
                        description_word=r.get("description_word"),
                        filer=r.get("filer"),
                    )
                    for r in data.get("rules", ())
                ),
                rates={Outcome(o): float(r) for o, r in data.get("rates", {}).items()},
                rejections=tuple(ScriptedRejection(**r) for r in data.get("rejections", ())),
                grace=timedelta(seconds=float(data.get("grace_seconds", 7200))),
                office=data.get("office", "NL000396"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"risk script is not usable: {exc}") from exc
