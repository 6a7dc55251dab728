"""The guide's Returns Portal Orders written as the ReturnLogic order that would produce them.

:func:`rl_order` turns one order of a guide RPO step (``shared/fixtures/optoro-scenarios``) into
a ``GET /v1/orders`` record shaped as ``returnlogic-api.txt`` documents orders, and as the
commerce platforms behind ReturnLogic (Shopify and alike) record a cancellation: units canceled
before they shipped are *refunded line quantities with nothing shipped*
(``refundQuantity`` beside ``fulfillableQuantity``), their money in ``refundAmount``.

Per guide line (``q`` units, ``s`` shipped, ``c`` canceled, ``r`` returned and refunded):

=========================== ===================== ======================= ==================
guide line                  ``fulfillmentStatus`` ``fulfillableQuantity`` ``refundQuantity``
=========================== ===================== ======================= ==================
all shipped (``s = q``)     ``fulfilled``         0                       ``r``
some shipped, some canceled ``partial``           ``q - s - c``           ``c + r``
nothing shipped             none                  ``q - c``               ``c``
=========================== ===================== ======================= ==================

The order's ``fulfillmentStatus`` is ``fulfilled`` when every line is, ``partial`` when some
unit shipped, else none; ``financialStatus`` is ``refunded`` once anything was refunded, else
``paid``. What ReturnLogic documents no field for (UPCs, tracking numbers, images, variant ids,
customer and address names) is left out: the suite names each of those divergences.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from adapters.returnlogic.orders import format_when
from bridge.domain import minor_unit_exponent

__all__ = ["GRAMS_PER_POUND", "major", "recorded_at", "rl_order"]

GRAMS_PER_POUND = Decimal("453.59237")


def major(minor: int, currency: str) -> Decimal:
    """Minor units as the decimal major-unit amount ReturnLogic sends (``1024`` -> ``10.24``)."""
    return Decimal(minor).scaleb(-minor_unit_exponent(currency))


def _whole(shipped_share: int, shipped: int, qty: int) -> int:
    """The whole line's amount of which the guide shows the shipped units' share."""
    return shipped_share * qty // shipped if shipped else 0


def rl_order(guide: dict[str, Any], rl_order_id: int, *, recorded: datetime) -> dict[str, Any]:
    """The ReturnLogic record of ``guide`` (one element of ``returns_portal_order.orders``).

    ``recorded`` is when ReturnLogic stored it (``createDate``; the poll window reads it); the
    shop's own dates are the guide's (``externalCreateDate``, ``updateDate``).
    """
    currency = guide["currency"]
    returned: Counter[str] = Counter()
    for refund in guide.get("refunds", []):
        for line in refund["refund_line_items"]:
            returned[line["order_item_identifier"]] += line["quantity"]
    items = []
    canceled_value = 0
    line_tax = 0
    for index, line in enumerate(guide["items"]):
        qty, shipped = line["quantity"], line["quantity_shipped"]
        canceled = line["quantity_canceled"]
        tax = _whole(line["tax_amount_cents"], shipped, qty)
        discount = _whole(line["discount_amount_cents"], shipped, qty)
        price = line["unit_price_amount_cents"]
        line_tax += tax
        if canceled:
            value = Decimal(price * qty - discount + tax) * canceled / qty
            canceled_value += int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))
        if shipped == qty:
            status, open_units = "fulfilled", 0
        elif shipped:
            status, open_units = "partial", qty - shipped - canceled
        else:
            status, open_units = None, qty - canceled
        properties = [
            word
            for tag, word in (
                ("FinalSale", "final_sale"),
                ("pickup_in_store", "pickup_in_store"),
                ("Thirdparty", "Thirdparty"),
            )
            if tag in line["tags"]
        ]
        item: dict[str, Any] = {
            "rlOrderItemId": rl_order_id * 100 + index,
            "rlOrderId": rl_order_id,
            "externalOrderItemId": line["identifier"],
            "externalProductId": line.get("product_identifier"),
            "createDate": format_when(recorded),
            "updateDate": format_when(recorded),
            "sku": line.get("sku"),
            "displayName": line.get("title"),
            "productExists": True,
            "quantity": qty,
            "pricePerItem": major(price, currency),
            "discountPerItem": major(discount // qty if qty else 0, currency),
            "actualPricePerItem": major(price - (discount // qty if qty else 0), currency),
            "taxPerItem": major(tax // qty if qty else 0, currency),
            "totalPrice": major(price * qty, currency),
            "totalDiscount": major(discount, currency),
            "totalTax": major(tax, currency),
            "isTaxable": tax > 0,
            "fulfillableQuantity": open_units,
            "fulfillmentStatus": status,
            "isGiftCard": "gift-card" in line["tags"],
            "properties": properties,
            "refundQuantity": canceled + returned[line["identifier"]],
            "discounts": [],
        }
        if line.get("weight") is not None:
            grams = Decimal(str(line["weight"])) * GRAMS_PER_POUND
            item["grams"] = int(grams.quantize(Decimal(1), rounding=ROUND_HALF_UP))
        items.append(item)

    statuses = {item["fulfillmentStatus"] for item in items}
    if statuses == {"fulfilled"}:
        fulfillment: str | None = "fulfilled"
    elif statuses & {"fulfilled", "partial"}:
        fulfillment = "partial"
    else:
        fulfillment = None
    refunded = sum(refund["total_refund_amount_cents"] for refund in guide.get("refunds", []))
    refund_amount = refunded + canceled_value
    shipped_dates = [line["shipped_date"] for line in guide["items"] if line.get("shipped_date")]
    customer = guide["customer"]
    lines_net = sum(
        line["unit_price_amount_cents"] * line["quantity"] for line in guide["items"]
    ) - sum(
        _whole(line["discount_amount_cents"], line["quantity_shipped"], line["quantity"])
        for line in guide["items"]
    )
    header_tax = line_tax + guide["shipping_tax_amount_cents"]
    total = lines_net + guide["shipping_amount_cents"] + header_tax
    number = guide["identifier"]
    return {
        "rlOrderId": rl_order_id,
        "externalOrderId": guide.get("secondary_identifier") or number,
        "externalSource": "Shopify",
        "createDate": format_when(recorded),
        "updateDate": guide["updated_at"],
        "externalCreateDate": guide["created_at"],
        "externalUpdateDate": guide["updated_at"],
        "billingAddress": _address(guide["billing_address"]),
        "shippingAddress": _address(guide["shipping_address"]),
        "externalCustomerId": int(customer["identifier"]),
        "customerEmail": customer["email"],
        "customerPhone": customer.get("phone"),
        "orderName": f"#{number}",
        "orderNumber": number,
        "gateway": "shopify_payments",
        "flatRateBonusCreditApplied": False,
        "subtotalPrice": major(lines_net, currency),
        "totalPrice": major(total, currency),
        "shippingPrice": major(guide["shipping_amount_cents"], currency),
        "fees": 0,
        "orderLevelDiscount": 0,
        "taxPrice": major(header_tax, currency),
        "taxesIncluded": False,
        "refundAmount": major(refund_amount, currency),
        "shippedAt": max(shipped_dates) if shipped_dates else None,
        "shopCurrencyCode": currency,
        "tags": [],
        "fulfillmentStatus": fulfillment,
        "financialStatus": "refunded" if refund_amount else "paid",
        "isPseudo": False,
        "discounts": [],
        "orderItems": items,
    }


def _address(address: dict[str, Any]) -> dict[str, Any]:
    return {
        "address1": address["street1"],
        "address2": address.get("street2") or "",
        "city": address["city"],
        "regionCode": address["state"],
        "postcode": address["zip_code"],
        "countryCode": address["country_code"],
    }


def recorded_at(now: datetime | None = None) -> datetime:
    """A ``createDate`` inside the daemon's first poll window (an hour ago)."""
    return (now or datetime.now(UTC)) - timedelta(hours=1)
