"""The entities the flows keep, and the one place they are read before being written."""

from __future__ import annotations

from bridge.store import Entity, Transaction

RMA = "rma"
"""Entity per RMA key (``<retailer>:<id>`` or ``<retailer>:<source>:<id>``): the canonical
RMA, versioned by :func:`bridge.flows.rmas.rma_version`."""
LIFECYCLE = "rma.lifecycle"
"""Entity per RMA key: :class:`bridge.flows.lifecycle.RmaLifecycleState`."""
ORDER = "order"
"""Entity per ``<retailer>:<order id>``: the latest canonical order snapshot."""
BRIDGE_REFUNDS = "order.bridge_refunds"
"""Entity per ``<retailer>:<order id>``: the refunds the bridge confirmed for that order
(which the order's source platform does not know)."""


async def locked(tx: Transaction, kind: str, key: str) -> Entity | None:
    """The entity ``kind``/``key`` read to be written in ``tx``: held against concurrent
    writers of that entity until ``tx`` ends (the Store port's per-entity lock)."""
    await tx.lock_entity(kind, key)
    return await tx.get_entity(kind, key)
