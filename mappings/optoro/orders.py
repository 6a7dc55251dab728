"""Returns Portal Orders (``POST /returns_portal_orders``, ``Api-Version: 3``) <-> :class:`Order`.

Outbound (:func:`order_to_rpo`, :func:`rpo_request`) satisfies Optoro's Returns Portal Orders
description, the stricter of its two contracts:

- header ``product_amount_cents`` / ``tax_amount_cents`` / ``discount_amount_cents`` /
  ``total_amount_cents`` are **computed from the lines** (the domain's totals): an item's
  ``product_amount_cents`` is unit price x ``quantity_shipped``; the total is products -
  discounts + shipping + fees, + line and shipping tax unless prices include tax;
- ``transactions``, ``refunds`` and ``discounts`` are always present (``[]`` when empty), every
  refund carries ``refund_line_items`` and ``refund_transactions``;
- ``status`` is ``Created`` / ``Shipped`` / ``Canceled``; tags are spelled as Optoro supports
  them (see :mod:`mappings.optoro.vocab`);
- fields the description requires and the domain leaves open are filled by the documented
  rules -- customer ``identifier`` <- email (the guide's advice), item / variant
  ``product_identifier`` and ``variant_identifier`` <- SKU (the description's advice), a missing
  billing address <- the shipping address and vice versa, an address ``name`` <- the customer's
  name -- and anything else missing is a :class:`MappingError` naming the wire field
  (e.g. ``items[0].title``);
- optional fields without a value are left out (the description types them as strings, so
  ``null`` would be invalid); timestamps are UTC with ``Z``; weights are pounds.

Inbound (:func:`rpo_to_order`, :func:`parse_rpo_request`) accepts everything the guide's samples
show (``null`` tracking numbers, no ``refund_transactions``, ``secondary_identifier``) and
ignores the header totals, which the lines determine; :func:`header_mismatches` reports where
a sample's header disagrees with its lines (four guide samples do).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from functools import partial
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from bridge.domain import (
    Address,
    Customer,
    Discount,
    Order,
    OrderLine,
    Payment,
    PaymentDetails,
    Refund,
    RefundLine,
    Variant,
    WeightUnit,
)
from bridge.errors import MappingError
from mappings._json import Body
from mappings.optoro._wire import (
    Bool,
    Cents,
    Count,
    Currency,
    Id,
    Int,
    Number,
    Str,
    Timestamp,
    WireIn,
    WireOut,
    build,
    dump_out,
    first_not_none,
    maybe_timestamp,
    parse,
    pounds,
    timestamp,
)
from mappings.optoro.variants import AttributeIn, AttributeOut, variant_attributes
from mappings.optoro.vocab import GIFT_CARD_TAG, ORDER_STATUS_IN, ORDER_STATUS_OUT, tag_in, tag_out

__all__ = [
    "HEADER_FIELDS",
    "AddressIn",
    "AddressOut",
    "CustomerIn",
    "CustomerOut",
    "ItemIn",
    "ItemOut",
    "OrderIn",
    "OrderOut",
    "RpoRequestIn",
    "RpoRequestOut",
    "header_mismatches",
    "order_to_rpo",
    "parse_rpo_request",
    "rpo_request",
    "rpo_to_order",
]

MAX_ITEM_QUANTITY = 1000
"""The description: an item's ``quantity`` must be less than or equal to 1000."""

HEADER_FIELDS = (
    "total_amount_cents",
    "product_amount_cents",
    "tax_amount_cents",
    "discount_amount_cents",
)
"""Order header amounts that are sums over the lines."""

# --- wire models: inbound (lenient where the guide is) ---------------------------------------


class AddressIn(WireIn):
    """An address of an RPO (``state``/``zip_code``) or of an exchange order
    (``province``/``postal_code`` per the description, ``zip_code`` in the guide): both accepted."""

    name: Str | None = None
    street1: Str
    street2: Str | None = None
    city: Str
    state: Str | None = None
    province: Str | None = None
    zip_code: Str | None = None
    postal_code: Str | None = None
    country_code: Str
    phone: Str | None = None

    @model_validator(mode="after")
    def _one_value_per_synonym(self) -> AddressIn:
        for a, b in (("state", "province"), ("zip_code", "postal_code")):
            first, second = getattr(self, a), getattr(self, b)
            if first is not None and second is not None and first != second:
                raise ValueError(f"{a} and {b} disagree; send one of them")
        return self

    def canonical(self) -> Address:
        return Address(
            name=self.name,
            street1=self.street1,
            street2=self.street2,
            city=self.city,
            state=first_not_none(self.state, self.province),
            zip_code=first_not_none(self.postal_code, self.zip_code),
            country_code=self.country_code,
            phone=self.phone,
        )


