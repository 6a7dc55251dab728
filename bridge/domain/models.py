"""The canonical domain: what an order, a return and an exchange are, whatever the platform.

Money is integer cents (``*_cents``); every entity keeps its ids on each platform in ``refs``.
Totals are computed from lines, never stored, so they cannot disagree with them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from decimal import Decimal
from typing import Self

from pydantic import AwareDatetime, Field, StrictBool, StrictInt, model_validator

from bridge.domain.base import (
    Cents,
    CrossReferenced,
    Currency,
    DomainModel,
    Id,
    PositiveQuantity,
    Quantity,
    SignedCents,
)
from bridge.domain.vocab import (
    ExchangeKind,
    OrderStatus,
    PackageStatus,
    ReceivingStatus,
    RefundType,
    ReturnMethod,
    RmaStatus,
    WeightUnit,
    package_status_rank,
    receiving_status_rank,
    rma_status_rank,
)

# --- parties ---------------------------------------------------------------------------------


class Address(DomainModel):
    name: str | None = None
    street1: str
    street2: str | None = None
    city: str
    state: str | None = None
    """State, province or region code (``DC``, ``PA``)."""
    zip_code: str | None = None
    country_code: str
    """ISO 3166-1 alpha-2, e.g. ``US``."""
    phone: str | None = None


class Customer(CrossReferenced):
    id: str | None = None
    email: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    phone: str | None = None
    tags: tuple[str, ...] = ()


# --- catalog ---------------------------------------------------------------------------------


class VariantAttribute(DomainModel):
    name: str
    value: str


class Variant(CrossReferenced):
    """A sellable variant, as offered for an exchange."""

    sku: Id
    title: str
    attributes: tuple[VariantAttribute, ...] = ()
    quantity_in_stock: StrictInt
    """May be negative where the platform allows overselling."""
    unit_price_cents: Cents | None = None
    currency: Currency | None = None
    upc: str | None = None
    image_url: str | None = None
    product_url: str | None = None
    product_id: str | None = None
    variant_id: str | None = None
    is_active: StrictBool = True
    allow_backorder: StrictBool | None = None
    weight: Decimal | None = None
    weight_unit: WeightUnit | None = None


# --- orders ----------------------------------------------------------------------------------


class OrderLine(CrossReferenced):
    id: Id
    sku: str | None = None
    upc: str | None = None
    title: str | None = None
    qty: Quantity
    qty_shipped: Quantity = 0
    qty_canceled: Quantity = 0
    qty_refunded: Quantity = 0
    """Units already refunded, as the source platform reports it."""
    unit_price_cents: Cents
    tax_cents: Cents = 0
    """Tax of the line's shipped units (how Optoro's orders count it; a source reporting
    the whole line's tax scales it to the shipped units, see mappings.returnlogic)."""
    discount_cents: Cents = 0
    """Discount of the line's shipped units, like ``tax_cents``."""
    product_id: str | None = None
    variant_id: str | None = None
    """Catalog variant id, also the key Optoro asks exchange variants for."""
    is_gift_card: StrictBool = False
    tracking_number: str | None = None
    return_tracking_number: str | None = None
    shipped_at: AwareDatetime | None = None
    return_policy_ends_at: AwareDatetime | None = None
    image_url: str | None = None
    weight: Decimal | None = None
    weight_unit: WeightUnit | None = None
    concept: str | None = None
    """Retail brand the product belongs to."""
    tags: tuple[str, ...] = ()
    variants: tuple[Variant, ...] = ()
    """Exchange candidates sent along with the line."""

    @model_validator(mode="after")
    def _quantities_add_up(self) -> Self:
        if self.qty_shipped + self.qty_canceled > self.qty:
            raise ValueError(
                f"order line {self.id!r}: qty_shipped ({self.qty_shipped}) + qty_canceled"
                f" ({self.qty_canceled}) exceeds qty ({self.qty})"
            )
        if self.qty_refunded > self.qty:
            raise ValueError(
                f"order line {self.id!r}: qty_refunded ({self.qty_refunded})"
                f" exceeds qty ({self.qty})"
            )
        return self

    @property
    def product_cents(self) -> int:
        """Unit price times units shipped, before tax and discount."""
        return self.unit_price_cents * self.qty_shipped

    @property
    def qty_open(self) -> int:
        """Units neither shipped nor canceled."""
        return self.qty - self.qty_shipped - self.qty_canceled


