"""House-level filings: IE3F15 (complete), IE3F14 (without seller/buyer) and IE3F16 (seller/buyer only).

Every one links to the carrier's filing by the ocean carrier's MBL number (type N704) and the carrier's EORI, never
by an intermediate HBL or its issuer: customs matches partial filings on that key.
"""

from __future__ import annotations

from decimal import Decimal

from lxml import etree

from streams.domain.model import GoodsItem, HouseBill
from streams.domain.planning import FilingType
from streams.messages.render_common import (
    HOUSE_BILL_TYPE,
    MASTER_BILL_TYPE,
    MODE_MARITIME,
    SUB_HOUSE_LEVEL_FILING,
    Render,
    decimal_text,
    declarant_block,
    filing_header,
    identified,
    new_root,
    party_block,
    place,
    routing,
    routing_block,
    sub,
    transport_document,
)


def render_house_filing(ctx: Render) -> etree._Element:
    """The tree of an F14, F15 or F16 for the draft's lowest HBL."""
    filing = ctx.draft.planned.filing
    hbl = ctx.house_bill()
    root = new_root(ctx.message_type)
    filing_header(root, ctx)
    if filing is not FilingType.F16:
        sub(sub(root, "activeBorderTransportMeans"), "ModeOfTransport", MODE_MARITIME)
    house = sub(sub(root, "consignmentMasterLevel"), "consignmentHouseLevel")
    if filing is FilingType.F16:
        _linking(house, ctx)
        _goods_shipment(house, ctx, hbl)
    else:
        _house_level(house, ctx, hbl, filing)
    transport_document(house, "transportDocumentHouseLevel", hbl.hbl_number, HOUSE_BILL_TYPE)
    declarant_block(root, ctx)
    return root


def _linking(house: etree._Element, ctx: Render) -> None:
    """MBL number + carrier EORI: the key that ties this house filing to the carrier's F12."""
    master = ctx.consolidation.master
    if master.document_type != MASTER_BILL_TYPE:
        raise ctx.fail(
            "transportDocumentMasterLevel/type",
            f"house filings link to a master B/L ({MASTER_BILL_TYPE}), the booking says {master.document_type}",
        )
    transport_document(house, "transportDocumentMasterLevel", master.mbl_number, MASTER_BILL_TYPE)
    identified(house, "carrier", ctx.carrier_eori())


def _house_level(house: etree._Element, ctx: Render, hbl: HouseBill, filing: FilingType) -> None:
    goods = ctx.need(hbl.goods, "goodsItem", "the HBL carries no goods")
    sub(house, "containerIndicator", "1" if any(g.container for g in goods) else "0")
    mass = sum((Decimal(repr(g.gross_mass_kg)) for g in goods), Decimal(0))
    sub(house, "totalGrossMass", decimal_text(mass))
    acceptance = ctx.need(hbl.place_of_acceptance, "placeOfAcceptance/UNLOCODE", "the HBL has no place of acceptance")
    place(house, "placeOfAcceptance", acceptance)
    _linking(house, ctx)
    if hbl.consignee:
        party_block(house, "consignee", ctx.party(hbl.consignee, "consignee"))
    for number, item in enumerate(goods, start=1):
        _goods_item(house, ctx, number, item)
    party_block(house, "consignor", ctx.party(hbl.shipper, "consignor"))
    payment = ctx.need(hbl.freight_payment, "transportCharges/methodOfPayment", "the HBL has no freight payment method")
    sub(sub(house, "transportCharges"), "methodOfPayment", payment)
    delivery = ctx.need(hbl.place_of_delivery, "placeOfDelivery/UNLOCODE", "the HBL has no place of delivery")
    place(house, "placeOfDelivery", delivery)
    if filing is FilingType.F15:
        _goods_shipment(house, ctx, hbl)
    master = ctx.consolidation.master
    countries = routing(
        [acceptance, master.port_of_loading, *master.transhipment_ports, master.port_of_discharge, delivery]
    )
    if len(countries) < 2:
        raise ctx.fail("countriesOfRoutingOfConsignment", f"the route passes only {countries}; two are needed")
    routing_block(house, "countriesOfRoutingOfConsignment", countries)
    if hbl.notify_party:
        party_block(house, "notifyParty", ctx.party(hbl.notify_party, "notifyParty"))
    if filing is FilingType.F14:
        declarant = ctx.party(ctx.draft.planned.supplementary_declarant, "supplementaryDeclarant")
        block = sub(house, "supplementaryDeclarant")
        sub(block, "identificationNumber", ctx.eori(declarant, "supplementaryDeclarant/identificationNumber"))
        sub(block, "supplementaryFilingType", SUB_HOUSE_LEVEL_FILING)


