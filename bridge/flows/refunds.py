"""The refund ledger of one order: every refund event sent to the order publisher, once.

Optoro: "Refund objects are not updatable"; they exist to "help avoid customers getting
double-refunds". Two sources report refunds of one order: the bridge itself (the refund it
confirms for an RMA once the returns system holds or cleared the return, see
:meth:`bridge.flows.rmas.RmaFlow.confirm_refund`) and the order's source platform (e.g.
ReturnLogic's running totals ``refundQuantity``/``refundAmount``, mapped to one cumulative
refund whose id never changes while its total grows). The ledger (entity
``order.bridge_refunds``, one per order) turns both into **refund events**:

* an event is recorded once and never changed; every snapshot of the order carries every
  recorded event, verbatim, and nothing else (a source's own cumulative refund never reaches
  the publisher as such);
* a source's refunds are read as **running totals that include the refunds the bridge
  confirmed** (the returns system refunds the shopper's payment, which the shop then
  reports): only the units of a line beyond the units the ledger holds for it, and the
  amount beyond the ledger's total, are a new event. Its id is the source refund's id the
  first time, then ``<id>-2``, ``<id>-3``...;
* a refund the bridge confirms for an RMA covers only the RMA's units that no source event
  already accounts for: source units not yet matched to an RMA are taken to be these units,
  reported first by the source (``absorbed`` counts them per line). An RMA whose units are
  all accounted for so sends no refund of its own (its refund is "covered").
* no line ever gets more refunded units than it has; what would exceed it is left out and
  reported to the caller (who flags it).

When the two sources disagree, the bridge reports the fewer units: an under-report heals
with the source's next running total; a double refund could not be taken back.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from bridge.domain import Order, Refund, RefundLine
from bridge.flows.entities import REFUND_LEDGER, locked
from bridge.store import Transaction


class Origin(StrEnum):
    BRIDGE = "bridge"
    """Confirmed by the bridge for an RMA."""
    SOURCE = "source"
    """Reported by the order's source platform."""


class RefundLedger(BaseModel):
    """The refund events of one order (stored as entity ``order.bridge_refunds``).

    Rows written before the ledger held source events (``{"refunds": [...]}``) read as
    bridge events only."""

    model_config = ConfigDict(extra="ignore")

    refunds: list[Refund] = Field(default_factory=list)
    origins: dict[str, Origin] = Field(default_factory=dict)
    """Refund id -> who reported it (missing: the bridge)."""
    absorbed: dict[str, int] = Field(default_factory=dict)
    """Order line id -> source-reported units matched to an RMA the bridge confirmed."""

    def origin(self, refund_id: str) -> Origin:
        return self.origins.get(refund_id, Origin.BRIDGE)

    def units(self, origin: Origin | None = None) -> Counter[str]:
        """Refunded units per order line (of one origin, or all)."""
        counted: Counter[str] = Counter()
        for refund in self.refunds:
            if origin is None or self.origin(refund.id) is origin:
                for line in refund.lines:
                    counted[line.order_line_id] += line.qty
        return counted

    @property
    def total_cents(self) -> int:
        return sum(refund.total_cents for refund in self.refunds)

    def has(self, refund_id: str) -> bool:
        return any(refund.id == refund_id for refund in self.refunds)

    def _free_id(self, wanted: str) -> str:
        if not self.has(wanted):
            return wanted
        n = 2
        while self.has(f"{wanted}-{n}"):
            n += 1
        return f"{wanted}-{n}"

    def _record(self, refund: Refund, origin: Origin) -> None:
        self.refunds.append(refund)
        if origin is not Origin.BRIDGE:
            self.origins[refund.id] = origin

    # source refunds ------------------------------------------------------------------------

    def record_source(self, source_refunds: Sequence[Refund], qty: dict[str, int]) -> list[str]:
        """Record what ``source_refunds`` (running totals, in order) add to the ledger; ``qty``
        is units per order line. The problems (units beyond a line's quantity) are returned."""
        problems: list[str] = []
        reported: Counter[str] = Counter()
        reported_cents = 0
        for source in source_refunds:
            for line in source.lines:
                reported[line.order_line_id] += line.qty
            reported_cents += source.total_cents
            held = self.units()
            new_units = {
                line_id: units - held[line_id]
                for line_id, units in reported.items()
                if units > held[line_id]
            }
            for line_id, units in list(new_units.items()):
                room = qty.get(line_id, 0) - held[line_id]
                if units > room:
                    problems.append(
                        f"refund {source.id!r} reports {units} more units of order line"
                        f" {line_id!r} than it has left to refund ({max(room, 0)})"
                    )
                    new_units[line_id] = max(room, 0)
            new_units = {k: v for k, v in new_units.items() if v}
            new_cents = max(reported_cents - self.total_cents, 0)
            if not new_units and not new_cents:
                continue
            self._record(
                _source_event(self._free_id(source.id), source, new_units, new_cents), Origin.SOURCE
            )
        return problems

    # bridge refunds ------------------------------------------------------------------------

    def confirm(
        self, refund: Refund, qty: dict[str, int], line_cents: dict[str, int] | None = None
    ) -> BridgeConfirmation:
        """Record ``refund`` (the bridge's, for one RMA) for the units no event accounts for
        yet (see the module docstring). ``line_cents``: the refund's amount per order line
        (what a left-out unit takes off the total; by default the total is shared by units)."""
        if self.has(refund.id):
            return BridgeConfirmation(None, already=True)
        source_units = self.units(Origin.SOURCE)
        held = self.units()
        kept: list[RefundLine] = []
        matched: dict[str, int] = {}
        excess: dict[str, int] = {}
        left_cents = 0
        for line in refund.lines:
            line_id = line.order_line_id
            unmatched = max(source_units[line_id] - self.absorbed.get(line_id, 0), 0)
            if take := min(line.qty, unmatched):
                matched[line_id] = take
                self.absorbed[line_id] = self.absorbed.get(line_id, 0) + take
            wanted = line.qty - take
            room = max(qty.get(line_id, 0) - held[line_id], 0)
            units = min(wanted, room)
            if wanted > room:
                excess[line_id] = wanted - room
            if units:
                held[line_id] += units
                kept.append(line.model_copy(update={"qty": units}))
            if units < line.qty:
                whole = (line_cents or {}).get(line_id)
                left = line.qty - units
                left_cents += (
                    _share(whole, left, line.qty)
                    if whole is not None
                    else _share(refund.total_cents, left, sum(rl.qty for rl in refund.lines))
                )
        if not kept:
            return BridgeConfirmation(None, matched=matched, excess=excess)
        event = refund.model_copy(
            update={"lines": tuple(kept), "total_cents": max(refund.total_cents - left_cents, 0)}
        )
        self._record(event, Origin.BRIDGE)
        return BridgeConfirmation(event, matched=matched, excess=excess)


