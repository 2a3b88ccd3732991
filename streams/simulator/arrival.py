"""What customs does once the goods come near: announces a control of a house consignment (IE3N08, IE3N09 for an
AEO) and registers the arrival of the means of transport (answered by IE3R04). Both freeze the filings concerned:
the Union Customs Code, article 129(1), allows no amendment once customs has told the person it intends to examine
the goods or once the goods have been presented, and article 129(2)-(3) invalidation only of goods not brought into
the customs territory (``streams.simulator.amendments`` refuses accordingly).

Decisions without a public source: the simulator receives no IE3N06 (an arrival is registered with ``arrive``, as
a test or a demo tells it) and answers the carrier with one IE3R04 per MRN of the ENS, shaped like an IE3R01; a
control is announced to the house consignment's filer and to the carrier, and freezes that house consignment only.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from streams.domain.dates import format_datetime
from streams.errors import InputError
from streams.messages import build

if TYPE_CHECKING:
    from streams.simulator.customs import CustomsSimulator, LinkState, Outbound

#: Control notifications, by whether the house consignment's filer is an AEO.
CONTROL_MESSAGES = {False: "IE3N08", True: "IE3N09"}


def _link(sim: CustomsSimulator, mbl: str, carrier: str) -> LinkState:
    link = sim._links.get(f"{mbl}|{carrier}")
    if link is None:
        raise InputError(f"nothing is filed under master B/L {mbl} and carrier {carrier}")
    return link


def announce_control(
    sim: CustomsSimulator, mbl: str, carrier: str, hbl: str, now: datetime, aeo: bool = False
) -> list[Outbound]:
    """Tell the filer and the carrier that the house consignment ``hbl`` must be presented for a control."""
    link = _link(sim, mbl, carrier)
    house = link.houses.get(hbl)
    lead = house.lead if house is not None else None
    if house is None or lead is None:
        raise InputError(f"no house consignment {hbl} is registered under {mbl}")
    message_type = CONTROL_MESSAGES[aeo]
    house.control = message_type
    builder = build.build_ie3n09 if aeo else build.build_ie3n08
    xml = builder(
        mrn=lead.mrn,
        notified_at=now,
        office_of_control=lead.office,
        hbls=[hbl],
        mbl=link.mbl,
        declarant=lead.declarant,
    )
    return sim._to_filer_and_carrier(lead.declarant, link.carrier, message_type, xml)


def arrive(sim: CustomsSimulator, mbl: str, carrier: str, now: datetime) -> list[Outbound]:
    """Register the arrival of the goods filed under the linking key: one IE3R04 per live filing, to the carrier."""
    from streams.simulator.customs import Outbound

    link = _link(sim, mbl, carrier)
    if link.arrived_at is None:
        link.arrived_at = format_datetime(now)
    records = [link.f12] + [house.lead for house in link.houses.values()]
    return [
        Outbound(
            link.carrier,
            "IE3R04",
            build.build_ie3r04(
                mrn=record.mrn, registered_at=now, mbl=link.mbl, carrier=link.carrier, office=record.office
            ),
        )
        for record in records
        if record is not None
    ]
