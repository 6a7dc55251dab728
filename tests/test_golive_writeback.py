"""The returns sink's outcome written back to ReturnLogic, through the daemon: a ReturnLogic
RMA becomes a Kibo sandbox return; Kibo reports it accepted (or cleared); the ReturnLogic
sandbox records the RMA's items received with the configured disposition, once, whatever
the duplicates, replays and restarts; a refusal of ReturnLogic is a dead letter."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest_asyncio

from adapters.kibo.client import reconciler_key
from adapters.kibo.sandbox import running_sandbox as running_kibo
from adapters.returnlogic.sandbox import DEFAULT_TEAM
from adapters.returnlogic.sandbox import running_sandbox as running_rl
from bridge.store import EffectState
from tests.test_returnlogic_rmas import (
    FAST,
    KIBO_TOKEN,
    RETAILER,
    RL_KEY,
    World,
    free_port,
    shipped_orders,
    wait_for,
)

DESTINATION = f"returnlogic.rma_items:{RETAILER}"
ITEMS_KIND = "returnlogic.rma.items"


@pytest_asyncio.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    """ReturnLogic and Kibo sandboxes; Kibo notifies the daemon's endpoint."""
    async with running_rl(**FAST) as rl, running_kibo(token=KIBO_TOKEN) as kibo:
        rl.issue_api_key(DEFAULT_TEAM, RL_KEY)
        rl.generate(orders=30, products=8, rmas=0, seed=13)
        world = World(rl, kibo, tmp_path, free_port())
        kibo.notification_url = f"{world.url}/retailers/{RETAILER}/kibo/notifications"
        kibo.notification_headers = {"X-Kibo-Secret": "n"}
        yield world


def item_puts(world: World, rma_id: int) -> int:
    """``PUT /v1/rmas/{id}`` requests the ReturnLogic sandbox answered 2xx."""
    return sum(
        1
        for r in world.rl.requests
        if r.method == "PUT"
        and r.path == f"/v1/rmas/{rma_id}"
        and r.status is not None
        and 200 <= r.status < 300
    )


async def rma_with_a_kibo_return(world: World) -> tuple[int, int]:
    """A ReturnLogic RMA in transit, its Kibo return created (the policy's TRANSIT step)."""
    rl = world.rl
    await world.rmas.supervise()
    rma_id: int = rl.create_rma(shipped_orders(rl)[0], status="InTransit")["rlRmaId"]
    await world.settle()
    (kibo_return,) = world.kibo.find_returns(rl.rmas[rma_id]["externalOrderNumber"])
    assert not any(i["rmaItemReceived"] for i in rl.rmas[rma_id]["rmaItems"])
    return rma_id, int(kibo_return["returnID"])


def received_with(world: World, rma_id: int, code: str) -> bool:
    items = world.rl.rmas[rma_id]["rmaItems"]
    return all(
        i["rmaItemReceived"] and (i.get("disposition") or {}).get("code") == code for i in items
    )


async def test_kibo_accepted_marks_the_items_received_once(world: World) -> None:
    """Before: nothing was written back, the RMA stayed open in ReturnLogic."""
    rl, kibo = world.rl, world.kibo
    async with world.daemon():
        rma_id, return_id = await rma_with_a_kibo_return(world)
        sent = await kibo.accept(return_id)
        assert sent.outcome == "sent", sent
        await wait_for(lambda: received_with(world, rma_id, "RECEIVED"))
        record = rl.rmas[rma_id]
        assert record["workflowStatus"] in ("Received", "Processed")
        assert all(
            i["disposition"]["description"] == "Received at the returns center (Kibo accepted)"
            for i in record["rmaItems"]
        )
        await world.settle()
        assert item_puts(world, rma_id) == 1

        # Kibo repeats itself, then clears the return: nothing more is written
        ret = kibo.returns[return_id]
        for _ in range(2):
            assert (await kibo.notify_event("accepted", ret)).outcome == "sent"
        assert (await kibo.clear(return_id)).outcome == "sent"
        await world.settle()
        assert item_puts(world, rma_id) == 1
        assert received_with(world, rma_id, "RECEIVED")

    # a restart: the Kibo reconciler and a late duplicate see the return again
    async with world.daemon() as runtime:
        assert (await kibo.notify_event("cleared", kibo.returns[return_id])).outcome == "sent"
        assert (await kibo.notify_event("accepted", kibo.returns[return_id])).outcome == "sent"
        await world.settle()
        assert item_puts(world, rma_id) == 1
        effects = [
            e for state in EffectState for e in await runtime.store.list_effects(state, DESTINATION)
        ]
        assert [e.kind for e in effects] == [ITEMS_KIND]
        assert effects[0].state is EffectState.DELIVERED


async def test_a_return_cleared_first_writes_the_cleared_disposition(world: World) -> None:
    async with world.daemon():
        rma_id, return_id = await rma_with_a_kibo_return(world)
        assert (await world.kibo.clear(return_id)).outcome == "sent"
        await wait_for(lambda: received_with(world, rma_id, "PROCESSED"))
        await world.settle()
        assert item_puts(world, rma_id) == 1


async def test_configured_dispositions_are_sent(world: World, tmp_path: Path) -> None:
    """``rmas.writeback.dispositions`` names what ReturnLogic records per outcome."""
    extra = (
        f"[retailers.{RETAILER}.returnlogic.rmas.writeback.dispositions.accepted]\n"
        'code = "RESTOCK"\ndescription = "Back to stock"\ncomment = "via Kibo"\n'
        f"[retailers.{RETAILER}.returnlogic.rmas.writeback.dispositions.cleared]\n"
        'code = "DONE"\n'
    )
    world.extra_config = extra
    async with world.daemon():
        rma_id, return_id = await rma_with_a_kibo_return(world)
        assert (await world.kibo.accept(return_id)).outcome == "sent"
        await wait_for(lambda: received_with(world, rma_id, "RESTOCK"))
        item = world.rl.rmas[rma_id]["rmaItems"][0]
        assert item["disposition"]["description"] == "Back to stock"
        assert item["disposition"]["comment"] == "via Kibo"


