"""Exchange orders -> ReturnLogic ``POST /v1/orders``, and its response -> the placed order.

Idempotency: one exchange order per original order, ever. :func:`exchange_order_number`
derives the ReturnLogic ``orderNumber`` (also ``orderName`` and ``externalOrderId``) from
``original_order_id`` alone, so a retried creation looks the number up
(``GET /v1/orders?orderNumber=...``) and finds the order placed by the first attempt.

Request built by :func:`exchange_to_order_create` (the closed model
:class:`~mappings.returnlogic.wire.RlOrderCreateRequest` checks the shape):

=========================== ===================================================================
field                       value
=========================== ===================================================================
externalOrderId, orderNumber, orderName   the order number
externalCustomerId          ``customer.id`` when it is a whole number (the API wants a number),
                            else omitted
customerEmail/customerPhone ``customer.email``; ``customer.phone``, else the shipping phone
shippingAddress/billing...  street1->address1, street2->address2, state->regionCode,
                            zip_code->postcode, country_code->countryCode. ReturnLogic
                            addresses have no name field: the name is not sent. No billing
                            address -> omitted (never copied from shipping).
tags                        ``exchange``, ``original_order:<id>``, ``rma:<id>`` (when known),
                            ``original_secondary_order:<id>`` and ``transaction:<payment
                            transaction_id>`` (when known), ``gift`` (gift orders)
taxesIncluded               false (canonical tax is on top of prices)
shopCurrencyCode            ``currency``
totalPrice                  products - discounts + tax (a gift card bonus is not billed)
taxPrice / fees / shipping  tax; 0; 0; refundAmount 0
orderItems[]                one per item: ``externalOrderItemId`` ``<number>-<n>`` (1-based),
                            ``rlProductVariantId`` from ``variant_ids_by_sku[sku]``,
                            ``priceOverride`` unit price, ``taxPerItem`` tax / qty,
                            ``isTaxable`` tax > 0, ``isGiftCard`` for gift card items,
                            ``fulfillableQuantity`` qty (nothing shipped yet),
                            ``orderItemDiscounts`` one ``EXCHANGE`` discount of the item's
                            discount, ``properties`` ``original_sku: ..``,
                            ``original_line_id: ..``, ``bonus_credit: ..`` when known.
                            A gift card whose SKU is no catalog product is sent as a custom
                            item (``AddCustomItemToOrderRequest``): ``sku``, ``name`` (the
                            title), ``price`` (unit price) instead of ``rlProductVariantId``
=========================== ===================================================================

Not sent, for want of a field: the customer's first and last name and the addresses' ``name``
(ReturnLogic's order, Address and Customer have none) and the ``note`` (no order-level text
field; tags are labels). The original order, the RMA, the secondary order id and the payment's
``transaction_id`` are identifiers, so they travel as tags, where ReturnLogic's users search.

ReturnLogic takes tax per unit. When an item's tax does not divide by its quantity the item is
sent as two lines (``<number>-<n>`` and ``<number>-<n>-2``) whose per-unit taxes differ by one
minor unit, so every minor unit arrives; the discount is shared between them in proportion
(remainder on the first).

Money goes out as ``Decimal`` amounts in the order's ``currency`` major units (ISO 4217: 1800
JPY is ``1800``, 12345 KWD fils ``12.345``): serialise the dict with
:func:`mappings.returnlogic.dumps`, which writes them as exact JSON numbers (``json.dumps``
cannot, and a float would not be exact). The answer is read back in the placed order's own
``shopCurrencyCode``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from pydantic import ValidationError

from bridge.domain import (
    Address,
    ExchangeKind,
    ExchangeOrder,
    ExchangeOrderItem,
    ExchangeOrderResult,
    major_to_minor,
    minor_to_major,
)
from bridge.errors import MappingError
from mappings.returnlogic._fields import mapping_error
from mappings.returnlogic.wire import (
    RlAddressOut,
    RlCustomOrderItemCreate,
    RlOrder,
    RlOrderCreateRequest,
    RlOrderDiscountOut,
    RlOrderItemCreate,
)

__all__ = [
    "EXCHANGE_DISCOUNT_CODE",
    "ORDER_NUMBER_MAX_LENGTH",
    "exchange_order_number",
    "exchange_to_order_create",
    "order_create_response_to_result",
]

ORDER_NUMBER_MAX_LENGTH = 40
"""The spec gives ``orderNumber`` no length limit; 40 is our own conservative bound."""
EXCHANGE_DISCOUNT_CODE = "EXCHANGE"

_SAFE = re.compile(r"[A-Za-z0-9_-]+")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_DIGEST_CHARS = 16
_MAX_EXACT_DOUBLE = 2**53
_BONUS_PROPERTY = "bonus_credit:"


def exchange_order_number(original_order_id: str, prefix: str = "EXCH-") -> str:
    """The ReturnLogic order number of the exchange order for ``original_order_id``.

    ``prefix + original_order_id`` when that is at most :data:`ORDER_NUMBER_MAX_LENGTH`
    characters of ``A-Z a-z 0-9 _ -``; otherwise ``prefix + <those characters of the id,
    truncated> + "." + <16 hex of sha256(id)>``. The ``.`` never appears in the first form, so
    the two forms cannot collide. Deterministic: same input, same number, on every replica.
    """
    if not original_order_id:
        raise MappingError("original_order_id is empty", field="original_order_id")
    room = ORDER_NUMBER_MAX_LENGTH - 1 - _DIGEST_CHARS
    if not prefix or not _SAFE.fullmatch(prefix) or len(prefix) >= room:
        raise MappingError(
            f"order number prefix must be 1..{room - 1} characters of A-Z a-z 0-9 _ -",
            field="prefix",
        )
    if (
        _SAFE.fullmatch(original_order_id)
        and len(prefix) + len(original_order_id) <= ORDER_NUMBER_MAX_LENGTH
    ):
        return prefix + original_order_id
    digest = hashlib.sha256(original_order_id.encode("utf-8", "surrogatepass")).hexdigest()
    readable = _UNSAFE.sub("", original_order_id)[: room - len(prefix)]
    return f"{prefix}{readable}.{digest[:_DIGEST_CHARS]}"


def exchange_to_order_create(
    ex: ExchangeOrder,
    variant_ids_by_sku: Mapping[str, str],
    order_number: str,
    *,
    external_source: str | None = None,
) -> dict[str, Any]:
    """The ``POST /v1/orders`` body (money as ``Decimal``; send it with :func:`dumps`).

    ``variant_ids_by_sku`` is the catalog lookup (SKU -> ``rlProductVariantId``); an item whose
    SKU is missing (a gift card excepted: it becomes a custom item), or maps to something that
    is not a whole number, is a ``MappingError`` naming the SKU, field ``items[<i>].sku``.
    """
    variant_ids = [
        _variant_id(item, variant_ids_by_sku, index) for index, item in enumerate(ex.items)
    ]

    tags = ["exchange", f"original_order:{ex.original_order_id}"]
    if ex.rma_id:
        tags.append(f"rma:{ex.rma_id}")
    if ex.original_secondary_order_id:
        tags.append(f"original_secondary_order:{ex.original_secondary_order_id}")
    if ex.payment_transaction_id:
        tags.append(f"transaction:{ex.payment_transaction_id}")
    if ex.is_gift:
        tags.append("gift")
    customer = ex.customer
    billed = ex.product_cents - ex.discount_cents + ex.tax_cents
    currency = ex.currency
    try:
        items = [
            line
            for index, (item, variant_id) in enumerate(zip(ex.items, variant_ids, strict=True))
            for line in _order_items(item, index, variant_id, order_number, currency)
        ]
        request = RlOrderCreateRequest(
            externalOrderId=order_number,
            externalCustomerId=_numeric_id(customer.id),
            customerEmail=customer.email,
            customerPhone=customer.phone or ex.shipping_address.phone,
            orderNumber=order_number,
            orderName=order_number,
            shippingAddress=_address_out(ex.shipping_address),
            billingAddress=_address_out(ex.billing_address) if ex.billing_address else None,
            externalSource=external_source,
            tags=tags,
            taxesIncluded=False,
            shopCurrencyCode=ex.currency,
            totalPrice=minor_to_major(billed, currency),
            fees=Decimal(0),
            taxPrice=minor_to_major(ex.tax_cents, currency),
            shippingPrice=Decimal(0),
            refundAmount=Decimal(0),
            orderItems=items,
        )
    except ValidationError as exc:
        raise mapping_error(exc) from exc
    return request.model_dump(exclude_none=True)


def order_create_response_to_result(body: Mapping[str, Any]) -> ExchangeOrderResult:
    """The placed order from a ``POST /v1/orders`` (or lookup) response, parsed with Decimal.

    ``order_id`` = ``orderNumber``; ``total`` = ``totalPrice`` plus the gift-card bonus the
    items' ``bonus_credit: ..`` properties record (Exchange Orders: the total is "including any
    gift card bonus credit"; ReturnLogic bills none of it); ``tax`` = ``taxPrice``;
    ``product`` = the items' ``totalPrice`` (else ``pricePerItem * quantity``), added exactly and
    rounded once (half up), each in the minor units of the order's ``shopCurrencyCode``.
    """
    try:
        rl = RlOrder.model_validate(body)
    except ValidationError as exc:
        raise mapping_error(exc) from exc
    if rl.totalPrice is None:
        raise MappingError("order has no totalPrice", field="totalPrice")
    product = sum(
        (
            item.totalPrice if item.totalPrice is not None else item.pricePerItem * item.quantity
            for item in rl.orderItems
        ),
        Decimal(0),
    )
    bonus = sum((_bonus_credit(item.properties) for item in rl.orderItems), Decimal(0))
    currency = rl.shopCurrencyCode.strip().upper()
    return ExchangeOrderResult(
        order_id=rl.orderNumber,
        total_cents=major_to_minor(rl.totalPrice + bonus, currency, field="totalPrice"),
        product_cents=major_to_minor(product, currency, field="orderItems"),
        tax_cents=major_to_minor(rl.taxPrice, currency, field="taxPrice"),
    )


def _bonus_credit(properties: list[Any]) -> Decimal:
    """The ``bonus_credit: <amount>`` (major units of the order's currency) an item's
    properties record (0 when none or unreadable: a property anyone may edit in ReturnLogic
    never fails the answer)."""
    for entry in properties:
        if isinstance(entry, str) and entry.startswith(_BONUS_PROPERTY):
            try:
                value = Decimal(entry.removeprefix(_BONUS_PROPERTY).strip())
            except ArithmeticError:
                return Decimal(0)
            return value if value.is_finite() and value > 0 else Decimal(0)
    return Decimal(0)


def _variant_id(
    item: ExchangeOrderItem, variant_ids_by_sku: Mapping[str, str], index: int
) -> int | None:
    """The item's ``rlProductVariantId``; None for a gift card the catalog does not hold."""
    sku = item.sku
    found = variant_ids_by_sku.get(sku)
    if found is None and item.kind is ExchangeKind.GIFT_CARD:
        return None
    if found is None:
        raise MappingError(f"no ReturnLogic variant for SKU {sku!r}", field=f"items[{index}].sku")
    text = str(found).strip()
    if not text.isascii() or not text.isdigit():
        raise MappingError(
            f"ReturnLogic variant id for SKU {sku!r} is not a whole number",
            field=f"items[{index}].sku",
        )
    return int(text)


def _numeric_id(value: str | None) -> int | None:
    if value and value.isascii() and value.isdigit() and int(value) <= _MAX_EXACT_DOUBLE:
        return int(value)
    return None


def _address_out(address: Address) -> RlAddressOut:
    return RlAddressOut(
        address1=address.street1,
        address2=address.street2,
        city=address.city,
        regionCode=address.state,
        postcode=address.zip_code,
        countryCode=address.country_code,
    )


def _order_items(
    item: ExchangeOrderItem, index: int, variant_id: int | None, order_number: str, currency: str
) -> list[RlOrderItemCreate | RlCustomOrderItemCreate]:
    base_tax, remainder = divmod(item.tax_cents, item.qty)
    # (qty, tax per unit) chunks: qty - remainder units at base_tax, remainder at base_tax + 1
    chunks = [(item.qty - remainder, base_tax)]
    if remainder:
        chunks.append((remainder, base_tax + 1))
    chunks = [chunk for chunk in chunks if chunk[0]]
    discounts = [item.discount_cents * qty // item.qty for qty, _ in chunks]
    discounts[0] += item.discount_cents - sum(discounts)

    properties = []
    if item.original_sku:
        properties.append(f"original_sku: {item.original_sku}")
    if item.original_line_id:
        properties.append(f"original_line_id: {item.original_line_id}")
    bonus = [f"{_BONUS_PROPERTY} {minor_to_major(item.bonus_credit_cents, currency)}"]

    out: list[RlOrderItemCreate | RlCustomOrderItemCreate] = []
    for number, ((qty, unit_tax), discount) in enumerate(zip(chunks, discounts, strict=True)):
        suffix = f"-{index + 1}" if number == 0 else f"-{index + 1}-{number + 1}"
        common: dict[str, Any] = {
            "externalOrderItemId": f"{order_number}{suffix}",
            "quantity": qty,
            "isTaxable": item.tax_cents > 0,
            "isGiftCard": item.kind is ExchangeKind.GIFT_CARD,
            "taxPerItem": minor_to_major(unit_tax, currency),
            "fulfillableQuantity": qty,
            # the bonus once, on the first line of a split item
            "properties": properties + bonus
            if number == 0 and item.bonus_credit_cents
            else properties or None,
            "orderItemDiscounts": [
                RlOrderDiscountOut(
                    amount=minor_to_major(discount, currency),
                    code=EXCHANGE_DISCOUNT_CODE,
                    isShippingDiscount=False,
                )
            ]
            if discount
            else None,
        }
        price = minor_to_major(item.unit_price_cents, currency)
        if variant_id is None:
            out.append(
                RlCustomOrderItemCreate(**common, sku=item.sku, name=item.title, price=price)
            )
        else:
            out.append(
                RlOrderItemCreate(**common, rlProductVariantId=variant_id, priceOverride=price)
            )
    return out
