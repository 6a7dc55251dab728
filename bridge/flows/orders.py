"""The order flow: staleness, snapshot, publish -- for every order source.

An order source (e.g. ReturnLogic's poll, re-scan and backfill) maps what it read to
canonical orders and hands them to :meth:`OrderFlow.publish` (its own transaction) or
:meth:`OrderFlow.apply` (inside the caller's, e.g. an inbox handler's). Then, per order:

1. **staleness**: of several snapshots of one order the latest ``updated_at`` is kept, and
   a snapshot older than the stored one is left out (a slow reader never sends an older
   version);
2. **snapshot**: the source's refunds are recorded in the order's refund ledger
   (:mod:`bridge.flows.refunds`: one immutable event per refund event, the same units never
   twice whichever source reports them) and the order is stored (entity ``order``) carrying
   exactly the ledger's events; an order whose refunds cannot be recorded is flagged and
   left out, alone (the rest of the batch goes on);
3. **publish**: the order publisher turns the changed snapshots into outbox effects, which
   commit with the snapshot.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pydantic import ValidationError

from bridge.domain import Order
from bridge.flows.entities import ORDER, locked
from bridge.flows.refunds import line_quantities, load_ledger, save_ledger, with_ledger
from bridge.ports import OrderPublisher
from bridge.store import NewEffect, Store, Transaction

log = logging.getLogger(__name__)


def order_key(retailer: str, order_id: str) -> str:
    return f"{retailer}:{order_id}"


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
        """Record ``orders``' refunds in their ledgers, store the orders (carrying the
        ledger's events) as the latest snapshots and return what the order publisher makes
        of them (nothing for an unchanged order). An order whose refunds do not fit it is
        flagged and left out; the others go on."""
        merged = []
        for order in orders:
            key = order_key(self.retailer, order.id)
            ledger = await load_ledger(tx, key)
            before = len(ledger.refunds), dict(ledger.absorbed)
            problems = ledger.record_source(order.refunds, line_quantities(order))
            try:
                order = with_ledger(order, ledger)
            except ValidationError as exc:
                problems.append(f"the recorded refunds do not fit it: {exc.errors()[0]['msg']}")
                await self._flag(tx, order, problems)
                continue
            if problems:
                await self._flag(tx, order, problems)
            if (len(ledger.refunds), ledger.absorbed) != before:
                await save_ledger(tx, key, ledger)
            await tx.put_entity(ORDER, key, (0,), order.model_dump(mode="json"))
            merged.append(order)
        publisher = self._publisher()
        if publisher is None or not merged:
            return []
        return await publisher.publish(tx, merged)

    async def _flag(self, tx: Transaction, order: Order, problems: Sequence[str]) -> None:
        reason = f"order {order.id} refunds: {'; '.join(problems)}"[:500]
        await tx.add_flag(self.retailer, ORDER, order.id, reason)
        log.warning(
            "order refunds need an operator",
            extra={"retailer": self.retailer, "order_id": order.id, "reason": reason},
        )


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