@dataclass(frozen=True)
class BridgeConfirmation:
    """What recording a bridge refund did."""

    event: Refund | None
    """The event recorded (``None``: nothing new to send)."""
    already: bool = False
    """The refund was recorded before (a repeated confirmation)."""
    matched: dict[str, int] = field(default_factory=dict)
    """Units per line not sent: the order source reported their refund first."""
    excess: dict[str, int] = field(default_factory=dict)
    """Units per line left out: the line has no units left to refund."""


def _share(total: int, part: int, whole: int) -> int:
    """``total * part / whole`` in integer cents, rounded half up."""
    return (total * part * 2 + whole) // (whole * 2) if whole else 0


def _source_event(event_id: str, source: Refund, units: dict[str, int], cents: int) -> Refund:
    """The event for what ``source`` adds: the source refund itself when it adds all of
    itself under its own id, else its delta with fresh line ids."""
    own = {rl.order_line_id: rl.qty for rl in source.lines}
    if event_id == source.id and own == units and cents == source.total_cents:
        return source
    return source.model_copy(
        update={
            "id": event_id,
            "total_cents": cents,
            "lines": tuple(
                RefundLine(id=f"{event_id}_{n}", order_line_id=line_id, qty=qty)
                for n, (line_id, qty) in enumerate(units.items(), 1)
            ),
        }
    )


def line_quantities(order: Order) -> dict[str, int]:
    return {line.id: line.qty for line in order.lines}


def with_ledger(order: Order, ledger: RefundLedger) -> Order:
    """``order`` carrying exactly the ledger's events (pydantic validation included)."""
    return Order.model_validate({**order.model_dump(), "refunds": tuple(ledger.refunds)})


async def load_ledger(tx: Transaction, key: str) -> RefundLedger:
    """The ledger of order ``key`` (``<retailer>:<order id>``), locked in ``tx``."""
    entity = await locked(tx, REFUND_LEDGER, key)
    return RefundLedger() if entity is None else RefundLedger.model_validate(entity.data)


async def save_ledger(tx: Transaction, key: str, ledger: RefundLedger) -> None:
    await tx.put_entity(REFUND_LEDGER, key, (len(ledger.refunds),), ledger.model_dump(mode="json"))
