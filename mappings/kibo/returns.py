"""Canonical :class:`~bridge.domain.Rma` -> Kibo Create Return bodies; Kibo returns -> refs.

Rules of :func:`rma_to_kibo_returns` (one Kibo return per order, one Kibo item per order line):

- **Orders.** Kibo files a return against one order. The RMA's units are grouped by the order the
  refund goes against -- ``original_order_id`` when the units carry one (the return of an exchange
  order: the guide says the refund "needs to go against the original forward order"), else
  ``order_id`` -- and one body is built per order, in first-seen order. That order is the body's
  ``externalOrderID`` (1..100 characters, else ``MappingError``); ``orderID`` (Kibo's integer) is
  added when the caller knows it (``kibo_order_ids``).
- **Lines.** Optoro sends one RMA item per unit; the units of one ``(order_id, order_line_id)``
  become one Kibo item (:meth:`Rma.line_aggregates`) whose ``quantity`` is the number of units.
- **orderItemID.** Never derived here: ``order_item_ids`` maps ``(order_id, order_line_id)`` --
  the line as the RMA names it, i.e. the exchange order's line for the return of an exchange order
  -- to Kibo's ``orderItemID``, and the caller builds it (the adapter's configured strategy: the
  numeric identifier as is, :func:`numeric_order_item_ids`, or the crosswalk recorded when the
  order was synced). A line missing from it is a ``MappingError`` (dead letter) saying the line
  cannot be resolved; it is never guessed. Two lines of one return resolving to the same
  ``orderItemID`` are a ``MappingError`` too.
- **Amounts** (the currency's minor units -> its major units, exact, with the currency's ISO
  4217 decimal places -- JPY 0, USD 2, KWD 3 -- never ``float``; ``currency``, or the order's
  in ``currencies``, names it): ``returnSubtotal``
  is the **shopper share** of the line's units (``shopper_refund_cents``, Optoro's
  ``shopper_refund_amount_cents``); the returns provider's share (``provider_refund_cents``,
  Optoro's ``optoro_refund_amount_cents``, instant exchanges) is never paid to the shopper and
  is only reported (:func:`kibo_amounts_report`). An even exchange is therefore an item with
  ``returnSubtotal`` 0.00. ``returnTotal`` is the sum of the item subtotals, so it equals the
  shopper share of the order's units to the cent. When the RMA does not carry a unit's shopper
  share (ReturnLogic RMAs carry no per-item estimates) its return type decides (below): a refund
  item has no ``returnSubtotal`` (Kibo prices it) and the body no ``returnTotal``.
  A negative share is a ``MappingError``.
- **refundType** ``GIFT_CARD`` when the RMA is ``gift_refund_only`` (gift orders) or any of the
  order's units is refunded as a gift card (``UNEVEN_EXCHANGE`` -- Optoro's uneven gift-card
  exchange -- or ``STORE_CREDIT``); else ``STANDARD``. Kibo has one refund type per return, so
  one gift-card unit makes the whole return ``GIFT_CARD``. Gift-card returns give every item a
  ``giftCardInfo`` with ``giftCardType`` (argument, default ``GC``), ``giftCardValue`` = the
  item's ``returnSubtotal`` (otherwise Kibo would use the item's full price) and ``email`` = the
  giftee's, else the customer's, e-mail when known.
- **Refund handling by return type** (:data:`NO_REFUND_TYPES`). When the RMA does not carry a
  unit's shopper share (ReturnLogic's exchange and warranty RMAs carry no per-item estimates), the
  unit's type decides, since Kibo refunds an item without ``returnSubtotal`` in full: a
  ``REFUND`` (and ``STORE_CREDIT``, a ``GIFT_CARD`` return) is left for Kibo to price; an
  ``EVEN_EXCHANGE``/``INSTANT_EXCHANGE`` is **not a refund** -- ``returnSubtotal`` 0.00 (the shopper
  gets goods, not money); a ``WARRANTY`` unit likewise (a replacement or repair), unless
  ``refund_warranty`` (the retailer refunds warranty claims: Kibo prices them). Kibo's Create
  Return has only the refund types ``STANDARD`` and ``GIFT_CARD`` -- no replace/exchange type --
  so a zero subtotal is how a return "without refund" is written. One line whose units mix a
  priced and an unpriced handling is a ``MappingError`` (one Kibo item cannot carry both).
- **returnLocation** (``return_location``, Kibo's integer location id, argument: the caller maps
  the RMA's ``warehouse_id``) and **returnReductionTotal** (``reduction_cents``: the return
  shipping the shopper is charged, taken from the first return of the RMA only, and never more
  than that return's ``returnTotal`` when it is known) are sent when given.
- **reason**: the first reason of the line's units; ``reason_fallback`` when none is given.
- **Lengths.** ``SKU`` and ``UPC`` (at most 50) are identifiers: one that is too long is refused
  (``MappingError``), never truncated, since a truncated identifier names another product.
  ``partName`` (the title) and ``reason`` are free text without a documented limit and are sent
  unchanged. ``partNumber`` is not sent (the domain has no manufacturer part number). An empty
  SKU/UPC/title is left out.
- ``createdTime`` is ``created_at`` (an argument: no clock here) in UTC, ``...Z``. Item and
  return ``status`` are left to Kibo unless ``item_status`` is given.

Errors name the RMA's unit by its index, the way Optoro's RMA webhook numbers its items
(``items[4].order_line_item_identifier``, ``items[0].sku``); problems only visible in the Kibo
body name the Kibo field (``item[0].quantity``). Everything is pure: the mapping tables, the
creation time and the gift-card type are arguments.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from pydantic import ValidationError

from bridge.domain import (
    RefundType,
    Rma,
    RmaLineAggregate,
    RmaUnit,
    major_to_minor,
    minor_to_major,
)
from bridge.errors import MappingError
from mappings._errors import mapping_error
from mappings._json import Body, load_json
from mappings.kibo.wire import (
    MAX_EXTERNAL_ORDER_ID,
    MAX_GIFT_CARD_EMAIL,
    MAX_SKU,
    MAX_UPC,
    GiftCardType,
    ItemStatus,
    KiboProcessRequest,
    KiboReturn,
    KiboReturnRequest,
)

__all__ = [
    "GIFT_CARD_REFUND_TYPES",
    "MAX_ORDER_ITEM_ID",
    "NO_REFUND_TYPES",
    "RETURN_ID_BITS",
    "KiboReturnRef",
    "derive_return_id",
    "kibo_amounts_report",
    "kibo_process_request",
    "numeric_order_item_ids",
    "return_matches",
    "return_response_to_ref",
    "rma_to_kibo_returns",
]

GIFT_CARD_REFUND_TYPES = frozenset({RefundType.UNEVEN_EXCHANGE, RefundType.STORE_CREDIT})
"""Unit refund types paid as a gift card (Optoro's uneven gift-card exchange, store credit)."""

NO_REFUND_TYPES = frozenset(
    {RefundType.EVEN_EXCHANGE, RefundType.INSTANT_EXCHANGE, RefundType.WARRANTY}
)
"""Unit refund types that reimburse nothing when the RMA gives no shopper share (goods, not
money): sent with ``returnSubtotal`` 0.00 (``WARRANTY`` only unless ``refund_warranty``)."""

MAX_ORDER_ITEM_ID = 2**63 - 1
"""Largest ``orderItemID`` accepted (Kibo documents only the minimum, 0)."""

_NUMERIC = re.compile(r"(?:0|[1-9][0-9]*)")
"""Canonical decimal digits: ``"007"`` is not taken as 7 (that would be a guess)."""


# --- line resolution -------------------------------------------------------------------------


def numeric_order_item_ids(rma: Rma, *, exchange_lines: bool = False) -> dict[tuple[str, str], int]:
    """The "numeric identifier as is" strategy: ``(order_id, order_line_id) -> int(line id)``.

    Only a line id of canonical decimal digits (``0``, ``42``; not ``042``, ``+4``, ``4.0``) up
    to :data:`MAX_ORDER_ITEM_ID` is taken; any other line is left out (a crosswalk may resolve
    it), and :func:`rma_to_kibo_returns` names a line still unresolved: never guessed.

    Units of an **exchange order** (``original_order_id`` set) are left out unless
    ``exchange_lines``: their line id is the exchange order's, while the Kibo return is filed
    against the original order, so the numeric id is only right when the retailer's exchange
    orders reuse the original order's item ids -- a fact about the retailer, to be configured,
    not assumed.
    """
    resolved: dict[tuple[str, str], int] = {}
    for unit in rma.units:
        if unit.original_order_id is not None and not exchange_lines:
            continue
        line = unit.order_line_id
        if _NUMERIC.fullmatch(line) and int(line) <= MAX_ORDER_ITEM_ID:
            resolved[(unit.order_id, line)] = int(line)
    return resolved


# --- Rma -> Create Return --------------------------------------------------------------------


def rma_to_kibo_returns(
    rma: Rma,
    *,
    order_item_ids: Mapping[tuple[str, str], int],
    created_at: datetime,
    gift_card_type: GiftCardType = "GC",
    reason_fallback: str = "Returned",
    kibo_order_ids: Mapping[str, int] | None = None,
    gift_card_issuer: str | None = None,
    item_status: ItemStatus | None = None,
    return_location: int | None = None,
    reduction_cents: int = 0,
    refund_warranty: bool = False,
    currency: str = "USD",
    currencies: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """One Create Return body per order the RMA's refunds go against, in first-seen order.

    See the module documentation for every rule. ``order_item_ids`` maps
    ``(order_id, order_line_id)`` to Kibo's ``orderItemID``; ``kibo_order_ids`` maps an
    ``externalOrderID`` to Kibo's ``orderID`` (optional); ``gift_card_issuer`` is
    ``giftCardInfo.cardIssuer`` (``GC`` only); ``return_location`` is ``returnLocation``;
    ``reduction_cents`` the ``returnReductionTotal`` of the first body; ``refund_warranty``
    lets Kibo price warranty units. Amounts in the bodies are ``Decimal`` major units of
    ``currencies[externalOrderID]``, else ``currency``: serialise with
    :func:`mappings.kibo.dumps`.
    """
    if reduction_cents < 0:
        raise MappingError(
            f"RMA {rma.id!r}: a return reduction cannot be negative ({reduction_cents} cents)",
            field="return_shipping_cost_cents",
        )
    if created_at.tzinfo is None or created_at.utcoffset() is None:
        raise ValueError("created_at must be timezone-aware")
    if not rma.units:
        raise MappingError(f"RMA {rma.id!r} has no units to return", field="items")
    first_index = _first_index(rma.units)
    groups: dict[str, list[RmaLineAggregate]] = {}
    for aggregate in rma.line_aggregates():
        groups.setdefault(_refund_order(rma, aggregate, first_index), []).append(aggregate)
    bodies: list[dict[str, Any]] = []
    for external_id, aggregates in groups.items():
        bodies.append(
            _return_body(
                rma,
                external_id,
                aggregates,
                first_index,
                order_item_ids=order_item_ids,
                created_at=created_at,
                gift_card_type=gift_card_type,
                reason_fallback=reason_fallback,
                kibo_order_id=(kibo_order_ids or {}).get(external_id),
                gift_card_issuer=gift_card_issuer,
                item_status=item_status,
                return_location=return_location,
                reduction_cents=reduction_cents if not bodies else 0,
                refund_warranty=refund_warranty,
                currency=(currencies or {}).get(external_id, currency),
            )
        )
    return bodies


def _first_index(units: Sequence[RmaUnit]) -> dict[tuple[str, str], int]:
    first: dict[tuple[str, str], int] = {}
    for i, unit in enumerate(units):
        first.setdefault((unit.order_id, unit.order_line_id), i)
    return first


def _unit_indexes(rma: Rma, aggregate: RmaLineAggregate) -> list[int]:
    key = (aggregate.order_id, aggregate.order_line_id)
    return [i for i, u in enumerate(rma.units) if (u.order_id, u.order_line_id) == key]


def _refund_order(
    rma: Rma, aggregate: RmaLineAggregate, first_index: Mapping[tuple[str, str], int]
) -> str:
    """The order a line's refund goes against: the original order of an exchange order."""
    originals = {unit.original_order_id for unit in aggregate.units}
    if len(originals) > 1:
        i = first_index[(aggregate.order_id, aggregate.order_line_id)]
        raise MappingError(
            f"RMA {rma.id!r}: the units of order line {aggregate.order_line_id!r} of order"
            f" {aggregate.order_id!r} disagree about the original order",
            field=f"items[{i}].original_order_identifier",
        )
    external = aggregate.original_order_id or aggregate.order_id
    if len(external) > MAX_EXTERNAL_ORDER_ID:
        i = first_index[(aggregate.order_id, aggregate.order_line_id)]
        which = "original_order_identifier" if aggregate.original_order_id else "order_identifier"
        raise MappingError(
            f"RMA {rma.id!r}: order identifier has {len(external)} characters, Kibo's"
            f" externalOrderID allows at most {MAX_EXTERNAL_ORDER_ID}",
            field=f"items[{i}].{which}",
        )
    return external


def _return_body(
    rma: Rma,
    external_id: str,
    aggregates: list[RmaLineAggregate],
    first_index: Mapping[tuple[str, str], int],
    *,
    order_item_ids: Mapping[tuple[str, str], int],
    created_at: datetime,
    gift_card_type: str,
    reason_fallback: str,
    kibo_order_id: int | None,
    gift_card_issuer: str | None,
    item_status: str | None,
    return_location: int | None,
    reduction_cents: int,
    refund_warranty: bool,
    currency: str,
) -> dict[str, Any]:
    gift_card = rma.gift_refund_only or any(
        unit.refund_type in GIFT_CARD_REFUND_TYPES for agg in aggregates for unit in agg.units
    )
    items = []
    subtotals: list[int | None] = []
    seen: dict[int, RmaLineAggregate] = {}
    for aggregate in aggregates:
        order_item_id = _order_item_id(rma, aggregate, first_index, order_item_ids)
        twin = seen.setdefault(order_item_id, aggregate)
        if twin is not aggregate:
            raise MappingError(
                f"RMA {rma.id!r}: order lines {twin.order_line_id!r} of order {twin.order_id!r}"
                f" and {aggregate.order_line_id!r} of order {aggregate.order_id!r} both resolve"
                f" to Kibo orderItemID {order_item_id}; check the line resolution",
                field=f"items[{first_index[(aggregate.order_id, aggregate.order_line_id)]}]"
                ".order_line_item_identifier",
            )
        shopper = _shopper_cents(rma, aggregate, first_index, refund_warranty=refund_warranty)
        subtotals.append(shopper)
        item: dict[str, Any] = {
            "orderItemID": order_item_id,
            "quantity": aggregate.qty,
            "reason": next((r for r in aggregate.reasons if r.strip()), reason_fallback),
        }
        if shopper is not None:
            item["returnSubtotal"] = minor_to_major(shopper, currency)
        if item_status is not None:
            item["status"] = item_status
        sku = _identifier(rma, aggregate, "sku", MAX_SKU)
        if sku is not None:
            item["SKU"] = sku
        upc = _identifier(rma, aggregate, "upc", MAX_UPC)
        if upc is not None:
            item["UPC"] = upc
        if aggregate.title:
            item["partName"] = aggregate.title
        if gift_card:
            item["giftCardInfo"] = _gift_card_info(
                rma, gift_card_type, gift_card_issuer, item.get("returnSubtotal")
            )
        items.append(item)
    body: dict[str, Any] = {
        "item": items,
        "externalOrderID": external_id,
        "refundType": "GIFT_CARD" if gift_card else "STANDARD",
        "createdTime": _timestamp(created_at),
    }
    known = [cents for cents in subtotals if cents is not None]
    if len(known) == len(subtotals):
        body["returnTotal"] = minor_to_major(sum(known), currency)
    if kibo_order_id is not None:
        body["orderID"] = kibo_order_id
    if return_location is not None:
        body["returnLocation"] = return_location
    if reduction_cents:
        if "returnTotal" in body:
            reduction_cents = min(reduction_cents, sum(known))
        body["returnReductionTotal"] = minor_to_major(reduction_cents, currency)
    try:
        return KiboReturnRequest.model_validate(body).wire()
    except ValidationError as exc:
        raise mapping_error(exc, what=f"Kibo return for RMA {rma.id!r}") from exc


def _order_item_id(
    rma: Rma,
    aggregate: RmaLineAggregate,
    first_index: Mapping[tuple[str, str], int],
    order_item_ids: Mapping[tuple[str, str], int],
) -> int:
    key = (aggregate.order_id, aggregate.order_line_id)
    field = f"items[{first_index[key]}].order_line_item_identifier"
    resolved = order_item_ids.get(key)
    if resolved is None:
        exchange = (
            f" (a line of exchange order {aggregate.order_id!r}, returned against original order"
            f" {aggregate.original_order_id!r})"
            if aggregate.original_order_id
            else ""
        )
        raise MappingError(
            f"RMA {rma.id!r}: order line {aggregate.order_line_id!r} of order"
            f" {aggregate.order_id!r}{exchange} cannot be resolved to a Kibo orderItemID: no"
            " entry for it under the retailer's line resolution (it is not guessed); record the"
            " line in the crosswalk, then replay",
            field=field,
        )
    if isinstance(resolved, bool) or not isinstance(resolved, int) or resolved < 0:
        raise MappingError(
            f"RMA {rma.id!r}: order line {aggregate.order_line_id!r} of order"
            f" {aggregate.order_id!r} resolves to {resolved!r}, not an orderItemID (integer >= 0)",
            field=field,
        )
    return resolved


def _shopper_cents(
    rma: Rma,
    aggregate: RmaLineAggregate,
    first_index: Mapping[tuple[str, str], int],
    *,
    refund_warranty: bool,
) -> int | None:
    """The line's shopper share in cents; ``None``: Kibo prices it (a full refund)."""
    no_refund = NO_REFUND_TYPES - ({RefundType.WARRANTY} if refund_warranty else set())
    total = 0
    priced_by_kibo = 0
    for i in _unit_indexes(rma, aggregate):
        unit = rma.units[i]
        cents = unit.shopper_refund_cents
        if cents is not None and cents < 0:
            raise MappingError(
                f"RMA {rma.id!r}: a shopper refund cannot be negative ({cents} cents)",
                field=f"items[{i}].refund_financials.shopper_refund_amount_cents",
            )
        if cents is None and unit.refund_type not in no_refund:
            priced_by_kibo += 1
        else:
            total += cents or 0
    if not priced_by_kibo:
        return total
    if priced_by_kibo < len(aggregate.units):
        i = first_index[(aggregate.order_id, aggregate.order_line_id)]
        raise MappingError(
            f"RMA {rma.id!r}: the units of order line {aggregate.order_line_id!r} of order"
            f" {aggregate.order_id!r} mix refunds Kibo prices with exchanges or amounts the RMA"
            " gives; one Kibo item cannot carry both",
            field=f"items[{i}].refund_type",
        )
    return None


def _identifier(rma: Rma, aggregate: RmaLineAggregate, name: str, limit: int) -> str | None:
    value: str | None = getattr(aggregate, name)
    if not value:
        return None
    if len(value) > limit:
        i = next(i for i in _unit_indexes(rma, aggregate) if getattr(rma.units[i], name) == value)
        raise MappingError(
            f"RMA {rma.id!r}: {name} has {len(value)} characters, Kibo's {name.upper()} allows at"
            f" most {limit}; an identifier is not truncated",
            field=f"items[{i}].{name}",
        )
    return value


def _gift_card_info(
    rma: Rma, card_type: str, issuer: str | None, value: Decimal | None
) -> dict[str, Any]:
    info: dict[str, Any] = {"giftCardType": card_type}
    if issuer is not None:
        info["cardIssuer"] = issuer
    if value is not None:
        info["giftCardValue"] = value
    email: str | None
    if rma.giftee_email:
        email, field = rma.giftee_email, "giftee_email"
    else:
        email, field = rma.customer_email, "customer_email"
    if email:
        if len(email) > MAX_GIFT_CARD_EMAIL:
            raise MappingError(
                f"RMA {rma.id!r}: e-mail has {len(email)} characters, Kibo's giftCardInfo.email"
                f" allows at most {MAX_GIFT_CARD_EMAIL}",
                field=field,
            )
        info["email"] = email
    return info


def _timestamp(value: datetime) -> str:
    """ISO 8601 / RFC 3339 in UTC with a ``Z``; fraction only when non-zero."""
    utc = value.astimezone(UTC)
    text = utc.strftime("%Y-%m-%dT%H:%M:%S")
    if utc.microsecond:
        text += "." + f"{utc.microsecond:06d}".rstrip("0")
    return text + "Z"


# --- reporting -------------------------------------------------------------------------------


def kibo_amounts_report(rma: Rma) -> dict[str, Any]:
    """The RMA's refund amounts in cents, split as Kibo sees them, for reporting.

    ``shopper_cents`` is what the Kibo returns reimburse (the sum of their ``returnSubtotal``);
    ``provider_cents`` is the returns provider's share (Optoro's instant-exchange share), recorded
    here and never paid to the shopper; ``estimated_cents`` is the total refund value of the goods;
    ``unallocated_cents`` = estimated - provider - shopper (0 when the three agree). A total is
    ``None`` when a unit does not say. ``lines`` has the same per ``(order, line)``, with the
    order the refund goes against (``external_order_id``).
    """
    lines = []
    for aggregate in rma.line_aggregates():
        lines.append(
            {
                "order_id": aggregate.order_id,
                "order_line_id": aggregate.order_line_id,
                "external_order_id": aggregate.original_order_id or aggregate.order_id,
                "qty": aggregate.qty,
                **_amounts(
                    aggregate.estimated_refund_cents,
                    aggregate.provider_refund_cents,
                    aggregate.shopper_refund_cents,
                ),
            }
        )
    return {
        "rma_id": rma.id,
        **_amounts(
            _total(line["estimated_cents"] for line in lines),
            _total(line["provider_cents"] for line in lines),
            _total(line["shopper_cents"] for line in lines),
        ),
        "lines": lines,
    }


def _amounts(estimated: int | None, provider: int | None, shopper: int | None) -> dict[str, Any]:
    unallocated = (
        None
        if estimated is None or provider is None or shopper is None
        else estimated - provider - shopper
    )
    return {
        "estimated_cents": estimated,
        "provider_cents": provider,
        "shopper_cents": shopper,
        "unallocated_cents": unallocated,
    }


def _total(values: Any) -> int | None:
    total = 0
    for value in values:
        if value is None:
            return None
        total += value
    return total


# --- Process Return --------------------------------------------------------------------------


def kibo_process_request(
    return_id: int,
    accepted: Mapping[int, int],
    *,
    location_id: int | None = None,
    return_reduction_override_cents: int | None = None,
    currency: str = "USD",
) -> dict[str, Any]:
    """The Process Return body: ``accepted`` maps ``orderItemID`` -> ``quantityAccepted``
    (0 rejects the item); the reduction override is minor units of ``currency``, sent in its
    major units."""
    body: dict[str, Any] = {
        "returnID": return_id,
        "acceptedItemQuantity": [
            {"orderItemID": item, "quantityAccepted": qty} for item, qty in accepted.items()
        ],
    }
    if location_id is not None:
        body["locationID"] = location_id
    if return_reduction_override_cents is not None:
        body["returnReductionOverride"] = minor_to_major(return_reduction_override_cents, currency)
    try:
        return KiboProcessRequest.model_validate(body).wire()
    except ValidationError as exc:
        raise mapping_error(exc, what=f"Kibo process request for return {return_id!r}") from exc


# --- client-chosen returnID -----------------------------------------------------------------

RETURN_ID_BITS = (31, 53)
"""Widths :func:`derive_return_id` offers: 53 (the default) or 31."""


def derive_return_id(idempotency_key: str, bits: int = 53) -> int:
    """The ``returnID`` the bridge asks Kibo to give the return of one create effect.

    Kibo's page types ``returnID`` as an integer, minimum 1, no maximum. The id is the first
    eight bytes of SHA-256 over ``kibo.returnID`` and the effect's idempotency key (which names
    the retailer, the RMA, the policy step and the order), reduced to ``1 .. 2**bits - 1``:

    - the same key always gives the same id (a re-sent create asks for the same return, and
      an unknown outcome is settled by Get Return on it); different retailers' keys differ,
      so retailers sharing a tenant do not collide by construction, only by chance;
    - ``bits = 53`` (default) stays exact in every JSON parser (IEEE doubles, JavaScript) and
      makes a chance collision negligible (about n**2 / 2**54: 5e-5 at a million returns);
      ``bits = 31`` fits a signed 32-bit column, for tenants that refuse larger ids, at a
      higher collision risk (about 2 % at ten thousand returns);
    - a collision is never silent: a return found under the id must be of the create's
      order (and :func:`return_matches` its items), else the effect is parked for an
      operator.
    """
    if bits not in RETURN_ID_BITS:
        raise ValueError(f"bits must be one of {RETURN_ID_BITS}")
    digest = hashlib.sha256(f"kibo.returnID\x00{idempotency_key}".encode()).digest()
    span: int = 2**bits - 1
    return 1 + int.from_bytes(digest[:8], "big") % span


def return_matches(request: Mapping[str, Any], answer: KiboReturnRef) -> bool:
    """True when the Kibo return ``answer`` is the one the Create Return body ``request``
    asks for: same ``externalOrderID`` and the same quantity per ``orderItemID``. (Amounts
    and texts are not compared: Kibo may price or word them itself.)"""
    wanted: dict[int, int] = {}
    for item in request.get("item") or []:
        wanted[int(item["orderItemID"])] = wanted.get(int(item["orderItemID"]), 0) + int(
            item["quantity"]
        )
    return (
        answer.external_order_id == request.get("externalOrderID") and dict(answer.items) == wanted
    )


# --- Create/Get Return responses -------------------------------------------------------------


@dataclass(frozen=True)
class KiboReturnRef:
    """What the bridge keeps of a Kibo return (see :func:`return_response_to_ref`)."""

    return_id: int
    status: str | None
    cleared: bool
    """Refunds processed: ``clearedTime`` set or status ``CLOSED``, and not rejected."""
    rejected: bool
    """Every item of the return is ``REJECTED``."""
    return_total: Decimal | None = None
    external_order_id: str | None = None
    order_id: int | None = None
    items: tuple[tuple[int, int], ...] = ()
    """``(orderItemID, quantity)`` per item that carries both, summed per ``orderItemID``."""
    accepted: tuple[tuple[int, int], ...] | None = None
    """``(orderItemID, units accepted)`` once Kibo processed the return (cleared or
    rejected; an item ``REJECTED`` without ``quantityAccepted`` is 0, ``ACCEPTED`` without it
    is its quantity); ``None`` while it is not processed or Kibo does not say."""
    refunded_cents: int | None = None
    """What Kibo refunded, once processed, in the return's currency's minor units: the accepted
    share of each item's ``returnSubtotal`` (``returnTotal`` when every unit was accepted and
    items carry no subtotal) minus ``returnReductionTotal``; ``None`` when Kibo does not say."""


def return_response_to_ref(
    body: Body, *, currency: str = "USD", read_amounts: bool = True
) -> KiboReturnRef:
    """The reference of a Create Return or Get Return response (JSON text or parsed) of a
    return in ``currency`` (Kibo's return carries no currency: the caller knows the order's).

    Rules (Kibo's return statuses are only OPEN, PROCESSING and CLOSED, and its Process Return
    "refunds, then closes" the return):

    - ``rejected`` when the return has items and every one has status ``REJECTED`` (case
      ignored): the whole return was refused, nothing is refunded.
    - ``cleared`` when not rejected and ``clearedTime`` is set or ``status`` is ``CLOSED``
      (assumed: a closed return has had its refunds processed; a partially accepted return is
      cleared -- what was refunded is in its items).

    The response is read tolerantly (unknown fields ignored, numeric strings accepted); a body
    without a usable ``returnID`` is a ``MappingError`` on ``returnID``. The amounts the
    refunded sum is read from (``item[i].returnSubtotal``, ``returnTotal``,
    ``returnReductionTotal``) must be whole minor units of ``currency``: one with more decimals
    (``18.5`` JPY) is a ``MappingError`` naming it, never rounded into a refund;
    ``read_amounts=False`` reads everything but them (``refunded_cents`` ``None``).
    """
    data = load_json(body, what="Kibo return")
    if not isinstance(data, Mapping):
        raise MappingError("Kibo return: expected a JSON object")
    try:
        wire = KiboReturn.model_validate(data)
    except ValidationError as exc:
        raise mapping_error(exc, what="Kibo return") from exc
    status = wire.status.strip().upper() if wire.status else None
    rejected = bool(wire.item) and all(
        (item.status or "").strip().upper() == "REJECTED" for item in wire.item
    )
    cleared = not rejected and (bool(wire.clearedTime) or status == "CLOSED")
    quantities: dict[int, int] = {}
    for item in wire.item:
        if item.orderItemID is not None and item.quantity is not None:
            quantities[item.orderItemID] = quantities.get(item.orderItemID, 0) + item.quantity
    accepted, refunded = (
        _settlement(wire, currency if read_amounts else None)
        if cleared or rejected
        else (None, None)
    )
    return KiboReturnRef(
        return_id=wire.returnID,
        status=status,
        cleared=cleared,
        rejected=rejected,
        return_total=wire.returnTotal,
        external_order_id=wire.externalOrderID,
        order_id=wire.orderID,
        items=tuple(sorted(quantities.items())),
        accepted=accepted,
        refunded_cents=refunded,
    )


def _settlement(
    wire: KiboReturn, currency: str | None
) -> tuple[tuple[tuple[int, int], ...] | None, int | None]:
    """Units accepted per ``orderItemID`` and the minor units of ``currency`` refunded, as a
    processed return says (see :class:`KiboReturnRef`; ``currency`` ``None``: units only)."""
    accepted: dict[int, int] = {}
    share = Decimal(0)
    shares_known = True
    every_unit = True
    for i, item in enumerate(wire.item):
        if item.orderItemID is None or item.quantity is None:
            return None, None
        status = (item.status or "").strip().upper()
        if item.quantityAccepted is not None:
            units = min(item.quantityAccepted, item.quantity)
        elif status == "REJECTED":
            units = 0
        elif status == "ACCEPTED":
            units = item.quantity
        else:
            return None, None  # not processed item by item: Kibo does not say
        accepted[item.orderItemID] = accepted.get(item.orderItemID, 0) + units
        every_unit = every_unit and units == item.quantity
        if currency is None or item.returnSubtotal is None or not item.quantity:
            shares_known = False
        else:
            _whole(item.returnSubtotal, currency, f"item[{i}].returnSubtotal")
            share += item.returnSubtotal * units / item.quantity
    refunded: Decimal | None = share if shares_known else None
    if refunded is None and every_unit and currency is not None:
        refunded = wire.returnTotal
        _whole(refunded, currency, "returnTotal")
    minor = None
    if refunded is not None and currency is not None:
        reduction = wire.returnReductionTotal or Decimal(0)
        _whole(reduction, currency, "returnReductionTotal")
        # the accepted share of a subtotal may fall between minor units: rounded once, half up
        minor = max(major_to_minor(refunded - reduction, currency, field="returnTotal"), 0)
    return tuple(sorted(accepted.items())), minor


def _whole(amount: Decimal | None, currency: str, field: str) -> None:
    """Refuse (``MappingError`` on ``field``) a Kibo amount finer than ``currency``'s minor
    unit: a wrong currency or a wrong number, never a rounding."""
    if amount is not None:
        major_to_minor(amount, currency, field=field, exact=True)
