"""The durable store: the port every backend implements.

Guarantees callers rely on (the conformance suite in ``tests/test_store.py`` pins each one
on every backend), and how each backend meets them. SQLite and the in-memory fake have one
writer: every write holds one lock, so transactions run one after the other. PostgreSQL
(next) has many writers and meets the same guarantees with row and advisory locks.

* **Durable accept.** ``accept`` returns only once the raw input is committed; duplicates
  (same ``(source, key)`` or same body bytes for that source) are counted, never stored
  twice. Input refused at the edge is stored with ``quarantine=<reason>``: committed
  quarantined in that same commit, so no worker ever leases it (a duplicate keeps the
  status of the row it repeats).
* **Atomic transactions.** A :class:`Transaction` applies entity state, new effects and the
  inbox outcome at once, or nothing of them.
* **Per-entity lock.** :meth:`Transaction.lock_entity` holds an entity (existing or not)
  against every other transaction until this one ends. SQLite/memory: the single writer
  already serialises whole transactions; PostgreSQL: ``pg_advisory_xact_lock`` on a hash of
  ``(kind, key)``.
* **Inbox leased by entity.** An inbox item accepted with an ``entity`` key is leased only
  when no other item of that entity is leased (unexpired) and none with a lower id is
  pending: one at a time per entity, in id order (several entities per lease are fine).
  SQLite/memory: the lease query checks it under the writer lock; PostgreSQL (next issue):
  the same ``NOT EXISTS`` in a ``MATERIALIZED`` CTE with ``FOR UPDATE SKIP LOCKED``, made
  exclusive per entity by an advisory lock.
* **Leases and expiry.** Work (inbox items, outbox effects) is *leased*: a lease has an
  owner and an expiry, so the items of a worker that died are picked up again once its
  lease runs out; every finishing call names the owner and is refused (``LeaseLost``) when
  the lease moved on.
* **Per-key FIFO.** Effects are unique by idempotency key; effects sharing an
  ``order_key`` are leased one at a time in id order (the order they were written).
* **Claims in one statement.** :meth:`Store.claim` inserts a claim or takes over an expired
  in-progress one in a single ``INSERT ... ON CONFLICT DO UPDATE ... WHERE ... RETURNING``
  (memory: the same decision under its lock), so of concurrent claimers exactly one wins.
* **The store's time.** Every lease expiry, retry due time and row stamp is computed inside
  the store from its own time (:meth:`Store.now`), never from a caller's clock: a lease
  means the same on every replica. The few absolute times a caller passes
  (``NewEffect.not_before``/``deadline_at``, admission times) are read from
  :meth:`Store.now` (or :attr:`Store.clock`). SQLite/memory: the injectable ``clock``;
  PostgreSQL: ``now()``.
* **Owners unique per process, taken back only when dead.** An owner id is
  ``instance/pid/start_ms``; a process registers (:meth:`Store.register_instance`) and
  heartbeats; :meth:`Store.take_back_leases` frees the leases of owners that are dead (same
  instance and host, pid gone or now the caller's own; or heartbeat stale), never a live
  owner's. Every backend decides it with :func:`dead_owners` inside one write.
* **Per-entity rows.** Sets that grow per entity (open returns, open RMAs) are one entity
  row each, read with :meth:`Store.entity_keys` and removed with
  :meth:`Transaction.delete_entity`, so transactions on different entities write
  different rows.
* **Reads without a write.** :meth:`Store.get_entities` reads committed entities (several
  in one call) without opening a write transaction; each call sees one committed state
  (SQLite: one statement; memory: the committed tables), two calls may see different ones.
  :meth:`Transaction.get_entities` is the same batch read inside a transaction.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple, Protocol

from bridge.errors import EffectKeyTaken, StoreError

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


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)


def canonical_json(value: JSON) -> str:
    """Sorted keys, no spaces, ASCII (``json.dumps`` with these options, its encoder made
    once instead of per call: the same text, so hashes and keys built on it are stable)."""
    return _CANONICAL.encode(value)


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


class Registered(NamedTuple):
    """What :func:`dead_owners` needs of a registered process."""

    owner: str
    instance: str
    host: str
    pid: int
    heartbeat_at: float


def dead_owners(
    registered: list[Registered],
    owner: str,
    instance: str,
    host: str,
    alive: Callable[[int], bool],
    stale_before: float,
) -> list[str]:
    """The registered owners :meth:`Store.take_back_leases` frees for ``owner``: those of
    ``instance`` on ``host`` whose process is gone (``alive(pid)`` false, or the pid is the
    caller's own: one pid is one process at a time, as in a container restarted at pid 1),
    and any whose heartbeat is older than ``stale_before``. Never ``owner`` itself."""
    own_pid = next((r.pid for r in registered if r.owner == owner), None)
    dead = []
    for row in registered:
        if row.owner == owner:
            continue
        here = row.instance == instance and row.host == host
        gone = here and (row.pid == own_pid or not alive(row.pid))
        if gone or row.heartbeat_at < stale_before:
            dead.append(row.owner)
    return sorted(dead)


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
    entity: str | None = None
    """The entity the item is about (leased one at a time per entity); ``None``: its own."""


@dataclass(frozen=True)
class Entity:
    kind: str
    key: str
    version: tuple[Any, ...]
    data: JSON
    updated_at: float


EntityId = tuple[str, str]
"""An entity's ``(kind, key)``."""


class EntityReader(Protocol):
    """Reads entities several at a time: a :class:`Transaction`, or a :class:`Store`'s
    committed state (:meth:`Store.get_entities`)."""

    async def get_entities(self, ids: Iterable[EntityId]) -> dict[EntityId, Entity]:
        """The entities of ``ids`` that exist, by ``(kind, key)`` (absent ones left out)."""
        ...


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
    """Epoch seconds in the store's time (:meth:`Store.now`), like ``not_before``."""
    not_before: float | None = None
    must_queue: bool = False
    """The key is new by construction (e.g. an order snapshot's sequence): an existing key
    means a change would be lost, so :meth:`Transaction.add_effect` raises
    ``EffectKeyTaken`` instead of answering ``False``."""


def queued(effect: NewEffect, added: bool) -> bool:
    """What :meth:`Transaction.add_effect` answers: ``added``, or ``EffectKeyTaken`` when an
    effect that ``must_queue`` was not added (both stores share this rule)."""
    if not added and effect.must_queue:
        raise EffectKeyTaken(
            f"effect {effect.idempotency_key!r} ({effect.kind}) must be queued but its key"
            " exists already: it would silently drop a change"
        )
    return added


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
    resolved_at: float | None = None


@dataclass(frozen=True)
class Instance:
    """A registered process (:meth:`Store.register_instance`)."""

    owner: str
    instance: str
    host: str
    pid: int
    started_at: float
    heartbeat_at: float


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
    async def lock_entity(self, kind: str, key: str) -> None:
        """No other transaction holds this entity's lock until this one ends; works for an
        entity that does not exist yet. Take it before reading what you will write.

        SQLite/memory meet it by their single writer (a transaction holds the write lock
        from its start to its end, so this returns at once); PostgreSQL by
        ``pg_advisory_xact_lock``."""

    @abstractmethod
    async def get_entity(self, kind: str, key: str) -> Entity | None:
        """The entity as this transaction sees it (lock it first with :meth:`lock_entity`
        when the write depends on it)."""

    async def get_entities(self, ids: Iterable[EntityId]) -> dict[EntityId, Entity]:
        """The entities of ``ids`` that exist, as this transaction sees them (a backend may
        read them in one statement)."""
        found: dict[EntityId, Entity] = {}
        for kind, key in dict.fromkeys(ids):
            entity = await self.get_entity(kind, key)
            if entity is not None:
                found[kind, key] = entity
        return found

    @abstractmethod
    async def delete_entity(self, kind: str, key: str) -> bool:
        """Remove the entity; ``False`` when there was none."""

    @abstractmethod
    async def put_entity(
        self, kind: str, key: str, version: tuple[Any, ...], data: JSON
    ) -> None: ...

    @abstractmethod
    async def add_effect(self, effect: NewEffect) -> bool:
        """Queue an effect; ``False`` when its idempotency key exists already (raises
        ``EffectKeyTaken`` instead for an effect that ``must_queue``)."""

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

    @abstractmethod
    def savepoint(self) -> AbstractAsyncContextManager[Transaction]:
        """A nested unit of this transaction: what the block writes is kept when it ends
        normally and undone when it raises (the exception goes on; this transaction goes
        on too). Lets one commit hold several independent units, each failing alone.
        SQLite: ``SAVEPOINT``; memory: a copy of the staged tables; PostgreSQL:
        ``SAVEPOINT``."""


async def each_entity_key(
    store: Store, kind: str, key_prefix: str = "", page: int = 500
) -> AsyncIterator[str]:
    """Every key of :meth:`Store.entity_keys`, read page by page."""
    after = ""
    while keys := await store.entity_keys(kind, key_prefix, after, page):
        for key in keys:
            yield key
        after = keys[-1]


class Store(ABC):
    """The durable store port. Backends: :mod:`bridge.store.sqlite`, :mod:`bridge.store.memory`."""

    clock: Clock
    """The store's time source (SQLite/memory: injectable; read it through :meth:`now`)."""

    async def now(self) -> float:
        """The store's time, the base of every lease expiry and due time it writes."""
        return self.clock()

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
        entity: str | None = None,
    ) -> Accepted:
        """Store raw input durably; returns after commit. ``quarantine``: the reason it is
        refused; the new row is committed quarantined with that note. ``entity``: the key
        of what the input is about (``None``: the item is its own entity)."""

    @abstractmethod
    async def lease_inbox(
        self, owner: str, limit: int, lease_seconds: float, source_prefix: str = ""
    ) -> list[InboxItem]:
        """Pending items in id order, ``attempts`` incremented, lease until the store's now
        + ``lease_seconds``. An item is never leased while another item of its entity is
        leased (unexpired) or pending with a lower id: per entity one at a time, in id
        order. See :func:`lease_batch` for which ones are leased together."""

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
        delay: float,
        error: str,
        *,
        outcome_unknown: bool = False,
    ) -> None:
        """The attempt failed with ``error``: free the lease; the effect is due again ``delay``
        seconds from the store's now. ``outcome_unknown``: its request may have reached the
        partner."""

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

    # process registry
    @abstractmethod
    async def register_instance(self, owner: str, instance: str, host: str, pid: int) -> None:
        """Record a process that will lease work as ``owner`` (started and heartbeat now)."""

    @abstractmethod
    async def heartbeat(self, owner: str) -> None:
        """``owner`` is alive at the store's now."""

    @abstractmethod
    async def list_instances(self) -> list[Instance]: ...

    @abstractmethod
    async def take_back_leases(
        self,
        owner: str,
        instance: str,
        host: str,
        alive: Callable[[int], bool],
        stale_after: float,
    ) -> int:
        """Free the pending inbox items and effects leased by *dead* owners; returns how
        many. Dead: registered with ``instance`` on ``host`` (not ``owner`` itself) whose pid
        is not ``alive``, or any registered owner whose heartbeat is older than
        ``stale_after`` seconds. A live owner's leases are never freed (unregistered
        owners' leases only expire). Dead owners' registrations are removed.

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

    @abstractmethod
    async def resolve_flag(self, flag_id: int) -> bool:
        """Mark a flag resolved (an operator settled it); ``False`` when there is no such
        unresolved flag."""

    # per-entity rows
    @abstractmethod
    async def get_entities(self, ids: Iterable[EntityId]) -> dict[EntityId, Entity]:
        """Committed entities of ``ids`` that exist, read without a write transaction (one
        committed state per call; see "Reads without a write" above)."""

    @abstractmethod
    async def entity_keys(
        self, kind: str, key_prefix: str = "", after: str = "", limit: int = 1000
    ) -> list[str]:
        """Keys of ``kind``'s entities starting with ``key_prefix`` and sorting after
        ``after``, in key order, at most ``limit`` (page on with the last key)."""

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
