"""The returns flows, written once for every platform: RMA, order, return event.

Adapters translate and transport; these decide. Each runs inside the caller's store
transaction, so the state it writes and the effects it returns commit together:

* :mod:`bridge.flows.rmas` -- an RMA message from any source (closed check, versioning,
  cancellation, the policy step, the refund confirmation);
* :mod:`bridge.flows.orders` -- order snapshots from any order source (staleness,
  snapshot with the bridge's refunds, publish);
* :mod:`bridge.flows.returns` -- what the returns sink reports about a return (an
  enum-driven state machine over the typed lifecycle of :mod:`bridge.flows.lifecycle`).

:class:`ReturnsFlows` holds one retailer's three; the runtime provides it for every enabled
retailer as the ``rma_lifecycle`` capability.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from bridge.flows.entities import BRIDGE_REFUNDS, LIFECYCLE, ORDER, RMA
from bridge.flows.lifecycle import RefundState, ReturnState, RmaLifecycleState, StepReturns
from bridge.flows.orders import OrderFlow, OrdersOutcome, PublishResult
from bridge.flows.refunds import RefundLedger
from bridge.flows.returns import (
    TRANSITIONS,
    ReturnEvent,
    ReturnEventFlow,
    ReturnEventKind,
    ReturnEventOutcome,
    Settlement,
)
from bridge.flows.rmas import RmaFlow, RmaOutcome, build_refund, is_closed, rma_version
from bridge.policy import PolicyConfig
from bridge.ports import OrderPublisher, OrderSource, ReturnsSink
from bridge.store import Store


class ReturnsFlows:
    """One retailer's flows, wired to its collaborators (looked up when used: adapters
    offer their services after the flows exist)."""

    def __init__(
        self,
        retailer: str,
        policy: PolicyConfig,
        *,
        store: Callable[[], Store],
        wake_dispatcher: Callable[[], None],
        order_publisher: Callable[[], OrderPublisher | None],
        returns_sink: Callable[[], ReturnsSink | None],
        order_source: Callable[[], OrderSource | None] = lambda: None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.retailer = retailer
        self.orders = OrderFlow(
            retailer, store=store, wake_dispatcher=wake_dispatcher, publisher=order_publisher
        )
        self.rmas = RmaFlow(
            retailer,
            policy,
            orders=self.orders,
            returns_sink=returns_sink,
            order_source=order_source,
            clock=clock,
        )
        self.return_events = ReturnEventFlow(retailer, policy, rmas=self.rmas)


__all__ = [
    "BRIDGE_REFUNDS",
    "LIFECYCLE",
    "ORDER",
    "RMA",
    "TRANSITIONS",
    "OrderFlow",
    "OrdersOutcome",
    "PublishResult",
    "RefundLedger",
    "RefundState",
    "ReturnEvent",
    "ReturnEventFlow",
    "ReturnEventKind",
    "ReturnEventOutcome",
    "ReturnState",
    "ReturnsFlows",
    "RmaFlow",
    "RmaLifecycleState",
    "RmaOutcome",
    "Settlement",
    "StepReturns",
    "build_refund",
    "is_closed",
    "rma_version",
]