class PaymentDetails(DomainModel):
    avs_result_code: str | None = None
    cvv_result_code: str | None = None
    credit_card_company: str | None = None
    gift_card_id: str | None = None
    gift_card_code: str | None = None


class Payment(CrossReferenced):
    """A payment on an order or refund: authorization, capture, sale, refund or void."""

    id: Id
    parent_id: str | None = None
    amount_cents: Cents
    status: str
    """E.g. PENDING, SUCCESS, FAILURE."""
    kind: str
    """E.g. AUTHORIZATION, CAPTURE, SALE, REFUND, VOID (merchant's point of view)."""
    gateway: str | None = None
    is_online: StrictBool | None = None
    is_test: StrictBool | None = None
    created_at: AwareDatetime | None = None
    updated_at: AwareDatetime | None = None
    payment_details: PaymentDetails | None = None


class Discount(CrossReferenced):
    id: Id
    code: str
    kind: str | None = None
    """E.g. Fixed_amount, Percentage, Shipping."""
    amount_cents: Cents
    is_shipping: StrictBool = False
    created_at: AwareDatetime | None = None
    updated_at: AwareDatetime | None = None


class RefundLine(DomainModel):
    id: Id
    order_line_id: Id
    qty: Quantity


class Refund(CrossReferenced):
    id: Id
    total_cents: Cents
    lines: tuple[RefundLine, ...] = ()
    note: str | None = None
    created_at: AwareDatetime
    rma_id: str | None = None
    tags: tuple[str, ...] = ()
    transactions: tuple[Payment, ...] = ()


class Order(CrossReferenced):
    id: Id
    """Public order identifier, the one the shopper sees."""
    secondary_id: str | None = None
    """Identifier in the back-end / fulfilment system, when it differs."""
    status: OrderStatus
    raw_status: str | None = None
    """The source platform's own status word, kept for display."""
    currency: Currency
    lines: tuple[OrderLine, ...]
    customer: Customer | None = None
    shipping_address: Address | None = None
    billing_address: Address | None = None
    shipping_cents: Cents = 0
    shipping_tax_cents: Cents = 0
    order_discount_cents: Cents = 0
    """Order-level discount not allocated to lines."""
    fees_cents: Cents = 0
    taxes_included: StrictBool = False
    """Prices already include tax (tax is then not added to the total)."""
    refunds: tuple[Refund, ...] = ()
    transactions: tuple[Payment, ...] = ()
    discounts: tuple[Discount, ...] = ()
    tags: tuple[str, ...] = ()
    note: str | None = None
    concept: str | None = None
    created_at: AwareDatetime
    updated_at: AwareDatetime

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        _require_unique("order line id", (line.id for line in self.lines))
        _require_unique("refund id", (refund.id for refund in self.refunds))
        if not self.refunds:
            return self
        qty_by_line = {line.id: line.qty for line in self.lines}
        refunded: Counter[str] = Counter()
        for refund in self.refunds:
            for refund_line in refund.lines:
                if refund_line.order_line_id not in qty_by_line:
                    raise ValueError(
                        f"refund {refund.id!r} refunds unknown order line"
                        f" {refund_line.order_line_id!r}"
                    )
                refunded[refund_line.order_line_id] += refund_line.qty
        for line_id, qty in refunded.items():
            if qty > qty_by_line[line_id]:
                raise ValueError(
                    f"order line {line_id!r}: refunds cover {qty} units, more than qty"
                    f" ({qty_by_line[line_id]})"
                )
        return self

    def line(self, line_id: str) -> OrderLine:
        for line in self.lines:
            if line.id == line_id:
                return line
        raise KeyError(line_id)

    def refunded_qty(self, line_id: str) -> int:
        """Units of ``line_id`` covered by this order's refunds."""
        return sum(rl.qty for r in self.refunds for rl in r.lines if rl.order_line_id == line_id)

    @property
    def product_cents(self) -> int:
        return sum(line.product_cents for line in self.lines)

    @property
    def tax_cents(self) -> int:
        """Tax of the lines (shipping tax is separate)."""
        return sum(line.tax_cents for line in self.lines)

    @property
    def discount_cents(self) -> int:
        return sum(line.discount_cents for line in self.lines) + self.order_discount_cents

    @property
    def total_cents(self) -> int:
        """Products - discounts + shipping + fees, + line and shipping tax unless included."""
        total = self.product_cents - self.discount_cents + self.shipping_cents + self.fees_cents
        if not self.taxes_included:
            total += self.tax_cents + self.shipping_tax_cents
        return total

    @property
    def refunded_cents(self) -> int:
        return sum(refund.total_cents for refund in self.refunds)


