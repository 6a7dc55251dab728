"""Go-live: the ReturnLogic order rules (status, cancellations, refunds) over every combination
ReturnLogic's documentation allows, and what Optoro then receives.

``returnlogic-api.txt`` allows, per order, ``fulfillmentStatus`` fulfilled / partial / restocked
/ null and ``financialStatus`` authorized / paid / partially_paid / pending / refunded / voided /
ThirdParty (or none), ``shippedAt`` set or not; per line, ``fulfillmentStatus`` the same three or
null, and numbers ``quantity``, ``fulfillableQuantity`` (units not yet fulfilled) and
``refundQuantity``. Every such record maps to an order Optoro's description accepts.
"""

from __future__ import annotations

import itertools
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.optoro.schemas import validate
from bridge.domain import OrderStatus
from mappings.optoro import rpo_request
from mappings.optoro.orders import order_to_rpo
from mappings.returnlogic import TagRules, line_quantities, map_order, orders_page

SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "returnlogic-samples"
RULES = TagRules()

FULFILLMENT = (None, "fulfilled", "partial", "restocked")
FINANCIAL = (None, "authorized", "paid", "partially_paid", "pending", "refunded", "voided")
FINANCIAL += ("ThirdParty",)


def sample() -> dict[str, Any]:
    order: dict[str, Any] = orders_page((SAMPLES / "orders-list-response.json").read_bytes())[0]
    order["shippingAddress"]["name"] = order["billingAddress"]["name"] = "Pat Example"
    return order


@st.composite
def rl_lines(draw: st.DrawFn) -> dict[str, Any]:
    qty = draw(st.integers(1, 6))
    fulfillable = draw(st.none() | st.integers(0, qty))
    return {
        "quantity": qty,
        "fulfillableQuantity": fulfillable,
        "refundQuantity": draw(st.integers(0, qty)),
        "fulfillmentStatus": draw(st.sampled_from(FULFILLMENT)),
    }


@st.composite
def rl_orders(draw: st.DrawFn) -> dict[str, Any]:
    order = sample()
    template = order["orderItems"][0]
    lines = draw(st.lists(rl_lines(), min_size=1, max_size=3))
    order["orderItems"] = [
        {**template, **line, "rlOrderItemId": index + 1, "externalOrderItemId": f"L{index}"}
        for index, line in enumerate(lines)
    ]
    order["fulfillmentStatus"] = draw(st.sampled_from(FULFILLMENT))
    order["financialStatus"] = draw(st.sampled_from(FINANCIAL))
    if not draw(st.booleans()):
        order["shippedAt"] = None
    if draw(st.booleans()):
        order["canceledAt"] = "2024-10-08T00:00:00Z"
    units = sum(line["quantity"] for line in lines)
    order["refundAmount"] = Decimal(draw(st.integers(0, units * 2100))) / 100
    return order


@settings(max_examples=400, deadline=None)
@given(rl_orders())
def test_every_documented_combination_maps_to_an_order_optoro_accepts(wire: dict[str, Any]) -> None:
    mapped = map_order(wire, RULES)
    order = mapped.order
    for line, item in zip(order.lines, wire["orderItems"], strict=True):
        assert line.qty_shipped + line.qty_canceled <= line.qty
        assert line.qty_refunded <= line.qty_shipped  # Optoro: refunded <= shipped
        word = item["fulfillmentStatus"] or wire["fulfillmentStatus"]
        if word not in ("fulfilled", "partial") and not (word == "restocked" and wire["shippedAt"]):
            assert (line.qty_shipped, line.qty_refunded) == (0, 0)  # never an Optoro refund
            assert line.qty_canceled >= min(item["refundQuantity"], line.qty)
        if word == "partial" and item["fulfillableQuantity"] is not None:
            closed = line.qty - item["fulfillableQuantity"]
            assert line.qty_shipped == (1 if closed else 0) + max(
                closed - 1 - item["refundQuantity"], 0
            )
    if wire.get("canceledAt") or wire["financialStatus"] == "voided":
        assert all(line.qty_shipped + line.qty_canceled == line.qty for line in order.lines)

    lines = order.lines
    if all(line.qty_canceled == line.qty for line in lines):
        assert order.status is OrderStatus.CANCELED
    elif all(line.qty_shipped + line.qty_canceled == line.qty for line in lines):
        assert order.status is OrderStatus.SHIPPED
    else:
        assert order.status is OrderStatus.CREATED

    for refund in order.refunds:
        assert refund.total_cents <= 100 * wire["refundAmount"]
        assert {(r.order_line_id, r.qty) for r in refund.lines} == {
            (line.id, line.qty_refunded) for line in lines if line.qty_refunded
        }
    # never held back: Optoro's description accepts the order as mapped
    wire_order = order_to_rpo(order)
    assert validate("rpo_request", rpo_request([order])) == []
    if not any(line.qty_shipped for line in lines):
        assert wire_order["total_amount_cents"] == 0


