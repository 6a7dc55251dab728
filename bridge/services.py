"""Ports between adapters, with in-memory fakes for tests.

Adapters never import each other: an adapter *provides* a capability for a retailer on
the runtime (``runtime.provide``) and another adapter *uses* it (``runtime.service``).
Which adapter serves a capability is the retailer's ``[retailers.<id>.routes]`` choice;
without one, the only provider is used (two providers and no route is a config error).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from bridge.domain import ExchangeOrder, ExchangeOrderResult, Order, Rma, Variant
from bridge.errors import MappingError, RetriableDeliveryError
from bridge.store import NewEffect, Transaction

CATALOG = "catalog"
EXCHANGE_ORDER_SINK = "exchange_order_sink"
ORDER_PUBLISHER = "order_publisher"
RETURNS_SINK = "returns_sink"
REFUND_PUBLISHER = "refund_publisher"
RMA_LIFECYCLE = "rma_lifecycle"

CAPABILITIES = frozenset(
    {CATALOG, EXCHANGE_ORDER_SINK, ORDER_PUBLISHER, RETURNS_SINK, REFUND_PUBLISHER, RMA_LIFECYCLE}
)
"""Every capability name a route (``[retailers.<id>.routes]``) or an adapter may use."""
CORE_PROVIDER = "bridge"
"""The provider name of what the core itself provides for every enabled retailer."""
CORE_CAPABILITIES = frozenset({RMA_LIFECYCLE})


@runtime_checkable
class CatalogSource(Protocol):
    """Exchange candidates for a variant: the variants of the same product."""

    async def variants_for(self, variant_identifier: str) -> list[Variant]: ...


@runtime_checkable
class ExchangeOrderSink(Protocol):
    """Creates the exchange order in the retailer's order system, at most once per
    ``original_order_id`` even when called again after an unknown outcome."""

    async def create_exchange_order(self, order: ExchangeOrder) -> ExchangeOrderResult: ...


@runtime_checkable
class OrderPublisher(Protocol):
    """Turns changed canonical orders into outbox effects, inside the caller's transaction."""

    async def publish(self, tx: Transaction, orders: Sequence[Order]) -> list[NewEffect]: ...


@runtime_checkable
class RmaLifecycle(Protocol):
    """Decides what a new RMA state causes (returns, refund confirmations, flags)."""

    async def on_rma(
        self, tx: Transaction, retailer: str, rma_key: str, previous: Rma | None, current: Rma
    ) -> list[NewEffect]: ...


@runtime_checkable
class ReturnsSink(Protocol):
    """Creates returns (e.g. Kibo Create Return) for an RMA that reached a policy step.

    The effects it returns are keyed by RMA and step (at most one return per step, ever)
    and share ``order_key`` with the refund confirmation that follows them; on success
    its destination reports ``ReturnEvent("created", ...)`` to the RMA lifecycle."""

    def return_effects(
        self, retailer: str, rma_key: str, rma: Rma, step: str, order_key: str
    ) -> list[NewEffect]: ...


class InMemoryCatalog:
    """A catalog from a list of variants grouped by product (for tests and the demo)."""

    def __init__(self, variants: Sequence[Variant] = ()) -> None:
        self.variants = list(variants)
        self.calls = 0
        self.fail = False

    async def variants_for(self, variant_identifier: str) -> list[Variant]:
        self.calls += 1
        if self.fail:
            raise RetriableDeliveryError("catalog unavailable")
        product = next(
            (v.product_id for v in self.variants if variant_identifier in (v.variant_id, v.sku)),
            None,
        )
        if product is None:
            return []
        return [v for v in self.variants if v.product_id == product]


class InMemoryOrderSink:
    """Records exchange orders; one per ``original_order_id``, like a careful real sink."""

    def __init__(self, prefix: str = "EXCH") -> None:
        self.prefix = prefix
        self.orders: dict[str, ExchangeOrder] = {}
        self.calls = 0
        self.fail = False

    async def create_exchange_order(self, order: ExchangeOrder) -> ExchangeOrderResult:
        self.calls += 1
        if self.fail:
            raise RetriableDeliveryError("order sink unavailable")
        if not order.items:
            raise MappingError("an exchange order needs items", field="items")
        self.orders.setdefault(order.original_order_id, order)
        number = list(self.orders).index(order.original_order_id) + 1
        return ExchangeOrderResult(
            order_id=f"{self.prefix}{number:05d}",
            total_cents=order.total_cents,
            product_cents=order.product_cents,
            tax_cents=order.tax_cents,
        )
