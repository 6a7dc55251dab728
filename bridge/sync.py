"""Moving canonical entities from a source adapter to their destinations."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from bridge.domain import Order
from bridge.lifecycle import store_orders

if TYPE_CHECKING:
    from bridge.app import Runtime


async def publish_orders(runtime: Runtime, retailer: str, orders: Sequence[Order]) -> int:
    """Keep ``orders`` as the retailer's latest snapshots and queue the changed ones to its
    order publisher, atomically; returns the number of effects (requests) queued."""
    async with runtime.store.transaction() as tx:
        effects = await store_orders(tx, runtime, retailer, orders)
        for effect in effects:
            await tx.add_effect(effect)
    if effects:
        runtime.engine.wake_dispatcher()
    return len(effects)
