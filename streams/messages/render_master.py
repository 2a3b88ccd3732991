"""IE3F12, the carrier's master level: vessel and voyage, ports, containers with seals, office of first entry, and
the house filers (supplementary declarants) so that customs expects their F15 or F14 filings.

The project files it only when it acts for the carrier (or to show the carrier what its house filings link to); goods
items are left to the house filings, so the master level names the MBL, the carrier and the equipment.
"""

from __future__ import annotations

from decimal import Decimal

from lxml import etree

from streams.domain.dates import format_datetime
from streams.domain.planning import house_filers
from streams.messages.render_common import (
    HOUSE_LEVEL_FILING,
    IMO_IDENTIFICATION,
    MASTER_BILL_TYPE,
    MODE_MARITIME,
    Render,
    address_block,
    communications,
    decimal_text,
    declarant_block,
    filing_header,
    new_root,
    place,
    routing,
    routing_block,
    sub,
    transport_document,
)
from streams.messages.render_house import equipment_block


def render_master_filing(ctx: Render) -> etree._Element:
    """The tree of an F12 for the draft's consolidation."""
    master = ctx.consolidation.master
    root = new_root(ctx.message_type)
    filing_header(root, ctx)
    _vessel(root, ctx)
    office = sub(root, "customsOfficeOfFirstEntry")
    sub(office, "referenceNumber", master.customs_office_of_first_entry)
    consignment = sub(root, "consignmentMasterLevel")
    sub(consignment, "containerIndicator", "1" if master.containers else "0")
    masses = tuple(Decimal(repr(g.gross_mass_kg)) for h in ctx.consolidation.lowest_hbls() for g in h.goods)
    ctx.need(masses, "consignmentMasterLevel/totalGrossMass", "no lowest HBL of the booking carries goods")
    sub(consignment, "totalGrossMass", decimal_text(sum(masses, Decimal(0))))
    carrier = ctx.party(master.carrier, "consignmentMasterLevel/carrier")
    block = sub(consignment, "carrier")
    sub(block, "name", carrier.name)
    sub(block, "identificationNumber", ctx.eori(carrier, "consignmentMasterLevel/carrier/identificationNumber"))
    address_block(block, "address", carrier.address)
    communications(block, carrier)
    place(consignment, "placeOfLoading", master.port_of_loading)
    filers = ctx.need(house_filers(ctx.consolidation), "supplementaryDeclarant", "the plan names no house filer")
    for filer_id in filers:
        filer = ctx.party(filer_id, "supplementaryDeclarant")
        block = sub(consignment, "supplementaryDeclarant")
        sub(block, "identificationNumber", ctx.eori(filer, "supplementaryDeclarant/identificationNumber"))
        sub(block, "supplementaryFilingType", HOUSE_LEVEL_FILING)
    if master.document_type != MASTER_BILL_TYPE:
        raise ctx.fail("transportDocumentMasterLevel/type", f"{master.document_type} is not a master B/L")
    transport_document(consignment, "transportDocumentMasterLevel", master.mbl_number, MASTER_BILL_TYPE)
    for container in master.containers:
        equipment_block(consignment, ctx, container.id, "consignmentMasterLevel/transportEquipment")
    place(consignment, "placeOfUnloading", master.port_of_discharge)
    declarant_block(root, ctx)
    return root


def _vessel(root: etree._Element, ctx: Render) -> None:
    """The active border transport means: the vessel by IMO number, its departure, voyage and countries."""
    master = ctx.consolidation.master
    vessel = sub(root, "activeBorderTransportMeans")
    imo = ctx.need(master.vessel_imo, "activeBorderTransportMeans/identificationNumber", "the booking has no IMO")
    sub(vessel, "identificationNumber", imo)
    sub(vessel, "typeOfIdentification", IMO_IDENTIFICATION)
    sub(vessel, "ModeOfTransport", MODE_MARITIME)
    sub(vessel, "estimatedDateAndTimeOfDeparture", format_datetime(master.loading_at))
    if master.voyage:
        sub(vessel, "conveyanceReferenceNumber", master.voyage)
    countries = routing([master.port_of_loading, *master.transhipment_ports, master.port_of_discharge])
    if len(countries) < 2:
        raise ctx.fail("countriesOfRoutingOfMeansOfTransport", f"the voyage passes only {countries}; two are needed")
    routing_block(vessel, "countriesOfRoutingOfMeansOfTransport", countries)
