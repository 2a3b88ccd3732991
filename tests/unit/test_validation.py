"""The validator: findings with rule id, path and party on broken variants; valid sets; the report's shape."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from streams.domain.model import Consolidation
from streams.domain.planning import FilingPlan, FilingType, PlannedFiling, plan
from streams.domain.rules import RULES, Responsible, Severity
from streams.domain.validation import ValidationReport, validate, validate_filing_set

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"


def load(path: Path) -> Consolidation:
    return Consolidation.from_json(json.loads(path.read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def broken() -> ValidationReport:
    return validate(load(SCENARIOS / "broken-fields.json"))


def keyed(report: ValidationReport) -> set[tuple[str, str, str | None]]:
    return {(f.rule_id, f.path, f.party) for f in report}


class TestSeed:
    def test_seed_has_no_errors(self, seed):
        """The seed is clean: no error, only the planner's multi-tier advice."""
        report = validate(seed)
        assert report.ok
        assert [f.rule_id for f in report.warnings] == ["ENS-PLAN-ADVICE"]
        assert "multi-tier chain above DAI26NGO0077" in report.warnings[0].message

    @pytest.mark.parametrize(
        "scenario", ["coloader-a-not-automated", "transhipment-sgsin", "f15-requested", "carrier-plans"]
    )
    def test_valid_variants_have_no_errors(self, scenario):
        """The planner's variants all give valid sets and clean data."""
        assert validate(load(SCENARIOS / f"{scenario}.json")).errors == ()


class TestBrokenVariant:
    @pytest.mark.parametrize(
        ("rule_id", "path", "party"),
        [
            ("ENS-EORI-FORMAT", "$.parties[10].eori", "ML-TYO"),
            ("ENS-HS-CODE", "$.house_bills[0].goods[0].hs_code", "ML-TYO"),
            ("ENS-SCRIPT", "$.house_bills[2].goods[0].description", "ML-TYO"),
            ("ENS-DESC-STOPWORDS", "$.house_bills[4].goods[0].description", "COLOADER-A"),
            ("ENS-HBL-UNIQUE", "$.house_bills[6].hbl_number", "COLOADER-C"),
            ("ENS-SELLER-BUYER", "$.house_bills[7].buyer", "COLOADER-D"),
            ("ENS-CONTAINER-ID", "$.master.containers[0].id", "ML-TYO"),
        ],
    )
    def test_each_broken_field_is_found_with_its_party(self, broken, rule_id, path, party):
        """Each broken field gives its rule's finding at its path, naming the party that must fix it."""
        assert (rule_id, path, party) in keyed(broken)

    def test_nothing_else_is_an_error(self, broken):
        """The broken variant has exactly the seven planted errors."""
        assert len(broken.errors) == 7
        assert not broken.ok

    def test_cjk_finding_carries_error_code_102(self, broken):
        """The script finding mirrors CL723 code 102."""
        (finding,) = broken.by_rule("ENS-SCRIPT")
        assert finding.error_code == 102 and finding.hbl == "SKC26TYO0003"

    def test_to_json_counts_and_lists(self, broken):
        """The JSON form has ok, the counts and every finding with its fields."""
        data = broken.to_json()
        assert (data["ok"], data["errors"], data["warnings"]) == (False, 7, len(broken.warnings))
        first = data["findings"][0]
        assert set(first) == {"rule_id", "severity", "path", "message", "party", "hbl", "filing", "error_code"}
        json.dumps(data)


class TestPartiesInARow:
    def test_a_party_changed_between_bookings_is_judged_again(self, seed):
        """The findings on a party's data are kept per party data: a changed name is found, the fixed one is not."""
        parties = dict(seed.parties)
        parties["SHIPPER-1"] = dataclasses.replace(parties["SHIPPER-1"], name="関東電子株式会社")
        broken = dataclasses.replace(seed, parties=parties)
        assert not validate(seed).by_rule("ENS-SCRIPT")
        (finding,) = validate(broken).by_rule("ENS-SCRIPT")
        assert "関東電子株式会社" in finding.message and finding.path.endswith(".name")
        assert not validate(seed).by_rule("ENS-SCRIPT")

    def test_the_same_party_at_another_place_is_named_at_that_place(self, seed):
        """The same broken party, listed first or last, is reported at its own index and to its own owner."""
        parties = dict(seed.parties)
        parties["SHIPPER-1"] = dataclasses.replace(parties["SHIPPER-1"], name="関東電子株式会社")
        moved = {"SHIPPER-1": parties.pop("SHIPPER-1"), **parties}
        first = validate(dataclasses.replace(seed, parties=moved)).by_rule("ENS-SCRIPT")
        last = validate(dataclasses.replace(seed, parties={**parties, "SHIPPER-1": moved["SHIPPER-1"]}))
        assert [f.path for f in first] == ["$.parties[0].name"]
        assert [f.path for f in last.by_rule("ENS-SCRIPT")] == [f"$.parties[{len(parties)}].name"]


