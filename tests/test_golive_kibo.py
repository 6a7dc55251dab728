"""Kibo returns that Kibo accepts for real orders (issue 11, part D).

Every return of the guide, Optoro RMA -> bridge -> Kibo sandbox, with the line crosswalk
imported by the operator's command (``returns-bridge crosswalk import``, run as a process)
and the Kibo sandbox knowing the orders: it refuses an ``orderItemID`` that is not an item
of the order, as a tenant does. The crosswalk filled from the ReturnLogic order flow;
dead letters of unresolvable lines replayed after the import; ``returnLocation``,
``returnReductionTotal`` and ``orderID`` from what the documents give; ReturnLogic exchange
and warranty RMAs that are not refunds.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapters.kibo.crosswalk import CROSSWALK
from adapters.optoro.sandbox import BasicAuth, ScenarioPlayer, load_scenarios
from adapters.optoro.sandbox.scenarios import Scenario, Step
from bridge.domain import RefundType, ReturnMethod, Rma, RmaStatus, RmaUnit
from bridge.errors import MappingError
from bridge.policy import ConfirmRefund, reached
from bridge.ports import RMA_LIFECYCLE
from bridge.store import EffectState
from demo.scenarios import refund_aware_diff, settle
from demo.world import (
    ENV,
    OPTITURN_ID,
    SHOP,
    WEBHOOK_PASSWORD,
    WEBHOOK_USER,
    World,
    running_world,
    scenario_retailer,
)
from mappings.kibo import rma_to_kibo_returns
from mappings.kibo.crosswalk import CrosswalkRow, crosswalk_csv, parse_crosswalk_csv
from mappings.optoro import parse_rma, parse_rpo_request
from tests.test_returnlogic_rmas import World as RlWorld
from tests.test_returnlogic_rmas import shipped_orders
from tests.test_returnlogic_rmas import world as world

SCENARIOS = load_scenarios()
WITH_RMAS = [s for s in SCENARIOS if any(step.path == "/rmas" for step in s.steps)]
RMA_STEPS = 61
"""POST RMA steps in the guide (index.json)."""
LOCATION = 7
CROSSWALK_CONFIG = f"default_return_location = {LOCATION}\n"
"""The default line resolution (``crosswalk``), every return at one Kibo location."""


# --- helpers ---------------------------------------------------------------------------------


async def wait_for(condition: Callable[[], Awaitable[bool]], within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not await condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """``returns-bridge ARGS`` as the operator runs it, beside the running daemon."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "bridge", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **ENV},
        check=False,
    )


async def return_one_line_to_kibo(
    world: World, order: dict[str, Any], line: dict[str, Any], rma_id: str
) -> None:
    """Optoro's refunded RMA ``rma_id`` for one unit of ReturnLogic ``order``'s ``line`` (the
    guide's first RMA, re-addressed), posted to the shop's RMA route; returns once the Kibo
    sandbox holds a return for the order."""
    message = json.loads(json.dumps(SCENARIOS[0].steps[1].request))
    message["rma_identifier"] = rma_id
    message["status"] = "REFUNDED"
    message["items"] = message["items"][:1]
    message["items"][0].update(
        order_identifier=order["orderNumber"],
        order_line_item_identifier=line["externalOrderItemId"],
        sku=line["sku"],
        package_tracking_status="DELIVERED",
        receiving_status="RECEIVED",
    )
    world.route_kibo_notifications(SHOP)
    async with world.session.post(
        f"{world.url}/retailers/{SHOP}/optoro/rmas",
        data=json.dumps(message),
        headers={
            "X-Optiturn-Id": OPTITURN_ID,
            "Authorization": aiohttp.encode_basic_auth(WEBHOOK_USER, WEBHOOK_PASSWORD),
        },
    ) as resp:
        assert resp.status == 200, await resp.text()

    async def created() -> bool:
        return bool(world.kibo.find_returns(order["orderNumber"]))

    await wait_for(created)


