"""Which booking change becomes which request about a filing customs holds: amend, invalidate, or invalidate and
file anew (``process_booking``'s ``changes``), and what a redelivery of the new version recomputes."""

from __future__ import annotations

import json

import pytest

from streams.domain.model import Consolidation
from streams.domain.outbound import PlanMemory
from streams.domain.planning import ChangeKind
from streams.pipeline.stages.booking import process_booking
from tests.data import seed_json_with_carrier_contact
from tests.unit.test_changes_pipeline import AMENDED_HBL, MOVED_HBL, REMOVED_HBL, version_2
from tests.unit.test_handlers import NOW


def booking(data: dict) -> Consolidation:
    return Consolidation.from_json(data)


@pytest.fixture
def first():
    return process_booking(booking(seed_json_with_carrier_contact()), None, NOW)


def summary(outcome) -> set[tuple[str, str | None, str, tuple[str, ...]]]:
    return {
        (
            c.kind.value,
            c.hbl,
            c.planned.filing.value,
            tuple(d.draft.planned.filing.value for d in c.replacements),
        )
        for c in outcome.changes
    }


class TestDiff:
    def test_content_change_amends_under_the_old_lrn(self, first):
        data = seed_json_with_carrier_contact()
        data["version"] = 2
        next(h for h in data["house_bills"] if h["hbl_number"] == AMENDED_HBL)["goods"][0]["gross_mass_kg"] = 845.0
        second = process_booking(booking(data), first.memory, NOW)
        [change] = second.changes
        before = next(d for d in first.drafts if d.draft.planned.hbl == AMENDED_HBL)
        assert (change.kind, change.lrn) == (ChangeKind.AMEND, before.draft.lrn)
        assert change.amendment is not None and change.amendment.draft.lrn != before.draft.lrn
        assert not second.to_send, "nothing is filed as new"
        key = next(k for k in second.memory.sent if AMENDED_HBL in k)
        assert second.memory.sent[key].lrn == change.amendment.draft.lrn, "the next version asks under this LRN"

    def test_third_version_asks_under_the_second_versions_lrn(self, first):
        """v3 names the LRN v2 amended under: its ledger entry holds the MRN customs holds the filing under now,
        the amended one's, or the re-filed one's when customs had rejected the first."""
        data = seed_json_with_carrier_contact()
        goods = next(h for h in data["house_bills"] if h["hbl_number"] == AMENDED_HBL)["goods"][0]
        data["version"], goods["gross_mass_kg"] = 2, 845.0
        second = process_booking(booking(data), first.memory, NOW)
        data["version"], goods["gross_mass_kg"] = 3, 850.0
        memory = PlanMemory.from_json(json.loads(json.dumps(second.memory.to_json())))
        third = process_booking(booking(data), memory, NOW)
        [v2_change], [v3_change] = second.changes, third.changes
        assert v3_change.kind is ChangeKind.AMEND and v2_change.amendment is not None
        assert v3_change.lrn == v2_change.amendment.draft.lrn != v2_change.lrn
        assert v3_change.amendment is not None and v3_change.amendment.draft.lrn not in (v2_change.lrn, v3_change.lrn)

    def test_dropped_hbl_is_invalidated_and_moved_hbl_replaced(self, first):
        second = process_booking(booking(version_2(seed_json_with_carrier_contact())), first.memory, NOW)
        assert summary(second) == {
            ("amend", AMENDED_HBL, "F15", ()),
            ("invalidate", REMOVED_HBL, "F15", ()),
            ("replace", MOVED_HBL, "F14", ("F15",)),
        }
        assert not second.to_send, "the F15 waits for the F14's invalidation"
        assert [(f.filing.value, f.filer) for f in second.withdrawn] == [("F16", "COLOADER-C")]

    def test_new_linking_key_files_first_then_invalidates(self, first):
        """A new carrier EORI makes another ENS: the new filings go out at once, the old ones are withdrawn."""
        data = seed_json_with_carrier_contact()
        data["version"] = 2
        next(p for p in data["parties"] if p["id"] == "CARRIER-A")["eori"] = "NL999999999"
        second = process_booking(booking(data), first.memory, NOW)
        assert {c.kind for c in second.changes} == {ChangeKind.INVALIDATE}
        assert {c.lrn for c in second.changes} == {d.draft.lrn for d in first.to_send}
        assert len(second.to_send) == len(first.to_send)

    def test_non_amendable_particular_in_the_same_ens_is_invalidate_then_refile(self, first):
        """A new EORI of the supplementary declarant an F14 names: no amendment may change it, same ENS."""
        data = seed_json_with_carrier_contact()
        data["version"] = 2
        next(p for p in data["parties"] if p["id"] == "COLOADER-A")["eori"] = "DE111111111111"
        second = process_booking(booking(data), first.memory, NOW)
        assert summary(second) == {("replace", "AOB26OSA1001", "F14", ("F14",))}
        assert not second.to_send, "the new F14 waits for the old one's invalidation"

    def test_unchanged_version_changes_nothing(self, first):
        data = seed_json_with_carrier_contact()
        data["version"] = 2
        assert process_booking(booking(data), first.memory, NOW).changes == ()

    def test_redelivery_recomputes_the_same_changes(self, first):
        v2 = booking(version_2(seed_json_with_carrier_contact()))
        second = process_booking(v2, first.memory, NOW)
        memory = PlanMemory.from_json(json.loads(json.dumps(second.memory.to_json())))
        replayed = process_booking(v2, memory, NOW)
        assert summary(replayed) == summary(second)
        assert [c.lrn for c in replayed.changes] == [c.lrn for c in second.changes]