class TestCrossRules:
    def test_exact_duplicate_hbl_number(self, seed):
        """Two HBLs with the same number (possible when built directly) give ENS-HBL-UNIQUE."""
        bills = (*seed.house_bills, dataclasses.replace(seed.house_bills[0]))
        report = validate(dataclasses.replace(seed, house_bills=bills))
        assert [f.path for f in report.by_rule("ENS-HBL-UNIQUE")] == ["$.house_bills[8].hbl_number"]

    def test_hbl_number_equal_to_mbl(self, seed):
        """An HBL numbered like the MBL cannot be told apart from it."""
        bills = (dataclasses.replace(seed.house_bills[0], hbl_number=seed.mbl), *seed.house_bills[1:])
        report = validate(dataclasses.replace(seed, house_bills=bills))
        assert "master B/L number" in report.by_rule("ENS-HBL-UNIQUE")[0].message

    def test_wrong_document_type_breaks_the_link(self, seed):
        """A master document type other than N704 is an ENS-MBL-LINK error for the planning party."""
        c = dataclasses.replace(seed, master=dataclasses.replace(seed.master, document_type="N705"))
        (finding,) = validate(c).by_rule("ENS-MBL-LINK")
        assert (finding.path, finding.party) == ("$.master.document_type", "ML-TYO")

    def test_carrier_without_eori_breaks_the_link(self, seed):
        """The carrier's EORI is needed in every house filing."""
        parties = dict(seed.parties)
        parties["CARRIER-A"] = dataclasses.replace(parties["CARRIER-A"], eori=None)
        (finding,) = validate(dataclasses.replace(seed, parties=parties)).by_rule("ENS-MBL-LINK")
        assert finding.path == "$.parties[1].eori"

    def test_supplementary_declarant_without_eori(self, seed):
        """A co-loader named as supplementary declarant must have an EORI; it must fix that itself."""
        parties = dict(seed.parties)
        parties["COLOADER-C"] = dataclasses.replace(parties["COLOADER-C"], eori=None)
        report = validate(dataclasses.replace(seed, parties=parties))
        (finding,) = report.by_rule("ENS-F14-SUPP-DECL")
        assert (finding.party, finding.hbl, finding.filing) == ("COLOADER-C", "CHY26YOK0501", FilingType.F14)
        assert [f.party for f in report.by_rule("ENS-FILER-EORI")] == ["COLOADER-C"]

    def test_f14_naming_another_party_than_the_f16_filer(self, seed):
        """An F14 whose supplementary declarant is not the F16's filer is refused, for the F14's filer to fix."""
        p = plan(seed)
        filings = tuple(
            dataclasses.replace(f, supplementary_declarant="COLOADER-C")
            if f.filing is FilingType.F14 and f.hbl == "AOB26OSA1001"
            else f
            for f in p.filings
        )
        report = validate(seed, plan=dataclasses.replace(p, filings=filings))
        (finding,) = report.by_rule("ENS-F14-SUPP-DECL")
        assert finding.party == "ML-TYO" and "COLOADER-A" in finding.message

    def test_plan_with_f16_alone_is_rejected(self, seed):
        """A plan giving an HBL only the F16 (with the carrier's F12) fails ENS-VALID-SET for that HBL."""
        p = plan(seed)
        filings = tuple(f for f in p.filings if not (f.hbl == "CHY26YOK0501" and f.filing is FilingType.F14))
        (finding,) = validate(seed, plan=dataclasses.replace(p, filings=filings)).by_rule("ENS-VALID-SET")
        assert (finding.hbl, finding.path) == ("CHY26YOK0501", "$.house_bills[6]")
        assert "F12 + F16" in finding.message

    def test_goods_in_a_container_not_on_the_mbl(self, seed):
        """Goods naming a container the master B/L does not list are refused for the HBL's issuer."""
        h = seed.house_bills[4]
        goods = (dataclasses.replace(h.goods[0], container="MSCU1234566"),)
        bills = tuple(dataclasses.replace(x, goods=goods) if x is h else x for x in seed.house_bills)
        (finding,) = validate(dataclasses.replace(seed, house_bills=bills)).by_rule("ENS-GOODS-CONTAINER")
        assert (finding.path, finding.party) == ("$.house_bills[4].goods[0].container", "COLOADER-A")

    def test_seller_naming_an_undescribed_party(self, seed):
        """A seller id that no party describes is as bad as a missing seller."""
        bills = (dataclasses.replace(seed.house_bills[0], seller="NOBODY"), *seed.house_bills[1:])
        (finding,) = validate(dataclasses.replace(seed, house_bills=bills)).by_rule("ENS-SELLER-BUYER")
        assert "NOBODY" in finding.message and finding.party == "ML-TYO"

    def test_unknown_package_type_is_only_a_warning(self, seed):
        """A well-formed code outside our CL017 subset warns but does not block."""
        h = seed.house_bills[0]
        goods = (dataclasses.replace(h.goods[0], packages=dataclasses.replace(h.goods[0].packages, type="QQ")),)
        bills = (dataclasses.replace(h, goods=goods), *seed.house_bills[1:])
        report = validate(dataclasses.replace(seed, house_bills=bills))
        assert report.ok
        assert [f.severity for f in report.by_rule("ENS-PACKAGE-TYPE-UNKNOWN")] == [Severity.WARNING]

    def test_plan_errors_become_findings(self):
        """The planner's errors on a broken tree are ENS-PLAN findings naming the parties to fix."""
        report = validate(load(SCENARIOS / "broken-tree.json"))
        parties = {(f.hbl, f.party) for f in report.by_rule("ENS-PLAN")}
        assert {("AOB26OSA1002", "COLOADER-A"), ("CHY26YOK0501", "COLOADER-C")} <= parties
        assert not report.ok