class CustomerIn(WireIn):
    identifier: Str | None = None
    first_name: Str | None = None
    last_name: Str | None = None
    email: Str | None = None
    phone: Str | None = None
    tags: list[Str] = Field(default_factory=list)

    def canonical(self) -> Customer:
        return Customer(
            id=self.identifier,
            email=self.email,
            first_name=self.first_name,
            last_name=self.last_name,
            phone=self.phone,
            tags=tuple(self.tags),
        )


class PaymentDetailsIn(WireIn):
    avs_result_code: Str | None = None
    cvv_result_code: Str | None = None
    credit_card_company: Str | None = None
    gift_card_id: Str | None = None
    gift_card_code: Str | None = None


class TransactionIn(WireIn):
    identifier: Id
    parent_identifier: Str | None = None
    amount_cents: Cents
    status: Str
    type: Str
    gateway: Str | None = None
    is_online: Bool | None = None
    is_test: Bool | None = None
    created_at: Timestamp | None = None
    updated_at: Timestamp | None = None
    payment_details: PaymentDetailsIn | None = None

    def canonical(self) -> Payment:
        details = self.payment_details
        return Payment(
            id=self.identifier,
            parent_id=self.parent_identifier,
            amount_cents=self.amount_cents,
            status=self.status,
            kind=self.type,
            gateway=self.gateway,
            is_online=self.is_online,
            is_test=self.is_test,
            created_at=self.created_at,
            updated_at=self.updated_at,
            payment_details=None if details is None else PaymentDetails(**details.model_dump()),
        )


class RefundLineItemIn(WireIn):
    identifier: Id
    quantity: Count
    order_item_identifier: Id


class RefundIn(WireIn):
    identifier: Id
    total_refund_amount_cents: Cents
    refund_line_items: list[RefundLineItemIn]
    refund_transactions: list[TransactionIn] = Field(default_factory=list)
    """Required by the description, absent from every guide sample."""
    note: Str | None = None
    created_at: Timestamp
    rma_identifier: Str | None = None
    tags: list[Str] = Field(default_factory=list)


class DiscountIn(WireIn):
    identifier: Id
    code: Str
    type: Str | None = None
    amount_cents: Cents
    created_at: Timestamp | None = None
    updated_at: Timestamp | None = None


class ProductVariantIn(WireIn):
    """An exchange candidate sent along with an item (``items[].variants``)."""

    attributes: list[AttributeIn] = Field(default_factory=list)
    allow_backorder: Bool | None = None
    product_identifier: Str | None = None
    variant_identifier: Str | None = None
    product_amount_cents: Cents | None = None
    unit_price_amount_cents: Cents | None = None
    currency: Currency | None = None
    quantity_in_stock: Int
    inventory_managed_by_platform: Bool | None = None
    sku: Str | None = None
    title: Str
    image_urls: list[Str] = Field(default_factory=list)
    product_url: Str | None = None
    weight: Number | None = None

    @model_validator(mode="after")
    def _has_a_key(self) -> ProductVariantIn:
        if not (self.sku or self.variant_identifier):
            raise ValueError("a variant needs a sku or a variant_identifier")
        return self


class ItemIn(WireIn):
    identifier: Id
    concept: Str | None = None
    upc: Str | None = None
    sku: Str | None = None
    quantity: Count
    quantity_shipped: Count = 0
    quantity_canceled: Count = 0
    quantity_refunded: Count | None = None
    tracking_number: Str | None = None
    reverse_tracking_number: Str | None = None
    dropship_identifier: Str | None = None
    shipped_date: Timestamp | None = None
    return_policy_end_date: Timestamp | None = None
    product_identifier: Str | None = None
    variant_identifier: Str | None = None
    variants: list[ProductVariantIn] = Field(default_factory=list)
    title: Str | None = None
    product_amount_cents: Cents | None = None
    """Ignored on the way in: it is unit price x quantity shipped."""
    tax_amount_cents: Cents = 0
    discount_amount_cents: Cents = 0
    unit_price_amount_cents: Cents
    tags: list[Str] = Field(default_factory=list)
    image_url: Str | None = None
    weight: Number | None = None