def rma_steps(scenario: Scenario) -> list[Rma]:
    return [parse_rma(step.request) for step in scenario.steps if step.path == "/rmas"]


def exchanged_into(scenario: Scenario) -> dict[str, tuple[str, str]]:
    """Exchange order -> the original (order, line) an RMA of the guide exchanged into it."""
    found: dict[str, tuple[str, str]] = {}
    for rma in rma_steps(scenario):
        for unit in rma.units:
            if unit.exchange_order_id:
                found[unit.exchange_order_id] = (unit.order_id, unit.order_line_id)
    return found


def kibo_ids(scenario: Scenario) -> tuple[dict[tuple[str, str], tuple[int, int]], dict[str, int]]:
    """Made-up Kibo ids of the guide's forward orders (not of exchange orders, whose returns
    must resolve through the original line): ``(order, line) -> (orderItemID, quantity)``
    and ``order -> orderID``. Never equal to the guide's line ids."""
    exchange_orders = set(exchanged_into(scenario))
    items: dict[tuple[str, str], tuple[int, int]] = {}
    orders: dict[str, int] = {}
    for step in scenario.steps:
        for order in step.rpo_orders():
            if order["identifier"] in exchange_orders:
                continue
            number = orders.setdefault(order["identifier"], 880_001 + len(orders))
            for i, item in enumerate(order["items"]):
                items.setdefault(
                    (order["identifier"], item["identifier"]),
                    (number * 100 + i, item["quantity"]),
                )
    return items, orders


def write_crosswalk(path: Path, scenario: Scenario) -> Path:
    items, orders = kibo_ids(scenario)
    rows = ["order_id,line_id,order_item_id,kibo_order_id"]
    rows += [f"{o},{line},{item},{orders[o]}" for (o, line), (item, _) in items.items()]
    path.write_text("\n".join(rows) + "\n")
    return path


def teach_kibo_the_orders(world: World, scenario: Scenario) -> None:
    items, orders = kibo_ids(scenario)
    for order_id, kibo_order in orders.items():
        world.kibo.add_order(
            order_id,
            {item: qty for (o, _), (item, qty) in items.items() if o == order_id},
            kibo_order,
        )


async def play_with_kibo(world: World, scenario: Scenario) -> list[str]:
    """The guide's scenario played by the Optoro sandbox (the bridge sends the order steps);
    under ``on_return_cleared`` the Kibo sandbox clears the returns before a refund step."""
    retailer = scenario_retailer(scenario.number)
    policy = world.runtime.config.retailers[retailer].policy
    world.route_kibo_notifications(retailer)

    def is_refund(step: Step) -> bool:
        return step.outbound and any(o.get("refunds") for o in step.rpo_orders())

    async def bridge_side(step: Step) -> None:
        if not is_refund(step):
            await world.runtime.service(retailer, RMA_LIFECYCLE).orders.publish(
                parse_rpo_request(step.request)
            )
        elif policy.confirm_refund is ConfirmRefund.ON_RETURN_CLEARED:
            await settle(world)
            for kibo_return in world.kibo.find_returns():
                if kibo_return.get("status") != "CLOSED":
                    await world.kibo.clear(kibo_return["returnID"])

    played = scenario
    if policy.confirm_refund is ConfirmRefund.NEVER:
        played = replace(scenario, steps=tuple(s for s in scenario.steps if not is_refund(s)))
    player = ScenarioPlayer(
        world.url,
        retailer,
        BasicAuth(WEBHOOK_USER, WEBHOOK_PASSWORD),
        OPTITURN_ID,
        3,
        world.session,
        world.optoro,
        order_diff=refund_aware_diff,
        outbound_timeout=15.0,
    )
    result = await player.play(played, on_outbound_step=bridge_side)
    await settle(world)
    return [str(f) for f in result.failures]


