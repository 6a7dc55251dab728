"""The life of an RMA, whichever platform it comes from, per the retailer's policy.

RMA -> return in the returns sink (at the policy's step) -> refund confirmed to the order
publisher (when the return exists, when it is cleared, or never) -> closed.

Everything here runs inside the transaction that applies the RMA (or the return event),
so the state below and the effects it causes commit together. Per RMA the lifecycle keeps
entity ``rma.lifecycle`` ``{"returns": {step: {"state", "return_ids"}}, "refund": ...,
"closed": bool, "canceled": bool}``; because effects are derived from the state reached
and keyed by RMA and step, messages in any order or repeated give the same effects:
at most one return per RMA and step, and at most one refund per RMA and order, ever.

Cancellation: ``CANCELED`` (or ``REJECTED``) before the return exists cancels the queued
steps; after it exists (or while its creation is in flight) the RMA is flagged for an
operator (``returns-bridge dlq list --flagged``). ``REFUNDED`` closes the RMA: what
arrives afterwards changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from bridge.domain import Order, Refund, RefundLine, Rma, RmaStatus
from bridge.policy import ConfirmRefund, PolicyConfig, Step, reached
from bridge.ports import ORDER_PUBLISHER, RETURNS_SINK
from bridge.store import EffectState, NewEffect, Transaction

if TYPE_CHECKING:
    from bridge.ports import AdapterContext

log = logging.getLogger(__name__)

LIFECYCLE = "rma.lifecycle"
ORDER = "order"
BRIDGE_REFUNDS = "order.bridge_refunds"
_TERMINAL = frozenset({RmaStatus.CANCELED, RmaStatus.REJECTED})


def rma_order_key(rma_key: str) -> str:
    """Effects of one RMA that must go out in order (return before refund) share this."""
    return f"rma:{rma_key}"


def is_closed(previous: Rma | None) -> bool:
    """A refunded or canceled RMA accepts no later message."""
    return previous is not None and (
        previous.status is RmaStatus.REFUNDED or previous.status in _TERMINAL
    )


@dataclass(frozen=True)
class ReturnEvent:
    """What the returns sink reports about a return it holds."""

    kind: str  # created | cleared | rejected | refund_failed | reopened
    return_id: str
    step: str | None = None


def build_refund(rma: Rma, order_id: str, several_orders: bool) -> Refund:
    """The refund confirming ``rma``'s units of ``order_id``: one line per order line with
    the units' quantity, total = the units' estimated refund (the shopper's share plus the
    share Optoro funds on even exchanges, as every refund of the guide shows)."""
    refund_id = f"RMA-{rma.id}-{order_id}" if several_orders else f"RMA-{rma.id}"
    aggregates = [a for a in rma.line_aggregates() if a.order_id == order_id]
    total = sum((u.estimated_refund_cents or 0) for u in rma.units if u.order_id == order_id)
    return Refund(
        id=refund_id,
        total_cents=total,
        lines=tuple(
            RefundLine(id=f"{refund_id}_{n}", order_line_id=a.order_line_id, qty=a.qty)
            for n, a in enumerate(aggregates, 1)
        ),
        note="Returned",
        created_at=rma.updated_at,
        rma_id=rma.id,
    )


def with_refunds(order: Order, refunds: Sequence[Refund]) -> Order:
    """``order`` plus those of ``refunds`` it does not carry yet (by identifier)."""
    known = {r.id for r in order.refunds}
    extra = tuple(r for r in refunds if r.id not in known)
    if not extra:
        return order
    return Order.model_validate({**order.model_dump(), "refunds": (*order.refunds, *extra)})


class Lifecycle:
    """The ``rma_lifecycle`` capability of one retailer."""

    def __init__(self, runtime: AdapterContext, retailer: str, policy: PolicyConfig) -> None:
        self.runtime = runtime
        self.retailer = retailer
        self.policy = policy

    # RMA messages ------------------------------------------------------------------------

    async def on_rma(
        self, tx: Transaction, retailer: str, rma_key: str, previous: Rma | None, current: Rma
    ) -> list[NewEffect]:
        """``rma_key`` is the key the source adapter stored ``current`` under (entity
        ``rma``); the returns sink reads the RMA back by it."""
        state = await self._state(tx, rma_key)
        if state["closed"]:
            return []
        effects: list[NewEffect] = []
        if current.status in _TERMINAL:
            await self._cancel(tx, rma_key, state, current)
        else:
            step = self.policy.step_for(current.return_method)
            if reached(current, step) and step.value not in state["returns"]:
                effects += self._create_return(rma_key, current, step)
                state["returns"][step.value] = {"state": "queued", "return_ids": []}
            if current.status is RmaStatus.REFUNDED:
                state["closed"] = True
        await self._save(tx, rma_key, state)
        return effects

    def _create_return(self, rma_key: str, rma: Rma, step: Step) -> list[NewEffect]:
        if not self.runtime.has_service(self.retailer, RETURNS_SINK):
            return []
        sink = self.runtime.service(self.retailer, RETURNS_SINK)
        effects: list[NewEffect] = sink.return_effects(
            self.retailer, rma_key, rma, step.value, rma_order_key(rma_key)
        )
        return effects

    async def _cancel(self, tx: Transaction, rma_key: str, state: dict[str, Any], rma: Rma) -> None:
        state["canceled"] = True
        state["closed"] = True
        if not state["returns"]:
            return
        effect_states = await tx.effect_states(rma_order_key(rma_key))
        if any(s is EffectState.DELIVERED for s in effect_states.values()) or any(
            r["state"] != "queued" for r in state["returns"].values()
        ):
            await tx.add_flag(
                self.retailer,
                "rma",
                rma_key,
                f"RMA {rma.status.value.lower()} after its return was created:"
                " undo it in the returns system",
            )
            return
        canceled = await tx.cancel_effects(rma_order_key(rma_key))
        log.info("queued return canceled", extra={"rma": rma_key, "effects": canceled})

    # events from the returns sink --------------------------------------------------------

    async def on_return_event(
        self, tx: Transaction, rma_key: str, event: ReturnEvent
    ) -> list[NewEffect]:
        """The sink created, cleared or rejected the return of ``rma_key``."""
        state = await self._state(tx, rma_key)
        step = event.step or next(iter(state["returns"]), Step.CREATED.value)
        entry = state["returns"].setdefault(step, {"state": "queued", "return_ids": []})
        if event.return_id not in entry["return_ids"]:
            entry["return_ids"].append(event.return_id)
        effects: list[NewEffect] = []
        if event.kind == "created":
            entry["state"] = "created" if entry["state"] == "queued" else entry["state"]
            if state["canceled"]:
                await tx.add_flag(
                    self.retailer,
                    "rma",
                    rma_key,
                    "return created in the returns system after the RMA was canceled",
                )
            elif self.policy.confirm_refund is ConfirmRefund.ON_RETURN_CREATED:
                effects += await self._confirm_refund(tx, rma_key, state)
        elif event.kind == "cleared":
            entry["state"] = "cleared"
            if self.policy.confirm_refund is ConfirmRefund.ON_RETURN_CLEARED:
                effects += await self._confirm_refund(tx, rma_key, state)
        elif event.kind in ("rejected", "refund_failed"):
            entry["state"] = event.kind
            await tx.add_flag(
                self.retailer,
                "rma",
                rma_key,
                f"return {event.return_id} {event.kind.replace('_', ' ')} in the returns system",
            )
        elif event.kind == "reopened":
            entry["state"] = "created"
        await self._save(tx, rma_key, state)
        return effects

    async def pending_returns(self, tx: Transaction, rma_key: str) -> list[str]:
        state = await self._state(tx, rma_key)
        return [
            rid
            for entry in state["returns"].values()
            if entry["state"] == "created"
            for rid in entry["return_ids"]
        ]

    # refund confirmation -----------------------------------------------------------------

    async def _confirm_refund(
        self, tx: Transaction, rma_key: str, state: dict[str, Any]
    ) -> list[NewEffect]:
        if state.get("refund") or not self.runtime.has_service(self.retailer, ORDER_PUBLISHER):
            return []
        stored = await tx.get_entity("rma", rma_key)
        if stored is None:
            return []
        rma = Rma.model_validate(stored.data)
        if any(u.estimated_refund_cents is None for u in rma.units):
            # the source carries no refund amounts per unit (ReturnLogic RMAs): the order
            # source reports its own refunds with the orders, nothing to confirm here
            state["refund"] = "not_applicable"
            return []
        order_ids = list(dict.fromkeys(u.order_id for u in rma.units))
        orders: list[Order] = []
        for order_id in order_ids:
            order_key = f"{self.retailer}:{order_id}"
            entity = await tx.get_entity(ORDER, order_key)
            if entity is None:
                await tx.add_flag(
                    self.retailer,
                    "rma",
                    rma_key,
                    f"refund not confirmed: order {order_id} was never synced to the bridge",
                )
                return []
            refund = build_refund(rma, order_id, len(order_ids) > 1)
            kept = await tx.get_entity(BRIDGE_REFUNDS, order_key)
            refunds = [Refund.model_validate(r) for r in (kept.data["refunds"] if kept else [])]
            if refund.id not in {r.id for r in refunds}:
                refunds.append(refund)
            try:
                orders.append(with_refunds(Order.model_validate(entity.data), refunds))
            except ValidationError as exc:
                await tx.add_flag(
                    self.retailer,
                    "rma",
                    rma_key,
                    f"refund not confirmed: it does not fit order {order_id}:"
                    f" {exc.errors()[0]['msg']}",
                )
                return []
            await tx.put_entity(
                BRIDGE_REFUNDS,
                order_key,
                (len(refunds),),
                {"refunds": [r.model_dump(mode="json") for r in refunds]},
            )
        state["refund"] = "queued"
        return await store_orders(tx, self.runtime, self.retailer, orders)

    # state -------------------------------------------------------------------------------

    @staticmethod
    async def _state(tx: Transaction, rma_key: str) -> dict[str, Any]:
        entity = await tx.get_entity(LIFECYCLE, rma_key)
        if entity is None:
            return {"returns": {}, "refund": None, "closed": False, "canceled": False}
        data: dict[str, Any] = entity.data
        return data

    @staticmethod
    async def _save(tx: Transaction, rma_key: str, state: dict[str, Any]) -> None:
        await tx.put_entity(LIFECYCLE, rma_key, (0,), state)


async def store_orders(
    tx: Transaction, runtime: AdapterContext, retailer: str, orders: Sequence[Order]
) -> list[NewEffect]:
    """Keep the latest canonical snapshot of ``orders`` (with the refunds the bridge has
    confirmed, which the source platform does not know) and publish the changed ones."""
    merged = []
    for order in orders:
        key = f"{retailer}:{order.id}"
        kept = await tx.get_entity(BRIDGE_REFUNDS, key)
        if kept is not None:
            order = with_refunds(order, [Refund.model_validate(r) for r in kept.data["refunds"]])
        await tx.put_entity(ORDER, key, (0,), order.model_dump(mode="json"))
        merged.append(order)
    if not runtime.has_service(retailer, ORDER_PUBLISHER):
        return []
    publisher = runtime.service(retailer, ORDER_PUBLISHER)
    effects: list[NewEffect] = await publisher.publish(tx, merged)
    return effects
