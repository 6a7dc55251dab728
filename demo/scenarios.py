"""Play a guide scenario through the daemon and check it ended as the guide says.

Optoro's side is played by the Optoro sandbox's scenario player. The bridge's side is
the daemon's own work: Returns Portal Order *creates* are published as an order source
would publish them; the *refund* updates, the Kibo returns and everything after are what
the daemon does by itself under the retailer's policy. A scenario passes when

- every step passed (answers equal to the guide's, refund updates equal to the guide's
  in amount, lines, quantities and RMA; refund identifiers are the bridge's own, unique);
- each RMA's final state is the guide's last message's (REFUNDED or CANCELED);
- each refunded RMA produced exactly one Kibo return per order, with one item per order
  line, the units' quantity and the shopper's share as subtotal; a canceled one none;
- nothing is in the dead letters and nothing is flagged.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from adapters.optoro.sandbox import BasicAuth, Scenario, ScenarioPlayer
from adapters.optoro.sandbox.compare import rpo_order_diff
from adapters.optoro.sandbox.scenarios import Step
from bridge.domain import Rma, RmaStatus
from bridge.policy import ConfirmRefund, reached
from bridge.ports import RMA_LIFECYCLE
from bridge.store import EffectState
from demo.world import OPTITURN_ID, WEBHOOK_PASSWORD, WEBHOOK_USER, World, scenario_retailer
from mappings.optoro import parse_rma, parse_rpo_request


def refund_aware_diff(sample: dict[str, Any], actual: Any) -> list[str]:
    """``rpo_order_diff``, except that refunds are compared by what they say (total,
    lines, quantities, RMA) since their identifiers and times are the bridge's own; the
    order's ``raw_status``, ``updated_at`` and ``created_at`` are not compared either (the
    guide's refunded samples change ``created_at`` by a few milliseconds from the order it
    created: the bridge keeps the order's own)."""
    if not isinstance(actual, dict) or not sample.get("refunds"):
        return rpo_order_diff(sample, actual)
    bare_sample = {
        **sample,
        "refunds": [],
        "raw_status": actual.get("raw_status"),
        "updated_at": actual.get("updated_at"),
        "created_at": actual.get("created_at"),
    }
    diffs = rpo_order_diff(bare_sample, {**actual, "refunds": []})
    received = {r.get("rma_identifier"): r for r in actual.get("refunds", [])}
    for refund in sample["refunds"]:
        got = received.get(refund.get("rma_identifier"))
        if got is None:
            diffs.append(f"no refund for RMA {refund.get('rma_identifier')}")
            continue
        if got["total_refund_amount_cents"] != refund["total_refund_amount_cents"]:
            diffs.append(
                f"refund total {got['total_refund_amount_cents']} !="
                f" {refund['total_refund_amount_cents']}"
            )
        lines = sorted(
            (li["order_item_identifier"], li["quantity"]) for li in got["refund_line_items"]
        )
        expected = sorted(
            (li["order_item_identifier"], li["quantity"]) for li in refund["refund_line_items"]
        )
        if lines != expected:
            diffs.append(f"refund lines {lines} != {expected}")
    identifiers = [r["identifier"] for r in actual.get("refunds", [])] + [
        li["identifier"] for r in actual.get("refunds", []) for li in r["refund_line_items"]
    ]
    if len(identifiers) != len(set(identifiers)):
        diffs.append("refund identifiers are not unique")
    return diffs


@dataclass
class Outcome:
    scenario: Scenario
    problems: list[str] = field(default_factory=list)
    rmas: dict[str, str] = field(default_factory=dict)
    kibo_returns: int = 0
    refunds: int = 0
    rpo_requests_before: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def line(self) -> str:
        verdict = "ok  " if self.ok else "FAIL"
        states = ", ".join(f"{k} {v}" for k, v in self.rmas.items()) or "no RMA"
        text = (
            f"{verdict} {self.scenario.folder}: {len(self.scenario.steps)} steps; {states};"
            f" {self.kibo_returns} Kibo return(s), {self.refunds} refund(s) confirmed"
        )
        return text + "".join(f"\n       - {p}" for p in self.problems[:6])


def _expected(scenario: Scenario) -> tuple[dict[str, Rma], int]:
    """Each RMA's last message, and how many refund updates the guide shows."""
    last: dict[str, Rma] = {}
    refunds = 0
    for step in scenario.steps:
        if step.path == "/rmas":
            rma = parse_rma(step.request)
            last[rma.id] = rma
        elif step.outbound:
            refunds += sum(len(o.get("refunds", [])) > 0 for o in step.rpo_orders())
    return last, refunds


def _is_refund(step: Step) -> bool:
    return step.outbound and any(o.get("refunds") for o in step.rpo_orders())


