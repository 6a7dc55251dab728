"""Exchange Orders (``POST /exchange_orders``, alias ``/orders``, from Optoro) <-> the domain.

Optoro asks the retailer to place an order: replacement variants (even exchange) and/or a gift
card standing for ``return_items`` (``X-Optiturn-Api-Version: 2`` adds the gift card's
``bonus_credit_amount_cents``; version 1 has no such field and it is refused there). The
response reports the order placed, its total including any gift-card bonus:
products - discounts + tax + bonus, as :attr:`ExchangeOrder.total_cents` computes it.

Accepted: addresses with ``province``/``postal_code`` (the description) or ``state``/``zip_code``
(the guide's samples), the guide's ``note``; an item's ``product_amount_cents`` must agree with
unit price x quantity and stands in for a missing unit price. An item is a gift card when it has
``return_items`` or a bonus, or when its SKU is one of the ``gift_card_skus`` agreed with Optoro.

:func:`exchange_order_to_wire` writes a request as the description requires it (``province``,
``postal_code``, a billing address, a payment), for the Optoro sandbox.
"""

from __future__ import annotations

from collections.abc import Collection
from functools import partial
from typing import Annotated, Any

from pydantic import Field, StrictInt

from bridge.domain import (
    Address,
    Customer,
    ExchangeKind,
    ExchangeOrder,
    ExchangeOrderItem,
    ExchangeOrderResult,
    ExchangeReturnItem,
)
from bridge.errors import MappingError
from mappings._json import Body
from mappings.optoro._wire import (
    Bool,
    Cents,
    Currency,
    Id,
    Str,
    WireIn,
    WireOut,
    build,
    dump_out,
    parse,
)
from mappings.optoro.orders import AddressIn, CustomerIn, CustomerOut

__all__ = [
    "API_VERSIONS",
    "ExchangeItemIn",
    "ExchangeOrderIn",
    "ExchangeOrderOut",
    "ExchangeOrderResponseOut",
    "exchange_order_to_wire",
    "exchange_result_to_wire",
    "parse_exchange_order",
    "parse_exchange_result",
]

API_VERSIONS = (1, 2)
"""``X-Optiturn-Api-Version`` values of Exchange Orders."""
MAX_QUANTITY = 1000

Quantity = Annotated[StrictInt, Field(ge=1, le=MAX_QUANTITY)]
"""The description: at least one unit, at most 1000."""

# --- inbound ---------------------------------------------------------------------------------


class ReturnItemIn(WireIn):
    title: Str | None = None
    original_sku: Id
    original_item_identifier: Id
    quantity: Quantity
    concept: Str | None = None


class ExchangeItemIn(WireIn):
    sku: Id
    quantity: Quantity
    title: Str | None = None
    unit_price_amount_cents: Cents | None = None
    product_amount_cents: Cents | None = None
    discount_amount_cents: Cents = 0
    tax_amount_cents: Cents = 0
    bonus_credit_amount_cents: Cents | None = None
    product_identifier: Str | None = None
    variant_identifier: Str | None = None
    original_sku: Str | None = None
    original_item_identifier: Str | None = None
    concept: Str | None = None
    return_items: list[ReturnItemIn] = Field(default_factory=list)


class PaymentIn(WireIn):
    transaction_id: Str


class ExchangeOrderIn(WireIn):
    currency: Currency
    rma_identifier: Str | None = None
    original_order_id: Id
    original_secondary_order_id: Str | None = None
    is_gift: Bool
    items: list[ExchangeItemIn] = Field(min_length=1)
    customer: CustomerIn
    shipping_address: AddressIn
    billing_address: AddressIn | None = None
    payment: PaymentIn | None = None
    note: Str | None = None
    """Not in the description; the guide's samples send it."""


# --- outbound --------------------------------------------------------------------------------


class ReturnItemOut(WireOut):
    title: Str | None = None
    original_sku: Str
    original_item_identifier: Str
    quantity: Quantity
    concept: Str | None = None


class ExchangeItemOut(WireOut):
    sku: Str
    quantity: Quantity
    title: Str | None = None
    unit_price_amount_cents: Cents
    product_amount_cents: Cents
    discount_amount_cents: Cents
    tax_amount_cents: Cents
    bonus_credit_amount_cents: Cents | None = None
    product_identifier: Str | None = None
    variant_identifier: Str | None = None
    original_sku: Str | None = None
    original_item_identifier: Str | None = None
    concept: Str | None = None
    return_items: list[ReturnItemOut] | None = None


