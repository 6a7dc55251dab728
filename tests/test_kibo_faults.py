"""Kibo faults through the running daemon: lost answers, refusals, unresolvable lines,
lost notifications, cancellations after the return exists."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from pathlib import Path
from typing import Any

import aiohttp

from adapters.kibo.client import CROSSWALK, kibo_headers, reconciler_key
from adapters.optoro.sandbox import scenario as guide_scenario
from bridge.engine import EngineSettings
from bridge.engine.core import pid_alive
from bridge.ports import RMA_LIFECYCLE
from bridge.store import EffectState, InboxStatus, Store
from demo.scenarios import settle
from demo.world import (
    OPTITURN_ID,
    WEBHOOK_PASSWORD,
    WEBHOOK_USER,
    World,
    running_world,
    scenario_retailer,
)
from mappings.kibo import derive_return_id, dumps
from mappings.optoro import parse_rpo_request

FAST = EngineSettings(idle_poll=0.02, effect_lease=3.0)
SCENARIO = guide_scenario(1)  # single line, 4 units, refund at carrier scan
RETAILER = scenario_retailer(1)


async def post_rma(world: World, body: dict[str, Any]) -> None:
    async with world.session.post(
        f"{world.url}/retailers/{RETAILER}/optoro/rmas",
        data=json.dumps(body),
        headers={
            "Authorization": aiohttp.encode_basic_auth(WEBHOOK_USER, WEBHOOK_PASSWORD),
            "X-Optiturn-Id": OPTITURN_ID,
        },
    ) as resp:
        assert resp.status == 200, await resp.text()


async def up_to_carrier_scan(world: World, rma_patch: dict[str, Any] | None = None) -> None:
    world.route_kibo_notifications(RETAILER)
    for step in SCENARIO.steps:
        if step.outbound and not any(o.get("refunds") for o in step.rpo_orders()):
            await world.runtime.service(RETAILER, RMA_LIFECYCLE).orders.publish(
                parse_rpo_request(step.request)
            )
        elif step.path == "/rmas" and step.request["status"] == "CREATED":
            message = json.loads(json.dumps(step.request))
            for item in message["items"]:
                item.update(rma_patch or {})
            await post_rma(world, message)


async def wait_for(condition: Any, within: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await condition():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def take_back_from_dead(store: Store, owner: str) -> int:
    """``owner`` was a process of instance ``gone`` on this host that has exited; a restart
    of ``gone`` takes back its leases (what the engine does at start)."""
    child = await asyncio.create_subprocess_exec(sys.executable, "-c", "")
    await child.wait()
    host = socket.gethostname()
    await store.register_instance(owner, "gone", host, child.pid)
    return await store.take_back_leases("gone/restarted/1", "gone", host, pid_alive, 3600)


def refunds_received(world: World) -> list[dict[str, Any]]:
    return [
        refund
        for request in world.optoro.rpo_requests()
        if request.status == 200
        for order in request.body["returns_portal_order"]["orders"]
        for refund in order.get("refunds", [])
    ]


async def test_timeout_after_commit_creates_no_second_return(tmp_path: Path) -> None:
    async with running_world(tmp_path, [1], settings=FAST) as world:
        world.kibo.configure(timeout_after_commit_next=1, commit_fault="drop")
        await up_to_carrier_scan(world)

        async def delivered() -> bool:
            return bool(
                await world.runtime.store.list_effects(
                    EffectState.DELIVERED, destination=f"kibo.returns:{RETAILER}"
                )
            )

        await wait_for(delivered)
        await settle(world)
        assert len(world.kibo.find_returns()) == 1
        (effect,) = await world.runtime.store.list_effects(destination=f"kibo.returns:{RETAILER}")
        assert effect.attempts >= 2  # the lost answer was settled, not re-sent
        assert len(world.kibo.create_requests()) == 1
        assert len(refunds_received(world)) == 1


async def test_lost_answer_without_evidence_is_settled_by_get_return_on_the_derived_id(
    tmp_path: Path,
) -> None:
    """The tenant keeps the bridge's returnID: no notification needed, no operator."""
    async with running_world(tmp_path, [1], settings=FAST) as world:
        world.kibo.configure(
            timeout_after_commit_next=1, commit_fault="drop", drop_notifications=True
        )
        await up_to_carrier_scan(world)

        async def delivered() -> bool:
            return bool(
                await world.runtime.store.list_effects(
                    EffectState.DELIVERED, destination=f"kibo.returns:{RETAILER}"
                )
            )

        await wait_for(delivered)
        await settle(world)
        (effect,) = await world.runtime.store.list_effects(destination=f"kibo.returns:{RETAILER}")
        expected_id = derive_return_id(effect.idempotency_key)
        (created,) = world.kibo.find_returns()
        assert created["returnID"] == expected_id
        (create,) = world.kibo.create_requests()
        assert create.body["returnID"] == expected_id
        lookups = [r for r in world.kibo.requests if r.method == "GET"]
        assert [(r.path, r.outcome) for r in lookups][:1] == [
            (f"/api/v2/return/{expected_id}", "found")
        ]
        assert effect.result["status"] == 200
        assert await world.runtime.store.list_effects(EffectState.DEAD) == []
        assert len(refunds_received(world)) == 1


