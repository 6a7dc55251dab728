"""ReturnLogic orders (``GET /v1/orders``) -> canonical :class:`~bridge.domain.Order`.

One pass: :func:`order_to_canonical` reads the raw record field by field with the same field
converters as :class:`~mappings.returnlogic.wire.RlOrder` (which documents the shape; a field
both read is read alike) and builds the canonical models, whose validation is the only model
validation on the way. Validating ``RlOrder`` first and then the canonical models would double
the cost, and order sync must map 20,000 orders a second on one core.

Ids
  ``Order.id`` = ``orderNumber`` (what the shopper quotes; RMAs carry it as
  ``externalOrderNumber``), ``secondary_id`` = ``externalOrderId`` (the shop's id; RMA items carry
  it as ``orderId``), ``refs["returnlogic"]`` = ``rlOrderId``. ``OrderLine.id`` =
  ``externalOrderItemId`` (RMA items carry it as ``externalOrderLineId``), else ``rlOrderItemId``;
  ``refs["returnlogic"]`` = ``rlOrderItemId``. ``product_id`` = ``externalProductId``;
  ``variant_id`` = ``rlProductVariantId`` when the item carries one (not in the spec), else None
  (the Optoro side then sends the SKU, as its guide asks).

Quantities (per line; ``w`` = the line's ``fulfillmentStatus``, else the order's; ``q`` =
``quantity``, ``f`` = ``fulfillableQuantity`` (units still to ship), ``r`` = ``refundQuantity``)

  Commerce platforms behind ReturnLogic (Shopify and alike) record units canceled before they
  shipped as *refunded* line quantities with nothing shipped; a cancellation is
  ``qty_canceled``, never an Optoro refund (those are for returned units). Rule per field:

  ================================ ============= ========================= ===============
  ``w``                            qty_shipped   qty_canceled              qty_refunded
  ================================ ============= ========================= ===============
  ``fulfilled``                    ``q - f``     0                         ``r`` (returns)
  ``restocked``, ``shippedAt`` set ``q - f``     0                         ``r`` (returns)
  ``partial``                      ``q - f - c`` ``c = min(r, q - f - 1)`` ``r - c``
  ``restocked``, no ``shippedAt``  0             ``q``                     0
  none / anything else             0             ``r``                     0
  ================================ ============= ========================= ===============

  * ``f`` missing counts as 0, except on a ``partial`` line, where the split is unknown: nothing
    shipped (doubt).
  * ``partial``: at least one unit shipped; refunded units are the unshipped ones first (a unit
    that never shipped cannot be returned), any refund beyond those is of returned units.
  * An order canceled as a whole -- ``canceledAt``/``cancelledAt`` set (not in the spec),
    ``financialStatus`` ``voided``, or ``refunded`` with no unit shipped -- cancels every unit
    not shipped: ``qty_canceled = q - qty_shipped`` (a shipped unit on it is a doubt).
  * ``qty_refunded`` never exceeds ``qty_shipped`` (Optoro's rule); the excess is a doubt.
  * An unshipped line's open units are ``q - r``; an ``f`` that disagrees is a doubt (a source
    may send 0 for "unknown").

Status (from the line quantities, as the guide sends it; ``raw_status`` keeps ReturnLogic's
words, e.g. ``partial/paid``)

  ================================================================== ============
  Lines                                                              OrderStatus
  ================================================================== ============
  every unit canceled (or no line, and the order canceled)           CANCELED
  every unit not canceled has shipped (at least one shipped)         SHIPPED
  anything else: units still to ship (guide scenario 02, step 1)     CREATED
  ================================================================== ============

  So one line shipped and one still open is CREATED; 1 shipped and 3 canceled is SHIPPED;
  ``fulfillmentStatus`` ``partial`` never makes an order SHIPPED by itself.

Doubts
  Data that does not fit these rules never holds an order back: it is mapped with what is
  certain and each doubt is reported (:func:`map_order`) for the caller to flag for an
  operator: a ``fulfilled`` line with ``f > 0``, a ``partial`` one without ``f``, refunds
  beyond the shipped units, ``f`` and ``r`` disagreeing on an unshipped line, shipped units on
  a canceled order, ``shippedAt`` without a fulfilled line, an address missing what its
  country's addressing needs (:mod:`mappings._countries`).

Money (decimal major units -> integer minor units of ``shopCurrencyCode``, ISO 4217: JPY 0
decimals, USD 2, KWD 3; rounded once, half up)
  ``unit_price`` = ``pricePerItem``; line ``discount`` = ``totalDiscount``, else
  ``discountPerItem * quantity``; line ``tax`` = ``totalTax``, else ``taxPerItem * quantity``
  (the product is exact, then rounded once). ``shipping`` = ``shippingPrice``, ``fees`` = ``fees``,
  ``order_discount`` = ``orderLevelDiscount``, ``shipping_tax`` = ``taxPrice`` minus the lines'
  tax (the header tax no line carries; 0 when the lines carry more). ``discounts`` lists
  ``discounts[]`` for information (they are already in the line amounts).

Line amounts
  A line's tax and discount are those of its *shipped* units, as Optoro's Returns Portal
  Orders count them (the guide's partly shipped and canceled lines carry the shipped units'
  tax only): ReturnLogic's line totals are scaled by shipped / quantity, rounded half up
  once. Nothing shipped: 0. The shipping tax is still the header tax minus the lines' whole
  tax.

Refunds
  ReturnLogic reports only running totals (``refundAmount``, ``refundQuantity``), no refund
  records. Refunded units that are cancellations (above) are not refunds for Optoro. When
  returned units were refunded, or money beyond the canceled units' value, the order gets one
  cumulative :class:`~bridge.domain.Refund` with the stable id
  ``returnlogic-order-<rlOrderId>-refunds``, total ``refundAmount`` minus the canceled units'
  value (their price, less their discount share, plus their tax share), one line per line with
  returned units, ``created_at`` = the order's ``updated_at`` (the latest time the refund is
  known to exist; ReturnLogic gives no refund date). A later, larger refund changes that entry;
  the order flow's refund ledger (:mod:`bridge.flows.refunds`) sends only what it adds, as a
  new refund object, never the changed entry.

Fallbacks (never invented values; what is unknown stays None)
  * address name: the address's ``name``, else its ``firstName lastName`` (neither in the spec),
    else the customer's first/last name (only when the order carries a ``customer`` object), else
    None. ReturnLogic's documented address has no name, so in practice it is None.
  * address phone: the address's ``phone``, else ``customerPhone``.
  * address state: ``regionCode``, else ``region`` (the name: an Irish county has no code).
  * an address without ``address1``, ``city`` and ``countryCode`` all blank is absent (None); one
    with only some of them is a ``MappingError`` naming the missing field.
  * customer id: ``rlCustomerId`` (order or nested ``customer``), else ``externalCustomerId``,
    else ``customerEmail``, else None; ``Customer.refs["returnlogic"]`` only from
    ``rlCustomerId``. No customer at all when no id, email, phone or name is known.
  * ``created_at``: ``externalCreateDate`` (placed on the shop), else ``createDate``;
    ``updated_at``: ``updateDate``, else ``externalUpdateDate``, else ``created_at``. No date at
    all is a ``MappingError``.
  * line title: ``displayName``; weight: ``grams`` in G; ``shipped_at``: the order's
    ``shippedAt`` on lines with shipped units (ReturnLogic has no per-line date).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, NamedTuple, TypeVar

from pydantic import ValidationError

from bridge.domain import (
    Address,
    Customer,
    Discount,
    Order,
    OrderLine,
    OrderStatus,
    Refund,
    RefundLine,
    WeightUnit,
    major_to_minor,
    minor_unit_exponent,
)
from bridge.errors import MappingError
from mappings._countries import address_gaps
from mappings.returnlogic._address import full_name, make_address
from mappings.returnlogic._fields import (
    field_path,
    mapping_error,
    page_records,
    to_cents,
    to_count,
    to_datetime,
    to_dollars,
    to_flag,
    to_id,
    to_opt_id,
    to_required_text,
    to_strings,
    to_text,
)
from mappings.returnlogic.rules import GIFT_CARD, LineEvidence, TagRule, TagRules

__all__ = [
    "LineQuantities",
    "MappedOrder",
    "line_quantities",
    "map_order",
    "order_snapshot_hash",
    "order_to_canonical",
    "orders_page",
    "raw_status",
    "status_of",
]

T = TypeVar("T")


def orders_page(body: bytes | str) -> list[dict[str, Any]]:
    """The orders of one ``GET /v1/orders`` page, as raw dicts for :func:`order_to_canonical`."""
    return page_records(body, "GET /v1/orders")


class LineQuantities(NamedTuple):
    """What one ReturnLogic line means for Optoro (the quantities table of the module)."""

    shipped: int
    canceled: int
    refunded: int
    """Returned units refunded (an Optoro refund); canceled units are never in it."""
    canceled_refunded: int
    """Refunded units that are cancellations (their money is not an Optoro refund)."""
    doubts: tuple[str, ...] = ()


def line_quantities(
    word: str | None,
    qty: int,
    fulfillable: int | None,
    refunded: int,
    *,
    order_canceled: bool = False,
    order_shipped: bool = False,
) -> LineQuantities:
    """The quantities table of the module docstring, for one line.

    ``word`` is the line's ``fulfillmentStatus`` (else the order's), case-folded;
    ``order_shipped``: the order has a ``shippedAt``; ``order_canceled``: canceled as a whole.
    """
    doubts: list[str] = []
    open_units = fulfillable or 0
    canceled_refunded = 0
    if word == "fulfilled" or (word == "restocked" and order_shipped):
        if open_units:
            doubts.append(f"fulfillableQuantity {open_units} on a {word} line: sent as not shipped")
        shipped, canceled = qty - open_units, 0
    elif word == "partial":
        if fulfillable is None:
            doubts.append("partial line without fulfillableQuantity: sent as nothing shipped")
            shipped = canceled = 0
        else:
            closed = qty - fulfillable
            canceled_refunded = min(refunded, max(closed - 1, 0))
            shipped, canceled = closed - canceled_refunded, canceled_refunded
    elif word == "restocked":
        shipped, canceled = 0, qty
        canceled_refunded = refunded
    else:
        shipped, canceled, canceled_refunded = 0, refunded, refunded
        if fulfillable is not None and fulfillable + refunded != qty:
            doubts.append(
                f"unshipped line: fulfillableQuantity {fulfillable} and refundQuantity"
                f" {refunded} do not add up to quantity {qty}: {refunded} sent as canceled,"
                f" {qty - refunded} as still to ship"
            )
    if order_canceled:
        if shipped:
            doubts.append(f"{shipped} unit(s) shipped on a canceled order: sent as shipped")
        canceled = qty - shipped
    returned = refunded - canceled_refunded
    if returned > shipped:
        doubts.append(
            f"refundQuantity {refunded} exceeds the {shipped} unit(s) shipped: the excess is not"
            " sent as refunded"
        )
        returned = shipped
    return LineQuantities(
        shipped, canceled, returned, canceled_refunded, tuple(doubts) if doubts else ()
    )


def status_of(lines: Sequence[OrderLine], order_canceled: bool) -> OrderStatus:
    """The status table of the module docstring: from the lines' quantities."""
    if not lines:
        return OrderStatus.CANCELED if order_canceled else OrderStatus.CREATED
    if all(line.qty_canceled == line.qty for line in lines):
        return OrderStatus.CANCELED
    if all(line.qty_shipped + line.qty_canceled == line.qty for line in lines):
        return OrderStatus.SHIPPED
    return OrderStatus.CREATED