class TestDeadline:
    def test_past_deadline_is_an_error(self, seed):
        """After loading minus 24 h the deadline finding is an error."""
        report = validate(seed, now=datetime(2027, 6, 14, 12, 0, 1, tzinfo=UTC))
        (finding,) = report.by_rule("ENS-DEADLINE")
        assert finding.severity is Severity.ERROR and "2027-06-14T12:00:00Z" in finding.message

    def test_approaching_deadline_is_a_warning(self, seed):
        """Within the margin before the deadline the validator warns."""
        report = validate(seed, now=datetime(2027, 6, 14, 6, tzinfo=UTC), margin=timedelta(hours=8))
        assert [f.rule_id for f in report.warnings if f.rule_id.startswith("ENS-DEADLINE")] == ["ENS-DEADLINE-NEAR"]
        assert report.ok

    def test_early_or_no_clock_gives_no_deadline_finding(self, seed):
        """Well before the deadline, or without ``now``, there is no deadline finding."""
        for report in (validate(seed, now=datetime(2027, 1, 1, tzinfo=UTC)), validate(seed)):
            assert not [f for f in report if f.rule_id.startswith("ENS-DEADLINE")]


class TestValidFilingSet:
    @pytest.mark.parametrize("filings", [["F15"], ["F14", "F16"], ["F12", "F15"], ["F12", "F14", "F16"]])
    def test_valid_sets_pass(self, filings):
        """F12 + F15 and F12 + F14 + F16 complete the ENS."""
        assert validate_filing_set(filings, hbl="H1") == ()

    @pytest.mark.parametrize(("filings", "words"), [(["F16"], "F12 + F16"), (["F12", "F16"], "F12 + F16")])
    def test_f12_with_f16_alone_is_rejected(self, filings, words):
        """F12 + F16 without an F14 is not a valid set."""
        (finding,) = validate_filing_set(filings, hbl="H1", party="ML")
        assert finding.rule_id == "ENS-VALID-SET" and words in finding.message and finding.party == "ML"

    @pytest.mark.parametrize(
        ("filings", "words"),
        [
            (["F14"], "F16 with seller and buyer is missing"),
            (["F15", "F16"], "F15 already carries"),
            (["F14", "F15", "F16"], "F15 already carries"),
            (["F15", "F15"], "more than once"),
            ([], "no house-level filing"),
            (["F11", "F15"], "mixes"),
        ],
    )
    def test_invalid_sets_say_why(self, filings, words):
        """Each invalid combination is refused with its reason."""
        (finding,) = validate_filing_set(filings, hbl="H1")
        assert words in finding.message

    def test_house_filings_need_the_carriers_f12(self):
        """Without the carrier's F12, even F15 does not complete the ENS."""
        (finding,) = validate_filing_set(["F15"], hbl="H1", carrier_f12=False)
        assert "F12" in finding.message

    @pytest.mark.parametrize("filings", [["F10"], ["F11"], ["F13", "F17"]])
    def test_complete_carrier_sets_pass_alone(self, filings):
        """F10 or F11 alone and F13 + F17 are complete."""
        assert validate_filing_set(filings, carrier_f12=False) == ()


class TestRuleCatalogue:
    def test_rules_have_stable_ids_and_templates(self):
        """Every rule has an ENS- id equal to its key, a template and a responsible party kind."""
        for rule_id, r in RULES.items():
            assert r.id == rule_id and rule_id.startswith("ENS-")
            assert r.template and isinstance(r.responsible, Responsible)

    def test_required_rules_exist(self):
        """The rules the brief names are in the catalogue."""
        wanted = {"ENS-EORI-FORMAT", "ENS-HBL-UNIQUE", "ENS-SELLER-BUYER", "ENS-MBL-LINK", "ENS-F14-SUPP-DECL"}
        wanted |= {"ENS-VALID-SET", "ENS-DEADLINE", "ENS-DESC-STOPWORDS", "ENS-SCRIPT"}
        assert wanted <= set(RULES)
        assert RULES["ENS-SCRIPT"].error_code == 102

    def test_hand_built_plan_with_f16_alone_is_refused(self):
        """A plan built by hand with an F16 alone is an ok plan but not a valid set."""
        p = FilingPlan("M", "ML", 1, (PlannedFiling(FilingType.F16, "H", "X"),))
        assert p.ok and validate_filing_set(f.filing for f in p.filings)