def expected_returns(world: World, scenario: Scenario) -> list[dict[str, Any]]:
    """Per RMA of the guide that reached the policy's step and order it is filed against:
    the Kibo return, with the items resolved through the crosswalk (the return of an
    exchange order through the original line)."""
    retailer = scenario_retailer(scenario.number)
    policy = world.runtime.config.retailers[retailer].policy
    items, orders = kibo_ids(scenario)
    exchanged = exchanged_into(scenario)
    last: dict[str, Rma] = {}
    for rma in rma_steps(scenario):
        last[rma.id] = rma
    expected = []
    for rma in last.values():
        if rma.status in (RmaStatus.CANCELED, RmaStatus.REJECTED):
            continue
        if not reached(rma, policy.step_for(rma.return_method)):
            continue
        for order_id in dict.fromkeys(u.original_order_id or u.order_id for u in rma.units):
            units = [u for u in rma.units if (u.original_order_id or u.order_id) == order_id]
            quantities: Counter[int] = Counter()
            for unit in units:
                line = (unit.order_id, unit.order_line_id)
                if unit.original_order_id is not None:
                    line = exchanged[unit.order_id]
                quantities[items[line][0]] += unit.qty
            expected.append(
                {
                    "externalOrderID": order_id,
                    "orderID": orders[order_id],
                    "returnLocation": LOCATION,
                    "items": dict(sorted(quantities.items())),
                    "returnTotal": sum(u.shopper_refund_cents or 0 for u in units),
                }
            )
    return expected


def recorded(kibo_return: dict[str, Any]) -> dict[str, Any]:
    quantities: Counter[int] = Counter()
    for item in kibo_return["item"]:
        quantities[item["orderItemID"]] += item["quantity"]
    return {
        "externalOrderID": kibo_return["externalOrderID"],
        "orderID": kibo_return.get("orderID"),
        "returnLocation": kibo_return.get("returnLocation"),
        "items": dict(sorted(quantities.items())),
        "returnTotal": cents(Decimal(str(kibo_return.get("returnTotal", "0"))) * 100),
    }


def cents(amount: int | Decimal) -> int:
    exact = Decimal(amount)
    assert exact == exact.to_integral_value(), amount
    return int(exact)


def _key(entry: dict[str, Any]) -> str:
    return json.dumps(entry, sort_keys=True, default=str)


# --- every return of the guide ---------------------------------------------------------------


def test_every_rma_step_of_the_guide_is_played() -> None:
    """16 of the 22 scenarios have RMAs (07, 16, 19-22 are order-only)."""
    assert len(WITH_RMAS) == 16
    rma_steps_of = [step for s in SCENARIOS for step in s.steps if step.path == "/rmas"]
    assert len(rma_steps_of) == sum(len(rma_steps(s)) for s in WITH_RMAS) == RMA_STEPS


@pytest.mark.parametrize("scenario", WITH_RMAS, ids=[s.folder[:2] for s in WITH_RMAS])
async def test_every_guide_return_reaches_kibo_through_the_imported_crosswalk(
    tmp_path: Path, scenario: Scenario
) -> None:
    async with running_world(tmp_path, [scenario.number], kibo_lines=CROSSWALK_CONFIG) as world:
        teach_kibo_the_orders(world, scenario)
        world.kibo.configure(known_orders_only=True)
        csv = write_crosswalk(tmp_path / "crosswalk.csv", scenario)
        retailer = scenario_retailer(scenario.number)
        done = await cli(
            "crosswalk",
            "import",
            str(csv),
            "--retailer",
            retailer,
            "--config",
            tmp_path / "bridge.toml",
        )
        assert done.returncode == 0, done.stderr
        assert f"{len(kibo_ids(scenario)[0])} row(s) read" in done.stdout

        failures = await play_with_kibo(world, scenario)
        assert failures == []
        dead = await world.runtime.store.list_effects(EffectState.DEAD)
        assert [e.dead_reason for e in dead] == []
        refused = [r for r in world.kibo.create_requests() if r.status != 200]
        assert refused == []
        wanted = sorted(map(_key, expected_returns(world, scenario)))
        got = sorted(_key(recorded(r)) for r in world.kibo.find_returns())
        assert got == wanted