async def test_reconciliation_finds_a_create_sent_by_a_process_that_died(tmp_path: Path) -> None:
    """A process recorded the attempt as sent, Kibo created the return, the process died
    before the answer, and the return_created notification went nowhere: Get Return on the
    derived id (the reconciler's) finds it, and the create is settled without a second one."""
    async with running_world(tmp_path, [1], settings=FAST) as world:
        world.kibo.configure(drop_notifications=True)
        engine, store = world.runtime.engine, world.runtime.store
        name = f"kibo.returns:{RETAILER}"
        destination = engine.destinations.pop(name)  # this process's dispatcher keeps off
        await up_to_carrier_scan(world)

        async def queued() -> bool:
            return bool(await store.list_effects(EffectState.PENDING, destination=name))

        await wait_for(queued)
        (leased,) = await store.lease_effects("gone/1/x", 1, 60, frozenset({name}))
        await store.mark_sending(leased.id, "gone/1/x")
        request = await destination.build_request(leased)
        # credentials are attached on admission, not in the request the destination builds
        headers = {**request.headers, **kibo_headers(destination.config)}
        async with world.session.post(request.url, data=request.data, headers=headers) as resp:
            assert resp.status == 200  # the answer the dead process never read
        assert await take_back_from_dead(store, "gone/1/x") == 1
        reconciler = world.runtime.find_shared(reconciler_key(RETAILER))
        assert reconciler is not None
        assert await reconciler.find_unknown_creates() == 1
        engine.destinations[name] = destination
        engine.wake_dispatcher()

        async def delivered() -> bool:
            return bool(await store.list_effects(EffectState.DELIVERED, destination=name))

        await wait_for(delivered)
        await settle(world)
        (created,) = world.kibo.find_returns()
        assert created["returnID"] == derive_return_id(leased.idempotency_key)
        assert len(world.kibo.create_requests()) == 1
        (effect,) = await store.list_effects(destination=name)
        assert (effect.state, effect.attempts) == (EffectState.DELIVERED, 2)
        assert len(refunds_received(world)) == 1
        assert await reconciler.find_unknown_creates() == 0


