"""Go-live: Kibo amounts in the currency's ISO 4217 minor units (JPY 0 decimals, KWD 3).

Through the daemon's production path over loopback with SQLite: a ReturnLogic order in the
retailer's currency -> bridge -> Optoro; Optoro's RMA (amounts in minor units, no currency on
its wire) -> bridge -> Kibo sandbox, whose Create Return must carry the amounts in the order's
currency (the order snapshot's); Kibo processes the return (Process Return, a reduction
override in that currency) and the refund confirmed back to Optoro follows Kibo's Get Return
amount read in that currency.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from adapters.kibo.client import reconciler_key
from bridge.errors import MappingError
from bridge.store import EffectState
from demo.scenarios import settle
from demo.world import DEMO_LINE_IDS, KIBO_TOKEN, SHOP, World, running_world
from mappings._json import dumps
from mappings.kibo import return_response_to_ref
from tests.daemon_process import until
from tests.test_golive_refunds import (
    FAST,
    ORDER,
    assert_clean,
    optoro_refunds,
    poll,
    post_rma,
    refunded_units,
    rl_order,
    rma,
)


@dataclass(frozen=True)
class Money:
    """One retailer's currency and the amounts of its return, in minor units and as Kibo's
    major-unit text."""

    currency: str
    unit_price: Decimal
    """ReturnLogic's price of one unit (major units)."""
    unit_minor: int
    """The same in minor units: Optoro's ``*_cents`` of one unit."""
    provider_minor: int
    """Optoro's share of the second unit's refund (instant refund it funds)."""
    shopper_text: str
    """The second unit's ``returnSubtotal`` as Kibo must record it."""
    total_text: str
    """The return's ``returnTotal`` as Kibo must record it."""
    reduction: str
    """The restocking fee Kibo's operator deducts when processing (major units)."""
    refunded_minor: int
    """What Kibo then refunded of the accepted unit: its subtotal minus the reduction."""


JPY = Money("JPY", Decimal(1800), 1800, 300, "1500", "3300", "200", 1300)
KWD = Money("KWD", Decimal("12.345"), 12345, 2345, "10.000", "22.345", "1.250", 8750)


def rma_in(money: Money, rma_id: str) -> dict[str, Any]:
    """The RMA of both units, amounts in ``money``'s minor units (Optoro's ``_cents``)."""
    body = rma(rma_id, [("101", ""), ("102", "")])
    body["items"][0]["refund_financials"] = {
        "estimated_refund_amount_cents": money.unit_minor,
        "optoro_refund_amount_cents": 0,
        "shopper_refund_amount_cents": money.unit_minor,
    }
    body["items"][1]["refund_financials"] = {
        "estimated_refund_amount_cents": money.unit_minor,
        "optoro_refund_amount_cents": money.provider_minor,
        "shopper_refund_amount_cents": money.unit_minor - money.provider_minor,
    }
    return body


async def process_in_kibo(
    w: World, return_id: int, accepted: dict[int, int], reduction: Decimal
) -> None:
    """Kibo's operator processes the return: ``accepted`` units per ``orderItemID``, with a
    ``returnReductionOverride`` of ``reduction`` (the Kibo sandbox's process endpoint)."""
    async with w.session.post(
        w.kibo.process_url,
        data=dumps(
            {
                "returnID": return_id,
                "acceptedItemQuantity": [
                    {"orderItemID": item, "quantityAccepted": qty} for item, qty in accepted.items()
                ],
                "returnReductionOverride": reduction,
            }
        ),
        headers={"Authorization": f"Bearer {KIBO_TOKEN}", "Content-Type": "application/json"},
    ) as resp:
        assert resp.status == 200, await resp.text()


