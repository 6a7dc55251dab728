"""Kibo reads without a write transaction (issue 12): a create's body, the reconciler's check
for a pre-0005 open-returns list.

The body is built when the create is sent (and again by a lookup of a create whose answer
was lost, or a replay): it reads the RMA and the lines' crosswalk entries, order snapshots
and ``orderID`` entries in a couple of batched reads, and opens a write transaction only
when the resolution has something to record (a line or ``orderID`` first read from the
order snapshot, an exchanged line), so what is recorded first stays.
"""

from __future__ import annotations

import asyncio
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest

from adapters.kibo.client import OPEN_RETURN, OPEN_RETURNS, KiboReturnDestination, reconciler_key
from adapters.kibo.crosswalk import CROSSWALK, KIBO_ORDER_ID
from bridge.http import OutboundRequest
from bridge.store import Effect, EffectState, Store, Transaction
from demo.scenarios import settle
from demo.world import SHOP, running_world
from tests.test_golive_kibo import return_one_line_to_kibo, wait_for
from tests.test_kibo_faults import FAST, RETAILER, refunds_received, up_to_carrier_scan


def writes_opened_by(store: Store, monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The tasks that open a write transaction on ``store`` from now on (the daemon's other
    tasks keep writing meanwhile: heartbeats, polls)."""
    opened: list[object] = []
    real = store.transaction

    def observed() -> AbstractAsyncContextManager[Transaction]:
        opened.append(asyncio.current_task())
        return real()

    monkeypatch.setattr(store, "transaction", observed)
    return opened


async def render_alone(
    destination: KiboReturnDestination, effect: Effect, opened: list[object]
) -> OutboundRequest:
    """The create's request as the engine renders it, checking it opened no write."""
    task = asyncio.create_task(destination.render(effect))
    request = await task
    assert task not in opened, "rendering the create opened a write transaction"
    return request


async def test_lines_learnt_from_the_order_snapshot_are_recorded_once_then_read_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
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
        order_key = f"{SHOP}:{order['orderNumber']}"

        async def synced() -> bool:
            return bool(await store.get_entities([("order", order_key)]))

        await wait_for(synced, within=60)
        line = order["orderItems"][0]
        await return_one_line_to_kibo(world, order, line, "RL-READS-1")
        (kibo_return,) = world.kibo.find_returns(order["orderNumber"])
        assert kibo_return["item"][0]["orderItemID"] == int(line["rlOrderItemId"])
        assert kibo_return["orderID"] == int(order["externalOrderId"])
        # the first render recorded what it read from the snapshot
        line_id = (CROSSWALK, f"{order_key}:{line['externalOrderItemId']}")
        recorded = await store.get_entities([line_id, (KIBO_ORDER_ID, order_key)])
        assert recorded[line_id].data["source"] == "order"
        assert recorded[KIBO_ORDER_ID, order_key].data["order_id"] == int(order["externalOrderId"])

        destination = world.runtime.engine.destinations[f"kibo.returns:{SHOP}"]
        assert isinstance(destination, KiboReturnDestination)
        (effect,) = await store.list_effects(EffectState.DELIVERED, destination.name)
        opened = writes_opened_by(store, monkeypatch)
        request = await render_alone(destination, effect, opened)
        assert request.json is not None
        sent = {k: v for k, v in request.json.items() if k != "returnID"}
        assert sent["externalOrderID"] == order["orderNumber"]
        assert [i["orderItemID"] for i in sent["item"]] == [int(line["rlOrderItemId"])]
        assert sent["orderID"] == int(order["externalOrderId"])

        # a recorded line wins over a later snapshot: the read path reads the crosswalk
        async with store.transaction() as tx:
            await tx.put_entity(
                CROSSWALK, line_id[1], (0,), {**recorded[line_id].data, "order_item_id": 4242}
            )
        request = await render_alone(destination, effect, opened)
        assert request.json is not None
        assert [i["orderItemID"] for i in request.json["item"]] == [4242]


async def test_a_pre_0005_open_returns_list_is_folded_into_per_return_rows_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store written before 0005 holds a retailer's open returns in one list row: the
    reconciler's first run turns it into per-return rows (and checks them with Kibo); later
    runs only read, without a write transaction, that there is none."""
    policy = {"confirm_refund": "on_return_cleared"}
    async with running_world(tmp_path, [1], settings=FAST, policy=policy) as world:
        store = world.runtime.store
        await up_to_carrier_scan(world)
        await settle(world)
        (created,) = world.kibo.find_returns()
        return_id = created["returnID"]
        open_row = (OPEN_RETURN, f"{RETAILER}:{return_id}")
        assert await store.get_entities([open_row])
        async with store.transaction() as tx:  # the store as a pre-0005 daemon left it
            await tx.delete_entity(*open_row)
            await tx.put_entity(OPEN_RETURNS, RETAILER, (0,), {"ids": [return_id]})
        world.kibo.configure(drop_notifications=True)
        await world.kibo.clear(return_id)
        await settle(world)
        assert refunds_received(world) == []  # only the reconciler can learn of it
        reconciler = world.runtime.find_shared(reconciler_key(RETAILER))
        assert reconciler is not None
        assert await reconciler.run_once() == 1
        await settle(world)
        (refund,) = refunds_received(world)
        assert refund["total_refund_amount_cents"] == 52224
        assert await store.get_entities([(OPEN_RETURNS, RETAILER), open_row]) == {}

        opened = writes_opened_by(store, monkeypatch)
        again = asyncio.create_task(reconciler.run_once())
        assert await again == 0
        assert again not in opened, "a reconciler run without a legacy row wrote"
