"""The filing planner and plan diffs, on the seed and its variants."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.domain import formats
from streams.domain.drafts import drafts_for, make_lrn
from streams.domain.model import Consolidation, HouseBill
from streams.domain.planning import FilingPlan, FilingType, PlannedFiling, diff_plans, plan
from streams.domain.validation import validate
from streams.errors import InputError
from tests.data import SEED_PLAN_PATH

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"


def load(path: Path) -> Consolidation:
    return Consolidation.from_json(json.loads(path.read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def expected() -> dict[str, Any]:
    return json.loads(SEED_PLAN_PATH.read_text(encoding="utf-8"))


def replace_hbl(c: Consolidation, number: str, **changes: Any) -> Consolidation:
    bills = tuple(dataclasses.replace(h, **changes) if h.hbl_number == number else h for h in c.house_bills)
    return dataclasses.replace(c, house_bills=bills)


class TestSeedPlan:
    def test_filings_equal_the_expected_plan(self, seed, expected):
        """The seed's (filing, hbl, filer, supplementary_declarant) list equals seed-coload.plan.json, in order."""
        wanted = tuple((f["filing"], f["hbl"], f["filer"], f["supplementary_declarant"]) for f in expected["filings"])
        assert plan(seed).summary() == wanted

    def test_expected_warning_text_is_present(self, seed, expected):
        """Every text of warnings_include appears in a warning of the plan."""
        messages = [w.message for w in plan(seed).warnings]
        for text in expected["warnings_include"]:
            assert any(text in m for m in messages), (text, messages)

    def test_only_the_multi_tier_hbl_is_warned(self, seed):
        """The multi-tier warning is given for DAI26NGO0077 only, with its code."""
        warnings = plan(seed).warnings
        assert [(w.code, w.hbl) for w in warnings] == [("PLAN-MULTI-TIER", "DAI26NGO0077")]

    def test_carrier_f12_is_expected_and_header_matches(self, seed, expected):
        """MBL and expected_from_carrier match the expected plan, and the JSON form starts with them."""
        p = plan(seed)
        as_json = p.to_json()
        assert as_json["mbl"] == expected["mbl"]
        assert as_json["expected_from_carrier"] == expected["expected_from_carrier"]
        assert p.errors == ()

    def test_ours_marks_the_planning_partys_filings(self, seed):
        """Filings by ML-TYO are ours; the co-loaders' F14/F16 are expected from others."""
        p = plan(seed)
        assert {f.filer for f in p.ours()} == {"ML-TYO"}
        assert {f.filer for f in p.expected_from_others()} == {"COLOADER-A", "COLOADER-C", "COLOADER-D"}

    def test_every_filing_has_a_reason_naming_its_filer(self, seed):
        """Each planned filing explains itself, naming the party that files it."""
        for f in plan(seed).filings:
            assert f.filer in f.reason

    def test_no_automated_coloader_files_f15(self, seed):
        """F15 is filed by the master loader only."""
        assert {f.filer for f in plan(seed).filings if f.filing is FilingType.F15} == {"ML-TYO"}


