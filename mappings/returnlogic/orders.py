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

Money (decimal dollars -> cents, rounded once, half up)
  ``unit_price`` = ``pricePerItem``; line ``discount`` = ``totalDiscount``, else
  ``discountPerItem * quantity``; line ``tax`` = ``totalTax``, else ``taxPerItem * quantity``
  (the product is exact, then rounded once). ``shipping`` = ``shippingPrice``, ``fees`` = ``fees``,
  ``order_discount`` = ``orderLevelDiscount``, ``shipping_tax`` = ``taxPrice`` minus the lines'
  tax (the header tax no line carries; 0 when the lines carry more). ``discounts`` lists
  ``discounts[]`` for information (they are already in the line amounts).

Status (first row that applies; ``raw_status`` keeps the words, e.g. ``fulfilled/paid``)

  ==================================================================== ============
  ReturnLogic                                                          OrderStatus
  ==================================================================== ============
  ``canceledAt``/``cancelledAt`` set (not in the spec), or
  ``financialStatus`` ``voided``                                       CANCELED
  ``fulfillmentStatus`` ``restocked`` and no ``shippedAt``             CANCELED
  ``fulfillmentStatus`` ``fulfilled``/``partial``/``restocked``, or
  ``shippedAt`` set                                                    SHIPPED
  anything else (unfulfilled, pending...)                              CREATED
  ==================================================================== ============

Quantities (per line; a line without ``fulfillmentStatus`` uses the order's)
  ``qty`` = ``quantity``. ``qty_shipped`` = ``quantity - fulfillableQuantity`` when the line is
  ``fulfilled`` or ``partial`` (a missing ``fulfillableQuantity`` counts as 0 for ``fulfilled``
  and as nothing shipped for ``partial``), 0 otherwise. ``qty_canceled`` = the units not shipped
  when the order is CANCELED or the line ``restocked``, else 0. ``qty_refunded`` =
  ``refundQuantity``.

Line amounts
  A line's tax and discount are those of its *shipped* units, as Optoro's Returns Portal
  Orders count them (the guide's partly shipped and canceled lines carry the shipped units'
  tax only): ReturnLogic's line totals are scaled by shipped / quantity, rounded half up
  once. Nothing shipped: 0. The shipping tax is still the header tax minus the lines' whole
  tax.

Refunds
  ReturnLogic reports only running totals (``refundAmount``, ``refundQuantity``), no refund
  records. When either is non-zero the order gets one cumulative :class:`~bridge.domain.Refund`
  with the stable id ``returnlogic-order-<rlOrderId>-refunds``, total ``refundAmount``, one line
  per refunded line, ``created_at`` = the order's ``updated_at`` (the latest time the refund is
  known to exist; ReturnLogic gives no refund date). A later, larger refund changes that entry;
  the order flow's refund ledger (:mod:`bridge.flows.refunds`) sends only what it adds, as a
  new refund object, never the changed entry.

Fallbacks (never invented values; what is unknown stays None)
  * address name: the address's ``name``, else its ``firstName lastName`` (neither in the spec),
    else the customer's first/last name (only when the order carries a ``customer`` object), else
    None. ReturnLogic's documented address has no name, so in practice it is None.
  * address phone: the address's ``phone``, else ``customerPhone``.
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
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, TypeVar

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
)
from bridge.errors import MappingError
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
    "order_snapshot_hash",
    "order_status",
    "order_to_canonical",
    "orders_page",
]

T = TypeVar("T")

_SHIPPED_WORDS = frozenset({"fulfilled", "partial"})


def orders_page(body: bytes | str) -> list[dict[str, Any]]:
    """The orders of one ``GET /v1/orders`` page, as raw dicts for :func:`order_to_canonical`."""
    return page_records(body, "GET /v1/orders")


def order_status(
    fulfillment_status: str | None,
    financial_status: str | None,
    shipped_at: datetime | None = None,
    canceled: bool = False,
) -> tuple[OrderStatus, str | None]:
    """The status table of the module docstring: ``(status, raw_status)``."""
    fulfillment = fulfillment_status.casefold() if fulfillment_status else None
    financial = financial_status.casefold() if financial_status else None
    raw_parts = [word for word in (fulfillment_status, financial_status) if word]
    if canceled:
        raw_parts.append("canceled")
    raw = "/".join(raw_parts) or None
    if canceled or financial == "voided":
        return OrderStatus.CANCELED, raw
    if fulfillment == "restocked":
        return (OrderStatus.SHIPPED if shipped_at else OrderStatus.CANCELED), raw
    if fulfillment in _SHIPPED_WORDS or shipped_at is not None:
        return OrderStatus.SHIPPED, raw
    return OrderStatus.CREATED, raw