class OrderIn(WireIn):
    identifier: Id
    secondary_identifier: Str | None = None
    """Not in the description; the guide sends it for orders from a third-party system."""
    concept: Str | None = None
    raw_status: Str | None = None
    status: Str
    total_amount_cents: Cents | None = None
    product_amount_cents: Cents | None = None
    tax_amount_cents: Cents | None = None
    discount_amount_cents: Cents | None = None
    shipping_amount_cents: Cents = 0
    shipping_tax_amount_cents: Cents = 0
    currency: Currency
    tags: list[Str] = Field(default_factory=list)
    note: Str | None = None
    created_at: Timestamp
    updated_at: Timestamp
    items: list[ItemIn]
    customer: CustomerIn | None = None
    shipping_address: AddressIn | None = None
    billing_address: AddressIn | None = None
    transactions: list[TransactionIn] = Field(default_factory=list)
    refunds: list[RefundIn] = Field(default_factory=list)
    discounts: list[DiscountIn] = Field(default_factory=list)

    @field_validator("status")
    @classmethod
    def _known_status(cls, value: str) -> str:
        if value not in ORDER_STATUS_IN:
            raise ValueError(f"unknown order status {value!r}; expected one of {_words()}")
        return value


class _OrdersIn(WireIn):
    orders: list[OrderIn]


class RpoRequestIn(WireIn):
    returns_portal_order: _OrdersIn


def _words() -> str:
    return ", ".join(sorted(ORDER_STATUS_IN))


# --- wire models: outbound (exactly what the description requires) --------------------------


class AddressOut(WireOut):
    name: Str
    street1: Str
    street2: Str | None = None
    city: Str
    state: Str
    zip_code: Str
    country_code: Str
    phone: Str | None = None


class CustomerOut(WireOut):
    identifier: Str
    first_name: Str | None = None
    last_name: Str | None = None
    email: Str
    phone: Str | None = None
    tags: list[Str] | None = None


class PaymentDetailsOut(WireOut):
    avs_result_code: Str | None = None
    cvv_result_code: Str | None = None
    credit_card_company: Str | None = None
    gift_card_id: Str | None = None
    gift_card_code: Str | None = None


class TransactionOut(WireOut):
    identifier: Str
    parent_identifier: Str
    amount_cents: Cents
    status: Str
    type: Str
    gateway: Str
    is_online: Bool
    is_test: Bool
    created_at: Str
    updated_at: Str
    payment_details: PaymentDetailsOut


class RefundLineItemOut(WireOut):
    identifier: Str
    quantity: Count
    order_item_identifier: Str


class RefundOut(WireOut):
    identifier: Str
    total_refund_amount_cents: Cents
    refund_line_items: list[RefundLineItemOut]
    note: Str | None = None
    created_at: Str
    rma_identifier: Str | None = None
    tags: list[Str] | None = None
    refund_transactions: list[TransactionOut]


class DiscountOut(WireOut):
    identifier: Str
    code: Str
    type: Str | None = None
    amount_cents: Cents
    created_at: Str
    updated_at: Str | None = None


class ProductVariantOut(WireOut):
    attributes: list[AttributeOut]
    allow_backorder: Bool
    product_identifier: Str
    variant_identifier: Str
    product_amount_cents: Cents
    currency: Currency | None = None
    quantity_in_stock: Int
    inventory_managed_by_platform: Bool
    sku: Str | None = None
    title: Str
    unit_price_amount_cents: Cents | None = None
    image_urls: list[Str] | None = None
    product_url: Str | None = None
    weight: float | None = None


