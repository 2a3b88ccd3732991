"""Lodging deadlines by mode of transport."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from streams.domain.deadlines import DeadlineStatus, lodging_deadline
from streams.domain.model import Consolidation, MasterBill, Mode
from streams.errors import InputError
from tests.data import seed_json

LOADING = datetime(2027, 6, 15, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def master() -> MasterBill:
    data = seed_json()
    return Consolidation.from_json(data).master


class TestLodgingDeadline:
    def test_containerised_deep_sea_is_24h_before_loading(self, master):
        """Deep sea containers: loading minus 24 hours, exact."""
        deadline = lodging_deadline(master)
        assert deadline.latest == LOADING - timedelta(hours=24)
        assert not deadline.approximate and "JPTYO" in deadline.basis

    @pytest.mark.parametrize(("mode", "hours"), [(Mode.DEEP_SEA_BULK, 4), (Mode.SHORT_SEA, 2)])
    def test_arrival_based_modes_with_arrival(self, master, mode, hours):
        """Bulk and short sea count back from the arrival when it is known."""
        arrival = LOADING + timedelta(days=3)
        deadline = lodging_deadline(dataclasses.replace(master, mode=mode), arrival_at=arrival)
        assert deadline.latest == arrival - timedelta(hours=hours) and not deadline.approximate

    @pytest.mark.parametrize("mode", [Mode.DEEP_SEA_BULK, Mode.SHORT_SEA])
    def test_arrival_based_modes_without_arrival_use_departure(self, master, mode):
        """Without an arrival time the departure is used, flagged as approximate."""
        deadline = lodging_deadline(dataclasses.replace(master, mode=mode))
        assert deadline.latest == LOADING and deadline.approximate

    def test_naive_arrival_is_refused(self, master):
        """An arrival time without a time zone is an input error."""
        with pytest.raises(InputError):
            lodging_deadline(dataclasses.replace(master, mode=Mode.SHORT_SEA), arrival_at=datetime(2027, 6, 18))


class TestDeadlineStatus:
    @pytest.mark.parametrize(
        ("now", "status"),
        [
            (LOADING - timedelta(hours=48), DeadlineStatus.OPEN),
            (LOADING - timedelta(hours=30), DeadlineStatus.APPROACHING),
            (LOADING - timedelta(hours=24), DeadlineStatus.PASSED),
            (LOADING, DeadlineStatus.PASSED),
        ],
    )
    def test_status_against_margin(self, master, now, status):
        """Open before the margin, approaching within it, passed from the deadline on."""
        assert lodging_deadline(master).status(now, margin=timedelta(hours=12)) is status

    def test_naive_now_is_refused(self, master):
        """The current time must carry a time zone."""
        with pytest.raises(InputError):
            lodging_deadline(master).status(datetime(2027, 6, 1))
