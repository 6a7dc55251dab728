"""The order flow: staleness, snapshot, publish -- for every order source.

An order source (e.g. ReturnLogic's poll, re-scan and backfill) maps what it read to
canonical orders and hands them to :meth:`OrderFlow.publish` (its own transaction) or
:meth:`OrderFlow.apply` (inside the caller's, e.g. an inbox handler's). Then, per order:

1. **staleness**: of several snapshots of one order the latest ``updated_at`` is kept, and
   a snapshot older than the stored one is left out (a slow reader never sends an older
   version);
2. **snapshot**: the order is stored (entity ``order``) with the refunds the bridge itself
   confirmed merged in (entity ``order.bridge_refunds``; the source platform does not know
   them, and must not make them disappear);
3. **publish**: the order publisher turns the changed snapshots into outbox effects, which
   commit with the snapshot.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from bridge.domain import Order, Refund
from bridge.flows.entities import BRIDGE_REFUNDS, ORDER, locked
from bridge.ports import OrderPublisher
from bridge.store import NewEffect, Store, Transaction


def order_key(retailer: str, order_id: str) -> str:
    return f"{retailer}:{order_id}"


def with_refunds(order: Order, refunds: Sequence[Refund]) -> Order:
    """``order`` plus those of ``refunds`` it does not carry yet (by identifier)."""
    known = {r.id for r in order.refunds}
    extra = tuple(r for r in refunds if r.id not in known)
    if not extra:
        return order
    return Order.model_validate({**order.model_dump(), "refunds": (*order.refunds, *extra)})


@dataclass(frozen=True)
class OrdersOutcome:
    """What applying a batch of order snapshots did."""

    effects: list[NewEffect] = field(default_factory=list)
    applied: int = 0
    """Snapshots stored (and handed to the publisher)."""
    stale: int = 0
    """Snapshots left out: a newer one of the same order is stored or in the batch."""


@dataclass(frozen=True)
class PublishResult:
    """What :meth:`OrderFlow.publish` committed."""

    queued: int
    """Effects (publisher requests) queued."""
    applied: int
    stale: int


class OrderFlow:
    """One retailer's order flow."""

    def __init__(
        self,
        retailer: str,
        *,
        store: Callable[[], Store],
        wake_dispatcher: Callable[[], None],
        publisher: Callable[[], OrderPublisher | None],
    ) -> None:
        self.retailer = retailer
        self._store = store
        self._wake_dispatcher = wake_dispatcher
        self._publisher = publisher

    def has_publisher(self) -> bool:
        return self._publisher() is not None

    async def publish(self, orders: Sequence[Order]) -> PublishResult:
        """:meth:`apply` in a transaction of its own, the effects queued with it."""
        if not orders:
            return PublishResult(0, 0, 0)
        queued = 0
        async with self._store().transaction() as tx:
            outcome = await self.apply(tx, orders)
            for effect in outcome.effects:
                queued += await tx.add_effect(effect)
        if queued:
            self._wake_dispatcher()
        return PublishResult(queued, outcome.applied, outcome.stale)

    async def apply(self, tx: Transaction, orders: Sequence[Order]) -> OrdersOutcome:
        """Staleness, snapshot and publish of ``orders`` inside ``tx``; the caller adds the
        effects to the outbox."""
        fresh = await self.fresh(tx, orders)
        effects = await self.snapshot_and_publish(tx, fresh)
        return OrdersOutcome(effects, applied=len(fresh), stale=len(orders) - len(fresh))

    async def fresh(self, tx: Transaction, orders: Sequence[Order]) -> list[Order]:
        """The latest snapshot per order id, without those older than what is stored."""
        latest: dict[str, Order] = {}
        for order in orders:
            seen = latest.get(order.id)
            if seen is None or order.updated_at >= seen.updated_at:
                latest[order.id] = order
        fresh = []
        for order in latest.values():
            kept = await locked(tx, ORDER, order_key(self.retailer, order.id))
            kept_at = _updated_at(kept.data) if kept is not None else None
            if kept_at is not None and kept_at > order.updated_at:
                continue
            fresh.append(order)
        return fresh

    async def snapshot_and_publish(
        self, tx: Transaction, orders: Sequence[Order]
    ) -> list[NewEffect]:
        """Store ``orders`` (with the refunds the bridge confirmed) as the latest snapshots
        and what the order publisher makes of them (nothing for an unchanged order)."""
        merged = []
        for order in orders:
            key = order_key(self.retailer, order.id)
            kept = await locked(tx, BRIDGE_REFUNDS, key)
            if kept is not None:
                order = with_refunds(
                    order, [Refund.model_validate(r) for r in kept.data["refunds"]]
                )
            await tx.put_entity(ORDER, key, (0,), order.model_dump(mode="json"))
            merged.append(order)
        publisher = self._publisher()
        if publisher is None or not merged:
            return []
        return await publisher.publish(tx, merged)


def parse_utc(value: object) -> datetime | None:
    """An ISO-8601 date-time as an aware UTC datetime (naive = UTC), else ``None``."""
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _updated_at(data: object) -> datetime | None:
    """``updated_at`` of a stored order snapshot (aware; naive is UTC)."""
    return parse_utc(data.get("updated_at") if isinstance(data, dict) else None)
