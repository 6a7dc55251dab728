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
"""Entity per ``<retailer>:<order id>``: the order's refund ledger
(:class:`bridge.flows.refunds.RefundLedger`), every refund event sent for the order: those
the bridge confirmed and those its source platform reported (the kind keeps its first name,
from when it held the bridge's only)."""
REFUND_LEDGER = BRIDGE_REFUNDS


async def locked(tx: Transaction, kind: str, key: str) -> Entity | None:
    """The entity ``kind``/``key`` read to be written in ``tx``: held against concurrent
    writers of that entity until ``tx`` ends (the Store port's per-entity lock)."""
    await tx.lock_entity(kind, key)
    return await tx.get_entity(kind, key)