# --- returns ---------------------------------------------------------------------------------


class RmaUnit(CrossReferenced):
    """One returned unit, as Optoro sends them; or ``qty`` units of one line (ReturnLogic).

    Refund amounts are for the whole entry, i.e. for all ``qty`` units.
    """

    order_id: Id
    order_line_id: Id
    secondary_order_id: str | None = None
    exchange_order_id: str | None = None
    """The exchange order shipped for this unit, when it is exchanged."""
    original_order_id: str | None = None
    """When this unit came from an exchange order: the order that was exchanged."""
    qty: PositiveQuantity = 1
    accepted_qty: Quantity | None = None
    sku: str | None = None
    upc: str | None = None
    title: str | None = None
    reason: str | None = None
    reason_code: str | None = None
    is_exchange: StrictBool = False
    """The unit belongs to an exchange order."""
    refund_type: RefundType
    tracking_number: str | None = None
    package_status: PackageStatus | None = None
    receiving_status: ReceivingStatus | None = None
    condition: str | None = None
    """Condition or disposition code recorded at receipt."""
    estimated_refund_cents: SignedCents | None = None
    """Total refund value of the goods returned; None when the platform does not say."""
    provider_refund_cents: SignedCents | None = None
    """Part of the estimate that goes to the returns provider (e.g. funding an exchange)."""
    shopper_refund_cents: SignedCents | None = None
    """Part of the estimate the shopper gets back."""

    def progress(self) -> int:
        return package_status_rank(self.package_status) + receiving_status_rank(
            self.receiving_status
        )


class RmaLineAggregate(DomainModel):
    """The units of one RMA for one order line, added up (for platforms that want quantities)."""

    order_id: str
    order_line_id: str
    secondary_order_id: str | None
    original_order_id: str | None
    exchange_order_id: str | None
    sku: str | None
    upc: str | None
    title: str | None
    qty: int
    reasons: tuple[str, ...]
    refund_types: tuple[RefundType, ...]
    tracking_numbers: tuple[str, ...]
    estimated_refund_cents: int | None
    provider_refund_cents: int | None
    shopper_refund_cents: int | None
    units: tuple[RmaUnit, ...]


class Rma(CrossReferenced):
    id: Id
    status: RmaStatus
    raw_status: str | None = None
    return_method: ReturnMethod
    units: tuple[RmaUnit, ...]
    created_at: AwareDatetime
    updated_at: AwareDatetime
    gift_refund_only: StrictBool = False
    """Refund only as a gift card, never to the original payment."""
    giftee_email: str | None = None
    return_shipping_cost_cents: Cents = 0
    bonus_credit_cents: Cents = 0
    warehouse_id: str | None = None
    receiving_complete: StrictBool | None = None
    carrier: str | None = None
    customer_email: str | None = None
    customer_tags: tuple[str, ...] = ()
    from_address: Address | None = None
    """Where the shopper ships the return from."""
    expires_at: AwareDatetime | None = None
    vendor: str | None = None
    concept: str | None = None

    @property
    def order_ids(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(unit.order_id for unit in self.units))

    def progress(self) -> tuple[int, int]:
        """Lifecycle position, to order two versions with the same ``updated_at``.

        Status rank first, then the units' package and receiving progress added up.
        """
        return rma_status_rank(self.status), sum(unit.progress() for unit in self.units)

    def line_aggregates(self) -> tuple[RmaLineAggregate, ...]:
        """Units grouped per (order_id, order_line_id), in first-seen order."""
        groups: dict[tuple[str, str], list[RmaUnit]] = {}
        for unit in self.units:
            groups.setdefault((unit.order_id, unit.order_line_id), []).append(unit)
        return tuple(_aggregate(units) for units in groups.values())