class ItemOut(WireOut):
    identifier: Str
    concept: Str | None = None
    upc: Str | None = None
    sku: Str | None = None
    quantity: Count = Field(le=MAX_ITEM_QUANTITY)
    quantity_shipped: Count
    quantity_canceled: Count
    quantity_refunded: Count | None = None
    tracking_number: Str | None = None
    reverse_tracking_number: Str | None = None
    shipped_date: Str | None = None
    return_policy_end_date: Str | None = None
    product_identifier: Str
    variant_identifier: Str
    variants: list[ProductVariantOut] | None = None
    title: Str
    tags: list[Str]
    product_amount_cents: Cents
    tax_amount_cents: Cents
    discount_amount_cents: Cents
    unit_price_amount_cents: Cents
    image_url: Str | None = None
    weight: float | None = None

    @model_validator(mode="after")
    def _description_rules(self) -> ItemOut:
        if self.sku is None and self.upc is None:
            raise ValueError("an item needs a sku or a upc")
        if self.quantity_refunded is not None and self.quantity_refunded > self.quantity_shipped:
            raise ValueError("quantity_refunded must be less than or equal to quantity_shipped")
        return self


class OrderOut(WireOut):
    identifier: Str
    secondary_identifier: Str | None = None
    concept: Str | None = None
    raw_status: Str | None = None
    status: Literal["Created", "Shipped", "Canceled"]
    total_amount_cents: Cents
    product_amount_cents: Cents
    tax_amount_cents: Cents
    discount_amount_cents: Cents
    shipping_amount_cents: Cents
    shipping_tax_amount_cents: Cents
    currency: Currency
    tags: list[Str]
    note: Str | None = None
    created_at: Str
    updated_at: Str
    items: list[ItemOut]
    customer: CustomerOut
    shipping_address: AddressOut
    billing_address: AddressOut
    transactions: list[TransactionOut]
    refunds: list[RefundOut]
    discounts: list[DiscountOut]


class _OrdersOut(WireOut):
    orders: list[OrderOut]


class RpoRequestOut(WireOut):
    returns_portal_order: _OrdersOut


# --- canonical -> wire -----------------------------------------------------------------------


def order_to_rpo(
    order: Order, *, size_dimensions: Sequence[str] = (), name_from_email: bool = False
) -> dict[str, Any]:
    """The Returns Portal Order object for ``order`` (one element of ``orders``).

    ``size_dimensions`` names the attributes that are sizes (e.g. ``("Size", "Variant",
    "Length")``), for the ``all_size`` attribute of exchange candidates sent with the lines.
    ``name_from_email``: an address without any person's name takes the customer's email.
    An order with nothing shipped sends zero shipping, shipping tax, fees and order discount
    (its lines count no unit), so its total is 0 as in the guide's canceled order.
    Raises :class:`MappingError` naming the wire field when the description cannot be met.
    """
    if not any(line.qty_shipped for line in order.lines):
        # nothing shipped (canceled, or not yet shipped): Optoro counts shipped units only, so
        # the header charges nothing either (the guide's fully canceled order: all zero)
        order = order.model_copy(
            update={
                "shipping_cents": 0,
                "shipping_tax_cents": 0,
                "order_discount_cents": 0,
                "fees_cents": 0,
            }
        )
    wire = {
        "identifier": order.id,
        "secondary_identifier": order.secondary_id,
        "concept": order.concept,
        "raw_status": order.raw_status,
        "status": ORDER_STATUS_OUT[order.status],
        "total_amount_cents": order.total_cents,
        "product_amount_cents": order.product_cents,
        "tax_amount_cents": order.tax_cents,
        "discount_amount_cents": order.discount_cents,
        "shipping_amount_cents": order.shipping_cents,
        "shipping_tax_amount_cents": order.shipping_tax_cents,
        "currency": order.currency,
        "tags": _tags_out(order.tags),
        "note": order.note,
        "created_at": timestamp(order.created_at),
        "updated_at": timestamp(order.updated_at),
        "items": [_line_out(line, size_dimensions) for line in order.lines],
        "customer": _customer_out(order.customer),
        "shipping_address": _address_out(
            order.shipping_address or order.billing_address, order.customer, name_from_email
        ),
        "billing_address": _address_out(
            order.billing_address or order.shipping_address, order.customer, name_from_email
        ),
        "transactions": [_transaction_out(t) for t in order.transactions],
        "refunds": [_refund_out(refund) for refund in order.refunds],
        "discounts": [_discount_out(discount, order) for discount in order.discounts],
    }
    _check_refund_identifiers(order)
    return dump_out(OrderOut, wire, what=f"order {order.id!r}")