@pytest.mark.parametrize("told_by", ["notification", "reconciliation"])
@pytest.mark.parametrize("money", [JPY, KWD], ids=lambda m: m.currency)
async def test_kibo_amounts_and_the_refund_it_confirms_are_in_the_orders_currency(
    tmp_path: Path, money: Money, told_by: str
) -> None:
    """Before: the Kibo mapping assumed two decimals, so 1800 yen reached Kibo as 18.00 (and
    12.345 KWD as 123.45), and Kibo's amounts were read back as two-decimal cents (read as
    USD alone, Kibo's 1500 yen less 200 became 130000 "cents"). Kibo tells the clearing by
    its notification (the bridge reads the return back) or, that notification lost, by the
    reconciliation's Get Return: both read in the order's currency."""
    async with running_world(
        tmp_path,
        [],
        shop_orders=1,
        settings=FAST,
        shop_policy={"confirm_refund": "on_return_cleared"},
    ) as w:
        w.route_kibo_notifications(SHOP)
        rl_order(w, {"101": 1, "102": 1}, currency=money.currency, price=money.unit_price)
        await poll(w)
        latest = w.optoro.latest(ORDER)
        assert latest is not None
        assert latest["currency"] == money.currency

        await post_rma(w, rma_in(money, f"GLM{money.currency}"))
        await until(lambda: w.kibo.find_returns(ORDER), 15, "the Kibo return")
        await settle(w)
        [create] = [r for r in w.kibo.create_requests() if r.outcome == "created"]
        sent = {item["orderItemID"]: item for item in create.body["item"]}
        # the sandbox keeps the body's numbers as sent (Decimal text, scale included)
        assert str(sent[101]["returnSubtotal"]) == str(money.unit_price)
        assert str(sent[102]["returnSubtotal"]) == money.shopper_text
        assert str(create.body["returnTotal"]) == money.total_text
        [created] = w.kibo.find_returns(ORDER)
        assert optoro_refunds(w) == []

        if told_by == "reconciliation":
            w.kibo.configure(drop_notifications=True)  # the cleared notification is lost
        await process_in_kibo(w, created["returnID"], {102: 1, 101: 0}, Decimal(money.reduction))
        if told_by == "reconciliation":
            reconciler = w.runtime.find_shared(reconciler_key(SHOP))
            assert reconciler is not None
            assert await reconciler.run_once() >= 1  # what the scheduled reconciliation runs
        await until(lambda: optoro_refunds(w), 15, "the refund confirmation")
        await settle(w)

        [refund] = optoro_refunds(w)
        assert refunded_units([refund]) == {"102": 1}
        # what Kibo refunded of 102 (its subtotal less the reduction) plus Optoro's share
        assert refund["total_refund_amount_cents"] == money.refunded_minor + money.provider_minor
        await assert_clean(w)


async def test_a_kibo_amount_finer_than_the_currency_is_refused_naming_the_field(
    tmp_path: Path,
) -> None:
    """Kibo answers a yen return with a reduction of 0.5 JPY (finer than the yen): the Get
    Return read refuses it, naming ``returnReductionTotal``, and flags the return for an
    operator; only that read fails -- the cleared notification still stands and the daemon
    goes on. Before: read as two-decimal cents, 0.5 became a silent 50-unit deduction."""
    async with running_world(
        tmp_path,
        [],
        shop_orders=1,
        settings=FAST,
        shop_policy={"confirm_refund": "on_return_cleared"},
    ) as w:
        w.route_kibo_notifications(SHOP)
        rl_order(w, {"101": 1, "102": 1}, currency="JPY", price=JPY.unit_price)
        await poll(w)
        await post_rma(w, rma_in(JPY, "GLMFINE"))
        await until(lambda: w.kibo.find_returns(ORDER), 15, "the Kibo return")
        await settle(w)
        [created] = w.kibo.find_returns(ORDER)
        await process_in_kibo(w, created["returnID"], {102: 1, 101: 1}, Decimal("0.5"))
        await until(lambda: optoro_refunds(w), 15, "the refund confirmation")
        await settle(w)

        flags = [f.reason for f in await w.runtime.store.list_flags()]
        assert len(flags) == 1, flags
        assert "returnReductionTotal" in flags[0]
        assert "JPY" in flags[0]
        assert await w.runtime.store.list_effects(EffectState.DEAD) == []


async def test_the_orders_currency_wins_and_kibo_currency_covers_orders_never_synced(
    tmp_path: Path,
) -> None:
    """``kibo.currency = "KWD"``: the return of a USD order the bridge synced is still in
    dollars (the snapshot's currency wins), the return of an order it never synced is in
    the configured KWD, three decimals. Before: both were written with two decimals."""
    async with running_world(
        tmp_path,
        [],
        shop_orders=1,
        settings=FAST,
        kibo_lines=DEMO_LINE_IDS + 'currency = "KWD"\n',
    ) as w:
        rl_order(w, {"101": 1})
        await poll(w)
        await post_rma(w, rma("GLMUSD", [("101", "")]))
        unsynced = rma("GLMKWD", [("201", "")])
        unsynced["items"][0]["order_identifier"] = "GL-NEVER-SYNCED"
        unsynced["items"][0]["refund_financials"] = {
            "estimated_refund_amount_cents": KWD.unit_minor,
            "optoro_refund_amount_cents": 0,
            "shopper_refund_amount_cents": KWD.unit_minor,
        }
        await post_rma(w, unsynced)
        await until(
            lambda: w.kibo.find_returns(ORDER) and w.kibo.find_returns("GL-NEVER-SYNCED"),
            15,
            "both Kibo returns",
        )
        await settle(w)
        sent = {
            r.body["externalOrderID"]: r.body
            for r in w.kibo.create_requests()
            if r.outcome == "created"
        }
        assert str(sent[ORDER]["returnTotal"]) == "10.00"
        assert str(sent["GL-NEVER-SYNCED"]["returnTotal"]) == str(KWD.unit_price)
        assert str(sent["GL-NEVER-SYNCED"]["item"][0]["returnSubtotal"]) == str(KWD.unit_price)