async def test_the_numeric_guess_of_the_old_default_is_refused_by_a_kibo_that_knows_the_order(
    tmp_path: Path,
) -> None:
    """What the bridge did before: the order source's line id as Kibo's item id."""
    scenario = SCENARIOS[0]
    numeric = 'line_ids = "numeric"\n'
    async with running_world(tmp_path, [1], kibo_lines=numeric) as world:
        teach_kibo_the_orders(world, scenario)
        await play_with_kibo(world, scenario)
        (dead,) = await world.runtime.store.list_effects(EffectState.DEAD)
        assert "ORDER_ITEM_NOT_FOUND" in json.dumps(dead.dead_response)
        assert world.kibo.find_returns() == []


# --- dead letter, import, replay ---------------------------------------------------------------


async def test_an_unresolvable_line_is_a_dead_letter_naming_it_replayed_after_the_import(
    tmp_path: Path,
) -> None:
    scenario = SCENARIOS[0]
    config = tmp_path / "bridge.toml"
    async with running_world(tmp_path, [1], kibo_lines=CROSSWALK_CONFIG) as world:
        teach_kibo_the_orders(world, scenario)
        await play_with_kibo(world, scenario)

        async def dead_letter() -> bool:
            return bool(await world.runtime.store.list_effects(EffectState.DEAD))

        await wait_for(dead_letter)
        (dead,) = await world.runtime.store.list_effects(EffectState.DEAD)
        assert "order line '1' of order 'ORD1234567'" in (dead.dead_reason or "")
        assert "crosswalk" in (dead.dead_reason or "")
        assert world.kibo.create_requests() == []  # never sent with a guessed id

        bad = tmp_path / "bad.csv"
        bad.write_text("order_id,line_id,order_item_id\nORD1234567,1,one\n")
        refused = await cli(
            "crosswalk", "import", str(bad), "--retailer", "s01", "--config", config
        )
        assert refused.returncode == 2
        assert "line 2: order_item_id 'one'" in refused.stderr

        csv = write_crosswalk(tmp_path / "crosswalk.csv", scenario)
        imported = await cli(
            "crosswalk", "import", str(csv), "--retailer", "s01", "--config", config
        )
        assert imported.returncode == 0, imported.stderr
        shown = await cli("crosswalk", "show", "--retailer", "s01", "--config", config)
        assert shown.stdout.split("\n")[0].split("\t") == [
            "ORD1234567",
            "1",
            "88000100",
            "880001",
            "import",
        ]
        replayed = await cli("dlq", "--config", config, "replay", str(dead.id))
        assert replayed.returncode == 0, replayed.stderr
        world.runtime.engine.wake_dispatcher()

        async def created() -> bool:
            return len(world.kibo.find_returns()) == 1

        await wait_for(created)
        (kibo_return,) = world.kibo.find_returns()
        assert [i["orderItemID"] for i in kibo_return["item"]] == [88000100]
        assert kibo_return["orderID"] == 880001

        exported = await cli("crosswalk", "export", "--retailer", "s01", "--config", config)
        assert exported.returncode == 0, exported.stderr
        assert exported.stdout == csv.read_text()


# --- the crosswalk filled from the ReturnLogic order flow --------------------------------------