def _check_refund_identifiers(order: Order) -> None:
    """Refund line ids must be unique across all refunds (the guide); refund ids: the domain."""
    line_ids: set[str] = set()
    for i, refund in enumerate(order.refunds):
        for j, refund_line in enumerate(refund.lines):
            if refund_line.id in line_ids:
                raise MappingError(
                    f"order {order.id!r}: refund line identifier {refund_line.id!r} is used twice;"
                    " it must be unique across all refunds",
                    field=f"refunds[{i}].refund_line_items[{j}].identifier",
                )
            line_ids.add(refund_line.id)


def rpo_request(orders: Iterable[Order], *, size_dimensions: Sequence[str] = ()) -> dict[str, Any]:
    """The ``POST /returns_portal_orders`` body for a batch of orders."""
    wire_orders = []
    for index, order in enumerate(orders):
        try:
            wire_orders.append(order_to_rpo(order, size_dimensions=size_dimensions))
        except MappingError as exc:
            field = f"returns_portal_order.orders[{index}]" + (f".{exc.field}" if exc.field else "")
            raise MappingError(str(exc), field=field) from exc
    return {"returns_portal_order": {"orders": wire_orders}}


def _tags_out(tags: Iterable[str], *, gift_card: bool = False) -> list[str]:
    wire = [tag_out(tag) for tag in tags]
    if gift_card:
        wire.append(tag_out(GIFT_CARD_TAG))
    return list(dict.fromkeys(wire))


def _line_out(line: OrderLine, size_dimensions: Sequence[str]) -> dict[str, Any]:
    return {
        "identifier": line.id,
        "concept": line.concept,
        "upc": line.upc,
        "sku": line.sku,
        "quantity": line.qty,
        "quantity_shipped": line.qty_shipped,
        "quantity_canceled": line.qty_canceled,
        "quantity_refunded": line.qty_refunded or None,
        "tracking_number": line.tracking_number,
        "reverse_tracking_number": line.return_tracking_number,
        "shipped_date": maybe_timestamp(line.shipped_at),
        "return_policy_end_date": maybe_timestamp(line.return_policy_ends_at),
        "product_identifier": line.product_id or line.sku,
        "variant_identifier": line.variant_id or line.sku,
        "variants": [_product_variant_out(v, size_dimensions) for v in line.variants] or None,
        "title": line.title,
        "tags": _tags_out(line.tags, gift_card=line.is_gift_card),
        "product_amount_cents": line.product_cents,
        "tax_amount_cents": line.tax_cents,
        "discount_amount_cents": line.discount_cents,
        "unit_price_amount_cents": line.unit_price_cents,
        "image_url": line.image_url,
        "weight": pounds(line.weight, line.weight_unit),
    }


def _product_variant_out(variant: Variant, size_dimensions: Sequence[str]) -> dict[str, Any]:
    return {
        "attributes": variant_attributes(variant, size_dimensions),
        "allow_backorder": bool(variant.allow_backorder),
        "product_identifier": variant.product_id or variant.sku,
        "variant_identifier": variant.variant_id or variant.sku,
        "product_amount_cents": variant.unit_price_cents,
        "currency": variant.currency,
        "quantity_in_stock": variant.quantity_in_stock,
        "inventory_managed_by_platform": False,
        "sku": variant.sku,
        "title": variant.title,
        "unit_price_amount_cents": variant.unit_price_cents,
        "image_urls": [variant.image_url] if variant.image_url else None,
        "product_url": variant.product_url,
        "weight": pounds(variant.weight, variant.weight_unit),
    }


def _customer_out(customer: Customer | None) -> dict[str, Any] | None:
    if customer is None:
        return None
    return {
        "identifier": customer.id or customer.email,
        "first_name": customer.first_name,
        "last_name": customer.last_name,
        "email": customer.email,
        "phone": customer.phone,
        "tags": list(customer.tags) or None,
    }


