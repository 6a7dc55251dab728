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
from bridge.store import Entity, Store, Transaction
from bridge.store.base import EntityId, EntityReader, each_entity_key
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


class _Reads:
    """The entities one resolution reads, fetched in batches and kept, and what it would
    record (crosswalk lines and ``orderID`` from the order snapshot, exchanged lines):
    applied in the same transaction by :meth:`LineResolver.resolve`, never by
    :meth:`LineResolver.read`."""

    def __init__(self, reader: EntityReader, retailer: str) -> None:
        self.reader = reader
        self.retailer = retailer
        self.seen: dict[EntityId, Entity | None] = {}
        self.orders: dict[str, Order | None] = {}
        self.lines: dict[tuple[str, str], int] = {}
        self.order_ids: dict[str, int] = {}
        self.exchanges: dict[EntityId, list[list[str]]] = {}

    @property
    def writes(self) -> bool:
        return bool(self.lines or self.order_ids or self.exchanges)

    async def fetch(self, ids: list[EntityId]) -> None:
        missing = [i for i in dict.fromkeys(ids) if i not in self.seen]
        if missing:
            found = await self.reader.get_entities(missing)
            for entity_id in missing:
                self.seen[entity_id] = found.get(entity_id)

    async def get(self, kind: str, key: str) -> Entity | None:
        await self.fetch([(kind, key)])
        return self.seen[kind, key]

    async def exchanged(self, kind: str, key: str) -> list[list[str]]:
        """The lines of an exchanged-lines entity, with those this resolution adds."""
        if (kind, key) in self.exchanges:
            return self.exchanges[kind, key]
        kept = await self.get(kind, key)
        return [list(p) for p in kept.data["lines"]] if kept else []

    async def snapshot(self, order_id: str) -> Order | None:
        if order_id not in self.orders:
            stored = await self.get(ORDER, f"{self.retailer}:{order_id}")
            self.orders[order_id] = Order.model_validate(stored.data) if stored else None
        return self.orders[order_id]

    async def record(self, tx: Transaction) -> None:
        for (order_id, line_id), item_id in self.lines.items():
            await record_line(tx, self.retailer, order_id, line_id, item_id, "order")
        for order_id, kibo_order_id in self.order_ids.items():
            await record_order_id(tx, self.retailer, order_id, kibo_order_id, "order")
        for (kind, key), lines in self.exchanges.items():
            await tx.put_entity(kind, key, (0,), {"lines": lines})


