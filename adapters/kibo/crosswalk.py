"""The Kibo line crosswalk in the store, and its resolution when a return is created.

Entities (all per retailer, see :mod:`mappings.kibo.crosswalk` for what they mean):

- ``kibo.crosswalk`` ``<retailer>:<order>:<line>`` -> ``{"order_item_id", "order_id",
  "line_id", "source"}`` (``source``: ``import`` or ``order``);
- ``kibo.order_id`` ``<retailer>:<order>`` -> ``{"order_id", "source"}``: Kibo's ``orderID``;
- ``kibo.exchanged_lines`` ``<retailer>:<exchange order>`` -> ``{"lines": [[order, line]]}``:
  the original lines an RMA exchanged into that exchange order, and ``kibo.exchanged_by_order``
  ``<retailer>:<original order>``: the lines of that order an RMA exchanged (both recorded
  from every RMA the destination renders), so the return of an exchange order resolves to the
  original order's Kibo item, the order its refund goes against.

Resolution of a unit's line (:func:`resolve_lines`), first that answers:

1. the crosswalk entry of ``(order, line)``;
2. the order snapshot the order flow stored, by ``order_item_id_field`` (recorded in the
   crosswalk with source ``order``: later snapshots do not move a return already resolved;
   the ``orderID`` read by ``order_id_field`` likewise);
3. for the line of an exchange order: the one original line exchanged into it (else the one
   line of the original order that was exchanged), resolved by 1-2 (or as digits with
   ``line_ids = "numeric"``); several candidates: unresolved, never guessed (the exchanging
   RMA's return must have been rendered first -- else the dead letter is replayed later);
4. ``line_ids = "numeric"``: the line id itself when canonical digits.

Anything else stays unresolved: the create is a dead letter naming the line, and ``dlq replay``
after ``crosswalk import`` sends it (the body is built when sent).

Currency (:meth:`LineResolver.currency`): Optoro's RMA and Kibo's return carry none, so a
return's amounts are in the currency of the order its refund goes against, as the order flow's
snapshot of that order says (``Order.currency``), else the adapter's ``currency`` (default
USD): the order was never synced through the bridge.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from adapters.kibo.config import KiboConfig
from bridge.domain import Order, RefundType, Rma
from bridge.store import Store, Transaction
from bridge.store.base import each_entity_key
from mappings.kibo import numeric_order_item_ids
from mappings.kibo.crosswalk import (
    CrosswalkRow,
    exchanged_original_line,
    kibo_order_id_from_order,
    numeric_id,
    order_item_id_from_order,
)

log = logging.getLogger(__name__)

CROSSWALK = "kibo.crosswalk"
"""Entity per ``<retailer>:<order>:<line>``: ``{"order_item_id": int, ...}``."""
KIBO_ORDER_ID = "kibo.order_id"
"""Entity per ``<retailer>:<order>``: ``{"order_id": int, "source": str}``."""
EXCHANGED_LINES = "kibo.exchanged_lines"
"""Entity per ``<retailer>:<exchange order>``: ``{"lines": [[order, line], ...]}``."""
EXCHANGED_BY_ORDER = "kibo.exchanged_by_order"
"""Entity per ``<retailer>:<original order>``: ``{"lines": [[order, line], ...]}``, the lines
of that order an RMA exchanged (whichever exchange order shipped the replacement)."""
EXCHANGE_TYPES = frozenset({RefundType.EVEN_EXCHANGE, RefundType.INSTANT_EXCHANGE})
ORDER = "order"
"""The order flow's snapshot entity (``bridge.flows.entities.ORDER``), read only."""


@dataclass(frozen=True)
class Resolution:
    """What a create needs resolved: ``orderItemID`` per line, ``orderID`` per order."""

    order_item_ids: dict[tuple[str, str], int]
    kibo_order_ids: dict[str, int]
    currencies: dict[str, str]
    """ISO 4217 code per ``externalOrderID`` (:meth:`LineResolver.currency`)."""


def _line_key(retailer: str, order_id: str, line_id: str) -> str:
    return f"{retailer}:{order_id}:{line_id}"