async def test_the_crosswalk_is_filled_from_the_returnlogic_order_snapshot(tmp_path: Path) -> None:
    """Kibo's ids carried by the order source (here ``rlOrderItemId`` and ``externalOrderId``,
    configurable) reach Kibo for a return Optoro sends about a ReturnLogic order."""
    lines = 'order_item_id_field = "returnlogic_id"\norder_id_field = "secondary_id"\n'
    async with running_world(tmp_path, [], shop_orders=30, kibo_lines=lines) as world:
        rl = world.returnlogic
        assert rl is not None
        store = world.runtime.store

        order = next(
            o
            for o in rl.orders.values()
            if o["fulfillmentStatus"] == "fulfilled" and o["externalOrderId"].isdigit()
        )

        async def synced() -> bool:
            async with store.transaction() as tx:
                key = f"{SHOP}:{order['orderNumber']}"
                return await tx.get_entity("order", key) is not None

        await wait_for(synced, within=60)
        line = order["orderItems"][0]
        await return_one_line_to_kibo(world, order, line, "RL-FLOW-1")
        (kibo_return,) = world.kibo.find_returns(order["orderNumber"])
        assert kibo_return["item"][0]["orderItemID"] == int(line["rlOrderItemId"])
        assert kibo_return["orderID"] == int(order["externalOrderId"])
        async with store.transaction() as tx:
            entry = await tx.get_entity(
                CROSSWALK, f"{SHOP}:{order['orderNumber']}:{line['externalOrderItemId']}"
            )
        assert entry is not None
        assert entry.data["source"] == "order"
        shown = await cli(
            "crosswalk", "show", "--retailer", SHOP, "--config", tmp_path / "bridge.toml"
        )
        assert f"{line['rlOrderItemId']}\t{order['externalOrderId']}\torder" in shown.stdout


# --- returnLocation, returnReductionTotal -----------------------------------------------------


@pytest.mark.parametrize("switched_on", [True, False], ids=["on", "off"])
async def test_return_location_and_reduction_follow_the_rma_when_configured(
    tmp_path: Path, switched_on: bool
) -> None:
    scenario = SCENARIOS[0]
    settings = (
        'line_ids = "numeric"\nreturn_locations = { "east-1" = 12 }\n'
        "deduct_return_shipping = true\n"
        if switched_on
        else 'line_ids = "numeric"\n'
    )
    patched = replace(
        scenario,
        steps=tuple(
            replace(
                step,
                request={
                    **step.request,
                    "warehouse_id": "east-1",
                    "return_shipping_cost_cents": 795,
                },
            )
            if step.path == "/rmas"
            else step
            for step in scenario.steps
        ),
    )
    async with running_world(tmp_path, [1], kibo_lines=settings) as world:
        assert await play_with_kibo(world, patched) == []
        (kibo_return,) = world.kibo.find_returns()
        if switched_on:
            assert kibo_return["returnLocation"] == 12
            assert Decimal(str(kibo_return["returnReductionTotal"])) == Decimal("7.95")
        else:
            assert "returnLocation" not in kibo_return
            assert "returnReductionTotal" not in kibo_return


# --- ReturnLogic return types -> Kibo refund handling -----------------------------------------


@pytest.mark.parametrize(
    ("return_type", "subtotal"),
    [("exchange", Decimal("0.00")), ("warranty", Decimal("0.00")), ("refund", None)],
)
async def test_returnlogic_exchanges_and_warranty_claims_are_not_refunded_by_kibo(
    world: RlWorld,
    return_type: str,
    subtotal: Decimal | None,
) -> None:
    rl, kibo = world.rl, world.kibo
    async with world.daemon():
        await world.rmas.supervise()
        number = shipped_orders(rl)[0]
        order = next(o for o in rl.orders.values() if o["orderNumber"] == number)
        line = order["orderItems"][0]
        rl.create_rma(
            order["orderNumber"],
            [{"externalOrderItemId": line["externalOrderItemId"], "returnType": return_type}],
            status="InTransit",
        )
        await world.settle()
        (kibo_return,) = kibo.find_returns(order["orderNumber"])
        (item,) = kibo_return["item"]
        if subtotal is None:
            assert "returnSubtotal" not in item  # Kibo prices a refund
            assert "returnTotal" not in kibo_return
        else:
            assert Decimal(str(item["returnSubtotal"])) == subtotal
            assert Decimal(str(kibo_return["returnTotal"])) == subtotal
        assert kibo_return["refundType"] == "STANDARD"