class ExchangeAddressOut(WireOut):
    name: Str
    street1: Str
    street2: Str | None = None
    city: Str
    province: Str
    postal_code: Str
    country_code: Str
    phone: Str | None = None


class PaymentOut(WireOut):
    transaction_id: Str


class ExchangeOrderOut(WireOut):
    currency: Currency
    rma_identifier: Str | None = None
    original_order_id: Str
    original_secondary_order_id: Str | None = None
    is_gift: Bool
    items: list[ExchangeItemOut] = Field(min_length=1)
    customer: CustomerOut
    shipping_address: ExchangeAddressOut
    billing_address: ExchangeAddressOut
    payment: PaymentOut
    note: Str | None = None


class ExchangeOrderResponseOut(WireOut):
    order_identifier: Str
    total_amount_cents: Cents
    product_amount_cents: Cents
    tax_amount_cents: Cents


class ExchangeOrderResponseIn(WireIn):
    order_identifier: Id
    total_amount_cents: Cents
    product_amount_cents: Cents
    tax_amount_cents: Cents


# --- wire -> canonical -----------------------------------------------------------------------


def parse_exchange_order(
    body: Body, api_version: int, *, gift_card_skus: Collection[str] = ()
) -> ExchangeOrder:
    """The canonical exchange order of a request body, for ``X-Optiturn-Api-Version``.

    Raises :class:`MappingError` naming the wire field (``items[0].quantity``) on bad input.
    """
    if api_version not in API_VERSIONS:
        raise MappingError(
            f"exchange order: unsupported X-Optiturn-Api-Version {api_version!r};"
            f" supported: {', '.join(map(str, API_VERSIONS))}",
            field="X-Optiturn-Api-Version",
        )
    wire = parse(ExchangeOrderIn, body, what="exchange order")
    items = tuple(
        _item_in(item, f"items[{i}]", api_version, gift_card_skus)
        for i, item in enumerate(wire.items)
    )
    billing = wire.billing_address
    return build(
        lambda: ExchangeOrder(
            original_order_id=wire.original_order_id,
            original_secondary_order_id=wire.original_secondary_order_id,
            rma_id=wire.rma_identifier,
            currency=wire.currency,
            is_gift=wire.is_gift,
            items=items,
            customer=wire.customer.canonical(),
            shipping_address=wire.shipping_address.canonical(),
            billing_address=None if billing is None else billing.canonical(),
            payment_transaction_id=None if wire.payment is None else wire.payment.transaction_id,
            note=wire.note,
        ),
        "",
        "exchange order",
    )


def _item_in(
    item: ExchangeItemIn, where: str, api_version: int, gift_card_skus: Collection[str]
) -> ExchangeOrderItem:
    if api_version == 1 and item.bonus_credit_amount_cents is not None:
        raise MappingError(
            f"exchange order: {where}.bonus_credit_amount_cents is not part of"
            " Exchange Orders version 1 (send X-Optiturn-Api-Version: 2)",
            field=f"{where}.bonus_credit_amount_cents",
        )
    unit_price = item.unit_price_amount_cents
    product = item.product_amount_cents
    if unit_price is None and product is not None:
        if product % item.quantity:
            raise MappingError(
                f"exchange order: {where}.product_amount_cents ({product}) is not a whole"
                f" number of cents per unit for quantity {item.quantity}",
                field=f"{where}.product_amount_cents",
            )
        unit_price = product // item.quantity
    elif unit_price is not None and product is not None and product != unit_price * item.quantity:
        raise MappingError(
            f"exchange order: {where}.product_amount_cents ({product}) is not"
            f" unit_price_amount_cents x quantity ({unit_price} x {item.quantity})",
            field=f"{where}.product_amount_cents",
        )
    bonus = item.bonus_credit_amount_cents or 0
    gift_card = bool(item.return_items) or bonus > 0 or item.sku in gift_card_skus
    return build(
        partial(
            ExchangeOrderItem,
            kind=ExchangeKind.GIFT_CARD if gift_card else ExchangeKind.EVEN,
            sku=item.sku,
            qty=item.quantity,
            title=item.title,
            unit_price_cents=unit_price or 0,
            discount_cents=item.discount_amount_cents,
            tax_cents=item.tax_amount_cents,
            bonus_credit_cents=bonus,
            product_id=item.product_identifier,
            variant_id=item.variant_identifier,
            original_sku=item.original_sku,
            original_line_id=item.original_item_identifier,
            concept=item.concept,
            return_items=tuple(
                ExchangeReturnItem(
                    original_sku=r.original_sku,
                    original_line_id=r.original_item_identifier,
                    qty=r.quantity,
                    title=r.title,
                    concept=r.concept,
                )
                for r in item.return_items
            ),
        ),
        where,
        "exchange order",
    )