async def test_writeback_can_be_switched_off(world: World) -> None:
    extra = f"[retailers.{RETAILER}.returnlogic.rmas.writeback]\nenabled = false\n"
    world.extra_config = extra
    async with world.daemon():
        rma_id, return_id = await rma_with_a_kibo_return(world)
        assert (await world.kibo.accept(return_id)).outcome == "sent"
        await world.settle()
        assert item_puts(world, rma_id) == 0
        assert not any(i["rmaItemReceived"] for i in world.rl.rmas[rma_id]["rmaItems"])


async def test_returnlogic_refusing_the_update_is_a_dead_letter_naming_it(world: World) -> None:
    """The RMA was canceled in ReturnLogic after its return was created: the update is
    refused (409); the effect is a dead letter with the answer, the daemon goes on."""
    rl, kibo = world.rl, world.kibo
    async with world.daemon() as runtime:
        rma_id, return_id = await rma_with_a_kibo_return(world)
        rl.advance_rma(rma_id, "Canceled")
        await world.settle()
        assert (await kibo.accept(return_id)).outcome == "sent"

        async def dead() -> list[Any]:
            return await runtime.store.list_effects(EffectState.DEAD, DESTINATION)

        await wait_until(dead)
        (effect,) = await dead()
        assert effect.kind == ITEMS_KIND
        assert "409" in (effect.dead_reason or "")
        assert item_puts(world, rma_id) == 0


async def test_sandbox_update_rma_items_validates_the_body(world: World) -> None:
    """ReturnLogic's "Update one or more RMA item(s)" as the sandbox serves it: 4xx naming
    the item for a bad body, the items updated for a good one."""
    rl = world.rl
    rma = rl.create_rma(shipped_orders(rl)[1], status="InTransit")
    rma_id, item_id = rma["rlRmaId"], rma["rmaItems"][0]["rlRmaItemId"]
    url = f"{rl.url}/v1/rmas/{rma_id}"
    headers = {"Authorization": f"Bearer {RL_KEY}"}
    async with aiohttp.ClientSession() as http:
        for body, field in (
            ({}, "rmaItems"),
            ({"rmaItems": [{"rlRmaItemId": "seven"}]}, "rmaItems[0].rlRmaItemId"),
            ({"rmaItems": [{"rlRmaItemId": 99999999, "itemReceived": True}]}, "rlRmaItemId"),
            ({"rmaItems": [{"rlRmaItemId": item_id, "itemReceived": "yes"}]}, "itemReceived"),
        ):
            async with http.put(url, json=body, headers=headers) as resp:
                assert 400 <= resp.status < 500, body
                assert field in await resp.text(), body
        assert not rl.rmas[rma_id]["rmaItems"][0]["rmaItemReceived"]
        code = {"code": "X"}
        good = {
            "rmaItems": [
                {"rlRmaItemId": i["rlRmaItemId"], "itemReceived": True, "disposition": code}
                for i in rma["rmaItems"]
            ]
        }
        async with http.put(url, json=good, headers=headers) as resp:
            assert resp.status == 200
    assert received_with(world, rma_id, "X")
    assert rl.rmas[rma_id]["workflowStatus"] in ("Received", "Processed")


async def wait_until(condition: Callable[[], Awaitable[object]], within: float = 15.0) -> None:
    """Wait for ``await condition()`` to be truthy, polling, until a deadline."""
    deadline = time.monotonic() + within
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.02)


async def test_a_lost_notification_is_written_back_from_the_reconciler(world: World) -> None:
    """Kibo's notifications are lost; its reconciler's Get Return finds the return cleared
    and the items are written back all the same."""
    async with world.daemon() as runtime:
        rma_id, return_id = await rma_with_a_kibo_return(world)
        world.kibo.drop_notifications = True
        assert (await world.kibo.clear(return_id)).outcome == "dropped"
        reconciler = runtime.find_shared(reconciler_key(RETAILER))
        assert reconciler is not None
        assert await reconciler.run_once() >= 1
        await wait_for(lambda: received_with(world, rma_id, "PROCESSED"))
        await world.settle()
        assert await reconciler.run_once() == 0
        await world.settle()
        assert item_puts(world, rma_id) == 1


async def test_returnlogic_failures_are_retried_until_written_once(world: World) -> None:
    """500s and a 429 from ReturnLogic on the update: retried by the outbox, one update
    lands, the effect is delivered."""
    rl = world.rl
    async with world.daemon() as runtime:
        rma_id, return_id = await rma_with_a_kibo_return(world)
        rl.configure(fail_next=2, rate_limit_next=1, fault_paths=[f"/v1/rmas/{rma_id}"])
        assert (await world.kibo.accept(return_id)).outcome == "sent"
        await wait_for(lambda: received_with(world, rma_id, "RECEIVED"), within=30.0)
        await world.settle(within=30.0)
        failed = [
            r
            for r in rl.requests
            if r.method == "PUT" and r.path == f"/v1/rmas/{rma_id}" and r.status in (429, 500)
        ]
        assert len(failed) == 3
        assert item_puts(world, rma_id) == 1
        (effect,) = await runtime.store.list_effects(EffectState.DELIVERED, DESTINATION)
        assert effect.attempts >= 2
