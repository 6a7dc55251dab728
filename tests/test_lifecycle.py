"""The returns lifecycle end to end: Optoro sandbox -> daemon -> Kibo sandbox -> refunds.

Every guide scenario under each refund-confirmation policy, with duplicated and reordered
deliveries, with Kibo faults, and with dead letters replayed after a fix.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.optoro.sandbox import load_scenarios
from bridge.engine import EngineSettings
from bridge.ports import RMA_LIFECYCLE
from bridge.store import EffectState
from demo.scenarios import play, settle
from demo.world import OPTITURN_ID, WEBHOOK_PASSWORD, WEBHOOK_USER, running_world, scenario_retailer
from mappings.optoro import parse_rpo_request

SCENARIOS = load_scenarios()
NUMBERS = [s.number for s in SCENARIOS]
FAST = EngineSettings(idle_poll=0.02, effect_lease=5.0)


@pytest.mark.parametrize("confirm", ["on_return_created", "on_return_cleared", "never"])
async def test_every_scenario_under_each_refund_policy(tmp_path: Path, confirm: str) -> None:
    async with running_world(
        tmp_path, NUMBERS, policy={"confirm_refund": confirm}, settings=FAST
    ) as world:
        outcomes = [await play(world, scenario) for scenario in SCENARIOS]
    failures = [o.line() for o in outcomes if not o.ok]
    assert not failures, "\n".join(failures)
    assert sum(o.kibo_returns for o in outcomes) == 16
    assert sum(o.refunds for o in outcomes) == (0 if confirm == "never" else 16)
    finals = [state for o in outcomes for state in o.rmas.values()]
    assert sorted(set(finals)) == ["CANCELED", "CREATED", "REFUNDED"]


def rma_steps(scenario):  # type: ignore[no-untyped-def]
    return [s for s in scenario.steps if s.path == "/rmas"]


async def post_rma(world, retailer: str, body: dict) -> int:  # type: ignore[no-untyped-def]
    async with world.session.post(
        f"{world.url}/retailers/{retailer}/optoro/rmas",
        data=json.dumps(body),
        headers={
            "Authorization": aiohttp.encode_basic_auth(WEBHOOK_USER, WEBHOOK_PASSWORD),
            "X-Optiturn-Id": OPTITURN_ID,
            "X-Optiturn-Api-Version": "3",
        },
    ) as resp:
        return resp.status


WITH_RMAS = [s for s in SCENARIOS if rma_steps(s)]


async def deliveries_outcome(folder: Path, scenario, deliveries: list[dict]) -> tuple[list, list]:  # type: ignore[no-untyped-def]
    """Kibo returns and Optoro refunds after the RMA messages arrive as ``deliveries``."""
    async with running_world(folder, [scenario.number], settings=FAST) as world:
        retailer = scenario_retailer(scenario.number)
        world.route_kibo_notifications(retailer)
        for step in scenario.steps:
            if step.outbound and not any(o.get("refunds") for o in step.rpo_orders()):
                await world.runtime.service(retailer, RMA_LIFECYCLE).orders.publish(
                    parse_rpo_request(step.request)
                )
        statuses = await asyncio.gather(*(post_rma(world, retailer, m) for m in deliveries))
        assert set(statuses) == {200}
        await settle(world)
        returns = sorted(
            (
                r["externalOrderID"],
                tuple(sorted((i["orderItemID"], i["quantity"]) for i in r["item"])),
            )
            for r in world.kibo.find_returns()
        )
        refunds = sorted(
            (
                refund["rma_identifier"],
                refund["total_refund_amount_cents"],
                len(refund["refund_line_items"]),
            )
            for request in world.optoro.rpo_requests()
            if request.status == 200
            for order in request.body["returns_portal_order"]["orders"]
            for refund in order.get("refunds", [])
        )
        assert await world.runtime.store.list_effects(EffectState.DEAD) == []
        assert await world.runtime.store.list_flags() == []
        return returns, sorted(set(refunds))


BASELINE: dict[int, tuple[list, list]] = {}


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_duplicated_and_reordered_rma_deliveries_give_the_same_returns_and_refunds(
    tmp_path_factory, data
) -> None:  # type: ignore[no-untyped-def]
    """Any order of the scenario's RMA messages, with duplicates, all delivered at once,
    creates the same Kibo returns and the same refunds as the guide's own order."""
    scenario = data.draw(st.sampled_from(WITH_RMAS))
    messages = [s.request for s in rma_steps(scenario)]
    extra = data.draw(st.lists(st.sampled_from(messages), max_size=4))
    deliveries = data.draw(st.permutations(messages + extra))
    if scenario.number not in BASELINE:
        BASELINE[scenario.number] = asyncio.run(
            deliveries_outcome(tmp_path_factory.mktemp("baseline"), scenario, messages)
        )
    outcome = asyncio.run(
        deliveries_outcome(tmp_path_factory.mktemp("shuffled"), scenario, deliveries)
    )
    assert outcome == BASELINE[scenario.number]