def _address_out(
    address: Address | None, customer: Customer | None, name_from_email: bool
) -> dict[str, Any] | None:
    """Optoro requires a person's name on addresses. Fallbacks, in order: the address's
    name, the customer's first and last name, and (``name_from_email``) the customer's
    email: a source without names (ReturnLogic) still identifies the shopper by it, and
    Optoro shows the address to that same shopper. Nothing else is made up.

    The description also requires ``state`` and ``zip_code`` (type string, no minimum
    length): an address of a country without regions or postcodes (Hong Kong, Ireland without
    a county) sends ``""``; the source's mapping reports a gap its country's addressing
    cannot accept (:func:`mappings._countries.address_gaps`)."""
    if address is None:
        return None
    name = address.name
    if name is None and customer is not None:
        name = " ".join(p for p in (customer.first_name, customer.last_name) if p) or None
        if name is None and name_from_email:
            name = customer.email
    return {
        "name": name,
        "street1": address.street1,
        "street2": address.street2,
        "city": address.city,
        "state": address.state or "",
        "zip_code": address.zip_code or "",
        "country_code": address.country_code,
        "phone": address.phone,
    }


def _transaction_out(transaction: Payment) -> dict[str, Any]:
    details = transaction.payment_details or PaymentDetails()
    return {
        "identifier": transaction.id,
        "parent_identifier": transaction.parent_id,
        "amount_cents": transaction.amount_cents,
        "status": transaction.status,
        "type": transaction.kind,
        "gateway": transaction.gateway,
        "is_online": transaction.is_online,
        "is_test": transaction.is_test,
        "created_at": maybe_timestamp(transaction.created_at),
        "updated_at": maybe_timestamp(transaction.updated_at),
        "payment_details": details.model_dump(),
    }


def _refund_out(refund: Refund) -> dict[str, Any]:
    return {
        "identifier": refund.id,
        "total_refund_amount_cents": refund.total_cents,
        "refund_line_items": [
            {"identifier": rl.id, "quantity": rl.qty, "order_item_identifier": rl.order_line_id}
            for rl in refund.lines
        ],
        "note": refund.note,
        "created_at": timestamp(refund.created_at),
        "rma_identifier": refund.rma_id,
        "tags": _tags_out(refund.tags) or None,
        "refund_transactions": [_transaction_out(t) for t in refund.transactions],
    }


def _discount_out(discount: Discount, order: Order) -> dict[str, Any]:
    """A discount without its own dates (ReturnLogic's) was applied when the order was
    placed: Optoro requires ``created_at``, the order's is used."""
    kind = discount.kind
    if kind is None and discount.is_shipping:
        kind = "Shipping"
    return {
        "identifier": discount.id,
        "code": discount.code,
        "type": kind,
        "amount_cents": discount.amount_cents,
        "created_at": timestamp(discount.created_at or order.created_at),
        "updated_at": maybe_timestamp(discount.updated_at),
    }


# --- wire -> canonical -----------------------------------------------------------------------


def rpo_to_order(wire: Body) -> Order:
    """The canonical order of one Returns Portal Order object (JSON text or parsed).

    Header totals are not read (the lines determine them), except that a header discount above
    the lines' discounts becomes ``order_discount_cents``.
    """
    return _order_in(parse(OrderIn, wire, what="returns portal order"), "")


def parse_rpo_request(body: Body) -> list[Order]:
    """Every order of a ``POST /returns_portal_orders`` body."""
    request = parse(RpoRequestIn, body, what="returns portal orders request")
    return [
        _order_in(order, f"returns_portal_order.orders[{index}]")
        for index, order in enumerate(request.returns_portal_order.orders)
    ]


def header_mismatches(wire: Body) -> dict[str, tuple[int, int]]:
    """``{header field: (as sent, as computed from the lines)}`` where they differ."""
    parsed = parse(OrderIn, wire, what="returns portal order")
    order = _order_in(parsed, "")
    computed = {
        "total_amount_cents": order.total_cents,
        "product_amount_cents": order.product_cents,
        "tax_amount_cents": order.tax_cents,
        "discount_amount_cents": order.discount_cents,
    }
    sent: Mapping[str, int | None] = {name: getattr(parsed, name) for name in HEADER_FIELDS}
    return {
        name: (value, computed[name])
        for name, value in sent.items()
        if value is not None and value != computed[name]
    }