async def record_line(
    tx: Transaction, retailer: str, order_id: str, line_id: str, order_item_id: int, source: str
) -> bool:
    """Write one crosswalk entry; True when it is new or changed."""
    key = _line_key(retailer, order_id, line_id)
    kept = await tx.get_entity(CROSSWALK, key)
    if kept is not None and kept.data.get("order_item_id") == order_item_id:
        return False
    await tx.put_entity(
        CROSSWALK,
        key,
        (0,),
        {
            "order_item_id": order_item_id,
            "order_id": order_id,
            "line_id": line_id,
            "source": source,
        },
    )
    return True


async def record_order_id(
    tx: Transaction, retailer: str, order_id: str, kibo_order_id: int, source: str
) -> None:
    await tx.put_entity(
        KIBO_ORDER_ID, f"{retailer}:{order_id}", (0,), {"order_id": kibo_order_id, "source": source}
    )


async def import_rows(store: Store, retailer: str, rows: list[CrosswalkRow]) -> int:
    """Record ``rows`` (one transaction: all or nothing); returns how many changed."""
    changed = 0
    async with store.transaction() as tx:
        for row in rows:
            changed += await record_line(
                tx, retailer, row.order_id, row.line_id, row.order_item_id, "import"
            )
            if row.kibo_order_id is not None:
                await record_order_id(tx, retailer, row.order_id, row.kibo_order_id, "import")
    return changed


async def export_rows(
    store: Store, retailer: str, order_id: str | None = None
) -> list[CrosswalkRow]:
    """The retailer's crosswalk (of one order when ``order_id`` is given), sorted by key."""
    prefix = f"{retailer}:" if order_id is None else f"{retailer}:{order_id}:"
    keys = [key async for key in each_entity_key(store, CROSSWALK, prefix)]
    rows = []
    async with store.transaction() as tx:
        for key in keys:
            entry = await tx.get_entity(CROSSWALK, key)
            if entry is None:
                continue
            data = entry.data
            order, line = data.get("order_id"), data.get("line_id")
            if order is None or line is None:  # entries written before the import existed
                order, _, line = key[len(retailer) + 1 :].rpartition(":")
            if order_id is not None and order != order_id:
                continue
            kibo = await tx.get_entity(KIBO_ORDER_ID, f"{retailer}:{order}")
            rows.append(
                CrosswalkRow(
                    order,
                    line,
                    int(data["order_item_id"]),
                    int(kibo.data["order_id"]) if kibo is not None else None,
                )
            )
    return rows


async def _add_line(tx: Transaction, kind: str, key: str, pair: list[str]) -> None:
    kept = await tx.get_entity(kind, key)
    lines: list[list[str]] = [list(p) for p in kept.data["lines"]] if kept else []
    if pair not in lines:
        lines.append(pair)
        await tx.put_entity(kind, key, (0,), {"lines": lines})


async def record_exchanges(tx: Transaction, retailer: str, rma: Rma) -> None:
    """Note the original lines the RMA exchanges: per exchange order when a unit names it,
    and per original order (Optoro's later messages may drop ``exchange_order_identifier``)."""
    for unit in rma.units:
        pair = [unit.order_id, unit.order_line_id]
        if unit.exchange_order_id is not None:
            await _add_line(tx, EXCHANGED_LINES, f"{retailer}:{unit.exchange_order_id}", pair)
        if unit.original_order_id is None and (
            unit.is_exchange or unit.refund_type in EXCHANGE_TYPES
        ):
            await _add_line(tx, EXCHANGED_BY_ORDER, f"{retailer}:{unit.order_id}", pair)