# --- pure pieces: refund handling per return type, reduction, the crosswalk CSV -------------


def _rl_rma(*types: RefundType, shipping: int = 0) -> Rma:
    """A ReturnLogic-like RMA: no per-item amounts."""
    when = datetime(2026, 1, 5, tzinfo=UTC)
    return Rma(
        id="RL-1",
        status=RmaStatus.CREATED,
        return_method=ReturnMethod.MAIL_BACK,
        units=tuple(
            RmaUnit(order_id="O1", order_line_id=str(i + 1), refund_type=t)
            for i, t in enumerate(types)
        ),
        created_at=when,
        updated_at=when,
        return_shipping_cost_cents=shipping,
    )


def test_an_exchange_is_not_a_refund_and_a_warranty_claim_only_when_configured() -> None:
    rma = _rl_rma(RefundType.REFUND, RefundType.EVEN_EXCHANGE, RefundType.WARRANTY)
    ids = {("O1", "1"): 11, ("O1", "2"): 12, ("O1", "3"): 13}
    now = datetime(2026, 1, 5, tzinfo=UTC)
    (body,) = rma_to_kibo_returns(rma, order_item_ids=ids, created_at=now)
    subtotals = {i["orderItemID"]: i.get("returnSubtotal") for i in body["item"]}
    assert subtotals == {11: None, 12: Decimal("0.00"), 13: Decimal("0.00")}
    assert "returnTotal" not in body  # the refund is Kibo's to price
    (paid,) = rma_to_kibo_returns(rma, order_item_ids=ids, created_at=now, refund_warranty=True)
    assert [i.get("returnSubtotal") for i in paid["item"]] == [None, Decimal("0.00"), None]


def test_a_line_mixing_a_refund_kibo_prices_with_an_exchange_is_a_dead_letter() -> None:
    rma = _rl_rma(RefundType.REFUND, RefundType.EVEN_EXCHANGE)
    rma = rma.model_copy(
        update={"units": tuple(u.model_copy(update={"order_line_id": "1"}) for u in rma.units)}
    )
    with pytest.raises(MappingError) as info:
        rma_to_kibo_returns(
            rma, order_item_ids={("O1", "1"): 11}, created_at=datetime(2026, 1, 5, tzinfo=UTC)
        )
    assert info.value.field == "items[0].refund_type"


def test_the_reduction_is_sent_once_per_rma_and_never_above_the_return_total() -> None:
    rma = _rl_rma(RefundType.EVEN_EXCHANGE)
    (body,) = rma_to_kibo_returns(
        rma,
        order_item_ids={("O1", "1"): 11},
        created_at=datetime(2026, 1, 5, tzinfo=UTC),
        reduction_cents=795,
        return_location=12,
    )
    assert body["returnTotal"] == Decimal("0.00")
    assert body["returnReductionTotal"] == Decimal("0.00")
    assert body["returnLocation"] == 12


def test_the_crosswalk_csv_round_trips_and_names_every_bad_row() -> None:
    rows = parse_crosswalk_csv(
        "order_id,line_id,order_item_id,kibo_order_id,note\nA,1,10,5,x\nA,2,11,,\nB,1,0,,\n"
    )
    assert rows == [
        CrosswalkRow("A", "1", 10, 5),
        CrosswalkRow("A", "2", 11, None),
        CrosswalkRow("B", "1", 0, None),
    ]
    assert parse_crosswalk_csv(crosswalk_csv(rows)) == rows
    with pytest.raises(MappingError) as info:
        parse_crosswalk_csv("order_id,line_id,order_item_id\nA,1,007\nA,1,5\nA,1,6\n,2,3\n")
    message = str(info.value)
    assert "line 2: order_item_id '007'" in message
    assert "line 4: order 'A' line '1' is also on line 3" in message
    assert "line 5: order_id and line_id are required" in message
    with pytest.raises(MappingError, match="header"):
        parse_crosswalk_csv("order,line,item\nA,1,2\n")