def _order_in(wire: OrderIn, where: str) -> Order:
    def at(rest: str) -> str:
        return f"{where}.{rest}" if where else rest

    lines = tuple(
        build(partial(_line_in, item), at(f"items[{i}]")) for i, item in enumerate(wire.items)
    )
    refunds = tuple(
        build(partial(_refund_in, refund), at(f"refunds[{i}]"))
        for i, refund in enumerate(wire.refunds)
    )
    line_discounts = sum(line.discount_cents for line in lines)
    header_discount = wire.discount_amount_cents or 0
    return build(
        lambda: Order(
            id=wire.identifier,
            secondary_id=wire.secondary_identifier,
            status=ORDER_STATUS_IN[wire.status],
            raw_status=wire.raw_status,
            currency=wire.currency,
            lines=lines,
            customer=None if wire.customer is None else wire.customer.canonical(),
            shipping_address=_address_in(wire.shipping_address),
            billing_address=_address_in(wire.billing_address),
            shipping_cents=wire.shipping_amount_cents,
            shipping_tax_cents=wire.shipping_tax_amount_cents,
            order_discount_cents=max(0, header_discount - line_discounts),
            refunds=refunds,
            transactions=tuple(t.canonical() for t in wire.transactions),
            discounts=tuple(_discount_in(d) for d in wire.discounts),
            tags=tuple(tag_in(tag) for tag in wire.tags),
            note=wire.note,
            concept=wire.concept,
            created_at=wire.created_at,
            updated_at=wire.updated_at,
        ),
        where,
        f"order {wire.identifier!r}",
    )


def _address_in(address: AddressIn | None) -> Address | None:
    return None if address is None else address.canonical()


def _line_in(item: ItemIn) -> OrderLine:
    tags = tuple(tag_in(tag) for tag in item.tags)
    return OrderLine(
        id=item.identifier,
        sku=item.sku,
        upc=item.upc,
        title=item.title,
        qty=item.quantity,
        qty_shipped=item.quantity_shipped,
        qty_canceled=item.quantity_canceled,
        qty_refunded=item.quantity_refunded or 0,
        unit_price_cents=item.unit_price_amount_cents,
        tax_cents=item.tax_amount_cents,
        discount_cents=item.discount_amount_cents,
        product_id=item.product_identifier,
        variant_id=item.variant_identifier,
        is_gift_card=GIFT_CARD_TAG in tags,
        tracking_number=item.tracking_number,
        return_tracking_number=item.reverse_tracking_number,
        shipped_at=item.shipped_date,
        return_policy_ends_at=item.return_policy_end_date,
        image_url=item.image_url,
        weight=item.weight,
        weight_unit=None if item.weight is None else WeightUnit.LB,
        concept=item.concept,
        tags=tags,
        variants=tuple(_product_variant_in(v) for v in item.variants),
    )


def _product_variant_in(variant: ProductVariantIn) -> Variant:
    sku = variant.sku or variant.variant_identifier
    assert sku is not None  # checked by ProductVariantIn
    return Variant(
        sku=sku,
        title=variant.title,
        attributes=tuple(a.canonical() for a in variant.attributes if not a.is_all_size),
        quantity_in_stock=variant.quantity_in_stock,
        unit_price_cents=first_not_none(
            variant.unit_price_amount_cents, variant.product_amount_cents
        ),
        currency=variant.currency,
        image_url=variant.image_urls[0] if variant.image_urls else None,
        product_url=variant.product_url,
        product_id=variant.product_identifier,
        variant_id=variant.variant_identifier,
        allow_backorder=variant.allow_backorder,
        weight=variant.weight,
        weight_unit=None if variant.weight is None else WeightUnit.LB,
    )


def _refund_in(refund: RefundIn) -> Refund:
    return Refund(
        id=refund.identifier,
        total_cents=refund.total_refund_amount_cents,
        lines=tuple(
            RefundLine(id=rl.identifier, order_line_id=rl.order_item_identifier, qty=rl.quantity)
            for rl in refund.refund_line_items
        ),
        note=refund.note,
        created_at=refund.created_at,
        rma_id=refund.rma_identifier,
        tags=tuple(tag_in(tag) for tag in refund.tags),
        transactions=tuple(t.canonical() for t in refund.refund_transactions),
    )


def _discount_in(discount: DiscountIn) -> Discount:
    return Discount(
        id=discount.identifier,
        code=discount.code,
        kind=discount.type,
        amount_cents=discount.amount_cents,
        is_shipping=(discount.type or "").casefold() == "shipping",
        created_at=discount.created_at,
        updated_at=discount.updated_at,
    )
