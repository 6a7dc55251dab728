"""The RMA flow: every RMA source's messages applied the same way, in the caller's transaction.

:meth:`RmaFlow.apply`, for a canonical :class:`~bridge.domain.Rma` stored under ``rma_key``:

1. **closed check**: a refunded or canceled RMA takes no later message;
2. **versioning**: the RMA is stored only when :func:`rma_version` is newer than the stored
   one (``updated_at``, then lifecycle progress: the guide sends several messages with one
   timestamp); a duplicate or an older message is superseded;
3. **cancellation**: ``CANCELED``/``REJECTED`` before the return exists cancels the queued
   creates; after it exists (or while its creation is in flight) the RMA is flagged for an
   operator (``returns-bridge dlq list --flagged``);
4. **policy step**: when the units have come as far as the retailer's policy step for its
   return method, the returns sink's create effects are queued, once per RMA and step for
   those units; units that get there later (a partially accepted RMA's, Optoro's
   ``NOT_DROPPED_OFF`` ones left out meanwhile) get one more return, once;
5. ``REFUNDED`` closes the RMA;
6. **order refresh**: every RMA message applied (a new status of the RMA) asks the order
   source to read each of its orders again (:class:`~bridge.ports.OrderSource`, once per
   RMA, order and status), so a refund or cancellation of an order older than the order
   source's re-scan window still reaches the order publisher.

The **refund confirmation** (:meth:`RmaFlow.confirm_refund`) follows from the return events
(:mod:`bridge.flows.returns`): the RMA's refund is recorded in each of its orders' refund
ledgers (:mod:`bridge.flows.refunds`: for the units no refund the order source reported
accounts for already) and published through the order flow, at most once per RMA and
order, ever.

Because effects are derived from the state reached and keyed by RMA and step, messages in
any order or repeated give the same effects.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pydantic import ValidationError

from bridge.domain import Order, Refund, RefundLine, Rma, RmaStatus
from bridge.engine import HandlerContext, Outcome, apply_versioned
from bridge.flows.entities import ORDER, RMA, locked
from bridge.flows.lifecycle import (
    LineUnits,
    RefundState,
    RmaLifecycleState,
    as_lines,
    count_lines,
    load_state,
    save_state,
)
from bridge.flows.orders import OrderFlow, order_key
from bridge.flows.refunds import line_quantities, load_ledger, save_ledger, with_ledger
from bridge.policy import PolicyConfig, Step, select_units, units_reached
from bridge.ports import OrderSource, ReturnsSink

if TYPE_CHECKING:
    from bridge.flows.returns import Settlement
from bridge.store import EffectState, InboxStatus, NewEffect, Transaction

log = logging.getLogger(__name__)

_TERMINAL = frozenset({RmaStatus.CANCELED, RmaStatus.REJECTED})
FIRST_DELIVERY = HandlerContext()
"""A message applied as it arrives (not an operator's replay)."""


def rma_order_key(rma_key: str) -> str:
    """Effects of one RMA that must go out in order (return before refund) share this."""
    return f"rma:{rma_key}"


def rma_version(rma: Rma) -> tuple[str, int, int]:
    """The version of an RMA message: ``(updated_at as fixed-width UTC ISO-8601 text,
    *progress)``, flat so that it survives a JSON round trip as a comparable list. The
    later ``updated_at`` wins; at an equal one the further lifecycle position wins."""
    stamp = rma.updated_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return (stamp, *rma.progress())


def is_closed(rma: Rma | None) -> bool:
    """A refunded or canceled RMA accepts no later message."""
    return rma is not None and (rma.status is RmaStatus.REFUNDED or rma.status in _TERMINAL)


def build_refund(rma: Rma, order_id: str, several_orders: bool, part: int = 1) -> Refund:
    """The refund confirming ``rma``'s units of ``order_id``: one line per order line with
    the units' quantity, total = the units' estimated refund (the shopper's share plus the
    share Optoro funds on even exchanges, as every refund of the guide shows). ``part`` > 1:
    a later confirmation of the RMA (units whose return came later), ``-<part>`` added."""
    refund_id = f"RMA-{rma.id}-{order_id}" if several_orders else f"RMA-{rma.id}"
    if part > 1:
        refund_id = f"{refund_id}-{part}"
    aggregates = [a for a in rma.line_aggregates() if a.order_id == order_id]
    total = sum((u.estimated_refund_cents or 0) for u in rma.units if u.order_id == order_id)
    return Refund(
        id=refund_id,
        total_cents=total,
        lines=tuple(
            RefundLine(id=f"{refund_id}_{n}", order_line_id=a.order_line_id, qty=a.qty)
            for n, a in enumerate(aggregates, 1)
        ),
        note="Returned",
        created_at=rma.updated_at,
        rma_id=rma.id,
    )


@dataclass(frozen=True)
class RmaOutcome:
    """What applying one RMA message did."""

    applied: bool
    effects: list[NewEffect] = field(default_factory=list)
    note: str | None = None
    """Why it was not applied (closed, nothing newer), for the inbox."""
    stored: Rma | None = None
    """The RMA stored after the message (``None``: none is stored)."""

    def inbox_outcome(self) -> Outcome:
        """The inbox item's outcome: done with the effects, or superseded with the note."""
        if not self.applied:
            return Outcome(InboxStatus.SUPERSEDED, note=self.note)
        return Outcome(effects=self.effects)


class RmaFlow:
    """One retailer's RMA flow (see the module docstring)."""

    def __init__(
        self,
        retailer: str,
        policy: PolicyConfig,
        *,
        orders: OrderFlow,
        returns_sink: Callable[[], ReturnsSink | None],
        order_source: Callable[[], OrderSource | None] = lambda: None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.retailer = retailer
        self.policy = policy
        self.orders = orders
        self._returns_sink = returns_sink
        self._order_source = order_source
        self._clock = clock

    async def stored(self, tx: Transaction, rma_key: str) -> Rma | None:
        entity = await locked(tx, RMA, rma_key)
        return Rma.model_validate(entity.data) if entity is not None else None

    async def is_closed(self, tx: Transaction, rma_key: str) -> bool:
        """The RMA stored under ``rma_key`` takes no later message."""
        return is_closed(await self.stored(tx, rma_key))

    async def apply(
        self, tx: Transaction, rma_key: str, rma: Rma, ctx: HandlerContext = FIRST_DELIVERY
    ) -> RmaOutcome:
        """Apply ``rma`` (stored under ``rma_key``) inside ``tx``; the caller queues the
        effects. ``ctx.replay`` re-applies a message of the stored version."""
        previous = await self.stored(tx, rma_key)
        if is_closed(previous):
            return RmaOutcome(False, note="the RMA is closed", stored=previous)
        if not await apply_versioned(
            tx, RMA, rma_key, rma_version(rma), rma.model_dump(mode="json"), ctx
        ):
            return RmaOutcome(False, note="nothing newer than the stored RMA", stored=previous)
        refreshes = await self._refresh_orders(tx, rma_key, rma)
        state = await load_state(tx, rma_key)
        if state.closed:
            return RmaOutcome(True, refreshes, stored=rma)
        effects: list[NewEffect] = refreshes
        if rma.status in _TERMINAL:
            await self._cancel(tx, rma_key, state, rma)
        else:
            step = self.policy.step_for(rma.return_method)
            effects += self._returns_for_reached_units(rma_key, rma, step, state)
            if rma.status is RmaStatus.REFUNDED:
                state.closed = True
        await save_state(tx, rma_key, state)
        return RmaOutcome(True, effects, stored=rma)

    async def cancel(
        self, tx: Transaction, rma_key: str, *, raw_status: str, when: datetime | None = None
    ) -> RmaOutcome:
        """The source no longer has the RMA: the stored one applied once more as
        ``CANCELED`` (``raw_status`` says why), at ``when`` or now."""
        previous = await self.stored(tx, rma_key)
        if previous is None:
            return RmaOutcome(False, note="no RMA is stored")
        if is_closed(previous):
            return RmaOutcome(False, note="the RMA is closed", stored=previous)
        canceled = previous.model_copy(
            update={
                "status": RmaStatus.CANCELED,
                "raw_status": raw_status,
                "updated_at": max(previous.updated_at, when or self._clock()),
            }
        )
        return await self.apply(tx, rma_key, canceled)

    async def _refresh_orders(self, tx: Transaction, rma_key: str, rma: Rma) -> list[NewEffect]:
        """The order source's reads of each synced order of ``rma`` (none for an order the
        bridge never synced: the order source's poll finds it)."""
        source = self._order_source()
        if source is None:
            return []
        effects = []
        for order_id in dict.fromkeys(u.order_id for u in rma.units):
            entity = await locked(tx, ORDER, order_key(self.retailer, order_id))
            if entity is None:
                continue
            reason = f"rma {rma_key} {rma.status.value}"
            order = Order.model_validate(entity.data)
            effects += source.refresh_effects(self.retailer, order, reason)
        return effects

    def _returns_for_reached_units(
        self, rma_key: str, rma: Rma, step: Step, state: RmaLifecycleState
    ) -> list[NewEffect]:
        """Returns for the units that reached ``step`` and no return of the step covers yet:
        every unit at once as a rule; for a partially accepted RMA the units that got there
        (the others left out), and once more for units that get there later."""
        returns = state.returns.get(step)
        covered = returns.covered() if returns is not None else Counter()
        if covered is None:
            return []  # a row from before parts were kept: its returns cover every unit
        left = Counter(covered)
        new_units = []
        for unit in units_reached(rma, step):
            key = (unit.order_id, unit.order_line_id)
            if left[key] >= unit.qty:
                left[key] -= unit.qty
            else:
                new_units.append(unit)
        if not new_units:
            return []
        returns = state.step_returns(step)
        part = len(returns.parts) + 1
        counts = count_lines(
            LineUnits(order_id=u.order_id, line_id=u.order_line_id, qty=u.qty) for u in new_units
        )
        returns.parts.append(as_lines(counts))
        sink = self._returns_sink()
        if sink is None:
            return []
        whole = part == 1 and len(new_units) == len(rma.units)
        return sink.return_effects(
            self.retailer,
            rma_key,
            rma if whole else rma.model_copy(update={"units": tuple(new_units)}),
            step.value,
            rma_order_key(rma_key),
            part=part,
            lines=None if whole else [(o, li, n) for (o, li), n in counts.items()],
        )

    async def _cancel(
        self, tx: Transaction, rma_key: str, state: RmaLifecycleState, rma: Rma
    ) -> None:
        state.canceled = True
        state.closed = True
        if not state.returns:
            return
        effect_states = await tx.effect_states(rma_order_key(rma_key))
        if any(s is EffectState.DELIVERED for s in effect_states.values()) or any(
            not step.queued for step in state.returns.values()
        ):
            await tx.add_flag(
                self.retailer,
                RMA,
                rma_key,
                f"RMA {rma.status.value.lower()} after its return was created:"
                " undo it in the returns system",
            )
            return
        canceled = await tx.cancel_effects(rma_order_key(rma_key))
        log.info("queued return canceled", extra={"rma": rma_key, "effects": canceled})

    # refund confirmation -----------------------------------------------------------------

    async def confirm_refund(
        self,
        tx: Transaction,
        rma_key: str,
        state: RmaLifecycleState,
        settled: Settlement | None = None,
    ) -> list[NewEffect]:
        """Record the refund of the RMA's units its returns were created for and not yet
        confirmed in each of its orders' ledgers and publish them: one refund per order for
        the first returns (``RMA-<id>``), one more per later part (``RMA-<id>-<n>``)."""
        if not self.orders.has_publisher() or state.refund is RefundState.NOT_APPLICABLE:
            return []
        if state.refund is not None and state.confirmed is None:
            return []  # a row from before parts were kept: confirmed for every unit
        stored = await self.stored(tx, rma_key)
        if stored is None:
            return []
        if any(u.estimated_refund_cents is None for u in stored.units):
            # the source carries no refund amounts per unit (ReturnLogic RMAs): the order
            # source reports its own refunds with the orders, nothing to confirm here
            state.refund = RefundState.NOT_APPLICABLE
            return []
        every = count_lines(
            LineUnits(order_id=u.order_id, line_id=u.order_line_id, qty=u.qty) for u in stored.units
        )
        covered: Counter[tuple[str, str]] = Counter()
        for returns in state.returns.values():
            part_units = returns.covered()
            covered |= every if part_units is None else part_units
        done = count_lines(state.confirmed or [])
        todo = covered - done
        if settled is not None:  # the sink's word on its return's lines
            rejected = Counter(
                {k: todo[k] - min(todo[k], n) for k, n in settled.accepted.items() if k in todo}
            )
            todo -= rejected
            done += rejected
            state.confirmed = as_lines(done)  # rejected units are never refunded
        if not todo:
            return []
        rma = select_units(stored, todo)
        several = len(stored.order_ids) > 1
        part = state.refunds_sent + 1
        order_ids = list(dict.fromkeys(u.order_id for u in rma.units))
        orders: list[Order] = []
        sent = False
        for order_id in order_ids:
            key = order_key(self.retailer, order_id)
            entity = await locked(tx, ORDER, key)
            if entity is None:
                await tx.add_flag(
                    self.retailer,
                    RMA,
                    rma_key,
                    f"refund not confirmed: order {order_id} was never synced to the bridge",
                )
                return []
            order = Order.model_validate(entity.data)
            refund = build_refund(rma, order_id, several, part)
            if (sink_cents := _settled_cents(settled, order_id)) is not None:
                # the sink refunds the shopper's share; the share the returns provider funds
                # (even exchanges) stays in the refund, as every refund of the guide shows
                provider = sum(
                    u.provider_refund_cents or 0 for u in rma.units if u.order_id == order_id
                )
                refund = refund.model_copy(update={"total_cents": sink_cents + provider})
            ledger = await load_ledger(tx, key)
            outcome = ledger.confirm(refund, line_quantities(order), _line_cents(rma, order_id))
            if outcome.excess:
                await tx.add_flag(
                    self.retailer,
                    RMA,
                    rma_key,
                    f"refund {refund.id} partly not confirmed: order {order_id} has no units"
                    f" left to refund on lines {_counts(outcome.excess)}",
                )
            if outcome.matched:
                log.info(
                    "refund units already reported by the order source",
                    extra={"rma": rma_key, "order_id": order_id, "lines": outcome.matched},
                )
            if outcome.already:
                sent = True  # recorded by an earlier confirmation
                continue
            if outcome.event is None:
                await save_ledger(tx, key, ledger)
                continue
            try:
                orders.append(with_ledger(order, ledger))
            except ValidationError as exc:
                await tx.add_flag(
                    self.retailer,
                    RMA,
                    rma_key,
                    f"refund not confirmed: it does not fit order {order_id}:"
                    f" {exc.errors()[0]['msg']}",
                )
                return []
            await save_ledger(tx, key, ledger)
            sent = True
        state.refund = RefundState.QUEUED if sent else RefundState.COVERED
        state.confirmed = as_lines(done + todo)
        state.refunds_sent = part
        return await self.orders.snapshot_and_publish(tx, orders)


def _settled_cents(settled: Settlement | None, order_id: str) -> int | None:
    """What the sink said it refunded for ``order_id``'s units (``None``: it did not say,
    or its return covers other orders too)."""
    if settled is None or {o for o, _ in settled.accepted} != {order_id}:
        return None
    return settled.refunded_cents


def _line_cents(rma: Rma, order_id: str) -> dict[str, int]:
    """The RMA's estimated refund per line of ``order_id``."""
    cents: dict[str, int] = {}
    for unit in rma.units:
        if unit.order_id == order_id:
            cents[unit.order_line_id] = cents.get(unit.order_line_id, 0) + (
                unit.estimated_refund_cents or 0
            )
    return cents


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{line_id} ({n})" for line_id, n in counts.items())