def raw_status(
    fulfillment_status: str | None, financial_status: str | None, canceled: bool
) -> str | None:
    """ReturnLogic's own words, ``fulfilled/paid`` (``/canceled`` when a cancel date is set)."""
    parts = [word for word in (fulfillment_status, financial_status) if word]
    if canceled:
        parts.append("canceled")
    return "/".join(parts) or None


@dataclass(frozen=True, slots=True)
class MappedOrder:
    """An order and what in its data did not fit (for an operator; it is still sent)."""

    order: Order
    doubts: tuple[str, ...]


def order_to_canonical(wire: Mapping[str, Any], rules: TagRules) -> Order:
    """Map one ``GET /v1/orders`` record (parsed with ``parse_float=Decimal``) to an Order.

    Any problem is a ``MappingError`` whose ``field`` names the wire field
    (``orderItems[0].pricePerItem``).
    """
    return map_order(wire, rules).order


def map_order(wire: Mapping[str, Any], rules: TagRules) -> MappedOrder:
    """:func:`order_to_canonical`, with the doubts (``"orderItems[0]: ..."``) of the data."""
    if wire.__class__ is not dict and not isinstance(wire, Mapping):
        raise MappingError(f"an order must be a JSON object, got {type(wire).__name__}")
    doubts: list[str] = []
    try:
        order = _order(wire, rules, doubts)
    except ValidationError as exc:  # a canonical invariant the field checks did not catch
        raise mapping_error(exc, "order") from exc
    return MappedOrder(order, tuple(doubts))