class LineResolver:
    """Resolves an RMA's lines for one retailer as configured (see the module rules).

    Reads are batched: the crosswalk entries, ``orderID`` entries, order snapshots and
    exchanged lines the RMA names are fetched in one call (an
    :class:`~bridge.store.base.EntityReader`), the few that only an exchange's original line
    names in another."""

    def __init__(self, retailer: str, config: KiboConfig) -> None:
        self.retailer = retailer
        self.config = config

    async def resolve(self, tx: Transaction, rma: Rma) -> Resolution:
        """Resolve in ``tx``, recording what the resolution learnt (crosswalk lines and
        ``orderID`` from the order snapshot, the RMA's exchanged lines)."""
        reads = _Reads(tx, self.retailer)
        resolution = await self._resolve(reads, rma)
        await reads.record(tx)
        return resolution

    async def read(self, store: Store, rma: Rma) -> Resolution | None:
        """Resolve from the store's committed state, without a write transaction; ``None``
        when the resolution has something to record (then :meth:`resolve` in a
        transaction, so that what is recorded first stays)."""
        reads = _Reads(store, self.retailer)
        resolution = await self._resolve(reads, rma)
        return None if reads.writes else resolution

    def _prefetch(self, rma: Rma) -> list[EntityId]:
        r = self.retailer
        ids: list[EntityId] = []
        for unit in rma.units:
            ids.append((CROSSWALK, _line_key(r, unit.order_id, unit.order_line_id)))
            if unit.exchange_order_id is not None:
                ids.append((EXCHANGED_LINES, f"{r}:{unit.exchange_order_id}"))
            if unit.original_order_id is None and (
                unit.is_exchange or unit.refund_type in EXCHANGE_TYPES
            ):
                ids.append((EXCHANGED_BY_ORDER, f"{r}:{unit.order_id}"))
            if unit.original_order_id is not None:
                ids.append((EXCHANGED_LINES, f"{r}:{unit.order_id}"))
                ids.append((EXCHANGED_BY_ORDER, f"{r}:{unit.original_order_id}"))
        for external in dict.fromkeys(u.original_order_id or u.order_id for u in rma.units):
            ids += [(KIBO_ORDER_ID, f"{r}:{external}"), (ORDER, f"{r}:{external}")]
        return ids

    async def _resolve(self, reads: _Reads, rma: Rma) -> Resolution:
        await reads.fetch(self._prefetch(rma))
        await self._note_exchanges(reads, rma)
        numeric = (
            numeric_order_item_ids(rma, exchange_lines=self.config.exchange_lines_numeric)
            if self.config.line_ids == "numeric"
            else {}
        )
        ids: dict[tuple[str, str], int] = {}
        for unit in rma.units:
            key = (unit.order_id, unit.order_line_id)
            if key in ids:
                continue
            found = await self._line(reads, unit.order_id, unit.order_line_id)
            if found is None and unit.original_order_id is not None:
                found = await self._exchanged(reads, unit.order_id, unit.original_order_id)
            if found is None:
                found = numeric.get(key)
            if found is not None:
                ids[key] = found
        kibo_orders: dict[str, int] = {}
        currencies: dict[str, str] = {}
        for external in dict.fromkeys(u.original_order_id or u.order_id for u in rma.units):
            kibo_order = await self._order_id(reads, external)
            if kibo_order is not None:
                kibo_orders[external] = kibo_order
            order = await reads.snapshot(external)
            currencies[external] = order.currency if order is not None else self.config.currency
        return Resolution(ids, kibo_orders, currencies)

    async def _note_exchanges(self, reads: _Reads, rma: Rma) -> None:
        """The original lines the RMA exchanges: per exchange order when a unit names it,
        and per original order (Optoro's later messages may drop ``exchange_order_identifier``)."""
        for unit in rma.units:
            pair = [unit.order_id, unit.order_line_id]
            targets: list[EntityId] = []
            if unit.exchange_order_id is not None:
                targets.append((EXCHANGED_LINES, f"{self.retailer}:{unit.exchange_order_id}"))
            if unit.original_order_id is None and (
                unit.is_exchange or unit.refund_type in EXCHANGE_TYPES
            ):
                targets.append((EXCHANGED_BY_ORDER, f"{self.retailer}:{unit.order_id}"))
            for kind, key in targets:
                lines = await reads.exchanged(kind, key)
                if pair not in lines:
                    reads.exchanges[kind, key] = [*lines, pair]

    async def currency(self, reader: EntityReader, order_id: str) -> str:
        """The currency of the Kibo return of ``order_id``: its snapshot's, else the
        configured ``currency``."""
        order = await _Reads(reader, self.retailer).snapshot(order_id)
        return order.currency if order is not None else self.config.currency

    async def _line(self, reads: _Reads, order_id: str, line_id: str) -> int | None:
        if (order_id, line_id) in reads.lines:
            return reads.lines[order_id, line_id]
        entry = await reads.get(CROSSWALK, _line_key(self.retailer, order_id, line_id))
        if entry is not None:
            return int(entry.data["order_item_id"])
        if self.config.order_item_id_field == "none":
            return None
        order = await reads.snapshot(order_id)
        if order is None:
            return None
        found = order_item_id_from_order(order, line_id, self.config.order_item_id_field)
        if found is not None:
            reads.lines[order_id, line_id] = found
        return found

    async def _exchanged(
        self, reads: _Reads, exchange_order_id: str, original_order_id: str
    ) -> int | None:
        original = None
        for kind, key in (
            (EXCHANGED_LINES, exchange_order_id),
            (EXCHANGED_BY_ORDER, original_order_id),
        ):
            pairs = await reads.exchanged(kind, f"{self.retailer}:{key}")
            lines = [(str(p[0]), str(p[1])) for p in pairs]
            original = exchanged_original_line(lines)
            if original is not None:
                break
        if original is None:
            return None
        found = await self._line(reads, original[0], original[1])
        if found is None and self.config.line_ids == "numeric":
            found = numeric_id(original[1])
        return found

    async def _order_id(self, reads: _Reads, order_id: str) -> int | None:
        if order_id in reads.order_ids:
            return reads.order_ids[order_id]
        kept = await reads.get(KIBO_ORDER_ID, f"{self.retailer}:{order_id}")
        if kept is not None:
            return int(kept.data["order_id"])
        if self.config.order_id_field == "none":
            return None
        order = await reads.snapshot(order_id)
        found = kibo_order_id_from_order(order, self.config.order_id_field) if order else None
        if found is not None:
            reads.order_ids[order_id] = found
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
