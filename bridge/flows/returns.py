"""The return-event flow: what the returns sink reports about a return moves the RMA.

A returns-sink adapter translates its platform's notification or lookup answer into a
:class:`ReturnEvent` for the RMA the return belongs to and calls
:meth:`ReturnEventFlow.apply`. Each return (per RMA, step and order) is in a
:class:`~bridge.flows.lifecycle.ReturnState`; :data:`TRANSITIONS` says, for every state and
every :class:`ReturnEventKind`, the state reached and what it causes:

=============  ==========  ========  ==========  ==========  =============  ========
state / kind   created     accepted  cleared     rejected    refund_failed  reopened
=============  ==========  ========  ==========  ==========  =============  ========
queued         created C   --        cleared R   rejected F  refund_f. F    created
created        --          --        cleared R   rejected F  refund_f. F    --
cleared        --          --        --          rejected F  refund_f. F    created
rejected       --          --        cleared R   --          refund_f. F    created
refund_failed  --          --        cleared R   rejected F  --             created
=============  ==========  ========  ==========  ==========  =============  ========

A ``cleared`` event may carry the sink's :class:`Settlement` (units accepted, amount
refunded): the refund confirmed then follows it, rejected units are never refunded.

``--``: the state stays. ``C``: the return exists -- the refund is confirmed when the policy is
``on_return_created`` (or, when the RMA was canceled meanwhile, the RMA is flagged: undo
the return). ``R``: refunds processed -- the refund is confirmed when the policy is
``on_return_cleared``. ``F``: flagged for an operator. A cell that keeps the state is a
no-op (a repeated event, or one that says nothing new: ``accepted`` only means the goods
arrived, which no policy acts on; ``created`` after the return moved on is late news).
Illegal moves do not exist as errors: the sink's word is taken (a rejected return that is
cleared was cleared), and what needs a human is flagged. Events are for returns the bridge
created; the sink adapter ignores the others.

**Write-back** to the RMA's source: an ``accepted`` or ``cleared`` event (goods received,
or received and refunded) is also offered to every :class:`SourceWriteback` the RMA sources
registered (:meth:`ReturnEventFlow.add_writeback`), whatever the state: a source tells its
own RMAs apart by key, and writes back at most once per RMA (e.g. ReturnLogic's items
marked received with a disposition).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from bridge.domain import Rma
from bridge.flows.entities import RMA
from bridge.flows.lifecycle import OPEN_STATES, ReturnState, load_state, save_state
from bridge.flows.rmas import RmaFlow
from bridge.policy import ConfirmRefund, PolicyConfig, Step
from bridge.store import NewEffect, Transaction


class ReturnEventKind(StrEnum):
    """What happened to a return in the returns sink (Kibo's Return Event Notifications)."""

    CREATED = "created"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    CLEARED = "cleared"
    """Completed, refunds processed."""
    REOPENED = "reopened"
    REFUND_FAILED = "refund_failed"
    """A refund of the return failed (Kibo's return failure notification)."""


class Consequence(StrEnum):
    """What a transition causes besides the new state."""

    NONE = "none"
    RETURN_CREATED = "return_created"
    REFUNDS_PROCESSED = "refunds_processed"
    FLAG = "flag"


@dataclass(frozen=True)
class Transition:
    target: ReturnState
    consequence: Consequence = Consequence.NONE


def _transitions() -> dict[tuple[ReturnState, ReturnEventKind], Transition]:
    s, k = ReturnState, ReturnEventKind
    table: dict[tuple[ReturnState, ReturnEventKind], Transition] = {}
    for state in s:
        table[state, k.CREATED] = (
            Transition(s.CREATED, Consequence.RETURN_CREATED)
            if state is s.QUEUED
            else Transition(state)
        )
        table[state, k.ACCEPTED] = Transition(state)
        table[state, k.CLEARED] = (
            Transition(state)
            if state is s.CLEARED
            else Transition(s.CLEARED, Consequence.REFUNDS_PROCESSED)
        )
        table[state, k.REJECTED] = (
            Transition(state) if state is s.REJECTED else Transition(s.REJECTED, Consequence.FLAG)
        )
        table[state, k.REFUND_FAILED] = (
            Transition(state)
            if state is s.REFUND_FAILED
            else Transition(s.REFUND_FAILED, Consequence.FLAG)
        )
        table[state, k.REOPENED] = Transition(s.CREATED)
    return table


TRANSITIONS = _transitions()
"""``(state, kind) -> transition`` for every state and kind (see the module docstring)."""


def transition(state: ReturnState, kind: ReturnEventKind) -> Transition:
    return TRANSITIONS[state, kind]


@dataclass(frozen=True)
class Settlement:
    """What the returns sink says it refunded for one processed return."""

    accepted: Mapping[tuple[str, str], int]
    """``(order id, order line id)`` -> units accepted (0: rejected) of the return's lines."""
    refunded_cents: int | None = None
    """The amount refunded (``None``: not said; the units' estimate stands)."""


@dataclass(frozen=True)
class ReturnEvent:
    """What the returns sink reports about one of the returns it holds for an RMA."""

    kind: ReturnEventKind
    return_id: str
    step: Step | None = None
    """The policy step the return was created at (``None``: the RMA's first)."""
    settled: Settlement | None = None
    """With ``cleared``, when the sink says what it accepted and refunded: the refund
    confirmed under ``on_return_cleared`` follows it instead of the estimate."""


@dataclass(frozen=True)
class ReturnEventOutcome:
    """What applying a return event did."""

    state: ReturnState
    """The return's state after the event."""
    changed: bool
    effects: list[NewEffect] = field(default_factory=list)

    @property
    def open(self) -> bool:
        """The return may still move (worth reconciling against the sink)."""
        return self.state in OPEN_STATES


WRITTEN_BACK = frozenset({ReturnEventKind.ACCEPTED, ReturnEventKind.CLEARED})
"""The outcomes offered to the RMA's source (:class:`SourceWriteback`)."""


class SourceWriteback(Protocol):
    """An RMA source that records what became of its RMAs' returns on its own platform."""

    async def return_outcome(
        self, tx: Transaction, rma_key: str, rma: Rma, event: ReturnEvent
    ) -> list[NewEffect]:
        """Effects telling the source that ``event`` happened to the return of ``rma_key``
        (``[]`` for an RMA of another source, or one written back already), inside ``tx``."""
        ...


class ReturnEventFlow:
    """One retailer's return-event flow."""

    def __init__(self, retailer: str, policy: PolicyConfig, *, rmas: RmaFlow) -> None:
        self.retailer = retailer
        self.policy = policy
        self.rmas = rmas
        self.writebacks: list[SourceWriteback] = []

    def add_writeback(self, writeback: SourceWriteback) -> None:
        """An RMA source wants the outcomes of :data:`WRITTEN_BACK` for its RMAs."""
        self.writebacks.append(writeback)

    async def _written_back(
        self, tx: Transaction, rma_key: str, event: ReturnEvent
    ) -> list[NewEffect]:
        if event.kind not in WRITTEN_BACK or not self.writebacks:
            return []
        rma = await self.rmas.stored(tx, rma_key)
        if rma is None:
            return []
        effects: list[NewEffect] = []
        for writeback in self.writebacks:
            effects += await writeback.return_outcome(tx, rma_key, rma, event)
        return effects

    async def apply(self, tx: Transaction, rma_key: str, event: ReturnEvent) -> ReturnEventOutcome:
        """Move the return of ``rma_key`` named by ``event`` inside ``tx``; the caller
        queues the effects."""
        state = await load_state(tx, rma_key)
        step = state.step_returns(event.step or state.first_step())
        before = step.state_of(event.return_id)
        move = transition(before, event.kind)
        written_back = await self._written_back(tx, rma_key, event)
        if move.target is before and event.return_id in step.return_ids:
            return ReturnEventOutcome(before, changed=False, effects=written_back)
        step.record(event.return_id, move.target)
        effects: list[NewEffect] = list(written_back)
        if move.consequence is Consequence.RETURN_CREATED:
            if state.canceled:
                await tx.add_flag(
                    self.retailer,
                    RMA,
                    rma_key,
                    "return created in the returns system after the RMA was canceled",
                )
            elif self.policy.confirm_refund is ConfirmRefund.ON_RETURN_CREATED:
                effects += await self.rmas.confirm_refund(tx, rma_key, state)
        elif move.consequence is Consequence.REFUNDS_PROCESSED:
            if self.policy.confirm_refund is ConfirmRefund.ON_RETURN_CLEARED:
                effects += await self.rmas.confirm_refund(tx, rma_key, state, event.settled)
        elif move.consequence is Consequence.FLAG:
            await tx.add_flag(
                self.retailer,
                RMA,
                rma_key,
                f"return {event.return_id} {event.kind.value.replace('_', ' ')}"
                " in the returns system",
            )
        await save_state(tx, rma_key, state)
        return ReturnEventOutcome(move.target, changed=move.target is not before, effects=effects)
