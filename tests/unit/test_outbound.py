"""The outbound decision for one booking version: what is sent, kept, re-sent, or ignored."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.domain.outbound import _ISSUE_DATE, PlanMemory, _without_issue_date, fingerprint
from streams.pipeline.stages.booking import process_booking

NOW = datetime(2027, 6, 1, tzinfo=UTC)


def sent(outcome) -> list[tuple[str, bytes]]:
    return [(d.draft.lrn, d.xml) for d in outcome.to_send]


class TestProcessBooking:
    def test_first_version_sends_every_filing_of_ours(self, seed):
        """ML-TYO's two F15s and two F14s go out; expected filings of others are not ours to send."""
        outcome = process_booking(seed, None, NOW)
        assert sorted((d.draft.planned.filing.value, d.draft.planned.hbl) for d in outcome.to_send) == [
            ("F14", "AOB26OSA1001"),
            ("F14", "CHY26YOK0501"),
            ("F15", "SKC26TYO0001"),
            ("F15", "SKC26TYO0003"),
        ]

    def test_redelivered_version_sends_the_same_bytes_again(self, seed):
        """A replay after a crash (same version, memory already written) re-sends identical filings."""
        first = process_booking(seed, None, NOW)
        again = process_booking(seed, first.memory, NOW)
        assert not again.stale
        assert sent(again) == sent(first)

    def test_memory_survives_json(self, seed):
        """The plan memory stored in the table reads back equal."""
        memory = process_booking(seed, None, NOW).memory
        assert PlanMemory.from_json(json.loads(json.dumps(memory.to_json()))).to_json() == memory.to_json()

    def test_unchanged_filings_are_kept_on_a_new_version(self, seed):
        """Version 2 with the same content sends nothing and keeps the version-1 LRNs."""
        first = process_booking(seed, None, NOW)
        second = process_booking(replace(seed, version=2), first.memory, NOW)
        assert second.to_send == ()
        assert {d.draft.lrn for d in second.drafts} == {d.draft.lrn for d in first.drafts}

    def test_redelivered_new_version_recomputes_the_same_diff(self, seed):
        """A replayed version 2 gives the same plan diff as its first processing."""
        first = process_booking(seed, None, NOW)
        v2 = replace(seed, version=2, house_bills=tuple(h for h in seed.house_bills if h.hbl_number != "CHY26YOK0501"))
        second = process_booking(v2, first.memory, NOW)
        replayed = process_booking(v2, second.memory, NOW)
        assert second.diff == replayed.diff and second.diff.removed

    def test_older_version_is_stale(self, seed):
        """Version 1 after version 2 changes nothing."""
        second = process_booking(replace(seed, version=2), None, NOW)
        assert process_booking(seed, second.memory, NOW).stale

    def test_fingerprint_ignores_lrn_and_issue_date(self, seed):
        """The content hash of a filing does not change with its LRN or document issue date."""
        first = process_booking(seed, None, NOW).drafts[0]
        later = replace(seed, version=3, occurred_at=datetime(2026, 12, 1, tzinfo=UTC))
        other = next(d for d in process_booking(later, None, NOW).drafts if d.draft.planned == first.draft.planned)
        assert other.draft.lrn != first.draft.lrn
        assert other.fingerprint == first.fingerprint
        assert fingerprint(first.draft, first.xml) == first.fingerprint


class TestIssueDateBlanking:
    @pytest.mark.parametrize(
        "xml",
        [
            b"<a><documentIssueDate>2026-11-20T09:00:00Z</documentIssueDate><b/></a>",
            b"<x:a><x:documentIssueDate>1</x:documentIssueDate><x:documentIssueDate>2</x:documentIssueDate></x:a>",
            b"<p:documentIssueDate>z</p:documentIssueDate><b><documentIssueDate>q</documentIssueDate></b>",
            b"<documentIssueDate>1<documentIssueDate>2<",
            b"<a>no date here</a>",
            b"<documentIssueDate>never closed",
        ],
    )
    def test_blanks_every_issue_date_as_one_substitution_does(self, xml: bytes):
        """Blanking only where the element's name occurs gives what one substitution over the whole filing does."""
        assert _without_issue_date(xml) == _ISSUE_DATE.sub(rb"<\1documentIssueDate>-<", xml)

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.sampled_from([b"<", b"</", b">", b"x:", b"a.b", b"documentIssueDate>", b"2026", b" ", b":"])))
    def test_any_text_is_blanked_as_one_substitution_does(self, pieces: list[bytes]):
        xml = b"".join(pieces)
        assert _without_issue_date(xml) == _ISSUE_DATE.sub(rb"<\1documentIssueDate>-<", xml)