async def _create_ahead(world: World, body_patch: dict[str, Any]) -> tuple[Any, Any]:
    """Queue the RMA's create with the dispatcher kept off it, and put a return under its
    derived returnID into Kibo first (``body_patch`` changes that return's body)."""
    engine, store = world.runtime.engine, world.runtime.store
    name = f"kibo.returns:{RETAILER}"
    destination = engine.destinations.pop(name)
    await up_to_carrier_scan(world)

    async def queued() -> bool:
        return bool(await store.list_effects(EffectState.PENDING, destination=name))

    await wait_for(queued)
    (effect,) = await store.list_effects(EffectState.PENDING, destination=name)
    request = await destination.build_request(effect)
    body = {**request.json, **body_patch}
    headers = {**request.headers, **kibo_headers(destination.config)}
    async with world.session.post(request.url, data=dumps(body), headers=headers) as resp:
        assert resp.status == 200
    engine.destinations[name] = destination
    engine.wake_dispatcher()
    return effect, destination


async def test_create_refused_as_a_taken_return_id_is_settled_by_get_return(
    tmp_path: Path,
) -> None:
    """An earlier attempt's return holds the derived id (Kibo refuses the id, 409): Get
    Return finds the return of this order, and it is recorded as this create's."""
    async with running_world(tmp_path, [1], settings=FAST) as world:
        effect, _ = await _create_ahead(world, {})
        store = world.runtime.store

        async def done() -> bool:
            current = await store.get_effect(effect.id)
            return current is not None and current.state is not EffectState.PENDING

        await wait_for(done)
        await settle(world)
        (created,) = world.kibo.find_returns()
        assert created["returnID"] == derive_return_id(effect.idempotency_key)
        assert [r.outcome for r in world.kibo.create_requests()] == ["created", "conflict"]
        current = await store.get_effect(effect.id)
        assert current is not None
        assert (current.state, current.attempts) == (EffectState.DELIVERED, 1)
        assert len(refunds_received(world)) == 1


async def test_a_derived_return_id_held_by_another_order_is_parked(tmp_path: Path) -> None:
    """A collision (the id is another order's return) is never taken as this create's."""
    async with running_world(tmp_path, [1], settings=FAST) as world:
        effect, _ = await _create_ahead(world, {"externalOrderID": "OTHER-ORDER"})

        async def dead() -> bool:
            return bool(await world.runtime.store.list_effects(EffectState.DEAD))

        await wait_for(dead)
        (parked,) = await world.runtime.store.list_effects(EffectState.DEAD)
        assert parked.id == effect.id
        assert "belongs to order 'OTHER-ORDER'" in (parked.dead_reason or "")
        assert [r["externalOrderID"] for r in world.kibo.find_returns()] == ["OTHER-ORDER"]
        assert refunds_received(world) == []


async def test_a_lease_taken_back_before_the_call_is_simply_sent(tmp_path: Path) -> None:
    """A process leased the create and died before recording it as sent: its successor
    takes the lease back and sends the create, even to a tenant whose returnIDs cannot
    settle anything (nothing waits for evidence, nothing is parked)."""
    async with running_world(tmp_path, [1], settings=FAST) as world:
        world.kibo.configure(honour_return_id=False, drop_notifications=True)
        engine, store = world.runtime.engine, world.runtime.store
        name = f"kibo.returns:{RETAILER}"
        destination = engine.destinations.pop(name)
        await up_to_carrier_scan(world)

        async def queued() -> bool:
            return bool(await store.list_effects(EffectState.PENDING, destination=name))

        await wait_for(queued)
        (leased,) = await store.lease_effects("gone/1/x", 1, 60, frozenset({name}))
        assert await take_back_from_dead(store, "gone/1/x") == 1
        engine.destinations[name] = destination
        engine.wake_dispatcher()

        async def done() -> bool:
            current = await store.get_effect(leased.id)
            return current is not None and current.state is not EffectState.PENDING

        await wait_for(done)
        current = await store.get_effect(leased.id)
        assert current is not None
        assert (current.state, current.attempts) == (EffectState.DELIVERED, 2)
        assert [r.outcome for r in world.kibo.create_requests()] == ["created"]
        assert not [r for r in world.kibo.requests if r.method == "GET"]  # no lookup needed
        assert len(refunds_received(world)) == 1