class LineResolver:
    """Resolves an RMA's lines for one retailer as configured (see the module rules)."""

    def __init__(self, retailer: str, config: KiboConfig) -> None:
        self.retailer = retailer
        self.config = config

    async def resolve(self, tx: Transaction, rma: Rma) -> Resolution:
        await record_exchanges(tx, self.retailer, rma)
        numeric = (
            numeric_order_item_ids(rma, exchange_lines=self.config.exchange_lines_numeric)
            if self.config.line_ids == "numeric"
            else {}
        )
        orders: dict[str, Order | None] = {}
        ids: dict[tuple[str, str], int] = {}
        for unit in rma.units:
            key = (unit.order_id, unit.order_line_id)
            if key in ids:
                continue
            found = await self._line(tx, unit.order_id, unit.order_line_id, orders)
            if found is None and unit.original_order_id is not None:
                found = await self._exchanged(tx, unit.order_id, unit.original_order_id, orders)
            if found is None:
                found = numeric.get(key)
            if found is not None:
                ids[key] = found
        kibo_orders: dict[str, int] = {}
        currencies: dict[str, str] = {}
        for external in dict.fromkeys(u.original_order_id or u.order_id for u in rma.units):
            kibo_order = await self._order_id(tx, external, orders)
            if kibo_order is not None:
                kibo_orders[external] = kibo_order
            currencies[external] = await self.currency(tx, external, orders)
        return Resolution(ids, kibo_orders, currencies)

    async def currency(
        self, tx: Transaction, order_id: str, orders: dict[str, Order | None] | None = None
    ) -> str:
        """The currency of the Kibo return of ``order_id``: its snapshot's, else the
        configured ``currency``."""
        order = await self._snapshot(tx, order_id, {} if orders is None else orders)
        return order.currency if order is not None else self.config.currency

    async def _snapshot(
        self, tx: Transaction, order_id: str, orders: dict[str, Order | None]
    ) -> Order | None:
        if order_id not in orders:
            stored = await tx.get_entity(ORDER, f"{self.retailer}:{order_id}")
            orders[order_id] = Order.model_validate(stored.data) if stored is not None else None
        return orders[order_id]

    async def _line(
        self, tx: Transaction, order_id: str, line_id: str, orders: dict[str, Order | None]
    ) -> int | None:
        entry = await tx.get_entity(CROSSWALK, _line_key(self.retailer, order_id, line_id))
        if entry is not None:
            return int(entry.data["order_item_id"])
        if self.config.order_item_id_field == "none":
            return None
        order = await self._snapshot(tx, order_id, orders)
        if order is None:
            return None
        found = order_item_id_from_order(order, line_id, self.config.order_item_id_field)
        if found is not None:
            await record_line(tx, self.retailer, order_id, line_id, found, "order")
        return found

    async def _exchanged(
        self,
        tx: Transaction,
        exchange_order_id: str,
        original_order_id: str,
        orders: dict[str, Order | None],
    ) -> int | None:
        original = None
        for kind, key in (
            (EXCHANGED_LINES, exchange_order_id),
            (EXCHANGED_BY_ORDER, original_order_id),
        ):
            kept = await tx.get_entity(kind, f"{self.retailer}:{key}")
            lines = [(str(p[0]), str(p[1])) for p in kept.data["lines"]] if kept else []
            original = exchanged_original_line(lines)
            if original is not None:
                break
        if original is None:
            return None
        found = await self._line(tx, original[0], original[1], orders)
        if found is None and self.config.line_ids == "numeric":
            found = numeric_id(original[1])
        return found

    async def _order_id(
        self, tx: Transaction, order_id: str, orders: dict[str, Order | None]
    ) -> int | None:
        kept = await tx.get_entity(KIBO_ORDER_ID, f"{self.retailer}:{order_id}")
        if kept is not None:
            return int(kept.data["order_id"])
        if self.config.order_id_field == "none":
            return None
        order = await self._snapshot(tx, order_id, orders)
        found = kibo_order_id_from_order(order, self.config.order_id_field) if order else None
        if found is not None:
            await record_order_id(tx, self.retailer, order_id, found, "order")
        return found

    def return_location(self, rma: Rma) -> int | None:
        """``returnLocation`` for the RMA's warehouse (``None``: left to Kibo)."""
        config = self.config
        if rma.warehouse_id is not None and rma.warehouse_id in config.return_locations:
            return config.return_locations[rma.warehouse_id]
        if rma.warehouse_id is not None and config.return_locations:
            log.warning(
                "kibo: warehouse not in return_locations",
                extra={
                    "retailer": self.retailer,
                    "rma": rma.id,
                    "warehouse_id": rma.warehouse_id,
                    "fallback": config.default_return_location,
                },
            )
        return config.default_return_location