def order_to_canonical(wire: Mapping[str, Any], rules: TagRules) -> Order:
    """Map one ``GET /v1/orders`` record (parsed with ``parse_float=Decimal``) to an Order.

    Any problem is a ``MappingError`` whose ``field`` names the wire field
    (``orderItems[0].pricePerItem``).
    """
    if wire.__class__ is not dict and not isinstance(wire, Mapping):
        raise MappingError(f"an order must be a JSON object, got {type(wire).__name__}")
    try:
        return _order(wire, rules)
    except ValidationError as exc:  # a canonical invariant the field checks did not catch
        raise mapping_error(exc, "order") from exc


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
    return _get(record, key, to_opt_id, where)


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


def _order(w: Mapping[str, Any], rules: TagRules) -> Order:
    rl_order_id = _need(w, "rlOrderId", to_id, "")
    order_number = _need(w, "orderNumber", to_id, "")
    fulfillment_status = _text(w, "fulfillmentStatus", "")
    financial_status = _text(w, "financialStatus", "")
    shipped_at = _get(w, "shippedAt", to_datetime, "")
    canceled_at = _get(w, "canceledAt", to_datetime, "")
    cancelled_at = _get(w, "cancelledAt", to_datetime, "")
    status, raw_status = order_status(
        fulfillment_status,
        financial_status,
        shipped_at,
        canceled_at is not None or cancelled_at is not None,
    )
    # every date is read (and checked), even those a fallback makes unnecessary
    external_created = _get(w, "externalCreateDate", to_datetime, "")
    created = _get(w, "createDate", to_datetime, "")
    updated = _get(w, "updateDate", to_datetime, "")
    external_updated = _get(w, "externalUpdateDate", to_datetime, "")
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

    # order-level tag evidence
    tags = _get(w, "tags", to_strings, "") or []
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
    canceled = status is OrderStatus.CANCELED
    lines: list[OrderLine] = []
    refund_lines: list[RefundLine] = []
    line_tax_total = 0
    for index, item in enumerate(_objects(w, "orderItems")):
        where = f"orderItems[{index}]"
        try:
            line, whole_tax = _line(
                item, where, rule_pairs, order_tags, order_fulfillment, canceled, shipped_at
            )
        except ValidationError as exc:
            raise mapping_error(exc, where) from exc
        lines.append(line)
        line_tax_total += whole_tax
        if line.qty_refunded:
            refund_lines.append(
                RefundLine(id=line.id, order_line_id=line.id, qty=line.qty_refunded)
            )

    header_tax = _need(w, "taxPrice", to_cents, "")
    refund_cents = _need(w, "refundAmount", to_cents, "")
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
        _discount(d, f"discounts[{i}]") for i, d in enumerate(_objects(w, "discounts"))
    )
    return Order(
        id=order_number,
        secondary_id=_opt_id(w, "externalOrderId", ""),
        status=status,
        raw_status=raw_status,
        currency=_need(w, "shopCurrencyCode", to_required_text, "").upper(),
        lines=tuple(lines),
        customer=customer,
        shipping_address=shipping_address,
        billing_address=billing_address,
        shipping_cents=_need(w, "shippingPrice", to_cents, ""),
        shipping_tax_cents=max(header_tax - line_tax_total, 0),
        order_discount_cents=_get(w, "orderLevelDiscount", to_cents, "") or 0,
        fees_cents=_need(w, "fees", to_cents, ""),
        taxes_included=_need(w, "taxesIncluded", to_flag, ""),
        refunds=refunds,
        discounts=discounts,
        tags=order_tags,
        created_at=created_at,
        updated_at=updated_at,
        refs={"returnlogic": rl_order_id},
    )