async def test_lost_answer_without_evidence_is_parked_not_resent(tmp_path: Path) -> None:
    """A tenant that assigns its own returnID: Get Return on the bridge's id finds
    nothing, which proves nothing, so the create waits for evidence, then is parked."""
    async with running_world(tmp_path, [1], settings=FAST) as world:
        world.kibo.configure(
            timeout_after_commit_next=1,
            commit_fault="drop",
            drop_notifications=True,
            honour_return_id=False,
        )
        await up_to_carrier_scan(world)

        async def dead() -> bool:
            return bool(await world.runtime.store.list_effects(EffectState.DEAD))

        await wait_for(dead, within=30)
        (effect,) = await world.runtime.store.list_effects(EffectState.DEAD)
        assert "outcome of creating the return" in (effect.dead_reason or "")
        assert "check Kibo" in (effect.dead_reason or "")
        assert len(world.kibo.create_requests()) == 1
        assert refunds_received(world) == []


async def test_kibo_4xx_is_dead_lettered_and_replays_after_the_fix(tmp_path: Path) -> None:
    async with running_world(tmp_path, [1], settings=FAST) as world:
        world.kibo.configure(reject_next=1, reject_status=422)
        await up_to_carrier_scan(world)

        async def dead() -> bool:
            return bool(await world.runtime.store.list_effects(EffectState.DEAD))

        await wait_for(dead)
        (effect,) = await world.runtime.store.list_effects(EffectState.DEAD)
        assert "answered 422" in (effect.dead_reason or "")
        assert effect.dead_response["status"] == 422
        assert effect.dead_request["json"]["externalOrderID"] == "ORD1234567"
        assert world.kibo.find_returns() == []
        preview = await world.runtime.engine.replay(effect.id, dry_run=True)
        assert preview.json["item"][0]["quantity"] == 4
        assert world.kibo.find_returns() == []
        await world.runtime.engine.replay(effect.id)
        await settle(world)
        assert len(world.kibo.find_returns()) == 1
        assert len(refunds_received(world)) == 1


async def test_unresolvable_line_is_dead_lettered_with_the_reason_and_replays_after_crosswalk(
    tmp_path: Path,
) -> None:
    async with running_world(tmp_path, [1], settings=FAST) as world:
        await up_to_carrier_scan(world, {"order_line_item_identifier": "L-1"})

        async def dead() -> bool:
            return bool(await world.runtime.store.list_effects(EffectState.DEAD))

        await wait_for(dead)
        (effect,) = await world.runtime.store.list_effects(EffectState.DEAD)
        assert "L-1" in (effect.dead_reason or "")
        assert "cannot be resolved" in (effect.dead_reason or "") or "not a numeric" in (
            effect.dead_reason or ""
        )
        async with world.runtime.store.transaction() as tx:
            await tx.put_entity(
                CROSSWALK, f"{RETAILER}:ORD1234567:L-1", (0,), {"order_item_id": 7001}
            )
        await world.runtime.engine.replay(effect.id)
        await settle(world)
        (created,) = world.kibo.find_returns()
        assert created["item"][0]["orderItemID"] == 7001


async def test_lost_clear_notification_is_caught_by_reconciliation(tmp_path: Path) -> None:
    policy = {"confirm_refund": "on_return_cleared"}
    async with running_world(tmp_path, [1], settings=FAST, policy=policy) as world:
        await up_to_carrier_scan(world)
        await settle(world)
        (created,) = world.kibo.find_returns()
        assert refunds_received(world) == []
        world.kibo.configure(drop_notifications=True)
        await world.kibo.clear(created["returnID"])
        await settle(world)
        assert refunds_received(world) == []  # the notification was lost
        reconciler = world.runtime.find_shared(reconciler_key(RETAILER))
        assert reconciler is not None
        assert await reconciler.run_once() == 1
        await settle(world)
        (refund,) = refunds_received(world)
        assert refund["total_refund_amount_cents"] == 52224
        assert await reconciler.run_once() == 0


