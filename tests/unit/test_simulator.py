"""The customs simulator answers rendered filings the way the EU's common repository would."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from streams.domain.model import Consolidation
from streams.domain.notifications import NotificationKind, is_well_formed_mrn
from streams.domain.planning import FilingDraft, FilingType, PlannedFiling
from streams.errors import InputError, XMLRejected
from streams.messages import NS
from streams.messages.answers import AnswerText, RfiAnswer, RfsAnswer, ScreeningResult
from streams.messages.parse import parse_notification
from streams.messages.render import render_filing, render_rfi_answer, render_rfs_answer
from streams.messages.schemas import validate
from streams.simulator import CustomsSimulator, Outbound, Outcome, RiskRule, RiskScript
from streams.simulator.risk import HouseFacts
from tests.data import seed_json

NOW = datetime(2027, 6, 13, 8, tzinfo=UTC)
MBL = "OCLU26TYO7781234"
ML_TYO, CARRIER_A, COLOADER_A, COLOADER_C = "NL812345678000", "NL860123456", "DE993311220000", "BE0455123987"
OWN_HBL, COLOADED_HBL = "SKC26TYO0001", "AOB26OSA1001"


@pytest.fixture(scope="module")
def consolidation() -> Consolidation:
    data = seed_json()
    for party in data["parties"]:
        if party["id"] == "CARRIER-A":
            party["contact"] = {"email": "ops@carrier.example"}
    return Consolidation.from_json(data)


@pytest.fixture(scope="module")
def filings(consolidation):
    """Rendered filings of the seed, by name."""

    def render(filing: FilingType, hbl: str | None, filer: str, lrn: str, supplementary: str | None = None) -> bytes:
        planned = PlannedFiling(filing, hbl, filer, supplementary_declarant=supplementary)
        return render_filing(FilingDraft(consolidation, planned, lrn, NOW))

    return {
        "F12": render(FilingType.F12, None, "CARRIER-A", "CARRIER-F12-1"),
        "F15": render(FilingType.F15, OWN_HBL, "ML-TYO", "ML-F15-1"),
        "F14": render(FilingType.F14, COLOADED_HBL, "ML-TYO", "ML-F14-1", "COLOADER-A"),
        "F16": render(FilingType.F16, COLOADED_HBL, "COLOADER-A", "CLA-F16-1"),
        "F16-wrong-filer": render(FilingType.F16, COLOADED_HBL, "COLOADER-C", "CLC-F16-1"),
    }


def kinds(out: list[Outbound]) -> list[tuple[str, str]]:
    return [(o.addressee, o.message_type) for o in out]


def parsed(out: list[Outbound], message_type: str) -> list:
    return [parse_notification(o.xml) for o in out if o.message_type == message_type]


def rfi_answer(mrn: str, reference: str) -> bytes:
    return render_rfi_answer(
        RfiAnswer(
            mrn=mrn,
            referral_request_reference=reference,
            declarant_eori=ML_TYO,
            responsible_member_state="NL",
            issued_at=NOW,
            texts=(AnswerText(text="The seller is Tokyo Electronics KK"),),
            hbl=OWN_HBL,
        )
    )


class TestRegistrationAndCompleteness:
    def test_f12_and_f15_complete(self, filings):
        """F12 + F15: each filing is registered, then the filer and the carrier get assessment complete."""
        sim = CustomsSimulator(RiskScript(), seed=1)
        first = sim.submit(filings["F12"], NOW)
        assert kinds(first) == [(CARRIER_A, "IE3R01")]
        second = sim.submit(filings["F15"], NOW + timedelta(minutes=5))
        assert kinds(second) == [
            (ML_TYO, "IE3R01"),
            (CARRIER_A, "IE3R01"),
            (ML_TYO, "IE3N03"),
            (CARRIER_A, "IE3N03"),
        ]
        registration = parsed(second, "IE3R01")[0]
        assert registration.lrn == "ML-F15-1" and is_well_formed_mrn(registration.mrn)
        cleared = parsed(second, "IE3N03")[0]
        assert (cleared.kind, cleared.hbl, cleared.mrn, cleared.mbl) == (
            NotificationKind.ASSESSMENT_COMPLETE,
            OWN_HBL,
            registration.mrn,
            MBL,
        )

    def test_house_filing_before_master_is_registered_and_waits(self, filings):
        """A house filing whose MBL no F12 has named yet is accepted; it completes when the F12 arrives."""
        sim = CustomsSimulator(RiskScript(), seed=1)
        assert [m for _, m in kinds(sim.submit(filings["F15"], NOW))] == ["IE3R01", "IE3R01"]
        later = sim.submit(filings["F12"], NOW + timedelta(hours=1))
        assert kinds(later) == [(CARRIER_A, "IE3R01"), (ML_TYO, "IE3N03"), (CARRIER_A, "IE3N03")]

    def test_mrns_are_unique_and_well_formed(self, filings):
        """Every registration gets its own well-formed MRN whose country is that of the office of first entry."""
        sim = CustomsSimulator(RiskScript(), seed=3)
        out = [o for name in ("F12", "F15", "F14", "F16") for o in sim.submit(filings[name], NOW)]
        mrns = {n.lrn: n.mrn for n in parsed(out, "IE3R01")}
        assert len(set(mrns.values())) == 4
        assert all(is_well_formed_mrn(m) and m.startswith("27NL") for m in mrns.values())

    def test_f14_without_f16_chases_after_grace(self, filings):
        """An F14 whose F16 does not come: IE3N02 to the F14 filer naming the missing filer, IE3N11 to it, once."""
        sim = CustomsSimulator(RiskScript(grace=timedelta(hours=2)), seed=1)
        sim.submit(filings["F12"], NOW)
        f14_mrn = parsed(sim.submit(filings["F14"], NOW), "IE3R01")[0].mrn
        assert sim.advance(NOW + timedelta(hours=1)) == []
        out = sim.advance(NOW + timedelta(hours=3))
        assert kinds(out) == [(ML_TYO, "IE3N02"), (COLOADER_A, "IE3N11")]
        n02, n11 = parse_notification(out[0].xml), parse_notification(out[1].xml)
        assert (n02.kind, n02.mrn, n02.mbl, n02.missing_filers) == (
            NotificationKind.NOT_COMPLETE,
            f14_mrn,
            MBL,
            (COLOADER_A,),
        )
        assert (n11.kind, n11.addressee, n11.mbl) == (NotificationKind.PENDING, COLOADER_A, MBL)
        assert sim.advance(NOW + timedelta(hours=5)) == []

    def test_f14_and_f16_complete(self, filings):
        """F12 + F14 + F16 completes the house consignment; no chase follows."""
        sim = CustomsSimulator(RiskScript(), seed=1)
        sim.submit(filings["F12"], NOW)
        sim.submit(filings["F14"], NOW)
        out = sim.submit(filings["F16"], NOW + timedelta(minutes=30))
        assert [m for _, m in kinds(out)] == ["IE3R01", "IE3R01", "IE3N03", "IE3N03"]
        assert parsed(out, "IE3N03")[0].addressee == ML_TYO
        assert sim.advance(NOW + timedelta(days=1)) == []

    def test_f12_and_f16_alone_never_complete(self, filings):
        """F12 + F16 without an F14 is registered but never assessed, however long one waits."""
        sim = CustomsSimulator(RiskScript(), seed=1)
        out = sim.submit(filings["F12"], NOW) + sim.submit(filings["F16"], NOW)
        out += sim.advance(NOW + timedelta(days=3))
        assert {m for _, m in kinds(out)} == {"IE3R01"}


class TestRejections:
    def test_missing_lrn(self, filings):
        """A filing without LRN gets IE3N99 with code 13 and the pointer to where the LRN belongs."""
        data = filings["F15"].replace(b"<LRN>ML-F15-1</LRN>", b"")
        out = CustomsSimulator(RiskScript(), seed=1).submit(data, NOW)
        assert kinds(out) == [(ML_TYO, "IE3N99")]
        [error] = parse_notification(out[0].xml).errors
        assert (error.code, error.pointer) == ("13", "/IE3F15/LRN")

    def test_bad_carrier_eori(self, filings):
        """A malformed carrier EORI gets code 12 pointing at the element where it was found."""
        data = filings["F15"].replace(CARRIER_A.encode(), b"nl-860")
        out = CustomsSimulator(RiskScript(), seed=1).submit(data, NOW)
        n99 = parse_notification(out[0].xml)
        assert (n99.kind, n99.lrn) == (NotificationKind.REJECTED, "ML-F15-1")
        assert [(e.code, e.pointer) for e in n99.errors] == [
            ("12", "/IE3F15/consignmentMasterLevel/consignmentHouseLevel/carrier/identificationNumber")
        ]

    def test_duplicate_lrn(self, filings):
        """Filing the same LRN twice gets IE3N01 with code 26 (duplicate)."""
        sim = CustomsSimulator(RiskScript(), seed=1)
        sim.submit(filings["F15"], NOW)
        out = sim.submit(filings["F15"], NOW)
        assert kinds(out) == [(ML_TYO, "IE3N01")]
        assert [(e.code, e.pointer) for e in parse_notification(out[0].xml).errors] == [("26", "/IE3F15/LRN")]

    def test_f16_from_another_filer_than_the_f14_names(self, filings):
        """An F16 from a party the F14 did not name as supplementary declarant is rejected."""
        sim = CustomsSimulator(RiskScript(), seed=1)
        sim.submit(filings["F14"], NOW)
        out = sim.submit(filings["F16-wrong-filer"], NOW)
        assert kinds(out) == [(COLOADER_C, "IE3N99")]
        [error] = parse_notification(out[0].xml).errors
        assert (error.code, error.pointer) == ("12", "/IE3F16/declarant/identificationNumber")
        assert COLOADER_A in (error.description or "")

    def test_unsupported_filing(self):
        """A message that is not an F12/F14/F15/F16 or an answer gets IE3N99 code 14."""
        data = f"<IE3F10 xmlns='{NS}'><LRN>X1</LRN><declarant><identificationNumber>{ML_TYO}</identificationNumber>"
        out = CustomsSimulator(RiskScript(), seed=1).submit((data + "</declarant></IE3F10>").encode(), NOW)
        assert [e.code for e in parse_notification(out[0].xml).errors] == ["14"]

    def test_unsafe_xml_raises(self):
        """XML the hardened reader refuses is not answered: it raises XMLRejected."""
        with pytest.raises(XMLRejected):
            CustomsSimulator(RiskScript(), seed=1).submit(b'<!DOCTYPE x [<!ENTITY a "b">]><x/>', NOW)


class TestRiskScript:
    def test_scripted_dnl(self, filings):
        """A rule on the HBL gives a DNL to the filer and the carrier."""
        script = RiskScript(rules=(RiskRule(Outcome.DO_NOT_LOAD, hbl=OWN_HBL),))
        sim = CustomsSimulator(script, seed=1)
        sim.submit(filings["F12"], NOW)
        out = sim.submit(filings["F15"], NOW)
        assert kinds(out)[2:] == [(ML_TYO, "IE3Q01"), (CARRIER_A, "IE3Q01")]
        dnl = parse_notification(out[2].xml)
        assert (dnl.kind, dnl.hbl, dnl.mbl, dnl.carrier_eori) == (NotificationKind.DO_NOT_LOAD, OWN_HBL, MBL, CARRIER_A)

    def test_rfi_then_answer_clears(self, filings):
        """An RFI goes to the filer with a notice to the carrier; the IE3R02 answer brings assessment complete."""
        script = RiskScript(rules=(RiskRule(Outcome.RFI, hs_prefix="8471"),))
        sim = CustomsSimulator(script, seed=1)
        sim.submit(filings["F12"], NOW)
        out = sim.submit(filings["F15"], NOW)
        assert kinds(out)[2:] == [(ML_TYO, "IE3Q02"), (CARRIER_A, "IE3N04")]
        rfi, notice = parse_notification(out[2].xml), parse_notification(out[3].xml)
        assert rfi.referral_reference and rfi.referral_reference == notice.referral_reference
        assert rfi.deadline is None and notice.deadline is None, "an IE3Q02/IE3N04 has no deadline element"
        assert (rfi.hbl, notice.carrier_eori) == (OWN_HBL, CARRIER_A)
        answered = sim.submit(rfi_answer(rfi.mrn, rfi.referral_reference), NOW + timedelta(hours=2))
        assert kinds(answered) == [(ML_TYO, "IE3N03"), (CARRIER_A, "IE3N03")]
        assert parse_notification(answered[0].xml).hbl == OWN_HBL

    def test_answer_to_unknown_referral(self, filings):
        """An IE3R02 quoting no open referral gets IE3N01 code 92 (out of sequence)."""
        out = CustomsSimulator(RiskScript(), seed=1).submit(rfi_answer("27NLA1B2C3D4E5F6G7", "RFI-NONE"), NOW)
        assert kinds(out) == [(ML_TYO, "IE3N01")]
        assert [e.code for e in parse_notification(out[0].xml).errors] == ["92"]

    def test_rfs_by_description_word_then_screening(self, filings):
        """A rule on a description word gives an RFS and its carrier notice; IE3R03 results clear the house."""
        script = RiskScript(rules=(RiskRule(Outcome.RFS, description_word="laptop"),))
        sim = CustomsSimulator(script, seed=1)
        sim.submit(filings["F12"], NOW)
        out = sim.submit(filings["F15"], NOW)
        assert kinds(out)[2:] == [(ML_TYO, "IE3Q03"), (CARRIER_A, "IE3N05")]
        rfs = parse_notification(out[2].xml)
        answer = RfsAnswer(
            mrn=rfs.mrn,
            declarant_eori=ML_TYO,
            responsible_member_state="NL",
            issued_at=NOW,
            results=(ScreeningResult(rfs.referral_reference, OWN_HBL, "1", ("XRY", "ETD")),),
        )
        assert [m for _, m in kinds(sim.submit(render_rfs_answer(answer), NOW))] == ["IE3N03", "IE3N03"]

    def test_rule_on_filer_only_matches_that_filer(self):
        """A rule naming a filer leaves other filers' houses alone."""
        rule = RiskRule(Outcome.RFI, filer=ML_TYO)
        assert rule.matches(HouseFacts("H1", ML_TYO)) and not rule.matches(HouseFacts("H1", COLOADER_A))

    def test_seeded_outcomes_follow_rates(self):
        """With no rule, the seed draws outcomes in proportion to the rates, reproducibly."""
        script = RiskScript(rates={Outcome.DO_NOT_LOAD: 0.2, Outcome.RFI: 0.3})
        houses = [HouseFacts(f"HBL{i}", ML_TYO) for i in range(400)]
        drawn = [script.outcome_for(h, seed=7) for h in houses]
        assert drawn == [script.outcome_for(h, seed=7) for h in houses]
        assert 40 < drawn.count(Outcome.DO_NOT_LOAD) < 120 and 80 < drawn.count(Outcome.RFI) < 160
        assert drawn != [script.outcome_for(h, seed=8) for h in houses]

    def test_rates_must_be_a_distribution(self):
        """Rates that sum above 1 are refused."""
        with pytest.raises(InputError):
            RiskScript(rates={Outcome.DO_NOT_LOAD: 0.7, Outcome.RFI: 0.5})

    def test_script_json_round_trip(self):
        """A script survives its JSON form."""
        script = RiskScript(rules=(RiskRule(Outcome.RFS, hs_prefix="85"),), rates={Outcome.RFI: 0.1})
        assert RiskScript.from_json(json.loads(json.dumps(script.to_json()))) == script


