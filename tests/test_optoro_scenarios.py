"""All 22 guide scenarios played by the Optoro sandbox against a running daemon.

Optoro's side (RMA webhooks, variants and exchange-order calls) is played over HTTP by
the sandbox's scenario player; every Returns Portal Order step is produced by the bridge
(its canonical order is published through the order publisher, as an order source would)
and must reach the sandbox equal to the guide's payload, validated against Optoro's
description.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from adapters.optoro.sandbox import (
    BasicAuth,
    OptoroSandbox,
    ScenarioPlayer,
    load_scenarios,
    running_sandbox,
)
from adapters.optoro.sandbox.scenarios import Step
from bridge.app import Runtime
from bridge.ports import CATALOG, EXCHANGE_ORDER_SINK, RMA_LIFECYCLE
from bridge.store import EffectState
from demo.guide import guide_providers
from mappings.optoro import parse_rpo_request
from tests.harness import (
    OPTITURN_ID,
    OPTORO_CLIENT_ID,
    OPTORO_SECRET,
    RETAILER,
    WEBHOOK_PASSWORD,
    WEBHOOK_USER,
    optoro_table,
    running_daemon,
)

SCENARIOS = load_scenarios()


def test_all_22_scenarios_and_118_steps_are_played() -> None:
    assert len(SCENARIOS) == 22
    assert sum(len(s.steps) for s in SCENARIOS) == 118


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.folder[:2] for s in SCENARIOS])
async def test_scenario_end_to_end(tmp_path: Path, scenario) -> None:  # type: ignore[no-untyped-def]
    catalog, sink = guide_providers([scenario])

    def wire(runtime: Runtime) -> None:
        runtime.provide(RETAILER, CATALOG, "guide", catalog)
        runtime.provide(RETAILER, EXCHANGE_ORDER_SINK, "guide", sink)

    async with (
        running_sandbox(client_id=OPTORO_CLIENT_ID, client_secret=OPTORO_SECRET) as sandbox,
        running_daemon(tmp_path, optoro_table(sandbox.url), before_start=wire) as daemon,
        aiohttp.ClientSession() as session,
    ):

        async def bridge_sends(step: Step) -> None:
            await daemon.runtime.service(RETAILER, RMA_LIFECYCLE).orders.publish(
                parse_rpo_request(step.request)
            )

        player = ScenarioPlayer(
            daemon.url,
            RETAILER,
            BasicAuth(WEBHOOK_USER, WEBHOOK_PASSWORD),
            OPTITURN_ID,
            3,
            session,
            sandbox,
        )
        result = await player.play(scenario, on_outbound_step=bridge_sends)
        assert result.ok, result.summary() + "\n" + "\n".join(map(str, result.failures))
        await daemon.settle()
        assert await daemon.runtime.store.list_effects(EffectState.DEAD) == []
        assert isinstance(sandbox, OptoroSandbox)
        assert sandbox.tokens_issued == 1
        stats = await daemon.runtime.store.inbox_stats()
        assert stats.quarantined == 0
