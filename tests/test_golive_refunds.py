"""Go-live refunds: one immutable refund object per refund event, the same units never twice.

Through the daemon's production path: ReturnLogic sandbox -> bridge -> Optoro sandbox for the
order and the refunds ReturnLogic reports, and Optoro RMA -> bridge -> Kibo sandbox -> refund
confirmation -> Optoro sandbox for the refund the bridge confirms, over loopback with SQLite.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.kibo.client import reconciler_key
from adapters.returnlogic.orders import sync_for
from adapters.returnlogic.sandbox.data import refund_units
from bridge.app import build_runtime
from bridge.config import load_config
from bridge.domain import Rma
from bridge.engine import EngineSettings
from bridge.flows import ORDER as ORDER_ENTITY
from bridge.flows import ReturnEvent, ReturnEventKind, ReturnsFlows
from bridge.policy import Step
from bridge.ports import RMA_LIFECYCLE
from bridge.store import EffectState
from demo.scenarios import settle
from demo.world import (
    KIBO_TOKEN,
    OPTITURN_ID,
    SHOP,
    WEBHOOK_PASSWORD,
    WEBHOOK_USER,
    World,
    running_world,
)
from mappings.optoro import parse_rma
from mappings.returnlogic import TagRules, order_to_canonical, orders_page
from tests.daemon_process import until

FAST = EngineSettings(idle_poll=0.02, effect_lease=5.0)
ORDER = "GL-5001"
ADDRESS = {
    "name": "Pat Example",
    "address1": "1 Main St",
    "city": "Camp Hill",
    "regionCode": "PA",
    "postcode": "17011",
    "countryCode": "US",
}


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with running_world(tmp_path, [], shop_orders=1, settings=FAST) as w:
        w.route_kibo_notifications(SHOP)
        yield w


def rl_order(
    w: World,
    lines: dict[str, int],
    number: str = ORDER,
    *,
    currency: str = "USD",
    price: Decimal | int = 10,
) -> dict[str, Any]:
    """A shipped ReturnLogic order ``number`` with ``lines`` (line id -> quantity), ``price``
    (major units of ``currency``; $10) each."""
    assert w.returnlogic is not None
    variant = next(
        vid
        for vid, (_, v) in w.returnlogic.team().variants.items()
        if not str(v.get("sku", "")).startswith("GIFTCARD")
    )
    body = {
        "externalOrderId": f"ext-{number}",
        "orderNumber": number,
        "orderName": f"#{number}",
        "shopCurrencyCode": currency,
        "tags": [],
        "taxesIncluded": False,
        "totalPrice": price * sum(lines.values()),
        "fees": 0,
        "taxPrice": 0,
        "shippingPrice": 0,
        "refundAmount": 0,
        "customerEmail": "pat@example.com",
        "shippingAddress": ADDRESS,
        "billingAddress": ADDRESS,
        "fulfillmentStatus": "fulfilled",
        "financialStatus": "paid",
        "shippedAt": datetime.now(UTC).isoformat(),
        "orderItems": [
            {
                "externalOrderItemId": line_id,
                "quantity": qty,
                "isTaxable": False,
                "isGiftCard": False,
                "taxPerItem": 0,
                "price": price,
                "sku": f"SKU-{line_id}",
                "rlProductVariantId": variant,
            }
            for line_id, qty in lines.items()
        ],
    }
    return w.returnlogic.create_order(body)


def rl_refunds(w: World, order: dict[str, Any], units: dict[str, int]) -> None:
    """The shop refunds ``units`` (line id -> units) of ``order``; ReturnLogic shows it."""
    assert w.returnlogic is not None
    for item in order["orderItems"]:
        if item["externalOrderItemId"] in units:
            refund_units(order, item, units[item["externalOrderItemId"]])
    w.returnlogic.update_order(order["rlOrderId"], {"tags": ["refunded"]})


def rma(rma_id: str, units: list[tuple[str, str]], package: str = "TRANSIT") -> dict[str, Any]:
    """An Optoro RMA (guide vocabulary) returning one unit per ``(line id, package status)``
    of ``ORDER``, $10 each."""
    return {
        "rma_identifier": rma_id,
        "status": "CREATED",
        "created_at": "2026-01-27T23:25:09Z",
        "updated_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "items": [
            {
                "order_line_item_identifier": line_id,
                "order_identifier": ORDER,
                "exchange_order_identifier": None,
                "original_order_identifier": None,
                "return_reason": "Changed Mind",
                "is_exchange": False,
                "sku": f"SKU-{line_id}",
                "tracking_number": "9202390989984054340120",
                "package_tracking_status": status or package,
                "receiving_status": "PENDING",
                "refund_financials": {
                    "estimated_refund_amount_cents": 1000,
                    "optoro_refund_amount_cents": 0,
                    "shopper_refund_amount_cents": 1000,
                },
                "refund_type": "REFUND",
            }
            for line_id, status in units
        ],
        "return_method": "mail-back",
        "return_shipping_cost_cents": 0,
        "gift_refund_only": False,
    }


async def post_rma(w: World, body: dict[str, Any]) -> None:
    async with w.session.post(
        f"{w.url}/retailers/{SHOP}/optoro/rmas",
        data=json.dumps(body),
        headers={
            "Authorization": aiohttp.encode_basic_auth(WEBHOOK_USER, WEBHOOK_PASSWORD),
            "X-Optiturn-Id": OPTITURN_ID,
            "X-Optiturn-Api-Version": "3",
        },
    ) as resp:
        assert resp.status == 200, await resp.text()


async def poll(w: World) -> None:
    """One ReturnLogic poll, as the scheduler runs it; every record maps and applies."""
    report = await sync_for(w.runtime, SHOP).poll_once()
    assert report.quarantined == 0
    await settle(w)


def optoro_refunds(w: World) -> list[dict[str, Any]]:
    latest = w.optoro.latest(ORDER)
    assert latest is not None, "Optoro has not received the order"
    refunds: list[dict[str, Any]] = latest["refunds"]
    return refunds


def refunded_units(refunds: list[dict[str, Any]]) -> Counter[str]:
    units: Counter[str] = Counter()
    for refund in refunds:
        for line in refund["refund_line_items"]:
            units[line["order_item_identifier"]] += line["quantity"]
    return units


def every_refund_sent(w: World) -> dict[str, list[dict[str, Any]]]:
    """Refund id -> every version of it Optoro received (in order)."""
    seen: dict[str, list[dict[str, Any]]] = {}
    for version in w.optoro.orders.get(ORDER, []):
        for refund in version["refunds"]:
            versions = seen.setdefault(refund["identifier"], [])
            if not versions or versions[-1] != refund:
                versions.append(refund)
    return seen


async def assert_clean(w: World) -> None:
    assert await w.runtime.store.list_effects(EffectState.DEAD) == []
    assert [f.reason for f in await w.runtime.store.list_flags()] == []


async def test_a_returnlogic_refund_of_units_the_bridge_confirmed_is_not_sent_again(
    world: World,
) -> None:
    """Bridge first: the refund confirmed after the Kibo return, then ReturnLogic reports the
    shop's refund of the same units (line 101 has one unit: before the ledger, the merged
    snapshot raised a ValidationError out of the poll; line 102 below its limit: Optoro got
    two refunds for one unit). A later refund of other units is one new refund object."""
    w = world
    order = rl_order(w, {"101": 1, "102": 2})
    await poll(w)
    assert optoro_refunds(w) == []

    await post_rma(w, rma("GLRMA1", [("101", ""), ("102", "")]))
    await until(lambda: len(optoro_refunds(w)) == 1, 15, "the bridge's refund confirmation")
    await settle(w)
    [confirmed] = optoro_refunds(w)
    assert confirmed["rma_identifier"] == "GLRMA1"
    assert confirmed["total_refund_amount_cents"] == 2000
    assert refunded_units([confirmed]) == {"101": 1, "102": 1}
    assert len(w.kibo.find_returns(ORDER)) == 1

    # the shop processed Kibo's refund: ReturnLogic reports the same two units
    rl_refunds(w, order, {"101": 1, "102": 1})
    await poll(w)
    assert optoro_refunds(w) == [confirmed]  # the update Optoro gets adds no refund
    assert [i["quantity_refunded"] for i in w.optoro.latest(ORDER)["items"]] == [1, 1]

    # a refund outside any RMA: the second unit of 102, one new immutable refund object
    rl_refunds(w, order, {"102": 1})
    await poll(w)
    refunds = optoro_refunds(w)
    assert refunds[0] == confirmed
    assert len(refunds) == 2
    assert refunded_units(refunds[1:]) == {"102": 1}
    assert refunds[1]["total_refund_amount_cents"] == 1000
    assert refunds[1].get("rma_identifier") is None
    assert refunds[1]["identifier"] == f"returnlogic-order-{order['rlOrderId']}-refunds"
    assert all(len(v) == 1 for v in every_refund_sent(w).values()), "a refund object changed"
    assert [i["quantity_refunded"] for i in w.optoro.latest(ORDER)["items"]] == [1, 2]
    await assert_clean(w)


async def test_a_refund_returnlogic_reported_first_is_not_confirmed_again_by_the_bridge(
    world: World,
) -> None:
    """ReturnLogic first: the shop refunded a unit before the parcel was scanned; when the
    Kibo return is created the bridge confirms only the units nobody reported yet."""
    w = world
    order = rl_order(w, {"101": 1, "102": 2})
    await poll(w)
    await post_rma(w, rma("GLRMA2", [("101", "PRE_TRANSIT"), ("102", "PRE_TRANSIT")]))
    await settle(w)
    assert w.kibo.find_returns(ORDER) == []

    rl_refunds(w, order, {"101": 1})  # ReturnLogic's cumulative refund, id ...-refunds
    await poll(w)
    [reported] = optoro_refunds(w)
    assert refunded_units([reported]) == {"101": 1}
    assert reported.get("rma_identifier") is None

    await post_rma(w, rma("GLRMA2", [("101", ""), ("102", "")]))  # carrier scan
    await until(lambda: len(optoro_refunds(w)) == 2, 15, "the bridge's refund confirmation")
    await settle(w)
    refunds = optoro_refunds(w)
    assert refunds[0] == reported
    assert refunds[1]["rma_identifier"] == "GLRMA2"
    assert refunded_units(refunds[1:]) == {"102": 1}  # 101's unit was refunded already
    assert refunds[1]["total_refund_amount_cents"] == 1000
    assert len(w.kibo.find_returns(ORDER)) == 1

    # ReturnLogic's running total grows by the Kibo refund: nothing new
    rl_refunds(w, order, {"102": 1})
    await poll(w)
    assert optoro_refunds(w) == refunds
    assert refunded_units(refunds) == {"101": 1, "102": 1}
    assert all(len(v) == 1 for v in every_refund_sent(w).values()), "a refund object changed"
    await assert_clean(w)


async def test_an_order_whose_refunds_no_longer_fit_is_flagged_alone_and_the_page_goes_on(
    world: World,
) -> None:
    """The shop edits an order after the bridge confirmed a refund of its line 101 and the
    line is gone: that order is flagged and left out, the page's other orders still reach
    Optoro (before: the ValidationError failed the whole page, every re-scan)."""
    w = world
    assert w.returnlogic is not None
    order = rl_order(w, {"101": 1, "102": 2})
    other = rl_order(w, {"201": 1}, number="GL-5002")
    await poll(w)
    await post_rma(w, rma("GLRMA3", [("101", "")]))
    await until(lambda: len(optoro_refunds(w)) == 1, 15, "the bridge's refund confirmation")
    await settle(w)

    order["orderItems"] = [i for i in order["orderItems"] if i["externalOrderItemId"] != "101"]
    w.returnlogic.update_order(order["rlOrderId"], {"tags": ["edited"]})
    w.returnlogic.update_order(other["rlOrderId"], {"customerEmail": "sam@example.com"})
    sends = len(w.optoro.orders["GL-5002"])

    report = await sync_for(w.runtime, SHOP).poll_once()
    await settle(w)
    assert report.records == 2
    flags = await w.runtime.store.list_flags()
    assert [(f.entity_key, "101" in f.reason) for f in flags] == [(ORDER, True)]
    assert [i["identifier"] for i in w.optoro.latest(ORDER)["items"]] == ["101", "102"]
    assert len(w.optoro.orders["GL-5002"]) == sends + 1  # the page's other order went on
    assert w.optoro.latest("GL-5002")["customer"]["email"] == "sam@example.com"


# --- partial outcomes -----------------------------------------------------------------------


def partially_accepted(rma_id: str, dropped_off: set[str]) -> dict[str, Any]:
    """Optoro's "Partially Accepted RMA" (RMAs description v5) for lines 101 and 102 of
    ``ORDER``: the units of lines in ``dropped_off`` ACCEPTED/RECEIVED, the others
    NOT_DROPPED_OFF/NOT_RECEIVED."""
    body = rma(rma_id, [("101", ""), ("102", "")])
    body["return_method"] = "express-returns"
    body["bonus_credit_amount_cents"] = 0
    for item in body["items"]:
        item["upc"] = f"UPC-{item['order_line_item_identifier']}"
        arrived = item["order_line_item_identifier"] in dropped_off
        item["package_tracking_status"] = "ACCEPTED" if arrived else "NOT_DROPPED_OFF"
        item["receiving_status"] = "RECEIVED" if arrived else "NOT_RECEIVED"
    return body


def kibo_items(w: World) -> list[list[tuple[int, int]]]:
    return [
        sorted((i["orderItemID"], i["quantity"]) for i in r["item"])
        for r in w.kibo.find_returns(ORDER)
    ]


async def test_a_partially_accepted_rma_gets_a_return_and_refund_for_the_units_that_arrived(
    world: World,
) -> None:
    """Optoro's partially accepted RMA: the unit of 102 was accepted, 101's never dropped
    off. The Kibo return is created for 102's unit alone and the refund confirmed for it
    (before: no unit short of the step, no return, ever). When 101's unit turns up later it
    gets its own return and refund, once, however often the message repeats."""
    w = world
    rl_order(w, {"101": 1, "102": 1})
    await poll(w)

    await post_rma(w, partially_accepted("GLRMA4", {"102"}))
    await until(lambda: len(optoro_refunds(w)) == 1, 15, "the refund of the accepted unit")
    await settle(w)
    assert kibo_items(w) == [[(102, 1)]]
    [first] = optoro_refunds(w)
    assert (first["identifier"], first["rma_identifier"]) == ("RMA-GLRMA4", "GLRMA4")
    assert refunded_units([first]) == {"102": 1}
    assert first["total_refund_amount_cents"] == 1000

    late = partially_accepted("GLRMA4", {"101", "102"})
    for _ in range(2):
        await post_rma(w, late)
    await until(lambda: len(optoro_refunds(w)) == 2, 15, "the refund of the late unit")
    await settle(w)
    assert kibo_items(w) == [[(102, 1)], [(101, 1)]]
    refunds = optoro_refunds(w)
    assert refunds[0] == first
    assert (refunds[1]["identifier"], refunds[1]["rma_identifier"]) == ("RMA-GLRMA4-2", "GLRMA4")
    assert refunded_units(refunds[1:]) == {"101": 1}
    assert all(len(v) == 1 for v in every_refund_sent(w).values()), "a refund object changed"
    await assert_clean(w)


# --- property: no unit refunded twice across both refund sources, any interleaving ----------

PROPERTY_TOML = """
[server]
host = "127.0.0.1"
port = 0
[store]
url = "sqlite:///{db}"
[retailers.p]
name = "Property"
[retailers.p.optoro]
base_url = "http://127.0.0.1:9"
client_id = "p"
client_secret = "s3cret-value"
optiturn_id = "p-optiturn"
[retailers.p.optoro.inbound_auth]
kind = "basic"
username = "optoro"
password = "s3cret-value"
"""
LINES = {"1": 3, "2": 2}
RMAS = {"A": {"1": 1, "2": 1}, "B": {"1": 1}}
"""Each RMA's units (line -> units), distinct from each other and from the shop's refunds."""
SHOP_REFUNDS = {"S1": {"1": 1}, "S2": {"2": 1}}
"""Refunds the shop makes outside any RMA."""


def rl_record(refunded: Counter[str], version: int) -> dict[str, Any]:
    """The ReturnLogic order as ReturnLogic reports it: running totals of what the shop's
    payment system refunded ($10 a unit)."""
    return {
        "rlOrderId": 77,
        "orderNumber": "P-1",
        "externalOrderId": "e-p-1",
        "createDate": "2026-01-01T00:00:00Z",
        "updateDate": f"2026-01-02T00:00:{version:02d}Z",
        "shopCurrencyCode": "USD",
        "shippingPrice": 0,
        "fees": 0,
        "taxPrice": 0,
        "refundAmount": Decimal(10 * sum(refunded.values())),
        "taxesIncluded": False,
        "fulfillmentStatus": "fulfilled",
        "financialStatus": "paid",
        "shippedAt": "2026-01-01T10:00:00Z",
        "customerEmail": "pat@example.com",
        "shippingAddress": ADDRESS,
        "billingAddress": ADDRESS,
        "orderItems": [
            {
                "externalOrderItemId": line,
                "quantity": qty,
                "pricePerItem": Decimal(10),
                "refundQuantity": refunded[line],
                "sku": f"S{line}",
                "displayName": f"Item {line}",
            }
            for line, qty in LINES.items()
        ],
    }


def optoro_rma(rma_id: str) -> Rma:
    units = [(line, n) for line, count in RMAS[rma_id].items() for n in range(count)]
    body = rma(rma_id, [(line, "") for line, _ in units])
    for item in body["items"]:
        item["order_identifier"] = "P-1"
    return parse_rma(body)


async def play_interleaving(folder: Path, events: list[str]) -> None:
    path = folder / "bridge.toml"
    path.write_text(PROPERTY_TOML.format(db=folder / "bridge.db"))
    runtime = build_runtime(load_config(path))
    await runtime.store.open()
    try:
        flows: ReturnsFlows = runtime.service("p", RMA_LIFECYCLE)
        in_source: Counter[str] = Counter()  # what the shop's payments refunded
        truth: Counter[str] = Counter()  # units really refunded, by anyone
        counted: set[str] = set()
        reported: set[str] = set()
        sent: dict[str, dict[str, Any]] = {}
        version = 0

        def happened(name: str, units: dict[str, int]) -> None:
            if name not in counted:
                counted.add(name)
                truth.update(units)

        for event in ["snapshot", *events, "snapshot"]:  # the order is synced before RMAs
            kind, _, name = event.partition(":")
            if kind == "confirm":  # Kibo holds the return: the bridge confirms the refund
                key = f"p:{name}"
                async with runtime.store.transaction() as tx:
                    await flows.rmas.apply(tx, key, optoro_rma(name))
                    await flows.return_events.apply(
                        tx, key, ReturnEvent(ReturnEventKind.CREATED, f"k-{name}", Step.TRANSIT)
                    )
                happened(name, RMAS[name])
            elif kind == "snapshot":  # the order sync reads ReturnLogic
                version += 1
                record = orders_page(json.dumps([rl_record(in_source, version)], default=str))
                await flows.orders.publish([order_to_canonical(record[0], TagRules())])
            elif event not in reported:  # the shop's payment refunded units
                reported.add(event)
                units = RMAS[name] if kind == "processed" else SHOP_REFUNDS[name]
                in_source.update(units)
                happened(name, units)
            async with runtime.store.transaction() as tx:
                stored = await tx.get_entity(ORDER_ENTITY, "p:P-1")
            refunds = stored.data["refunds"] if stored is not None else []
            units: Counter[str] = Counter()
            for refund in refunds:
                assert sent.setdefault(refund["id"], refund) == refund, "a refund changed"
                for line in refund["lines"]:
                    units[line["order_line_id"]] += line["qty"]
            for line, qty in units.items():
                assert qty <= truth[line], f"line {line}: {qty} units refunded, {truth[line]} real"
        # every refund that happened has reached the source by now: all of it was sent
        if set(counted) >= {*RMAS, *SHOP_REFUNDS} and all(f"processed:{r}" in events for r in RMAS):
            assert units == truth
        assert [f.reason for f in await runtime.store.list_flags()] == []
    finally:
        await runtime.store.close()


EVENTS = [
    *(f"confirm:{r}" for r in RMAS),
    *(f"processed:{r}" for r in RMAS),
    *(f"shop:{s}" for s in SHOP_REFUNDS),
    "snapshot",
    "snapshot",
    "snapshot",
]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(events=st.lists(st.sampled_from(EVENTS), max_size=12))
def test_no_unit_is_ever_refunded_twice_across_both_refund_sources(
    tmp_path_factory: pytest.TempPathFactory, events: list[str]
) -> None:
    """Any interleaving (and repetition) of the bridge's confirmations, the shop's payment
    refunds of those RMAs, refunds outside any RMA and order syncs: the refunds the order
    carries to Optoro never cover more units of a line than were really refunded, no refund
    object ever changes, and once everything reached ReturnLogic, everything was sent."""
    asyncio.run(play_interleaving(tmp_path_factory.mktemp("interleaving"), events))


# --- the refund follows what Kibo refunded --------------------------------------------------


@pytest.mark.parametrize("told_by", ["notification", "reconciliation"])
async def test_the_refund_confirmed_on_clearing_follows_what_kibo_accepted_and_refunded(
    tmp_path: Path, told_by: str
) -> None:
    """Policy ``on_return_cleared``; Kibo processes the return accepting 102's unit and
    rejecting 101's (Process Return, partial acceptance). Get Return says so (its items'
    ``quantityAccepted`` and subtotals): the refund Optoro receives is for 102's unit and
    Kibo's amount (plus the share Optoro funds), not the estimate of both (before: 2 units,
    2000 cents). Kibo tells it by its ``return_cleared`` notification (no items: the bridge
    reads the return back) or, that notification lost, by the reconciliation's Get Return."""
    async with running_world(
        tmp_path,
        [],
        shop_orders=1,
        settings=FAST,
        shop_policy={"confirm_refund": "on_return_cleared"},
    ) as w:
        w.route_kibo_notifications(SHOP)
        rl_order(w, {"101": 1, "102": 1})
        await poll(w)
        body = rma("GLRMA5", [("101", ""), ("102", "")])
        body["items"][1]["refund_financials"] = {  # Optoro funds 4.00 of 102's refund
            "estimated_refund_amount_cents": 1000,
            "optoro_refund_amount_cents": 400,
            "shopper_refund_amount_cents": 600,
        }
        await post_rma(w, body)
        await until(lambda: w.kibo.find_returns(ORDER), 15, "the Kibo return")
        await settle(w)
        [created] = w.kibo.find_returns(ORDER)
        assert optoro_refunds(w) == []

        if told_by == "reconciliation":
            w.kibo.configure(drop_notifications=True)  # the cleared notification is lost
        async with w.session.post(
            w.kibo.process_url,
            json={
                "returnID": created["returnID"],
                "acceptedItemQuantity": [
                    {"orderItemID": 102, "quantityAccepted": 1},
                    {"orderItemID": 101, "quantityAccepted": 0},
                ],
            },
            headers={"Authorization": f"Bearer {KIBO_TOKEN}"},
        ) as resp:
            assert resp.status == 200, await resp.text()
        if told_by == "reconciliation":
            reconciler = w.runtime.find_shared(reconciler_key(SHOP))
            assert reconciler is not None
            assert await reconciler.run_once() >= 1  # what the scheduled reconciliation runs
        await until(lambda: optoro_refunds(w), 15, "the refund confirmation")
        await settle(w)

        [refund] = optoro_refunds(w)
        assert refund["rma_identifier"] == "GLRMA5"
        assert refunded_units([refund]) == {"102": 1}
        # Kibo refunded the shopper's 6.00 of it; Optoro's 4.00 share stays in the refund
        assert [i["returnSubtotal"] for i in created["item"] if i["orderItemID"] == 102] == [6]
        assert refund["total_refund_amount_cents"] == 1000
        await assert_clean(w)
