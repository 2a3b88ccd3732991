"""Chains verified over several processes find what one process finds, in the same order, and report it the same way."""

from __future__ import annotations

import copy
import os
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.audit.parallel import examine_parallel, merge, share_of, walk_shares, worth_forking
from streams.audit.signing import Signer
from streams.audit.trail import BreakKind, Examination, chain, examine, head_after
from tests.unit.test_audit_trail import FIELDS, KEYS, SIGNER, _tampered, build_chain

MBLS = [f"OCLU27PAR{n:04d}" for n in range(12)]


def trail(count: int = 120) -> list[dict[str, Any]]:
    """Twelve interleaved signed chains."""
    return build_chain([(MBLS[n % len(MBLS)], f"e{n}") for n in range(count)], SIGNER)


def as_json(found: Examination) -> dict[str, Any]:
    return {
        "breaks": [b.to_json() for b in found.breaks],
        "duplicates": [d.to_json() for d in found.duplicates],
        "unique": found.unique,
        "unsigned_accepted": found.unsigned_accepted,
    }


def child_mbl(workers: int) -> str:
    """An MBL whose chain a forked worker walks (share 0 is the calling process's)."""
    return next(m for m in MBLS if share_of(m, workers) != 0)


class TestParallelVerify:
    def test_intact_trail_is_intact_in_every_share(self):
        records = trail()
        parts = walk_shares(records, None, KEYS, False, 3)
        assert len(parts) == 3 and all(not p.breaks and not p.duplicates for p in parts)
        assert as_json(merge(records, parts)) == as_json(examine(records, keys=KEYS))

    def test_tamper_in_a_forked_worker_is_found_and_reported_as_in_one_process(self):
        records = trail()
        mbl = child_mbl(2)
        index = [i for i, r in enumerate(records) if r["mbl"] == mbl][3]
        records[index]["payload"] = records[index]["payload"].replace('"e', '"E')
        parts = walk_shares(records, None, KEYS, False, 2)
        (finder,) = [p for p in parts if p.breaks]
        assert finder.walker != os.getpid()
        assert [(row, b.mbl, b.sequence, b.kind) for row, b in finder.breaks] == [
            (index, mbl, 3, BreakKind.PAYLOAD_CHANGED)
        ]
        assert as_json(examine_parallel(records, keys=KEYS, workers=2, min_share=1)) == as_json(
            examine(records, keys=KEYS)
        )

    def test_gap_fork_bad_signature_duplicate_and_cut_chain_as_in_one_process(self):
        records = trail()
        heads = {r["mbl"]: head_after(r) for r in records}
        mbl = child_mbl(3)
        rows = [i for i, r in enumerate(records) if r["mbl"] == mbl]
        forger = Signer.of(Ed25519PrivateKey.generate())
        fork = chain(head_after(records[rows[1]]), "note", {"mbl": mbl, "text": "fork"}, "2027-06-01T10:00:00Z", SIGNER)
        forged = chain(head_after(records[rows[-1]]), "note", {"mbl": mbl}, "2027-06-01T11:00:00Z", forger)
        tampered = [r for i, r in enumerate(records) if i != rows[4]]
        tampered[rows[2] - 1 :] = [fork, *tampered[rows[2] - 1 :], copy.deepcopy(records[rows[5]]), forged]
        cut = next(m for m in MBLS if m != mbl)
        tampered = [r for r in tampered if not (r["mbl"] == cut and r["sequence"] > 5)]
        serial = examine(tampered, heads, KEYS)
        kinds = {b.kind for b in serial.breaks}
        assert {BreakKind.GAP, BreakKind.OUT_OF_ORDER, BreakKind.BAD_SIGNATURE, BreakKind.TRUNCATED} <= kinds
        assert serial.duplicates
        for workers in (2, 3, 5):
            parallel = examine_parallel(tampered, heads, KEYS, workers=workers, min_share=1)
            assert as_json(parallel) == as_json(serial)

    def test_a_share_holds_at_least_min_share_records(self):
        assert [worth_forking(n, 4, 10) for n in (0, 9, 10, 25, 39, 40, 1000)] == [1, 1, 1, 2, 3, 4, 4]

    def test_small_trails_stay_in_one_process(self):
        records = trail(30)
        assert as_json(examine_parallel(records, keys=KEYS, workers=4)) == as_json(examine(records, keys=KEYS))

    @settings(max_examples=40, deadline=None)
    @given(data=st.data())
    def test_any_tamper_gives_the_findings_of_one_process(self, data: st.DataObject):
        records = trail(48)
        tampered = copy.deepcopy(records)
        for _ in range(data.draw(st.integers(1, 3))):
            index = data.draw(st.integers(0, len(tampered) - 1))
            operation = data.draw(st.sampled_from(["field", "remove", "repeat", "swap"]))
            if operation == "field":
                name = data.draw(st.sampled_from(FIELDS))
                tampered[index][name] = _tampered(tampered[index][name])
            elif operation == "remove":
                tampered.pop(index)
            elif operation == "repeat":
                tampered.insert(data.draw(st.integers(index, len(tampered))), dict(tampered[index]))
            else:
                other = data.draw(st.integers(0, len(tampered) - 1))
                tampered[index], tampered[other] = tampered[other], tampered[index]
        heads = {r["mbl"]: head_after(r) for r in records} if data.draw(st.booleans()) else None
        accept_unsigned = data.draw(st.booleans())
        serial = examine(tampered, heads, KEYS, accept_unsigned)
        parallel = examine_parallel(tampered, heads, KEYS, accept_unsigned, workers=3, min_share=1)
        assert as_json(parallel) == as_json(serial)
