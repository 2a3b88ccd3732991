"""The booking stage's decision: the domain's outbound decision with the filings written as ICS2 XML.

The domain decides (``streams.domain.outbound.decide_booking``) and takes the renderer as a parameter; this layer
owns the choice of renderer, so no arrow runs from the domain up to ``streams.messages``.
"""

from __future__ import annotations

from datetime import datetime

from streams.domain.model import Consolidation
from streams.domain.outbound import BookingOutcome, PlanMemory, decide_booking
from streams.messages.render import render_filing


def process_booking(consolidation: Consolidation, previous: PlanMemory | None, now: datetime) -> BookingOutcome:
    """Plan, validate and render the filings of ours for one booking version, and what it changes for customs."""
    return decide_booking(consolidation, previous, now, render=render_filing)
