"""The filing ledger: what we know of each filing, so that customs' answers can be tied to a filing and an HBL chain.

A ``FilingRecord`` is written when a filing is sent (keyed by its LRN) and again under its MRN once customs
registers it, and under a referral's reference once customs opens one; every later notification finds its filing,
its HBL chain and the parties behind it through one of those keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from streams.domain.model import Consolidation
from streams.domain.notifications import Notification
from streams.domain.planning import FilingType, PlannedFiling


@dataclass(frozen=True, slots=True)
class FilingRecord:
    """One filing of an ENS and the consolidation context needed to route answers about it."""

    mbl: str
    hbl: str | None
    filing: FilingType
    filer: str
    planning_party: str
    carrier: str
    lrn: str | None = None
    mrn: str | None = None
    supplementary_declarant: str | None = None
    hbl_chain: tuple[tuple[str, str], ...] = ()
    """(HBL number, issuer party id) from the master loader's HBL down to the lowest one."""
    eoris: Mapping[str, str] = field(default_factory=dict)
    """EORI -> party id for the parties of this consolidation, to resolve EORIs customs names."""
    containers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Container id -> the lowest HBLs of this consolidation stuffed in it, to fan out a container-level answer."""

    @property
    def party_at_fault(self) -> str:
        """Whose data a house-level answer is about: the issuer of the lowest HBL, else the carrier."""
        return self.hbl_chain[-1][1] if self.hbl_chain else self.carrier

    def party_for_eori(self, eori: str | None) -> str | None:
        return None if eori is None else self.eoris.get(eori)

    def with_mrn(self, mrn: str) -> FilingRecord:
        return replace(self, mrn=mrn)

    def hbls_in(self, containers: tuple[str, ...]) -> tuple[str, ...]:
        """The HBLs stuffed in these containers, in order, without repeats; unknown containers give none."""
        return tuple(dict.fromkeys(h for c in containers for h in self.containers.get(c, ())))

    def to_json(self) -> dict[str, Any]:
        return {
            "mbl": self.mbl,
            "hbl": self.hbl,
            "filing": self.filing.value,
            "filer": self.filer,
            "planning_party": self.planning_party,
            "carrier": self.carrier,
            "lrn": self.lrn,
            "mrn": self.mrn,
            "supplementary_declarant": self.supplementary_declarant,
            "hbl_chain": [list(link) for link in self.hbl_chain],
            "eoris": dict(self.eoris),
            "containers": {k: list(v) for k, v in self.containers.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FilingRecord:
        return cls(
            mbl=data["mbl"],
            hbl=data.get("hbl"),
            filing=FilingType(data["filing"]),
            filer=data["filer"],
            planning_party=data["planning_party"],
            carrier=data["carrier"],
            lrn=data.get("lrn"),
            mrn=data.get("mrn"),
            supplementary_declarant=data.get("supplementary_declarant"),
            hbl_chain=tuple((h, i) for h, i in data.get("hbl_chain", ())),
            eoris=dict(data.get("eoris", {})),
            containers={k: tuple(v) for k, v in (data.get("containers") or {}).items()},
        )


def filing_record(consolidation: Consolidation, planned: PlannedFiling, lrn: str | None) -> FilingRecord:
    """The ledger's record of a planned filing of this consolidation."""
    chain: tuple[tuple[str, str], ...] = ()
    if planned.hbl is not None:
        hbl = consolidation.house_bill(planned.hbl)
        if hbl is not None:
            chain = tuple((h.hbl_number, h.issuer) for h in consolidation.chain(hbl))
    return FilingRecord(
        mbl=consolidation.mbl,
        hbl=planned.hbl,
        filing=planned.filing,
        filer=planned.filer,
        planning_party=consolidation.planning_party,
        carrier=consolidation.master.carrier,
        lrn=lrn,
        supplementary_declarant=planned.supplementary_declarant,
        hbl_chain=chain,
        eoris={p.eori: p.id for p in consolidation.parties.values() if p.eori},
        containers=container_map(consolidation),
    )


def container_map(consolidation: Consolidation) -> dict[str, tuple[str, ...]]:
    """Container id -> the lowest HBLs with goods in it (from the goods items' container ids)."""
    stuffed: dict[str, list[str]] = {}
    for hbl in consolidation.lowest_hbls():
        for item in hbl.goods:
            if item.container and hbl.hbl_number not in stuffed.setdefault(item.container, []):
                stuffed[item.container].append(hbl.hbl_number)
    return {container: tuple(hbls) for container, hbls in stuffed.items()}


def correlation_keys(notification: Notification) -> tuple[str, ...]:
    """The ledger keys a notification can be found under, most specific first."""
    keys: list[str] = []
    if notification.lrn:
        keys.append(lrn_key(notification.lrn))
    if notification.mrn:
        keys.append(mrn_key(notification.mrn))
    if notification.mbl and notification.hbl:
        keys.append(hbl_key(notification.mbl, notification.hbl))
    if notification.referral_reference:
        keys.append(referral_key(notification.referral_reference))
    if notification.mbl and notification.addressee:
        keys.append(party_key(notification.mbl, notification.addressee))
    return tuple(keys)


def lrn_key(lrn: str) -> str:
    return f"lrn:{lrn}"


def mrn_key(mrn: str) -> str:
    return f"mrn:{mrn}"


def referral_key(reference: str) -> str:
    return f"ref:{reference}"


def hbl_key(mbl: str, hbl: str) -> str:
    return f"hbl:{mbl}/{hbl}"


def party_key(mbl: str, eori: str) -> str:
    """For answers that name only the MBL and a party (an IE3N11 to a supplementary declarant)."""
    return f"party:{mbl}/{eori}"


def ledger_keys(record: FilingRecord, consolidation: Consolidation) -> tuple[str, ...]:
    """The keys a filing we send is published under: its LRN, and the MBL with its filer's and supplementary
    declarant's EORIs."""
    keys = [lrn_key(record.lrn)] if record.lrn else []
    for party_id in (record.filer, record.supplementary_declarant):
        party = consolidation.party(party_id)
        if party is not None and party.eori:
            keys.append(party_key(record.mbl, party.eori))
    return tuple(keys)