class TestDeterminismAndState:
    def run(self, filings, seed: int, restore_midway: bool = False) -> list[Outbound]:
        script = RiskScript(rates={Outcome.RFI: 0.5, Outcome.DO_NOT_LOAD: 0.25})
        sim = CustomsSimulator(script, seed=seed)
        out = sim.submit(filings["F12"], NOW) + sim.submit(filings["F14"], NOW)
        if restore_midway:
            sim = CustomsSimulator.from_json(json.loads(json.dumps(sim.to_json())))
        out += sim.advance(NOW + timedelta(hours=3))
        out += sim.submit(filings["F16"], NOW + timedelta(hours=4)) + sim.submit(filings["F15"], NOW)
        return out

    def test_same_seed_same_bytes(self, filings):
        """Two runs with the same seed and inputs emit byte-identical messages to the same parties."""
        assert self.run(filings, seed=11) == self.run(filings, seed=11)

    def test_other_seed_other_mrns(self, filings):
        """Another seed gives other MRNs."""
        first = {n.mrn for n in parsed(self.run(filings, seed=11), "IE3R01")}
        second = {n.mrn for n in parsed(self.run(filings, seed=12), "IE3R01")}
        assert first.isdisjoint(second)

    def test_state_survives_json(self, filings):
        """Saving and restoring the state midway changes nothing in what follows."""
        assert self.run(filings, seed=5, restore_midway=True) == self.run(filings, seed=5)

    def test_every_message_is_schema_valid(self, filings):
        """Every emitted notification validates against the project's XSD of its message type."""
        for seed in range(6):
            for outbound in self.run(filings, seed=seed):
                validate(outbound.xml, outbound.message_type)

    def test_corrupt_state_refused(self):
        """A state that is not the simulator's JSON raises InputError."""
        with pytest.raises(InputError):
            CustomsSimulator.from_json({"seed": 1})
