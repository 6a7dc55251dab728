"""Returns Portal Orders from a running daemon to the Optoro sandbox over loopback."""

from __future__ import annotations

from pathlib import Path

from adapters.optoro.sandbox import load_scenarios, running_sandbox
from adapters.optoro.schemas import validate
from bridge.domain import Order
from bridge.http import Backoff
from bridge.ports import RMA_LIFECYCLE
from bridge.store import EffectState
from mappings.optoro import parse_rpo_request
from tests.harness import OPTORO_CLIENT_ID, OPTORO_SECRET, RETAILER, optoro_table, running_daemon


def guide_orders() -> list[Order]:
    """The canonical order of every RPO create step of the guide, latest snapshot per id."""
    orders: dict[str, Order] = {}
    for scenario in load_scenarios():
        for step in scenario.steps:
            if step.outbound:
                for order in parse_rpo_request(step.request):
                    orders[f"{scenario.number}:{order.id}"] = order.model_copy(
                        update={"id": f"{order.id}-{scenario.number}"}
                    )
    return list(orders.values())


async def test_orders_batch_validate_and_unchanged_orders_are_not_resent(tmp_path: Path) -> None:
    orders = guide_orders()
    assert len(orders) == 24
    async with (
        running_sandbox(client_id=OPTORO_CLIENT_ID, client_secret=OPTORO_SECRET) as sandbox,
        running_daemon(tmp_path, optoro_table(sandbox.url, batch_size="4")) as daemon,
    ):
        queued = (
            await daemon.runtime.service(RETAILER, RMA_LIFECYCLE).orders.publish(orders)
        ).queued
        await daemon.settle()
        bodies = [r for r in sandbox.rpo_requests() if r.status == 200]
        assert len(bodies) == queued
        assert all(len(r.body["returns_portal_order"]["orders"]) <= 4 for r in bodies)
        assert all(validate("rpo_request", r.body) == [] for r in bodies)
        assert set(sandbox.orders) == {o.id for o in orders}

        assert (
            await daemon.runtime.service(RETAILER, RMA_LIFECYCLE).orders.publish(orders)
        ).queued == 0
        changed = orders[0].model_copy(update={"tags": ("cs_required",)})
        assert (
            await daemon.runtime.service(RETAILER, RMA_LIFECYCLE).orders.publish(
                [changed, *orders[1:]]
            )
        ).queued == 1
        await daemon.settle()
        assert sandbox.latest(changed.id)["tags"] == ["cs-required"]
        assert sandbox.tokens_issued == 1


async def test_401_burst_refreshes_the_token_once(tmp_path: Path) -> None:
    orders = guide_orders()
    async with (
        running_sandbox(client_id=OPTORO_CLIENT_ID, client_secret=OPTORO_SECRET) as sandbox,
        running_daemon(tmp_path, optoro_table(sandbox.url, batch_size="1")) as daemon,
    ):
        await daemon.runtime.service(RETAILER, RMA_LIFECYCLE).orders.publish(orders[:2])
        await daemon.settle()
        assert sandbox.tokens_issued == 1
        sandbox.revoke_tokens()
        await daemon.runtime.service(RETAILER, RMA_LIFECYCLE).orders.publish(orders[2:20])
        await daemon.settle()
        assert sandbox.tokens_issued == 2
        assert {o.id for o in orders[:20]} <= set(sandbox.orders)
        assert await daemon.runtime.store.list_effects(EffectState.DEAD) == []


async def test_bare_429_and_5xx_are_retried_until_delivered(tmp_path: Path) -> None:
    orders = guide_orders()[:6]
    async with (
        running_sandbox(client_id=OPTORO_CLIENT_ID, client_secret=OPTORO_SECRET) as sandbox,
        running_daemon(tmp_path, optoro_table(sandbox.url, batch_size="1")) as daemon,
    ):
        for destination in daemon.runtime.engine.destinations.values():
            destination.backoff = Backoff(initial=0.01, cap=0.05)
            destination.limits.default_pause_on_429 = 0.2  # type: ignore[attr-defined]
        sandbox.rate_limit_next = 3
        sandbox.error_rate = 0.3
        await daemon.runtime.service(RETAILER, RMA_LIFECYCLE).orders.publish(orders)
        await daemon.settle(within=30)
        assert set(sandbox.orders) == {o.id for o in orders}
        answered = [r.status for r in sandbox.rpo_requests()]
        assert answered.count(429) == 3
        assert all(
            not r.headers.get("Retry-After") for r in sandbox.rpo_requests() if r.status == 429
        )
        assert await daemon.runtime.store.list_effects(EffectState.DEAD) == []