class TestVariants:
    def test_non_automated_middle_coloader_files_nothing(self):
        """Seed's second case: B files nothing, ML files the F14 naming D, D files the F16."""
        p = plan(load(SCENARIOS / "coloader-a-not-automated.json"))
        assert "COLOADER-A" not in {f.filer for f in p.filings}
        assert [(f.filing.value, f.filer, f.supplementary_declarant) for f in p.for_hbl("DAI26NGO0077")] == [
            ("F14", "ML-TYO", "COLOADER-D"),
            ("F16", "COLOADER-D", None),
        ]
        assert "COLOADER-A" in p.for_hbl("DAI26NGO0077")[0].reason

    def test_lowest_hbl_of_non_automated_issuer_gets_f15(self):
        """A lowest HBL issued by a non-automated co-loader gets F15 by the master loader."""
        p = plan(load(SCENARIOS / "coloader-a-not-automated.json"))
        assert [(f.filing.value, f.filer) for f in p.for_hbl("AOB26OSA1001")] == [("F15", "ML-TYO")]

    def test_transhipment_gives_f15_for_every_lowest_hbl(self):
        """Cargo re-consolidated at SGSIN gets F15 by the master loader for every lowest HBL, and nothing else."""
        c = load(SCENARIOS / "transhipment-sgsin.json")
        p = plan(c)
        assert p.summary() == tuple(("F15", h.hbl_number, "ML-TYO", None) for h in c.lowest_hbls())
        assert all("SGSIN" in f.reason for f in p.filings if f.hbl != "SKC26TYO0001" and f.hbl != "SKC26TYO0003")

    @pytest.mark.parametrize("port", ["KRPUS", "SGSIN", "NLRTM"])
    def test_any_transhipment_port_counts_as_reconsolidation(self, seed, port):
        """Every transhipment port, not only the seed's hubs, leads to F15 only."""
        c = dataclasses.replace(seed, master=dataclasses.replace(seed.master, transhipment_ports=(port,)))
        assert {f.filing for f in plan(c).filings} == {FilingType.F15}

    def test_f15_requested_switches_one_hbl_to_f15(self, seed):
        """f15_requested on DAI26NGO0077 gives F15 by ML there, and no multi-tier warning."""
        p = plan(load(SCENARIOS / "f15-requested.json"))
        assert [(f.filing.value, f.filer) for f in p.for_hbl("DAI26NGO0077")] == [("F15", "ML-TYO")]
        assert p.warnings == ()
        assert p.for_hbl("AOB26OSA1001") == plan(seed).for_hbl("AOB26OSA1001")

    def test_carrier_as_planning_party_plans_its_f12(self):
        """When the carrier plans, its F12 is first, ours, at master level, and nothing is expected from it."""
        p = plan(load(SCENARIOS / "carrier-plans.json"))
        first = p.filings[0]
        assert (first.filing, first.hbl, first.filer, first.ours) == (FilingType.F12, None, "CARRIER-A", True)
        assert p.expected_from_carrier == ()
        assert [f for f in p.filings if f.ours] == [first]

    def test_coloader_as_planning_party_owns_its_filings(self, seed):
        """Planned by COLOADER-A, its F16 and F14 are ours and ML-TYO's are not."""
        p = plan(dataclasses.replace(seed, planning_party="COLOADER-A"))
        assert {(f.filing.value, f.hbl) for f in p.ours()} == {("F16", "AOB26OSA1001"), ("F14", "DAI26NGO0077")}

    def test_three_tiers_of_automated_coloaders_name_the_nearest(self, seed):
        """Below two automated co-loaders, the F14 is filed by the one just above the lowest issuer."""
        extra = HouseBill(
            hbl_number="EXT26NGO0001",
            issuer="COLOADER-D",
            parent="AOB26OSA1002",
            customer="COLOADER-C",
        )
        bills = list(seed.house_bills)
        bills.insert(7, extra)
        chy = next(h for h in bills if h.hbl_number == "CHY26YOK0501")
        bills[bills.index(chy)] = dataclasses.replace(chy, parent="EXT26NGO0001")
        bills = [h for h in bills if h.hbl_number != "SKC26TYO0004"]
        p = plan(dataclasses.replace(seed, house_bills=tuple(bills)))
        assert [(f.filing.value, f.filer, f.supplementary_declarant) for f in p.for_hbl("CHY26YOK0501")] == [
            ("F14", "COLOADER-D", "COLOADER-C"),
            ("F16", "COLOADER-C", None),
        ]
        assert any(w.hbl == "CHY26YOK0501" and w.code == "PLAN-MULTI-TIER" for w in p.warnings)


class TestPlanErrors:
    def test_broken_tree_is_reported_not_raised(self):
        """Missing parent, unknown issuer, foreign root and a lowest HBL without goods become plan errors."""
        p = plan(load(SCENARIOS / "broken-tree.json"))
        codes = {(e.code, e.hbl, e.party) for e in p.errors}
        assert ("PLAN-MISSING-PARENT", "AOB26OSA1002", "COLOADER-A") in codes
        assert ("PLAN-UNKNOWN-ISSUER", "NRT26TYO0500", "ML-TYO") in codes
        assert ("PLAN-ROOT-ISSUER", "NRT26TYO0500", "ML-TYO") in codes
        assert ("PLAN-NO-GOODS", "CHY26YOK0501", "COLOADER-C") in codes
        assert not p.ok

    def test_hbls_with_errors_get_no_filings_others_do(self):
        """Only the HBLs with a usable chain are planned."""
        p = plan(load(SCENARIOS / "broken-tree.json"))
        planned = {f.hbl for f in p.filings}
        assert planned == {"SKC26TYO0001", "SKC26TYO0003", "AOB26OSA1001"}

    def test_cycle_is_reported_once(self, seed):
        """Two HBLs naming each other as parents give one PLAN-CYCLE error and no exception."""
        c = replace_hbl(seed, "SKC26TYO0002", parent="AOB26OSA1002")
        c = replace_hbl(c, "AOB26OSA1002", customer="COLOADER-A")
        p = plan(c)
        assert [e.code for e in p.errors if e.code == "PLAN-CYCLE"] == ["PLAN-CYCLE"]
        assert "DAI26NGO0077" not in {f.hbl for f in p.filings}

    def test_issuer_not_customer_of_parent_is_an_error(self, seed):
        """A child HBL issued by someone else than the parent's customer is refused, naming that issuer."""
        p = plan(replace_hbl(seed, "DAI26NGO0077", issuer="COLOADER-C"))
        assert ("PLAN-ISSUER-MISMATCH", "DAI26NGO0077", "COLOADER-C") in {(e.code, e.hbl, e.party) for e in p.errors}
        assert p.for_hbl("DAI26NGO0077") == ()

    def test_unknown_carrier_is_reported(self, seed):
        """A carrier not among the parties is a plan error for the planning party."""
        c = dataclasses.replace(seed, master=dataclasses.replace(seed.master, carrier="NOBODY"))
        assert ("PLAN-UNKNOWN-CARRIER", "ML-TYO") in {(e.code, e.party) for e in plan(c).errors}

    def test_empty_booking_is_reported(self, seed):
        """A booking with no HBL yields an error and no filings."""
        p = plan(dataclasses.replace(seed, house_bills=()))
        assert [e.code for e in p.errors] == ["PLAN-NO-HBL"]
        assert p.filings == ()