def _aggregate(units: list[RmaUnit]) -> RmaLineAggregate:
    first = units[0]
    return RmaLineAggregate(
        order_id=first.order_id,
        order_line_id=first.order_line_id,
        secondary_order_id=_first(u.secondary_order_id for u in units),
        original_order_id=_first(u.original_order_id for u in units),
        exchange_order_id=_first(u.exchange_order_id for u in units),
        sku=_first(u.sku for u in units),
        upc=_first(u.upc for u in units),
        title=_first(u.title for u in units),
        qty=sum(u.qty for u in units),
        reasons=_distinct(u.reason for u in units),
        refund_types=tuple(dict.fromkeys(u.refund_type for u in units)),
        tracking_numbers=_distinct(u.tracking_number for u in units),
        estimated_refund_cents=_sum_known(u.estimated_refund_cents for u in units),
        provider_refund_cents=_sum_known(u.provider_refund_cents for u in units),
        shopper_refund_cents=_sum_known(u.shopper_refund_cents for u in units),
        units=tuple(units),
    )


# --- exchanges -------------------------------------------------------------------------------


class ExchangeReturnItem(DomainModel):
    """An original-order item given back in exchange for a gift card."""

    original_sku: Id
    original_line_id: Id
    qty: PositiveQuantity
    title: str | None = None
    concept: str | None = None


class ExchangeOrderItem(DomainModel):
    kind: ExchangeKind
    sku: Id
    """For a gift card: the SKU agreed with the returns provider."""
    qty: PositiveQuantity
    title: str | None = None
    unit_price_cents: Cents = 0
    discount_cents: Cents = 0
    tax_cents: Cents = 0
    bonus_credit_cents: Cents = 0
    """Gift card bonus on top of the price."""
    product_id: str | None = None
    variant_id: str | None = None
    original_sku: str | None = None
    original_line_id: str | None = None
    concept: str | None = None
    return_items: tuple[ExchangeReturnItem, ...] = ()

    @model_validator(mode="after")
    def _gift_card_fields_only_on_gift_cards(self) -> Self:
        if self.kind is ExchangeKind.EVEN and (self.return_items or self.bonus_credit_cents):
            raise ValueError(
                f"exchange item {self.sku!r}: return_items and bonus_credit_cents belong to"
                " gift card items only"
            )
        return self

    @property
    def product_cents(self) -> int:
        return self.unit_price_cents * self.qty


class ExchangeOrder(CrossReferenced):
    """An order the returns provider asks us to place; one per original order, ever."""

    original_order_id: Id
    original_secondary_order_id: str | None = None
    rma_id: str | None = None
    currency: Currency
    is_gift: StrictBool = False
    """Gift order: hide prices, no refund to the original payment."""
    items: tuple[ExchangeOrderItem, ...] = Field(min_length=1)
    customer: Customer
    shipping_address: Address
    billing_address: Address | None = None
    payment_transaction_id: str | None = None
    note: str | None = None

    @property
    def kinds(self) -> frozenset[ExchangeKind]:
        return frozenset(item.kind for item in self.items)

    @property
    def product_cents(self) -> int:
        return sum(item.product_cents for item in self.items)

    @property
    def discount_cents(self) -> int:
        return sum(item.discount_cents for item in self.items)

    @property
    def tax_cents(self) -> int:
        return sum(item.tax_cents for item in self.items)

    @property
    def bonus_credit_cents(self) -> int:
        return sum(item.bonus_credit_cents for item in self.items)

    @property
    def total_cents(self) -> int:
        """Products - discounts + tax + gift card bonus."""
        return self.product_cents - self.discount_cents + self.tax_cents + self.bonus_credit_cents


class ExchangeOrderResult(DomainModel):
    """The order placed for an :class:`ExchangeOrder`."""

    order_id: Id
    total_cents: Cents
    product_cents: Cents
    tax_cents: Cents


# --- helpers ---------------------------------------------------------------------------------


def _require_unique(what: str, values: Iterable[str]) -> None:
    seen = list(values)
    if len(set(seen)) == len(seen):
        return
    duplicates = sorted(value for value, n in Counter(seen).items() if n > 1)
    raise ValueError(f"duplicate {what}: {', '.join(map(repr, duplicates))}")


def _first(values: Iterable[str | None]) -> str | None:
    return next((value for value in values if value is not None), None)


def _distinct(values: Iterable[str | None]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(value for value in values if value is not None))


def _sum_known(values: Iterable[int | None]) -> int | None:
    total = 0
    for value in values:
        if value is None:
            return None
        total += value
    return total