def parse_exchange_result(body: Body) -> ExchangeOrderResult:
    """The placed order reported by an Exchange Orders response."""
    wire = parse(ExchangeOrderResponseIn, body, what="exchange order response")
    return build(
        lambda: ExchangeOrderResult(
            order_id=wire.order_identifier,
            total_cents=wire.total_amount_cents,
            product_cents=wire.product_amount_cents,
            tax_cents=wire.tax_amount_cents,
        ),
        "",
        "exchange order response",
    )


# --- canonical -> wire -----------------------------------------------------------------------


def exchange_result_to_wire(result: ExchangeOrderResult) -> dict[str, Any]:
    """The Exchange Orders response body for the order placed."""
    return dump_out(
        ExchangeOrderResponseOut,
        {
            "order_identifier": result.order_id,
            "total_amount_cents": result.total_cents,
            "product_amount_cents": result.product_cents,
            "tax_amount_cents": result.tax_cents,
        },
        what="exchange order response",
    )


def exchange_order_to_wire(order: ExchangeOrder, *, api_version: int = 2) -> dict[str, Any]:
    """An Exchange Orders request body as the description requires it.

    A missing billing address is the shipping address; version 1 cannot carry a gift-card
    bonus (MappingError naming ``items[i].bonus_credit_amount_cents``).
    """
    if api_version not in API_VERSIONS:
        raise ValueError(f"unsupported Exchange Orders version {api_version!r}")
    items = []
    for i, item in enumerate(order.items):
        if api_version == 1 and item.bonus_credit_cents:
            raise MappingError(
                f"exchange order: items[{i}] has a gift-card bonus, which version 1 cannot send",
                field=f"items[{i}].bonus_credit_amount_cents",
            )
        gift_card = item.kind is ExchangeKind.GIFT_CARD
        items.append(
            {
                "sku": item.sku,
                "quantity": item.qty,
                "title": item.title,
                "unit_price_amount_cents": item.unit_price_cents,
                "product_amount_cents": item.product_cents,
                "discount_amount_cents": item.discount_cents,
                "tax_amount_cents": item.tax_cents,
                "bonus_credit_amount_cents": (
                    item.bonus_credit_cents if gift_card and api_version >= 2 else None
                ),
                "product_identifier": item.product_id,
                "variant_identifier": item.variant_id,
                "original_sku": item.original_sku,
                "original_item_identifier": item.original_line_id,
                "concept": item.concept,
                "return_items": [
                    {
                        "title": r.title,
                        "original_sku": r.original_sku,
                        "original_item_identifier": r.original_line_id,
                        "quantity": r.qty,
                        "concept": r.concept,
                    }
                    for r in item.return_items
                ]
                or None,
            }
        )
    customer = order.customer
    wire = {
        "currency": order.currency,
        "rma_identifier": order.rma_id,
        "original_order_id": order.original_order_id,
        "original_secondary_order_id": order.original_secondary_order_id,
        "is_gift": order.is_gift,
        "items": items,
        "customer": _customer_out(customer),
        "shipping_address": _address_out(order.shipping_address, customer),
        "billing_address": _address_out(order.billing_address or order.shipping_address, customer),
        "payment": (
            None
            if order.payment_transaction_id is None
            else {"transaction_id": order.payment_transaction_id}
        ),
        "note": order.note,
    }
    return dump_out(ExchangeOrderOut, wire, what="exchange order")


def _customer_out(customer: Customer) -> dict[str, Any]:
    return {
        "identifier": customer.id or customer.email,
        "first_name": customer.first_name,
        "last_name": customer.last_name,
        "email": customer.email,
        "phone": customer.phone,
    }


def _address_out(address: Address, customer: Customer) -> dict[str, Any]:
    name = address.name or (
        " ".join(p for p in (customer.first_name, customer.last_name) if p) or None
    )
    return {
        "name": name,
        "street1": address.street1,
        "street2": address.street2,
        "city": address.city,
        "province": address.state,
        "postal_code": address.zip_code,
        "country_code": address.country_code,
        "phone": address.phone,
    }