class TestChainRules:
    def test_coloader_without_master_loader_above_is_an_error_not_an_f15(self, seed):
        """CHY26YOK0501 moved to the top of the tree (COLOADER-C issues it with no master loader above): no F15 by
        the co-loader, a plan error for COLOADER-C and that HBL; the rest of the consolidation is still planned."""
        c = replace_hbl(seed, "CHY26YOK0501", parent=None)
        c = dataclasses.replace(c, house_bills=tuple(h for h in c.house_bills if h.hbl_number != "SKC26TYO0004"))
        p = plan(c)
        assert [(e.code, e.hbl, e.party) for e in p.errors] == [("PLAN-NO-MASTER-LOADER", "CHY26YOK0501", "COLOADER-C")]
        assert p.for_hbl("CHY26YOK0501") == ()
        assert not any(f.filer == "COLOADER-C" for f in p.filings)
        assert {f.hbl for f in p.filings} == {"SKC26TYO0001", "SKC26TYO0003", "AOB26OSA1001", "DAI26NGO0077"}

    def test_consolidation_built_by_a_coloader_alone_gets_no_filings(self, seed):
        """When the carrier plans and only a co-loader issues top-level HBLs, nobody may file the F15s it would
        have been planned: every lowest HBL below it is a plan error naming that co-loader."""
        c = replace_hbl(seed, "AOB26OSA1001", parent=None)
        c = dataclasses.replace(
            c,
            planning_party="CARRIER-A",
            house_bills=tuple(h for h in c.house_bills if h.hbl_number == "AOB26OSA1001"),
        )
        p = plan(c)
        assert [(e.code, e.hbl, e.party) for e in p.errors] == [("PLAN-NO-MASTER-LOADER", "AOB26OSA1001", "COLOADER-A")]
        assert [f.filing for f in p.filings] == [FilingType.F12]

    def test_automated_coloader_never_files_an_f15(self):
        """In every scenario of the seed guide, F15s are filed by the master loader only."""
        for path in sorted(SCENARIOS.glob("*.json")):
            if path.name.endswith(".plan.json"):
                continue
            c = load(path)
            f15_filers = {f.filer for f in plan(c).filings if f.filing is FilingType.F15}
            assert all(c.parties[f].role.value == "master_loader" for f in f15_filers), path.name

    def test_chain_error_becomes_a_validation_finding_for_the_coloader(self, seed):
        """The validator turns the chain error into an ENS-PLAN finding at that HBL, for COLOADER-C to fix."""
        c = replace_hbl(seed, "CHY26YOK0501", parent=None)
        c = dataclasses.replace(c, house_bills=tuple(h for h in c.house_bills if h.hbl_number != "SKC26TYO0004"))
        findings = validate(c).by_rule("ENS-PLAN")
        assert [(f.hbl, f.party) for f in findings] == [("CHY26YOK0501", "COLOADER-C")]
        assert "PLAN-NO-MASTER-LOADER" in findings[0].message