def order_snapshot_hash(order: Order) -> str:
    """sha256 (hex) of the order's canonical JSON: sorted keys, no blanks, UTF-8.

    Equal orders give equal hashes whatever the key order of the payload they came from; any
    change of a mapped value (a price, a quantity, a tag, ``updated_at``) changes the hash.
    """
    text = json.dumps(
        order.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(text.encode()).hexdigest()


# --- the single-pass reader ------------------------------------------------------------------


def _path(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _get(record: Mapping[str, Any], key: str, convert: Callable[[Any], T], where: str) -> T | None:
    value = record.get(key)
    if value is None:
        return None
    try:
        return convert(value)
    except ValueError as exc:
        path = _path(where, key)
        raise MappingError(f"invalid ReturnLogic order: {path}: {exc}", field=path) from None


def _text(record: Mapping[str, Any], key: str, where: str) -> str | None:
    """``_get(record, key, to_text, where)``, with the common cases inlined (hot path)."""
    value = record.get(key)
    if value is None:
        return None
    if value.__class__ is str:
        return value.strip() or None
    return _get(record, key, to_text, where)


def _opt_id(record: Mapping[str, Any], key: str, where: str) -> str | None:
    """``_get(record, key, to_opt_id, where)``, with the common cases inlined (hot path)."""
    value = record.get(key)
    if value is None:
        return None
    if value.__class__ is int:
        return str(value)
    if value.__class__ is str:
        return value if value.strip() else None
    return _get(record, key, to_opt_id, where)


def _when(record: Mapping[str, Any], key: str, where: str) -> datetime | None:
    """``_get(record, key, to_datetime, where)``, with ISO text carrying an offset inlined."""
    value = record.get(key)
    if value is None:
        return None
    if value.__class__ is str:
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            pass  # the generic path below names the field
        else:
            if when.tzinfo is not None and when.utcoffset() is not None:
                return when
    return _get(record, key, to_datetime, where)


def _count(record: Mapping[str, Any], key: str, where: str) -> int | None:
    """``_get(record, key, to_count, where)``, with a non-negative ``int`` inlined (hot path)."""
    value = record.get(key)
    if value is None:
        return None
    if value.__class__ is int and value >= 0:
        return value
    return _get(record, key, to_count, where)


def _flag(record: Mapping[str, Any], key: str, where: str) -> bool | None:
    """``_get(record, key, to_flag, where)``, with a JSON boolean inlined (hot path)."""
    value = record.get(key)
    if value is None or value is True or value is False:
        return value
    return _get(record, key, to_flag, where)


def _strings(record: Mapping[str, Any], key: str, where: str) -> list[str] | None:
    """``_get(record, key, to_strings, where)``, with an empty array inlined (hot path)."""
    value = record.get(key)
    if value is None or (value.__class__ is list and not value):
        return value
    return _get(record, key, to_strings, where)


def _need(record: Mapping[str, Any], key: str, convert: Callable[[Any], T], where: str) -> T:
    value = record.get(key)
    if value is not None:
        try:
            return convert(value)
        except ValueError as exc:
            path = _path(where, key)
            raise MappingError(f"invalid ReturnLogic order: {path}: {exc}", field=path) from None
    path = _path(where, key)
    raise MappingError(f"invalid ReturnLogic order: {path} is required", field=path)


def _object(record: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any] | None:
    value = record.get(key)
    if value is None or value.__class__ is dict or isinstance(value, Mapping):
        return value
    path = _path(where, key)
    raise MappingError(f"invalid ReturnLogic order: {path} must be an object", field=path)


def _objects(record: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    value = record.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise MappingError(f"invalid ReturnLogic order: {key} must be an array", field=key)
    for index, item in enumerate(value):
        if item.__class__ is not dict and not isinstance(item, Mapping):
            path = field_path((key, index))
            raise MappingError(f"invalid ReturnLogic order: {path} must be an object", field=path)
    return value


def _casefold(text: str | None) -> str | None:
    return text.casefold() if text else None


# --- implementation --------------------------------------------------------------------------


def _order(w: Mapping[str, Any], rules: TagRules, doubts: list[str]) -> Order:
    rl_order_id = _need(w, "rlOrderId", to_id, "")
    order_number = _need(w, "orderNumber", to_id, "")
    fulfillment_status = _text(w, "fulfillmentStatus", "")
    financial_status = _text(w, "financialStatus", "")
    shipped_at = _when(w, "shippedAt", "")
    canceled_at = _when(w, "canceledAt", "")
    cancelled_at = _when(w, "cancelledAt", "")
    cancel_dated = canceled_at is not None or cancelled_at is not None
    currency = _need(w, "shopCurrencyCode", to_required_text, "").upper()
    money = _money(currency)
    # every date is read (and checked), even those a fallback makes unnecessary
    external_created = _when(w, "externalCreateDate", "")
    created = _when(w, "createDate", "")
    updated = _when(w, "updateDate", "")
    external_updated = _when(w, "externalUpdateDate", "")
    created_at = external_created or created
    if created_at is None:
        raise MappingError(
            "invalid ReturnLogic order: neither externalCreateDate nor createDate",
            field="externalCreateDate",
        )
    updated_at = updated or external_updated or created_at

    customer_phone = _text(w, "customerPhone", "")
    nested = _object(w, "customer", "")
    customer = _customer(w, nested, customer_phone)
    fallback_name = (
        full_name(
            _text(nested, "firstName", "customer"),
            _text(nested, "lastName", "customer"),
        )
        if nested
        else None
    )
    shipping_address = _address(w, "shippingAddress", fallback_name, customer_phone)
    if w.get("billingAddress") == w.get("shippingAddress"):  # the usual case: map it once
        billing_address = shipping_address
    else:
        billing_address = _address(w, "billingAddress", fallback_name, customer_phone)
        if gaps := address_gaps(billing_address):
            doubts.extend(f"billingAddress: {gap}" for gap in gaps)
    if gaps := address_gaps(shipping_address):
        doubts.extend(f"shippingAddress: {gap}" for gap in gaps)

    # order-level tag evidence
    tags = _strings(w, "tags", "") or []
    order_tags_norm = frozenset(tag.strip().casefold() for tag in tags)
    source_type = _casefold(_text(w, "sourceType", ""))
    external_source = _casefold(_text(w, "externalSource", ""))
    financial = _casefold(financial_status)
    rule_pairs = rules.pairs()
    order_tags = tuple(
        tag
        for tag, rule in rule_pairs
        if rule.matches_order(order_tags_norm, source_type, external_source, financial)
    )

    order_fulfillment = _casefold(fulfillment_status)
    items = _objects(w, "orderItems")
    wheres = [f"orderItems[{i}]" for i in range(len(items))]
    facts = [
        _line_facts(item, where, order_fulfillment)
        for item, where in zip(items, wheres, strict=True)
    ]
    order_shipped = shipped_at is not None
    canceled = cancel_dated or financial == "voided"
    if not canceled and financial == "refunded":  # refunded in full, nothing shipped: canceled
        canceled = not any(
            line_quantities(word, qty, fulfillable, refunded, order_shipped=order_shipped).shipped
            for word, qty, fulfillable, refunded in facts
        )
    lines: list[OrderLine] = []
    refund_lines: list[RefundLine] = []
    line_tax_total = 0
    canceled_value = 0
    for item, fact, where in zip(items, facts, wheres, strict=True):
        quantities = line_quantities(*fact, order_canceled=canceled, order_shipped=order_shipped)
        if quantities.doubts:
            doubts.extend(f"{where}: {doubt}" for doubt in quantities.doubts)
        try:
            line, whole_tax, whole_discount = _line(
                item, where, rule_pairs, order_tags, fact[1], quantities, shipped_at, money
            )
        except ValidationError as exc:
            raise mapping_error(exc, where) from exc
        lines.append(line)
        line_tax_total += whole_tax
        if quantities.canceled_refunded:
            canceled_value += _share(
                line.unit_price_cents * line.qty - whole_discount + whole_tax,
                quantities.canceled_refunded,
                line.qty,
            )
        if line.qty_refunded:
            refund_lines.append(
                RefundLine(id=line.id, order_line_id=line.id, qty=line.qty_refunded)
            )
    if shipped_at is not None and not any(line.qty_shipped for line in lines):
        doubts.append("shippedAt is set but no line says what shipped: sent as nothing shipped")

    header_tax = _need(w, "taxPrice", money, "")
    refund_cents = max(_need(w, "refundAmount", money, "") - canceled_value, 0)
    refunds: tuple[Refund, ...] = ()
    if refund_cents or refund_lines:
        refunds = (
            Refund(
                id=f"returnlogic-order-{rl_order_id}-refunds",
                total_cents=refund_cents,
                lines=tuple(refund_lines),
                note="cumulative refunds reported by ReturnLogic",
                created_at=updated_at,
            ),
        )

    discounts = tuple(
        _discount(d, f"discounts[{i}]", money) for i, d in enumerate(_objects(w, "discounts"))
    )
    return Order(
        id=order_number,
        secondary_id=_opt_id(w, "externalOrderId", ""),
        status=status_of(lines, canceled),
        raw_status=raw_status(fulfillment_status, financial_status, cancel_dated),
        currency=currency,
        lines=tuple(lines),
        customer=customer,
        shipping_address=shipping_address,
        billing_address=billing_address,
        shipping_cents=_need(w, "shippingPrice", money, ""),
        shipping_tax_cents=max(header_tax - line_tax_total, 0),
        order_discount_cents=_get(w, "orderLevelDiscount", money, "") or 0,
        fees_cents=_need(w, "fees", money, ""),
        taxes_included=_need(w, "taxesIncluded", to_flag, ""),
        refunds=refunds,
        discounts=discounts,
        tags=order_tags,
        created_at=created_at,
        updated_at=updated_at,
        refs={"returnlogic": rl_order_id},
    )


def _line_facts(
    item: Mapping[str, Any], where: str, order_fulfillment: str | None
) -> tuple[str | None, int, int | None, int]:
    """``(word, quantity, fulfillableQuantity, refundQuantity)`` of a line, checked."""
    qty = _need(item, "quantity", to_count, where)
    fulfillable = _count(item, "fulfillableQuantity", where)
    if fulfillable is not None and fulfillable > qty:
        raise MappingError(
            f"invalid ReturnLogic order: {where}.fulfillableQuantity ({fulfillable}) exceeds"
            f" quantity ({qty})",
            field=f"{where}.fulfillableQuantity",
        )
    refunded = _count(item, "refundQuantity", where) or 0
    if refunded > qty:
        raise MappingError(
            f"invalid ReturnLogic order: {where}.refundQuantity ({refunded}) exceeds quantity"
            f" ({qty})",
            field=f"{where}.refundQuantity",
        )
    word = _casefold(_text(item, "fulfillmentStatus", where)) or order_fulfillment
    return word, qty, fulfillable, refunded


def _line(
    item: Mapping[str, Any],
    where: str,
    rule_pairs: Sequence[tuple[str, TagRule]],
    order_tags: tuple[str, ...],
    qty: int,
    quantities: LineQuantities,
    shipped_at: datetime | None,
    money: Callable[[Any], int],
) -> tuple[OrderLine, int, int]:
    """The line, its whole tax and its whole discount (the line keeps the shipped units'
    share only)."""
    rl_item_id = _opt_id(item, "rlOrderItemId", where)
    line_id = _opt_id(item, "externalOrderItemId", where) or rl_item_id
    if line_id is None:
        raise MappingError(
            f"invalid ReturnLogic order: {where} has neither externalOrderItemId nor rlOrderItemId",
            field=f"{where}.externalOrderItemId",
        )
    shipped = quantities.shipped

    discount = _get(item, "totalDiscount", money, where)
    if discount is None:
        per_item = _get(item, "discountPerItem", to_dollars, where)
        discount = _minor_of(per_item * qty, money, where, "discountPerItem") if per_item else 0
    tax = _get(item, "totalTax", money, where)
    if tax is None:
        per_item = _get(item, "taxPerItem", to_dollars, where)
        tax = _minor_of(per_item * qty, money, where, "taxPerItem") if per_item else 0

    # tags: order-level ones apply to every line
    is_gift_card = _flag(item, "isGiftCard", where) or False
    line_tags = _strings(item, "tags", where) or ()
    properties = item.get("properties") or ()
    if not isinstance(properties, list | tuple):
        raise MappingError(
            f"invalid ReturnLogic order: {where}.properties must be an array",
            field=f"{where}.properties",
        )
    if not line_tags and not properties and not is_gift_card:
        tags = order_tags
    else:
        evidence = LineEvidence(line_tags, properties)
        tags = tuple(
            tag
            for tag, rule in rule_pairs
            if tag in order_tags
            or (tag == GIFT_CARD and is_gift_card)
            or (not evidence.empty and rule.matches_line(evidence))
        )

    grams = _count(item, "grams", where)
    whole_tax, whole_discount = tax, discount
    if shipped < qty:
        tax, discount = _share(tax, shipped, qty), _share(discount, shipped, qty)
    line = OrderLine(
        id=line_id,
        sku=_text(item, "sku", where),
        title=_text(item, "displayName", where),
        qty=qty,
        qty_shipped=shipped,
        qty_canceled=quantities.canceled,
        qty_refunded=quantities.refunded,
        unit_price_cents=_need(item, "pricePerItem", money, where),
        tax_cents=tax,
        discount_cents=discount,
        product_id=_opt_id(item, "externalProductId", where),
        variant_id=_opt_id(item, "rlProductVariantId", where),
        is_gift_card=GIFT_CARD in tags,
        shipped_at=shipped_at if shipped else None,
        weight=Decimal(grams) if grams is not None else None,
        weight_unit=WeightUnit.G if grams is not None else None,
        tags=tags,
        refs={"returnlogic": rl_item_id} if rl_item_id else {},
    )
    return line, whole_tax, whole_discount


def _share(cents: int, units: int, qty: int) -> int:
    """``cents`` of ``qty`` units, for ``units`` of them (ROUND_HALF_UP, once)."""
    if not qty or not cents:
        return 0
    share = Decimal(cents) * units / qty
    return int(share.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _money(currency: str) -> Callable[[Any], int]:
    """The converter of amounts in ``currency`` (major units) to its minor units (ISO 4217)."""
    exponent = minor_unit_exponent(currency)
    if exponent == 2:
        return to_cents

    def to_minor(value: Any) -> int:
        try:
            minor = major_to_minor(to_dollars(value), currency)
        except MappingError:  # beyond 64 bits of minor units: the caller names the field
            raise ValueError("out of range") from None
        if minor >= _MAX_MINOR:
            raise ValueError("out of range")
        return minor

    return to_minor


_MAX_MINOR = 10**18


def _minor_of(amount: Decimal, money: Callable[[Any], int], where: str, key: str) -> int:
    try:
        return money(amount)
    except ValueError as exc:
        path = _path(where, key)
        raise MappingError(f"invalid ReturnLogic order: {path}: {exc}", field=path) from None


def _discount(d: Mapping[str, Any], where: str, money: Callable[[Any], int]) -> Discount:
    rl_id = _opt_id(d, "rlOrderDiscountId", where)
    code = _text(d, "code", where)
    if code is None:
        raise MappingError(
            f"invalid ReturnLogic order: {where}.code is required", field=f"{where}.code"
        )
    return Discount(
        id=rl_id or code,
        code=code,
        amount_cents=_need(d, "amount", money, where),
        is_shipping=_flag(d, "isShippingDiscount", where) or False,
        refs={"returnlogic": rl_id} if rl_id else {},
    )


def _customer(
    w: Mapping[str, Any], nested: Mapping[str, Any] | None, phone: str | None
) -> Customer | None:
    rl_customer_id = _opt_id(w, "rlCustomerId", "")
    external_id = _opt_id(w, "externalCustomerId", "")
    email = _text(w, "customerEmail", "")
    first = last = None
    customer_tags: list[str] = []
    if nested is not None:
        rl_customer_id = rl_customer_id or _opt_id(nested, "rlCustomerId", "customer")
        external_id = external_id or _opt_id(nested, "externalCustomerId", "customer")
        email = email or _text(nested, "email", "customer")
        phone = phone or _text(nested, "phone", "customer")
        first = _text(nested, "firstName", "customer")
        last = _text(nested, "lastName", "customer")
        customer_tags = _strings(nested, "tags", "customer") or []
    customer_id = rl_customer_id or external_id or email
    if not (customer_id or phone or first or last):
        return None
    return Customer(
        id=customer_id,
        email=email,
        first_name=first,
        last_name=last,
        phone=phone,
        tags=tuple(customer_tags),
        refs={"returnlogic": rl_customer_id} if rl_customer_id else {},
    )


def _address(
    w: Mapping[str, Any], key: str, fallback_name: str | None, fallback_phone: str | None
) -> Address | None:
    a = _object(w, key, "")
    if a is None:
        return None
    return make_address(
        key,
        address1=_text(a, "address1", key),
        address2=_text(a, "address2", key),
        city=_text(a, "city", key),
        region_code=_text(a, "regionCode", key) or _text(a, "region", key),
        postcode=_text(a, "postcode", key),
        country_code=_text(a, "countryCode", key),
        name=_text(a, "name", key)
        or full_name(_text(a, "firstName", key), _text(a, "lastName", key))
        or fallback_name,
        phone=_text(a, "phone", key) or fallback_phone,
    )