async def play(world: World, scenario: Scenario) -> Outcome:
    """Play ``scenario`` under its retailer's policy. The guide's refund updates are the
    bridge's to send: with ``on_return_cleared`` the Kibo sandbox first clears the returns
    (the warehouse processed them); with ``never`` no refund may reach Optoro at all."""
    retailer = scenario_retailer(scenario.number)
    policy = world.runtime.config.retailers[retailer].policy
    world.route_kibo_notifications(retailer)
    kibo_before = len(world.kibo.returns)
    outcome = Outcome(scenario, rpo_requests_before=len(world.optoro.rpo_requests()))
    played = scenario
    if policy.confirm_refund is ConfirmRefund.NEVER:
        played = replace(scenario, steps=tuple(s for s in scenario.steps if not _is_refund(s)))

    async def bridge_side(step: Step) -> None:
        if not _is_refund(step):
            await world.runtime.service(retailer, RMA_LIFECYCLE).orders.publish(
                parse_rpo_request(step.request)
            )
        elif policy.confirm_refund is ConfirmRefund.ON_RETURN_CLEARED:
            await settle(world)
            for kibo_return in world.kibo.find_returns()[kibo_before:]:
                if kibo_return.get("status") != "CLOSED":
                    await world.kibo.clear(kibo_return["returnID"])

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
    outcome.problems += [str(f) for f in result.failures]
    await settle(world)
    await _check(world, scenario, retailer, kibo_before, outcome)
    if policy.confirm_refund is ConfirmRefund.NEVER and outcome.refunds:
        outcome.problems.append(f"{outcome.refunds} refund(s) sent although confirm_refund = never")
    return outcome


async def settle(world: World, within: float = 15.0) -> None:
    """Wait until the inbox and the outbox have nothing pending."""
    store = world.runtime.store
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        stats = await store.inbox_stats()
        pending = await store.list_effects(EffectState.PENDING, limit=1)
        if stats.pending == 0 and not pending:
            return
        await asyncio.sleep(0.02)


async def _check(
    world: World, scenario: Scenario, retailer: str, kibo_before: int, outcome: Outcome
) -> None:
    """Returns are expected for every RMA whose last message reached the policy's step
    (scenario 15 ends at the carrier scan, refunded by the retailer, without Optoro's
    REFUNDED message), none for a canceled one."""
    policy = world.runtime.config.retailers[retailer].policy
    store = world.runtime.store
    last, refund_steps = _expected(scenario)
    new_returns = world.kibo.find_returns()[kibo_before:]
    outcome.kibo_returns = len(new_returns)
    returned: list[Rma] = []
    for rma_id, final in last.items():
        async with store.transaction() as tx:
            entity = await tx.get_entity("rma", f"{retailer}:{rma_id}")
        if entity is None:
            outcome.problems.append(f"RMA {rma_id} not stored")
            continue
        stored = Rma.model_validate(entity.data)
        outcome.rmas[rma_id] = stored.status.value
        if stored.status is not final.status:
            outcome.problems.append(
                f"RMA {rma_id} is {stored.status.value}, the guide ends {final.status.value}"
            )
        if final.status not in (RmaStatus.CANCELED, RmaStatus.REJECTED) and reached(
            final, policy.step_for(final.return_method)
        ):
            returned.append(final)
    _check_returns(returned, new_returns, outcome)
    outcome.refunds = len(
        {
            refund["identifier"]
            for request in world.optoro.rpo_requests()[outcome.rpo_requests_before :]
            if request.status == 200
            for order in request.body["returns_portal_order"]["orders"]
            for refund in order.get("refunds", [])
            if refund.get("rma_identifier") in last
        }
    )
    if policy.confirm_refund is not ConfirmRefund.NEVER and outcome.refunds != refund_steps:
        outcome.problems.append(
            f"{outcome.refunds} refund(s) confirmed, the guide shows {refund_steps}"
        )
    dead = [e for e in await store.list_effects(EffectState.DEAD) if e.retailer == retailer]
    outcome.problems += [f"dead letter {e.kind}: {e.dead_reason}" for e in dead]
    flags = [f for f in await store.list_flags() if f.retailer == retailer]
    outcome.problems += [f"flagged {f.entity_key}: {f.reason}" for f in flags]


def _check_returns(returned: list[Rma], returns: list[dict[str, Any]], outcome: Outcome) -> None:
    """One Kibo return per refunded RMA and order it is filed against, with one item per
    order line (the units' quantity) and the shopper's share as total."""
    expected: list[tuple[str, Counter[str], int]] = []
    for rma in returned:
        for order_id in dict.fromkeys(u.original_order_id or u.order_id for u in rma.units):
            units = [u for u in rma.units if (u.original_order_id or u.order_id) == order_id]
            expected.append(
                (
                    order_id,
                    Counter(u.order_line_id for u in units),
                    sum(u.shopper_refund_cents or 0 for u in units),
                )
            )
    if len(returns) != len(expected):
        outcome.problems.append(f"{len(returns)} Kibo return(s), expected {len(expected)}")
    unmatched = list(returns)
    for order_id, lines, shopper in expected:
        for candidate in unmatched:
            items = Counter({str(i["orderItemID"]): i["quantity"] for i in candidate["item"]})
            total = Decimal(str(candidate.get("returnTotal", "0")))
            if (
                candidate.get("externalOrderID") == order_id
                and items == lines
                and total == Decimal(shopper) / 100
            ):
                unmatched.remove(candidate)
                break
        else:
            outcome.problems.append(
                f"no Kibo return for order {order_id} with items {dict(lines)} and total"
                f" {shopper / 100:.2f}"
            )