class TestDiffPlans:
    def test_same_plan_has_empty_diff(self, seed):
        """Planning the same booking twice changes nothing."""
        assert diff_plans(plan(seed), plan(seed)).empty

    def test_switch_to_f15_removes_f14_f16_and_adds_f15(self, seed):
        """f15_requested on a version 2 removes the F14/F16 pair and adds an F15."""
        new = plan(load(SCENARIOS / "f15-requested.json"))
        d = diff_plans(plan(seed), new)
        assert {(f.filing.value, f.hbl) for f in d.removed} == {("F14", "DAI26NGO0077"), ("F16", "DAI26NGO0077")}
        assert [(f.filing.value, f.hbl, f.filer) for f in d.added] == [("F15", "DAI26NGO0077", "ML-TYO")]
        assert d.changed == ()

    def test_changed_supplementary_declarant_is_a_change(self):
        """Same filing and filer with another supplementary declarant is listed as changed."""
        old_f = PlannedFiling(FilingType.F14, "H1", "ML", supplementary_declarant="A")
        new_f = dataclasses.replace(old_f, supplementary_declarant="B")
        old = FilingPlan("M", "ML", 1, (old_f,))
        new = FilingPlan("M", "ML", 2, (new_f,))
        d = diff_plans(old, new)
        assert (d.added, d.removed) == ((), ())
        assert [(c.old.supplementary_declarant, c.new.supplementary_declarant) for c in d.changed] == [("A", "B")]


class TestMakeLrn:
    def test_lrn_is_deterministic_and_well_formed(self):
        """The same inputs give the same 22-character upper-case alphanumeric LRN, starting with the filing."""
        lrn = make_lrn("OCLU26TYO7781234", "SKC26TYO0001", FilingType.F15, "ML-TYO", 1)
        assert lrn == make_lrn("OCLU26TYO7781234", "SKC26TYO0001", "F15", "ML-TYO", 1)
        assert len(lrn) == 22 and lrn.isalnum() and lrn.isupper() and lrn.startswith("F15V1")
        assert formats.check_lrn(lrn) is None

    @pytest.mark.parametrize(
        "changed",
        [
            ("OCLU26TYO7781235", "SKC26TYO0001", "F15", "ML-TYO", 1),
            ("OCLU26TYO7781234", "SKC26TYO0003", "F15", "ML-TYO", 1),
            ("OCLU26TYO7781234", "SKC26TYO0001", "F14", "ML-TYO", 1),
            ("OCLU26TYO7781234", "SKC26TYO0001", "F15", "COLOADER-A", 1),
            ("OCLU26TYO7781234", "SKC26TYO0001", "F15", "ML-TYO", 2),
            ("OCLU26TYO7781234", None, "F15", "ML-TYO", 1),
        ],
    )
    def test_each_input_changes_the_lrn(self, changed):
        """Changing any one of MBL, HBL, filing, filer or version gives another LRN."""
        base = make_lrn("OCLU26TYO7781234", "SKC26TYO0001", "F15", "ML-TYO", 1)
        assert make_lrn(*changed) != base

    @settings(max_examples=150, deadline=None)
    @given(
        st.text(min_size=1, max_size=30),
        st.one_of(st.none(), st.text(min_size=1, max_size=30)),
        st.sampled_from(list(FilingType)),
        st.text(min_size=1, max_size=20),
        st.integers(min_value=0, max_value=10**8 - 1),
    )
    def test_any_inputs_give_a_valid_lrn(self, mbl, hbl, filing, filer, version):
        """Whatever the inputs, the LRN is an..22 of upper-case letters and digits."""
        lrn = make_lrn(mbl, hbl, filing, filer, version)
        assert len(lrn) == 22 and lrn.isascii() and lrn.isalnum() and lrn == lrn.upper()

    @pytest.mark.parametrize("version", [-1, True, 10**8])
    def test_unusable_version_is_refused(self, version):
        """Negative, boolean or too large versions raise an InputError."""
        with pytest.raises(InputError):
            make_lrn("M", "H", "F15", "ML", version)


class TestDraftsFor:
    def test_one_draft_per_filing_of_ours(self, seed):
        """Drafts cover exactly our filings, in plan order, with distinct LRNs and the issue time in UTC."""
        p = plan(seed)
        issued = datetime(2027, 6, 1, 11, 0, tzinfo=timezone(timedelta(hours=2)))
        drafts = drafts_for(seed, p, issued)
        assert [d.planned for d in drafts] == list(p.ours())
        assert len({d.lrn for d in drafts}) == len(drafts) == 4
        assert all(d.issued_at == datetime(2027, 6, 1, 9, 0, tzinfo=UTC) for d in drafts)
        assert all(d.consolidation is seed for d in drafts)

    def test_naive_issue_time_is_refused(self, seed):
        """A draft's issue time must carry a time zone."""
        with pytest.raises(InputError):
            drafts_for(seed, plan(seed), datetime(2027, 6, 1))

    def test_plan_of_another_version_is_refused(self, seed):
        """A plan made for another booking version cannot give drafts for this one."""
        other = dataclasses.replace(seed, version=2)
        with pytest.raises(InputError):
            drafts_for(other, plan(seed), datetime(2027, 6, 1, tzinfo=UTC))
