"""The typed lifecycle state of one RMA (entity ``rma.lifecycle``).

Stored as JSON ``{"returns": {step: {"state", "return_ids", "return_states"}}, "refund",
"closed", "canceled"}``. Rows written before ``return_states`` existed (every row of the
untyped lifecycle) read as the same state: each listed return is in its step's ``state``
(:meth:`StepReturns._per_return_states`); writes keep ``state`` and ``return_ids`` as
they were, so the row stays what it was plus one key.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator

from bridge.flows.entities import LIFECYCLE, locked
from bridge.policy import Step
from bridge.store import Transaction


class ReturnState(StrEnum):
    """Where one return in the returns sink stands, as the bridge knows it."""

    QUEUED = "queued"
    """Its creation is queued (or in flight); the sink has not reported it yet."""
    CREATED = "created"
    """The sink holds it, open (also after it was reopened)."""
    CLEARED = "cleared"
    """Completed in the sink, refunds processed."""
    REJECTED = "rejected"
    REFUND_FAILED = "refund_failed"


OPEN_STATES = frozenset({ReturnState.CREATED})
"""States in which a return may still move (cleared, rejected): worth reconciling."""


class RefundState(StrEnum):
    """The refund confirmation of the RMA (at most one per RMA and order, ever)."""

    QUEUED = "queued"
    NOT_APPLICABLE = "not_applicable"
    """The RMA's source reports no refund amounts (its order source reports refunds)."""
    COVERED = "covered"
    """Every unit's refund was reported by the order source first: nothing left to send."""


class LineUnits(BaseModel):
    """Units of one order line of an RMA."""

    order_id: str
    line_id: str
    qty: int


def count_lines(entries: Iterable[LineUnits]) -> Counter[tuple[str, str]]:
    counted: Counter[tuple[str, str]] = Counter()
    for entry in entries:
        counted[entry.order_id, entry.line_id] += entry.qty
    return counted


def as_lines(counts: Mapping[tuple[str, str], int]) -> list[LineUnits]:
    return [LineUnits(order_id=o, line_id=li, qty=n) for (o, li), n in counts.items() if n > 0]


class StepReturns(BaseModel):
    """The returns created for one policy step (one per order of the RMA and part)."""

    model_config = ConfigDict(extra="ignore")

    parts: list[list[LineUnits]] = Field(default_factory=list)
    """The units each batch of returns of this step was created for: the first for the units
    that had reached the step, each later one for units that reached it since. Empty in
    rows written before parts were kept: that step's returns cover every unit."""

    state: ReturnState = ReturnState.QUEUED
    """The state the step's latest return event left a return in."""
    return_ids: list[str] = Field(default_factory=list)
    return_states: dict[str, ReturnState] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _per_return_states(self) -> StepReturns:
        for return_id in self.return_ids:
            self.return_states.setdefault(return_id, self.state)
        return self

    def covered(self) -> Counter[tuple[str, str]] | None:
        """Units per (order, line) the step's returns were created for (``None``: every
        unit, a row from before parts were kept)."""
        if not self.parts:
            return None
        return count_lines(entry for part in self.parts for entry in part)

    @property
    def queued(self) -> bool:
        """No return of this step was reported by the sink yet."""
        return not self.return_ids and self.state is ReturnState.QUEUED

    def state_of(self, return_id: str) -> ReturnState:
        return self.return_states.get(return_id, ReturnState.QUEUED)

    def record(self, return_id: str, state: ReturnState) -> None:
        if return_id not in self.return_ids:
            self.return_ids.append(return_id)
        self.return_states[return_id] = state
        self.state = state


class RmaLifecycleState(BaseModel):
    """Per RMA: the returns per step, the refund confirmation, and whether it is closed."""

    model_config = ConfigDict(extra="ignore")

    returns: dict[Step, StepReturns] = Field(default_factory=dict)
    refund: RefundState | None = None
    confirmed: list[LineUnits] | None = None
    """Units whose refund was confirmed (``None`` with ``refund`` set: every unit, a row from
    before this was kept)."""
    refunds_sent: int = 0
    """Refund confirmations made (the first is ``RMA-<id>``, later ones ``RMA-<id>-<n>``)."""
    closed: bool = False
    """Refunded or canceled: later RMA messages change nothing."""
    canceled: bool = False

    def step_returns(self, step: Step) -> StepReturns:
        return self.returns.setdefault(step, StepReturns())

    def first_step(self) -> Step:
        """The step a return event without one belongs to (the first queued, else CREATED)."""
        return next(iter(self.returns), Step.CREATED)


async def load_state(tx: Transaction, rma_key: str) -> RmaLifecycleState:
    """The lifecycle of ``rma_key`` (a fresh one when none is stored), to be saved in ``tx``."""
    entity = await locked(tx, LIFECYCLE, rma_key)
    return RmaLifecycleState() if entity is None else RmaLifecycleState.model_validate(entity.data)


async def save_state(tx: Transaction, rma_key: str, state: RmaLifecycleState) -> None:
    await tx.put_entity(LIFECYCLE, rma_key, (0,), state.model_dump(mode="json"))