def test_every_documented_word_combination_is_sent() -> None:
    """Exhaustively: every order/line fulfillmentStatus, financialStatus, shippedAt and cancel
    date, with quantities around the edges, maps to an order Optoro accepts, and the status
    follows the lines."""
    base = sample()
    template = base["orderItems"][0]
    seen: set[OrderStatus] = set()
    combos = 0
    for order_word, financial, line_word, shipped, cancel_dated in itertools.product(
        FULFILLMENT, FINANCIAL, FULFILLMENT, (True, False), (True, False)
    ):
        for fulfillable, refunded in itertools.product((None, 0, 1, 3), (0, 1, 3)):
            wire = {
                **base,
                "fulfillmentStatus": order_word,
                "financialStatus": financial,
                "shippedAt": base["shippedAt"] if shipped else None,
                "orderItems": [
                    {
                        **template,
                        "quantity": 3,
                        "fulfillmentStatus": line_word,
                        "fulfillableQuantity": fulfillable,
                        "refundQuantity": refunded,
                    }
                ],
            }
            if cancel_dated:
                wire["canceledAt"] = "2024-10-08T00:00:00Z"
            order = map_order(wire, RULES).order
            (line,) = order.lines
            if line.qty_canceled == line.qty:
                assert order.status is OrderStatus.CANCELED
            elif line.qty_shipped + line.qty_canceled == line.qty:
                assert order.status is OrderStatus.SHIPPED
            else:
                assert order.status is OrderStatus.CREATED
            assert line.qty_refunded <= line.qty_shipped
            order_to_rpo(order)  # raises MappingError if Optoro's description is not met
            seen.add(order.status)
            combos += 1
    assert combos == 4 * 8 * 4 * 2 * 2 * 12
    assert seen == set(OrderStatus)


@settings(max_examples=300, deadline=None)
@given(
    word=st.sampled_from(FULFILLMENT),
    qty=st.integers(1, 8),
    data=st.data(),
    canceled=st.booleans(),
    shipped_at=st.booleans(),
)
def test_line_rule_accounts_for_every_unit(
    word: str | None, qty: int, data: st.DataObject, canceled: bool, shipped_at: bool
) -> None:
    fulfillable = data.draw(st.none() | st.integers(0, qty))
    refunded = data.draw(st.integers(0, qty))
    q = line_quantities(
        word, qty, fulfillable, refunded, order_canceled=canceled, order_shipped=shipped_at
    )
    assert min(q.shipped, q.canceled) >= 0
    assert q.shipped + q.canceled <= qty
    assert 0 <= q.refunded <= q.shipped
    assert q.canceled_refunded <= refunded
    # every refunded unit is a cancellation or an Optoro refund, or a doubt says why not
    if q.canceled_refunded + q.refunded != refunded:
        assert q.doubts