def _line(
    item: Mapping[str, Any],
    where: str,
    rule_pairs: Sequence[tuple[str, TagRule]],
    order_tags: tuple[str, ...],
    order_fulfillment: str | None,
    canceled: bool,
    shipped_at: datetime | None,
) -> tuple[OrderLine, int]:
    """The line, and its whole tax (the line keeps the shipped units' share only)."""
    rl_item_id = _opt_id(item, "rlOrderItemId", where)
    line_id = _opt_id(item, "externalOrderItemId", where) or rl_item_id
    if line_id is None:
        raise MappingError(
            f"invalid ReturnLogic order: {where} has neither externalOrderItemId nor rlOrderItemId",
            field=f"{where}.externalOrderItemId",
        )
    qty = _need(item, "quantity", to_count, where)
    fulfillable = _get(item, "fulfillableQuantity", to_count, where)
    if fulfillable is not None and fulfillable > qty:
        raise MappingError(
            f"invalid ReturnLogic order: {where}.fulfillableQuantity ({fulfillable}) exceeds"
            f" quantity ({qty})",
            field=f"{where}.fulfillableQuantity",
        )
    refunded = _get(item, "refundQuantity", to_count, where) or 0
    if refunded > qty:
        raise MappingError(
            f"invalid ReturnLogic order: {where}.refundQuantity ({refunded}) exceeds quantity"
            f" ({qty})",
            field=f"{where}.refundQuantity",
        )
    fulfillment = _casefold(_text(item, "fulfillmentStatus", where)) or order_fulfillment
    if fulfillment == "fulfilled":
        shipped = qty - (fulfillable or 0)
    elif fulfillment == "partial":
        shipped = qty - fulfillable if fulfillable is not None else 0
    else:
        shipped = 0
    canceled_qty = qty - shipped if canceled or fulfillment == "restocked" else 0

    discount = _get(item, "totalDiscount", to_cents, where)
    if discount is None:
        per_item = _get(item, "discountPerItem", to_dollars, where)
        discount = _cents_of(per_item * qty, where, "discountPerItem") if per_item else 0
    tax = _get(item, "totalTax", to_cents, where)
    if tax is None:
        per_item = _get(item, "taxPerItem", to_dollars, where)
        tax = _cents_of(per_item * qty, where, "taxPerItem") if per_item else 0

    # tags: order-level ones apply to every line
    is_gift_card = _get(item, "isGiftCard", to_flag, where) or False
    line_tags = _get(item, "tags", to_strings, where) or ()
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

    grams = _get(item, "grams", to_count, where)
    whole_tax = tax
    if shipped < qty:
        tax, discount = _shipped_share(tax, shipped, qty), _shipped_share(discount, shipped, qty)
    line = OrderLine(
        id=line_id,
        sku=_text(item, "sku", where),
        title=_text(item, "displayName", where),
        qty=qty,
        qty_shipped=shipped,
        qty_canceled=canceled_qty,
        qty_refunded=refunded,
        unit_price_cents=_need(item, "pricePerItem", to_cents, where),
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
    return line, whole_tax


def _shipped_share(cents: int, shipped: int, qty: int) -> int:
    """``cents`` of ``qty`` units, for the ``shipped`` ones (ROUND_HALF_UP, once)."""
    if not qty or not cents:
        return 0
    share = Decimal(cents) * shipped / qty
    return int(share.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _cents_of(amount: Decimal, where: str, key: str) -> int:
    try:
        return to_cents(amount)
    except ValueError as exc:
        path = _path(where, key)
        raise MappingError(f"invalid ReturnLogic order: {path}: {exc}", field=path) from None


def _discount(d: Mapping[str, Any], where: str) -> Discount:
    rl_id = _opt_id(d, "rlOrderDiscountId", where)
    code = _text(d, "code", where)
    if code is None:
        raise MappingError(
            f"invalid ReturnLogic order: {where}.code is required", field=f"{where}.code"
        )
    return Discount(
        id=rl_id or code,
        code=code,
        amount_cents=_need(d, "amount", to_cents, where),
        is_shipping=_get(d, "isShippingDiscount", to_flag, where) or False,
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
        customer_tags = _get(nested, "tags", to_strings, "customer") or []
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
        region_code=_text(a, "regionCode", key),
        postcode=_text(a, "postcode", key),
        country_code=_text(a, "countryCode", key),
        name=_text(a, "name", key)
        or full_name(_text(a, "firstName", key), _text(a, "lastName", key))
        or fallback_name,
        phone=_text(a, "phone", key) or fallback_phone,
    )