def _goods_shipment(house: etree._Element, ctx: Render, hbl: HouseBill) -> None:
    """Buyer and seller of the lowest HBL, in the order of the ICS2 type (buyer first)."""
    shipment = sub(house, "goodsShipment")
    party_block(shipment, "buyer", ctx.party(hbl.buyer, "goodsShipment/buyer"))
    party_block(shipment, "seller", ctx.party(hbl.seller, "goodsShipment/seller"))


def _commodity_code(ctx: Render, number: int, hs_code: str) -> tuple[str, str | None]:
    """Six HS digits, plus the two CN digits when the booking gives eight."""
    digits = hs_code.replace(".", "").replace(" ", "")
    if not digits.isdigit() or len(digits) not in (6, 8):
        raise ctx.fail(
            f"goodsItem[{number}]/commodity/commodityCode",
            f"HS code {hs_code!r} is neither 6 nor 8 digits",
        )
    return digits[:6], digits[6:] or None


def _goods_item(house: etree._Element, ctx: Render, number: int, item: GoodsItem) -> None:
    block = sub(house, "goodsItem")
    sub(block, "goodsItemNumber", number)
    commodity = sub(block, "commodity")
    sub(commodity, "descriptionOfGoods", item.description)
    hs, cn = _commodity_code(ctx, number, item.hs_code)
    code = sub(commodity, "commodityCode")
    sub(code, "harmonizedSystemSubHeadingCode", hs)
    if cn:
        sub(code, "combinedNomenclatureCode", cn)
    if item.un_number:
        sub(sub(commodity, "dangerousGoods"), "UNNumber", item.un_number)
    if item.gross_mass_kg <= 0:
        raise ctx.fail(f"goodsItem[{number}]/weight/grossMass", f"gross mass {item.gross_mass_kg} is not positive")
    sub(sub(block, "weight"), "grossMass", decimal_text(item.gross_mass_kg))
    packaging = sub(block, "packaging")
    sub(packaging, "numberOfPackages", item.packages.count)
    sub(packaging, "typeOfPackages", item.packages.type)
    if item.container:
        equipment_block(block, ctx, item.container, f"goodsItem[{number}]/transportEquipment")


def equipment_block(parent: etree._Element, ctx: Render, container_id: str, element: str) -> None:
    """A container of the master B/L with its size/type, status, supplier and seals."""
    container = next((c for c in ctx.consolidation.master.containers if c.id == container_id), None)
    container = ctx.need(container, element, f"container {container_id} is not among the master B/L's containers")
    block = sub(parent, "transportEquipment")
    for name, value in (
        ("containerSizeAndType", container.size_type),
        ("containerPackedStatus", container.packed_status),
        ("containerSupplierType", container.supplier_type),
    ):
        sub(block, name, ctx.need(value, f"{element}/{name}", f"the booking does not give it for {container.id}"))
    sub(block, "containerIdentificationNumber", container.id)
    if container.seals:
        sub(block, "numberOfSeals", len(container.seals))
        for seal in container.seals:
            sub(sub(block, "seal"), "identifier", seal)