@pytest.mark.parametrize(
    ("word", "qty", "fulfillable", "refunded", "expected"),
    [
        # (shipped, canceled, refunded-for-Optoro)
        ("fulfilled", 4, 0, 0, (4, 0, 0)),
        ("fulfilled", 4, 0, 2, (4, 0, 2)),  # refunds of a fulfilled line are returns
        ("partial", 4, 3, 0, (1, 0, 0)),
        ("partial", 4, 0, 3, (1, 3, 0)),  # guide 08: 1 shipped, 3 canceled (refunded, unshipped)
        ("partial", 4, 0, 4, (1, 3, 1)),  # ... and later the shipped unit returned and refunded
        ("partial", 4, 1, 2, (1, 2, 0)),
        (None, 4, 4, 0, (0, 0, 0)),  # not shipped yet
        (None, 4, 0, 4, (0, 4, 0)),  # guide 07: canceled before shipment, as Shopify records it
        (None, 4, 1, 3, (0, 3, 0)),
        ("restocked", 4, 0, 4, (0, 4, 0)),
    ],
)
def test_line_rule_table(
    word: str | None,
    qty: int,
    fulfillable: int,
    refunded: int,
    expected: tuple[int, int, int],
) -> None:
    q = line_quantities(word, qty, fulfillable, refunded)
    assert (q.shipped, q.canceled, q.refunded) == expected
    assert q.doubts == ()


@pytest.mark.parametrize(
    ("lines", "financial", "status"),
    [
        # (fulfillmentStatus, quantity, fulfillableQuantity, refundQuantity) per line
        ([("fulfilled", 4, 0, 0), (None, 3, 3, 0)], "paid", OrderStatus.CREATED),  # guide 02-01
        ([("fulfilled", 4, 0, 0), ("fulfilled", 3, 0, 0)], "paid", OrderStatus.SHIPPED),
        ([("partial", 4, 0, 3)], "paid", OrderStatus.SHIPPED),  # guide 08
        ([(None, 4, 0, 4)], "refunded", OrderStatus.CANCELED),  # guide 07
        ([(None, 4, 4, 0)], "voided", OrderStatus.CANCELED),
        ([("restocked", 4, 0, 0)], "refunded", OrderStatus.CANCELED),
        ([("partial", 4, 2, 0)], "paid", OrderStatus.CREATED),  # partial is not Shipped
        ([("fulfilled", 2, 0, 0), (None, 2, 0, 2)], "paid", OrderStatus.SHIPPED),
    ],
)
def test_status_from_line_quantities(
    lines: list[tuple[str | None, int, int, int]], financial: str, status: OrderStatus
) -> None:
    wire = sample()
    template = wire["orderItems"][0]
    wire["orderItems"] = [
        {
            **template,
            "rlOrderItemId": i,
            "externalOrderItemId": f"L{i}",
            "fulfillmentStatus": word,
            "quantity": qty,
            "fulfillableQuantity": fulfillable,
            "refundQuantity": refunded,
        }
        for i, (word, qty, fulfillable, refunded) in enumerate(lines)
    ]
    words = {word for word, *_ in lines}
    wire["fulfillmentStatus"] = "partial" if len(words) > 1 else lines[0][0]
    wire["financialStatus"] = financial
    if not words & {"fulfilled", "partial"}:
        wire["shippedAt"] = None
    mapped = map_order(wire, RULES)
    assert mapped.order.status is status
    assert mapped.doubts == ()


def test_canceled_units_refunded_are_no_optoro_refund() -> None:
    """Guide 08 as ReturnLogic data: 3 of 4 units canceled (refunded, never shipped); their
    money is in refundAmount, yet Optoro receives no refund (none has an RMA or a return)."""
    wire = sample()
    item = wire["orderItems"][0]
    item.update(
        quantity=4,
        fulfillableQuantity=0,
        refundQuantity=3,
        fulfillmentStatus="partial",
        pricePerItem=Decimal(128),
        totalDiscount=0,
        totalTax=Decimal("40.96"),
    )
    wire["refundAmount"] = Decimal("414.72")  # 3 x 128 + 3/4 of the tax
    order = map_order(wire, RULES).order
    assert order.refunds == ()
    # one of them returned later: Optoro gets a refund of that unit, for its money only
    item["refundQuantity"] = 4
    wire["refundAmount"] = Decimal("552.96")  # + 128 + 10.24
    order = map_order(wire, RULES).order
    (refund,) = order.refunds
    assert [(r.order_line_id, r.qty) for r in refund.lines] == [(order.lines[0].id, 1)]
    assert refund.total_cents == 13824
