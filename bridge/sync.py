"""Moving canonical entities from a source adapter to their destinations."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from bridge.domain import Order
from bridge.services import ORDER_PUBLISHER

if TYPE_CHECKING:
    from bridge.app import Runtime


async def publish_orders(runtime: Runtime, retailer: str, orders: Sequence[Order]) -> int:
    """Queue the changed ones of ``orders`` to the retailer's order publisher, atomically;
    returns the number of effects (requests) queued."""
    publisher = runtime.service(retailer, ORDER_PUBLISHER)
    async with runtime.store.transaction() as tx:
        effects = await publisher.publish(tx, orders)
        for effect in effects:
            await tx.add_effect(effect)
    if effects:
        runtime.engine.wake_dispatcher()
    return len(effects)