async def test_a_lost_create_answer_settled_on_a_return_with_a_finer_amount_is_not_lost(
    tmp_path: Path,
) -> None:
    """The create's answer is lost (Kibo stalls past the bridge's timeout; notifications
    lost too) and, meanwhile, Kibo processes the return with a 0.5 JPY reduction. The bridge
    settles the create by Get Return on its returnID: the create is delivered -- one return,
    no dead letter -- the unreadable amount is flagged naming ``returnReductionTotal``, and the
    units Kibo accepted are confirmed to Optoro."""
    async with running_world(
        tmp_path,
        [],
        shop_orders=1,
        settings=FAST,
        shop_policy={"confirm_refund": "on_return_cleared"},
    ) as w:
        w.route_kibo_notifications(SHOP)
        w.kibo.configure(
            timeout_after_commit_next=1,
            commit_fault="stall",
            stall_seconds=30.0,
            drop_notifications=True,
        )
        rl_order(w, {"101": 1, "102": 1}, currency="JPY", price=JPY.unit_price)
        await poll(w)
        await post_rma(w, rma_in(JPY, "GLMLOST"))
        await until(lambda: w.kibo.find_returns(ORDER), 15, "the Kibo return")
        [created] = w.kibo.find_returns(ORDER)
        await process_in_kibo(w, created["returnID"], {102: 1, 101: 0}, Decimal("0.5"))
        await until(lambda: optoro_refunds(w), 30, "the refund confirmation")
        await settle(w)

        assert len(w.kibo.find_returns()) == 1
        assert [r.outcome for r in w.kibo.create_requests()] == ["created_then_stalled"]
        assert await w.runtime.store.list_effects(EffectState.DEAD) == []
        flags = [f.reason for f in await w.runtime.store.list_flags()]
        assert len(flags) == 1, flags
        assert "returnReductionTotal" in flags[0]
        [refund] = optoro_refunds(w)
        assert refunded_units([refund]) == {"102": 1}


def cleared_return(**amounts: Any) -> dict[str, Any]:
    """A cleared Kibo return of one fully accepted two-unit item, with ``amounts``."""
    item = {"orderItemID": 7, "quantity": 2, "quantityAccepted": 2, "status": "ACCEPTED"}
    if "returnSubtotal" in amounts:
        item["returnSubtotal"] = amounts.pop("returnSubtotal")
    return {"returnID": 1, "status": "CLOSED", "clearedTime": "2026-01-01T00:00:00Z"} | {
        "item": [item],
        **amounts,
    }


@pytest.mark.parametrize(
    ("currency", "field", "amounts"),
    [
        ("JPY", "item[0].returnSubtotal", {"returnSubtotal": Decimal("1800.5")}),
        ("JPY", "returnTotal", {"returnTotal": Decimal("18.5")}),
        (
            "KWD",
            "returnReductionTotal",
            {"returnTotal": Decimal("2"), "returnReductionTotal": Decimal("0.0005")},
        ),
        ("USD", "returnTotal", {"returnTotal": Decimal("10.001")}),
    ],
)
def test_every_amount_kibo_answers_is_whole_minor_units_of_the_currency(
    currency: str, field: str, amounts: dict[str, Any]
) -> None:
    body = dumps(cleared_return(**amounts))
    with pytest.raises(MappingError) as refused:
        return_response_to_ref(body, currency=currency)
    assert refused.value.field == field
    assert return_response_to_ref(body, currency=currency, read_amounts=False).accepted == ((7, 2),)


@pytest.mark.parametrize(
    ("currency", "amounts", "refunded"),
    [
        ("JPY", {"returnSubtotal": Decimal("3600"), "returnReductionTotal": 200}, 3400),
        ("KWD", {"returnTotal": Decimal("24.690"), "returnReductionTotal": "1.25"}, 23440),
        ("USD", {"returnSubtotal": Decimal("20.00")}, 2000),
    ],
)
def test_kibo_amounts_are_read_in_the_currencys_minor_units(
    currency: str, amounts: dict[str, Any], refunded: int
) -> None:
    ref = return_response_to_ref(dumps(cleared_return(**amounts)), currency=currency)
    assert ref.refunded_cents == refunded