async def test_rejection_and_cancel_after_creation_are_flagged(tmp_path: Path) -> None:
    async with running_world(
        tmp_path, [1], settings=FAST, policy={"confirm_refund": "never"}
    ) as world:
        await up_to_carrier_scan(world)
        await settle(world)
        (created,) = world.kibo.find_returns()
        await world.kibo.reject(created["returnID"])
        await settle(world)
        canceled = json.loads(json.dumps(SCENARIO.steps[-1].request))
        canceled["status"] = "CANCELED"
        canceled["updated_at"] = "2023-02-01T00:00:00Z"
        await post_rma(world, canceled)
        await settle(world)
        reasons = sorted(f.reason for f in await world.runtime.store.list_flags())
        assert any("rejected" in r for r in reasons), reasons
        assert any("after its return was created" in r for r in reasons), reasons
        assert len(world.kibo.find_returns()) == 1


async def test_bad_amounts_are_quarantined_at_the_webhook_and_the_corrected_message_applies(
    tmp_path: Path,
) -> None:
    """A shopper share no return can carry (negative) is refused at the webhook: the message
    is quarantined naming the field (answered 200, as Optoro asks), nothing reaches Kibo and
    nothing is dead-lettered; once Optoro sends the corrected RMA, the return is built from
    it."""
    async with running_world(tmp_path, [1], settings=FAST) as world:
        bad = {
            "refund_financials": {
                "estimated_refund_amount_cents": 13056,
                "optoro_refund_amount_cents": 0,
                "shopper_refund_amount_cents": -5,
            }
        }
        await up_to_carrier_scan(world, bad)
        store = world.runtime.store
        kept = await store.list_inbox(InboxStatus.QUARANTINED)
        assert kept
        for item in kept:
            assert "].refund_financials.shopper_refund_amount_cents" in (item.note or "")
        await settle(world)
        assert await store.list_effects(destination=f"kibo.returns:{RETAILER}") == []
        assert await store.list_effects(EffectState.DEAD) == []
        assert world.kibo.find_returns() == []

        corrected = json.loads(json.dumps(SCENARIO.steps[3].request))  # the carrier scan
        corrected["updated_at"] = "2023-01-29T00:00:00Z"
        await post_rma(world, corrected)
        await settle(world)
        (created,) = world.kibo.find_returns()
        assert created["item"][0]["quantity"] == 4
        assert str(created["returnTotal"]) == "522.24"


async def test_a_refused_static_token_dead_letters_the_create_at_once(tmp_path: Path) -> None:
    """Kibo's token is static: a 401 cannot be cured by a refresh, so the create is a dead
    letter on its first attempt ("credentials refused"), not a quiet retry for 72 hours;
    after the token is fixed, a replay creates the return."""
    async with running_world(tmp_path, [1], settings=FAST) as world:
        world.kibo.configure(token="rotated-by-the-tenant")
        await up_to_carrier_scan(world)
        store = world.runtime.store

        async def dead() -> bool:
            return bool(await store.list_effects(EffectState.DEAD))

        await wait_for(dead)
        (effect,) = await store.list_effects(destination=f"kibo.returns:{RETAILER}")
        assert effect.state is EffectState.DEAD
        assert (effect.dead_reason or "").startswith("credentials refused (401)")
        assert effect.attempts == 1
        assert effect.dead_response["status"] == 401
        assert [r.outcome for r in world.kibo.create_requests()] == ["unauthorized"]
        assert world.kibo.find_returns() == []
        world.kibo.reset()  # the tenant's token is the configured one again
        world.route_kibo_notifications(RETAILER)
        await world.runtime.engine.replay(effect.id)
        await settle(world)
        assert len(world.kibo.find_returns()) == 1
        assert len(refunds_received(world)) == 1
