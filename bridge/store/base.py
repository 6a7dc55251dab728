"""The durable store: the port every backend implements.

Semantics callers rely on (and the conformance suite in ``tests/test_store.py`` pins):

* ``accept`` returns only once the raw input is committed durably; duplicates (same
  ``(source, key)`` or same body bytes for that source) are counted, never stored twice.
  Input refused at the edge is stored with ``quarantine=<reason>``: it is committed as
  quarantined in that same commit, so no worker ever leases it (a duplicate keeps the
  status of the row it repeats).
* Work (inbox items, outbox effects) is *leased*: a lease has an owner and an expiry, so
  the items of a worker that died are picked up again once its lease runs out; every
  finishing call names the owner and is refused (``LeaseLost``) when the lease moved on.
* A :class:`Transaction` applies entity state, new effects and the inbox outcome at once.
* Effects are unique by idempotency key; effects sharing an ``order_key`` are leased one
  at a time in the order they were written.

Times are epoch seconds from the store's clock (injectable for tests).
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from bridge.errors import StoreError

JSON = Any
SENT_WITHOUT_ANSWER = (
    "the request may have been sent and no answer was recorded (the process ended during the call?)"
)
"""``Effect.last_error`` written by :meth:`Store.mark_sending`, before the partner call: if
the process dies during the call, this is what its successor finds (with
``Effect.outcome_unknown`` set)."""
Clock = Callable[[], float]


class LeaseLost(StoreError):
    """The lease expired and another worker owns the item now: drop the result."""


class InboxStatus(StrEnum):
    PENDING = "pending"
    DONE = "done"
    SUPERSEDED = "superseded"
    QUARANTINED = "quarantined"


class EffectState(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"
    CANCELED = "canceled"


class ClaimState(StrEnum):
    NEW = "new"
    IN_PROGRESS = "in_progress"
    DONE = "done"
    CONFLICT = "conflict"


def body_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def canonical_json(value: JSON) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def lease_batch(candidates: list[tuple[int, int]]) -> list[int]:
    """Which of the leasable ``(id, attempts)`` (in id order) one inbox lease takes.

    An item leased before without an outcome (``attempts > 0``: its process died or its
    lease ran out) is leased alone; otherwise the leading run of fresh items is. So when a
    process dies handling an item, only that item's attempt count grows run after run (the
    engine quarantines it past a bound); an item that merely shared its batch is counted at
    most once for that crash."""
    if not candidates:
        return []
    if candidates[0][1] > 0:
        return [candidates[0][0]]
    chosen = []
    for inbox_id, attempts in candidates:
        if attempts > 0:
            break
        chosen.append(inbox_id)
    return chosen


@dataclass(frozen=True)
class Accepted:
    """Outcome of ``accept``: the inbox id and whether it was a duplicate delivery."""

    inbox_id: int
    duplicate: bool


@dataclass(frozen=True)
class InboxItem:
    id: int
    source: str
    retailer: str | None
    dedup_key: str
    body: bytes
    headers: dict[str, str]
    received_at: float
    status: InboxStatus
    note: str | None
    attempts: int
    duplicates: int


@dataclass(frozen=True)
class Entity:
    kind: str
    key: str
    version: tuple[Any, ...]
    data: JSON
    updated_at: float


@dataclass(frozen=True)
class NewEffect:
    """An outbound effect to deliver exactly once (by ``idempotency_key``)."""

    idempotency_key: str
    destination: str
    kind: str
    payload: JSON
    order_key: str = ""
    retailer: str | None = None
    source_inbox_id: int | None = None
    deadline_at: float | None = None
    not_before: float | None = None


@dataclass(frozen=True)
class Effect:
    id: int
    idempotency_key: str
    destination: str
    kind: str
    order_key: str
    payload: JSON
    retailer: str | None
    source_inbox_id: int | None
    state: EffectState
    attempts: int
    next_attempt_at: float
    created_at: float
    deadline_at: float | None
    last_error: str | None = None
    result: JSON = None
    dead_reason: str | None = None
    dead_request: JSON = None
    dead_response: JSON = None
    flagged: bool = False
    outcome_unknown: bool = False
    """The latest attempt may have reached the partner: it was recorded as sent
    (:meth:`Store.mark_sending`) and no answer was recorded (the process died during the
    call), or it failed after its request may have left (a read timeout, a connection lost
    mid-answer). An attempt never recorded as sent (the process died while leasing,
    rendering or before the call) or known not to have left (no connection) leaves what
    the attempt before it ended with (``False`` for the first)."""


@dataclass(frozen=True)
class Claim:
    """Outcome of claiming an idempotency key for a synchronous request."""

    state: ClaimState
    response: JSON = None


@dataclass(frozen=True)
class Flag:
    id: int
    retailer: str | None
    entity_kind: str
    entity_key: str
    reason: str
    created_at: float


@dataclass(frozen=True)
class InboxStats:
    pending: int
    done: int
    superseded: int
    quarantined: int
    duplicates: int
    by_source: dict[str, dict[str, int]] = field(default_factory=dict)


class Transaction(ABC):
    """One atomic unit: entity state, new effects and inbox outcomes commit together."""

    @abstractmethod
    async def get_entity(self, kind: str, key: str) -> Entity | None:
        """The entity, locked against concurrent writers until the transaction ends."""

    @abstractmethod
    async def put_entity(
        self, kind: str, key: str, version: tuple[Any, ...], data: JSON
    ) -> None: ...

    @abstractmethod
    async def add_effect(self, effect: NewEffect) -> bool:
        """Queue an effect; ``False`` when its idempotency key exists already."""

    @abstractmethod
    async def cancel_effects(self, order_key: str, kinds: frozenset[str] | None = None) -> int:
        """Cancel pending effects of ``order_key`` (optionally only some kinds)."""

    @abstractmethod
    async def effect_states(self, order_key: str) -> dict[str, EffectState]:
        """Idempotency key -> state for every effect of ``order_key``."""

    @abstractmethod
    async def mark_delivered(self, effect_id: int, owner: str, result: JSON = None) -> None:
        """Record a delivery in this transaction, with the effects and state it causes
        (``LeaseLost`` when the lease moved on or the effect was canceled)."""

    @abstractmethod
    async def finish_inbox(
        self, inbox_id: int, owner: str | None, status: InboxStatus, note: str | None = None
    ) -> None:
        """Record the outcome of an inbox item (``owner`` None: not leased, e.g. replay)."""

    @abstractmethod
    async def add_flag(
        self, retailer: str | None, entity_kind: str, entity_key: str, reason: str
    ) -> None:
        """Flag an entity for an operator (idempotent per entity and reason)."""


class Store(ABC):
    """The durable store port. Backends: :mod:`bridge.store.sqlite`, :mod:`bridge.store.memory`."""

    clock: Clock

    @abstractmethod
    async def open(self) -> None:
        """Connect and apply pending migrations."""

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def ping(self) -> bool:
        """True when the store answers a trivial query."""

    @abstractmethod
    async def schema_version(self) -> int: ...

    # inbox
    @abstractmethod
    async def accept(
        self,
        source: str,
        key: str | None,
        body: bytes,
        headers: Mapping[str, str],
        retailer: str | None = None,
        quarantine: str | None = None,
    ) -> Accepted:
        """Store raw input durably; returns after commit. ``quarantine``: the reason it is
        refused; the new row is committed quarantined with that note."""

    @abstractmethod
    async def lease_inbox(
        self, owner: str, limit: int, lease_seconds: float, source_prefix: str = ""
    ) -> list[InboxItem]:
        """Pending items in id order, ``attempts`` incremented; see :func:`lease_batch` for
        which ones are leased together."""

    @abstractmethod
    async def get_inbox(self, inbox_id: int) -> InboxItem | None: ...

    @abstractmethod
    async def list_inbox(self, status: InboxStatus, limit: int = 100) -> list[InboxItem]: ...

    @abstractmethod
    async def inbox_stats(self) -> InboxStats: ...

    @abstractmethod
    async def requeue_inbox(self, inbox_id: int) -> bool:
        """Put an item back to pending (quarantine replay), its lease attempts reset."""

    @abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[Transaction]: ...

    # outbox
    @abstractmethod
    async def lease_effects(
        self,
        owner: str,
        limit: int,
        lease_seconds: float,
        destinations: frozenset[str] | None = None,
    ) -> list[Effect]:
        """Due pending effects, at most one per ``order_key``; increments ``attempts``."""

    @abstractmethod
    async def mark_delivered(self, effect_id: int, owner: str, result: JSON = None) -> None: ...

    @abstractmethod
    async def schedule_retry(
        self,
        effect_id: int,
        owner: str,
        next_attempt_at: float,
        error: str,
        *,
        outcome_unknown: bool = False,
    ) -> None:
        """The attempt failed with ``error``; try again at ``next_attempt_at``.
        ``outcome_unknown``: its request may have reached the partner."""

    @abstractmethod
    async def dead_letter(
        self,
        effect_id: int,
        owner: str | None,
        reason: str,
        request: JSON = None,
        response: JSON = None,
    ) -> None: ...

    @abstractmethod
    async def get_effect(self, effect_id: int) -> Effect | None: ...

    @abstractmethod
    async def list_effects(
        self,
        state: EffectState | None = None,
        destination: str | None = None,
        order_key: str | None = None,
        limit: int = 1000,
    ) -> list[Effect]: ...

    @abstractmethod
    async def requeue_effect(self, effect_id: int, payload: JSON = None) -> bool:
        """Dead letter -> pending (attempts reset), optionally with a rebuilt payload."""

    @abstractmethod
    async def next_effect_due(self) -> float | None:
        """When the earliest pending effect becomes due (for the dispatcher's sleep)."""

    @abstractmethod
    async def release_leases(self, owner_prefix: str) -> int:
        """Free the pending inbox items and effects leased by owners starting with
        ``owner_prefix`` (a restarted instance's former self); returns how many.

        Nothing else changes: an effect freed here is of unknown outcome exactly when its
        interrupted attempt had been recorded as sent (:meth:`mark_sending`); the others
        are known not to have been sent and go out again as a plain retry."""

    @abstractmethod
    async def mark_sending(self, effect_id: int, owner: str) -> None:
        """Record durably, before the partner call, that this attempt may reach the partner
        (``outcome_unknown`` set and ``last_error`` = :data:`SENT_WITHOUT_ANSWER`, until the
        attempt's outcome replaces both). ``LeaseLost`` when ``owner`` no longer holds the
        effect: then do not send.

        Costs one commit per delivery attempt; backends batch concurrent calls into one
        transaction (the dispatcher starts a leased batch at once)."""

    # cursors
    @abstractmethod
    async def get_cursor(self, name: str) -> str | None: ...

    @abstractmethod
    async def set_cursor(self, name: str, value: str) -> None: ...

    # idempotency of synchronous requests
    @abstractmethod
    async def claim(self, scope: str, key: str, request_hash: str, lease_seconds: float) -> Claim:
        """Claim ``key`` for one request; concurrent and repeated callers learn its fate."""

    @abstractmethod
    async def complete_claim(self, scope: str, key: str, response: JSON) -> None: ...

    @abstractmethod
    async def release_claim(self, scope: str, key: str) -> None:
        """Give the key up after a failure that created nothing."""

    # tokens (opaque, already encrypted by the caller)
    @abstractmethod
    async def get_token(self, name: str) -> tuple[bytes, int] | None:
        """The secret and its version."""

    @abstractmethod
    async def put_token(self, name: str, secret: bytes, expected_version: int | None) -> bool:
        """Compare-and-set: write only if the stored version is ``expected_version``
        (``None``: no token stored yet). False when another writer won."""

    # flags
    @abstractmethod
    async def list_flags(self, include_resolved: bool = False) -> list[Flag]: ...

    # back-pressure and graceful stop
    @abstractmethod
    async def pending_inbox_count(self) -> int:
        """How many inbox items wait to be handled (cheap: an index count)."""

    @abstractmethod
    async def release_unsent(
        self, effect_id: int, owner: str, last_error: str | None, outcome_unknown: bool
    ) -> bool:
        """Give back ``owner``'s lease of an effect whose request never left the process, as
        if this attempt had not been made: ``attempts`` goes back down by one, and
        ``last_error`` and ``outcome_unknown`` are set to the given values (the caller
        passes the earlier attempt's, as leased). False when the lease moved on."""

    # recovery and rate limits (appended: see bridge/http/journal.py)
    @abstractmethod
    async def expedite(self, destination: str) -> int:
        """Make ``destination``'s effects that wait for a retry due now (it answers again
        after an outage); returns how many. Effects never attempted yet (e.g. scheduled
        with ``not_before``) and effects leased right now are left alone."""

    @abstractmethod
    async def record_admission(
        self, limiter: str, admitted_at: float, answered: Mapping[int, float], forget_before: float
    ) -> int:
        """Write a rate governor's admission before its request is sent (returns the row
        id), the answer times of earlier rows, and drop rows admitted before
        ``forget_before``: one transaction."""

    @abstractmethod
    async def recent_admissions(
        self, limiter: str, since: float
    ) -> list[tuple[float, float | None]]:
        """``(admitted_at, answered_at)`` of ``limiter``'s admissions after ``since``."""
