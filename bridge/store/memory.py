"""In-memory store: the fake of :class:`~bridge.store.base.Store` for tests and the demo.

Same semantics as the SQLite store (the conformance suite in ``tests/test_store.py`` runs
against both), nothing durable. Every write holds one :class:`asyncio.Lock`, as the SQLite
store does; a transaction works on a copy of the tables and swaps it in only when its
block exits without an exception, so readers never see half of a transaction. JSON values
are round-tripped through JSON, so callers get exactly what SQLite would give back.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from bridge.store.base import (
    JSON,
    SENT_WITHOUT_ANSWER,
    Accepted,
    Claim,
    ClaimState,
    Clock,
    Effect,
    EffectState,
    Entity,
    EntityId,
    Flag,
    InboxItem,
    InboxStats,
    InboxStatus,
    Instance,
    LeaseLost,
    NewEffect,
    Store,
    Transaction,
    body_hash,
    canonical_json,
    dead_owners,
    lease_batch,
    queued,
)
from bridge.store.base import Registered as _Registered

Lease = tuple[str, float]  # owner, lease_until


def _json(value: JSON) -> JSON:
    return None if value is None else json.loads(canonical_json(value))


_T = TypeVar("_T")


def _out(value: _T) -> _T:
    """A private copy for the caller: changing a returned payload must not change the store."""
    return copy.deepcopy(value)


def _found(tables: _Tables, ids: Iterable[EntityId]) -> dict[EntityId, Entity]:
    """Private copies of the entities of ``ids`` that exist in ``tables``."""
    found: dict[EntityId, Entity] = {}
    for entity_id in ids:
        entity = tables.entities.get(entity_id)
        if entity is not None:
            found[entity_id] = _out(entity)
    return found


@dataclass(frozen=True)
class _Claim:
    request_hash: str
    state: ClaimState
    response: JSON = None
    lease_until: float | None = None


@dataclass
class _Tables:
    inbox: dict[int, InboxItem] = field(default_factory=dict)
    inbox_leases: dict[int, Lease] = field(default_factory=dict)
    inbox_by_key: dict[tuple[str, str], int] = field(default_factory=dict)
    inbox_by_hash: dict[tuple[str, str], int] = field(default_factory=dict)
    entities: dict[tuple[str, str], Entity] = field(default_factory=dict)
    effects: dict[int, Effect] = field(default_factory=dict)
    effect_leases: dict[int, Lease] = field(default_factory=dict)
    effect_ids: dict[str, int] = field(default_factory=dict)  # idempotency key -> id
    flags: dict[tuple[str, str, str], Flag] = field(default_factory=dict)
    cursors: dict[str, str] = field(default_factory=dict)
    claims: dict[tuple[str, str], _Claim] = field(default_factory=dict)
    tokens: dict[str, tuple[bytes, int]] = field(default_factory=dict)
    last_ids: dict[str, int] = field(default_factory=dict)  # table -> last id given out
    admissions: dict[int, tuple[str, float, float | None]] = field(default_factory=dict)
    instances: dict[str, Instance] = field(default_factory=dict)

    def snapshot(self) -> _Tables:
        """A copy whose dicts can change without touching these (rows are immutable)."""
        return _Tables(**{name: copy.copy(value) for name, value in vars(self).items()})

    def restore(self, earlier: _Tables) -> None:
        """Make these tables what ``earlier`` (a :meth:`snapshot` of them) holds, in place."""
        for name, value in vars(earlier).items():
            setattr(self, name, copy.copy(value))

    def leased_entities(self, now: float) -> set[str]:
        """Entities of pending items under an unexpired lease."""
        return {
            item.entity
            for inbox_id, (_, until) in self.inbox_leases.items()
            if until >= now
            and (item := self.inbox[inbox_id]).status is InboxStatus.PENDING
            and item.entity is not None
        }

    def next_id(self, table: str) -> int:
        self.last_ids[table] = self.last_ids.get(table, 0) + 1
        return self.last_ids[table]

    def heads(self) -> list[Effect]:
        """Pending effects free to go: no older pending effect shares their ``order_key``."""
        pending = sorted(
            (e for e in self.effects.values() if e.state is EffectState.PENDING),
            key=lambda e: e.id,
        )
        first: dict[str, int] = {}
        for effect in pending:
            first.setdefault(effect.order_key, effect.id)
        return [e for e in pending if e.order_key == "" or first[e.order_key] == e.id]


class MemoryStore(Store):
    """A :class:`Store` held in dicts; ``reset()`` empties it between tests.

    Writes outside a transaction change the tables in place while holding the lock (they
    check before they change anything); a transaction changes a snapshot.
    """

    def __init__(self, clock: Clock = time.time) -> None:
        self.clock = clock
        self._lock = asyncio.Lock()
        self._t = _Tables()
        self.commits = 0
        """Number of write transactions committed (mirrors the SQLite store)."""

    def reset(self) -> None:
        self._t = _Tables()
        self.commits = 0

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def ping(self) -> bool:
        return True

    async def schema_version(self) -> int:
        return 0  # no schema, no migrations

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[_Tables]:
        async with self._lock:
            yield self._t
            self.commits += 1

    # inbox -------------------------------------------------------------------------------

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
        digest = body_hash(body)
        dedup_key = key or f"sha256:{digest}"
        async with self._write() as t:
            by_key, by_hash = (
                t.inbox_by_key.get((source, dedup_key)),
                t.inbox_by_hash.get((source, digest)),
            )
            matches = sorted({i for i in (by_key, by_hash) if i is not None})
            for inbox_id in matches:  # like SQLite, a delivery matching two rows counts on both
                t.inbox[inbox_id] = replace(
                    t.inbox[inbox_id], duplicates=t.inbox[inbox_id].duplicates + 1
                )
            if matches:
                return Accepted(matches[0], duplicate=True)
            inbox_id = t.next_id("inbox")
            t.inbox[inbox_id] = InboxItem(
                id=inbox_id,
                source=source,
                retailer=retailer,
                dedup_key=dedup_key,
                body=bytes(body),
                headers=_json(dict(headers)),
                received_at=self.clock(),
                status=InboxStatus.PENDING if quarantine is None else InboxStatus.QUARANTINED,
                note=quarantine,
                attempts=0,
                duplicates=0,
                entity=entity,
            )
            t.inbox_by_key[(source, dedup_key)] = inbox_id
            t.inbox_by_hash[(source, digest)] = inbox_id
            return Accepted(inbox_id, duplicate=False)

    async def lease_inbox(
        self, owner: str, limit: int, lease_seconds: float, source_prefix: str = ""
    ) -> list[InboxItem]:
        now = self.clock()
        async with self._write() as t:
            candidates: list[tuple[int, int]] = []
            seen_entities: set[str] = set()  # an entity with a lower pending id is not next
            leased_entities = t.leased_entities(now)  # an item's own lease: excluded below too
            for item in sorted(t.inbox.values(), key=lambda i: i.id):
                if len(candidates) >= limit:
                    break
                if item.status is not InboxStatus.PENDING:
                    continue
                held = item.entity is not None and (
                    item.entity in seen_entities or item.entity in leased_entities
                )
                if item.entity is not None:
                    seen_entities.add(item.entity)
                lease = t.inbox_leases.get(item.id)
                if (
                    not held
                    and (lease is None or lease[1] < now)
                    and item.source.startswith(source_prefix)
                ):
                    candidates.append((item.id, item.attempts))
            leased: list[InboxItem] = []
            for inbox_id in lease_batch(candidates):
                item = t.inbox[inbox_id]
                t.inbox[inbox_id] = replace(item, attempts=item.attempts + 1)
                t.inbox_leases[inbox_id] = (owner, now + lease_seconds)
                leased.append(t.inbox[inbox_id])
            return _out(leased)

    async def get_inbox(self, inbox_id: int) -> InboxItem | None:
        return _out(self._t.inbox.get(inbox_id))

    async def list_inbox(self, status: InboxStatus, limit: int = 100) -> list[InboxItem]:
        items = sorted(self._t.inbox.values(), key=lambda i: i.id)
        return _out([i for i in items if i.status is status][:limit])

    async def inbox_stats(self) -> InboxStats:
        totals = {s: 0 for s in InboxStatus}
        by_source: dict[str, dict[str, int]] = {}
        for item in self._t.inbox.values():
            totals[item.status] += 1
            counts = by_source.setdefault(item.source, {})
            counts[item.status.value] = counts.get(item.status.value, 0) + 1
        return InboxStats(
            pending=totals[InboxStatus.PENDING],
            done=totals[InboxStatus.DONE],
            superseded=totals[InboxStatus.SUPERSEDED],
            quarantined=totals[InboxStatus.QUARANTINED],
            duplicates=sum(i.duplicates for i in self._t.inbox.values()),
            by_source=by_source,
        )

    async def requeue_inbox(self, inbox_id: int) -> bool:
        async with self._write() as t:
            item = t.inbox.get(inbox_id)
            if item is None:
                return False
            t.inbox[inbox_id] = replace(item, status=InboxStatus.PENDING, note=None, attempts=0)
            t.inbox_leases.pop(inbox_id, None)
            return True

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        async with self._lock:
            staged = self._t.snapshot()
            yield _MemoryTransaction(staged, self.clock())
            self._t = staged  # reached only when the block raised nothing
            self.commits += 1

    # outbox ------------------------------------------------------------------------------

    async def lease_effects(
        self,
        owner: str,
        limit: int,
        lease_seconds: float,
        destinations: frozenset[str] | None = None,
    ) -> list[Effect]:
        now = self.clock()
        async with self._write() as t:
            due = [
                e
                for e in t.heads()
                if e.next_attempt_at <= now
                and (e.id not in t.effect_leases or t.effect_leases[e.id][1] < now)
                and (destinations is None or e.destination in destinations)
            ]
            due.sort(key=lambda e: (e.next_attempt_at, e.id))
            leased: list[Effect] = []
            for effect in due[:limit]:
                t.effects[effect.id] = replace(effect, attempts=effect.attempts + 1)
                t.effect_leases[effect.id] = (owner, now + lease_seconds)
                leased.append(t.effects[effect.id])
            return _out(sorted(leased, key=lambda e: e.id))

    async def _finish_effect(self, effect_id: int, owner: str | None, **changes: Any) -> None:
        async with self._write() as t:
            effect = t.effects.get(effect_id)
            lease_owner = t.effect_leases.get(effect_id, (None, 0.0))[0]
            if (
                effect is None
                or effect.state is not EffectState.PENDING
                or (owner is not None and lease_owner != owner)
            ):
                raise LeaseLost(f"effect {effect_id} is no longer leased by this worker")
            t.effects[effect_id] = replace(effect, **changes)
            t.effect_leases.pop(effect_id, None)

    async def mark_delivered(self, effect_id: int, owner: str, result: JSON = None) -> None:
        await self._finish_effect(
            effect_id, owner, state=EffectState.DELIVERED, result=_json(result)
        )

    async def schedule_retry(
        self,
        effect_id: int,
        owner: str,
        delay: float,
        error: str,
        *,
        outcome_unknown: bool = False,
    ) -> None:
        await self._finish_effect(
            effect_id,
            owner,
            next_attempt_at=self.clock() + delay,
            last_error=error,
            outcome_unknown=outcome_unknown,
        )

    async def dead_letter(
        self,
        effect_id: int,
        owner: str | None,
        reason: str,
        request: JSON = None,
        response: JSON = None,
    ) -> None:
        await self._finish_effect(
            effect_id,
            owner,
            state=EffectState.DEAD,
            dead_reason=reason,
            last_error=reason,
            dead_request=_json(request),
            dead_response=_json(response),
        )

    async def get_effect(self, effect_id: int) -> Effect | None:
        return _out(self._t.effects.get(effect_id))

    async def list_effects(
        self,
        state: EffectState | None = None,
        destination: str | None = None,
        order_key: str | None = None,
        limit: int = 1000,
    ) -> list[Effect]:
        found = [
            e
            for e in sorted(self._t.effects.values(), key=lambda e: e.id)
            if (state is None or e.state == state)
            and (destination is None or e.destination == destination)
            and (order_key is None or e.order_key == order_key)
        ]
        return _out(found[:limit])

    async def requeue_effect(self, effect_id: int, payload: JSON = None) -> bool:
        now = self.clock()
        async with self._write() as t:
            effect = t.effects.get(effect_id)
            if effect is None or effect.state is not EffectState.DEAD:
                return False
            deadline = effect.deadline_at
            t.effects[effect_id] = replace(
                effect,
                state=EffectState.PENDING,
                attempts=0,
                outcome_unknown=False,
                next_attempt_at=now,
                payload=effect.payload if payload is None else _json(payload),
                dead_reason=None,
                dead_request=None,
                dead_response=None,
                deadline_at=None if deadline is None else now + (deadline - effect.created_at),
            )
            t.effect_leases.pop(effect_id, None)
            return True

    async def next_effect_due(self) -> float | None:
        t = self._t
        due = [max(e.next_attempt_at, t.effect_leases.get(e.id, ("", 0.0))[1]) for e in t.heads()]
        return min(due, default=None)

    # process registry --------------------------------------------------------------------

    async def register_instance(self, owner: str, instance: str, host: str, pid: int) -> None:
        now = self.clock()
        async with self._write() as t:
            known = t.instances.get(owner)
            started = now if known is None else known.started_at
            t.instances[owner] = Instance(owner, instance, host, pid, started, now)

    async def heartbeat(self, owner: str) -> None:
        async with self._write() as t:
            known = t.instances.get(owner)
            if known is not None:
                t.instances[owner] = replace(known, heartbeat_at=self.clock())

    async def list_instances(self) -> list[Instance]:
        return sorted(self._t.instances.values(), key=lambda i: i.owner)

    async def take_back_leases(
        self,
        owner: str,
        instance: str,
        host: str,
        alive: Callable[[int], bool],
        stale_after: float,
    ) -> int:
        now = self.clock()
        released = 0
        async with self._write() as t:
            rows = [
                _Registered(i.owner, i.instance, i.host, i.pid, i.heartbeat_at)
                for i in t.instances.values()
            ]
            dead = set(dead_owners(rows, owner, instance, host, alive, now - stale_after))
            inbox_pending = {i for i, item in t.inbox.items() if item.status is InboxStatus.PENDING}
            effects_pending = {i for i, e in t.effects.items() if e.state is EffectState.PENDING}
            for leases, pending in (
                (t.inbox_leases, inbox_pending),
                (t.effect_leases, effects_pending),
            ):
                for key in [k for k, (held_by, _) in leases.items() if held_by in dead]:
                    if key in pending:
                        released += 1
                    del leases[key]
            for dead_owner in dead:
                del t.instances[dead_owner]
        return released

    async def mark_sending(self, effect_id: int, owner: str) -> None:
        async with self._write() as t:
            effect = t.effects.get(effect_id)
            lease_owner = t.effect_leases.get(effect_id, (None, 0.0))[0]
            if effect is None or effect.state is not EffectState.PENDING or lease_owner != owner:
                raise LeaseLost(f"effect {effect_id} is no longer leased by this worker")
            t.effects[effect_id] = replace(
                effect, last_error=SENT_WITHOUT_ANSWER, outcome_unknown=True
            )

    # cursors -----------------------------------------------------------------------------

    async def get_cursor(self, name: str) -> str | None:
        return self._t.cursors.get(name)

    async def set_cursor(self, name: str, value: str) -> None:
        async with self._write() as t:
            t.cursors[name] = value

    # idempotency -------------------------------------------------------------------------

    async def claim(self, scope: str, key: str, request_hash: str, lease_seconds: float) -> Claim:
        """Insert, or take over an expired in-progress claim of the same request: one
        decision under the lock, as SQLite's one ``INSERT ... ON CONFLICT DO UPDATE``."""
        now = self.clock()
        async with self._write() as t:
            found = t.claims.get((scope, key))
            taken = found is None or (
                found.state is ClaimState.IN_PROGRESS
                and found.request_hash == request_hash
                and found.lease_until is not None
                and found.lease_until < now
            )
            if taken:
                t.claims[(scope, key)] = _Claim(
                    request_hash, ClaimState.IN_PROGRESS, lease_until=now + lease_seconds
                )
                return Claim(ClaimState.NEW)
            assert found is not None
            if found.request_hash != request_hash:
                return Claim(ClaimState.CONFLICT, _out(found.response))
            if found.state is ClaimState.DONE:
                return Claim(ClaimState.DONE, _out(found.response))
            return Claim(ClaimState.IN_PROGRESS)

    async def complete_claim(self, scope: str, key: str, response: JSON) -> None:
        async with self._write() as t:
            found = t.claims.get((scope, key))
            if found is not None:
                t.claims[(scope, key)] = replace(
                    found, state=ClaimState.DONE, response=_json(response), lease_until=None
                )

    async def release_claim(self, scope: str, key: str) -> None:
        async with self._write() as t:
            found = t.claims.get((scope, key))
            if found is not None and found.state is ClaimState.IN_PROGRESS:
                del t.claims[(scope, key)]

    # tokens ------------------------------------------------------------------------------

    async def get_token(self, name: str) -> tuple[bytes, int] | None:
        return self._t.tokens.get(name)

    async def put_token(self, name: str, secret: bytes, expected_version: int | None) -> bool:
        async with self._write() as t:
            current = t.tokens.get(name)
            if (current[1] if current else None) != expected_version:
                return False
            t.tokens[name] = (bytes(secret), 1 if current is None else current[1] + 1)
            return True

    # flags -------------------------------------------------------------------------------

    async def list_flags(self, include_resolved: bool = False) -> list[Flag]:
        return sorted(
            (f for f in self._t.flags.values() if include_resolved or f.resolved_at is None),
            key=lambda f: f.id,
        )

    async def resolve_flag(self, flag_id: int) -> bool:
        async with self._write() as t:
            for where, flag in t.flags.items():
                if flag.id == flag_id and flag.resolved_at is None:
                    t.flags[where] = replace(flag, resolved_at=self.clock())
                    return True
            return False

    # per-entity rows ---------------------------------------------------------------------

    async def get_entities(self, ids: Iterable[EntityId]) -> dict[EntityId, Entity]:
        """Committed rows without the lock: a transaction works on a staged copy and
        replaces the tables only when it commits."""
        return _found(self._t, ids)

    async def entity_keys(
        self, kind: str, key_prefix: str = "", after: str = "", limit: int = 1000
    ) -> list[str]:
        keys = sorted(
            key
            for found_kind, key in self._t.entities
            if found_kind == kind and key.startswith(key_prefix) and key > after
        )
        return keys[:limit]

    # back-pressure and graceful stop -----------------------------------------------------

    async def pending_inbox_count(self) -> int:
        return sum(1 for i in self._t.inbox.values() if i.status is InboxStatus.PENDING)

    async def release_unsent(
        self, effect_id: int, owner: str, last_error: str | None, outcome_unknown: bool
    ) -> bool:
        async with self._write() as t:
            effect = t.effects.get(effect_id)
            lease = t.effect_leases.get(effect_id)
            if effect is None or effect.state is not EffectState.PENDING or lease is None:
                return False
            if lease[0] != owner:
                return False
            t.effects[effect_id] = replace(
                effect,
                attempts=max(effect.attempts - 1, 0),
                last_error=last_error,
                outcome_unknown=outcome_unknown,
            )
            del t.effect_leases[effect_id]
            return True

    # recovery and rate limits ------------------------------------------------------------

    async def expedite(self, destination: str) -> int:
        now = self.clock()
        async with self._write() as t:
            waiting = [
                e
                for e in t.effects.values()
                if e.destination == destination
                and e.state is EffectState.PENDING
                and e.attempts > 0
                and e.next_attempt_at > now
                and e.id not in t.effect_leases
            ]
            for effect in waiting:
                t.effects[effect.id] = replace(effect, next_attempt_at=now)
            return len(waiting)

    async def record_admission(
        self, limiter: str, admitted_at: float, answered: Mapping[int, float], forget_before: float
    ) -> int:
        async with self._write() as t:
            for row, at in answered.items():
                if row in t.admissions:
                    name, admitted, _ = t.admissions[row]
                    t.admissions[row] = (name, admitted, at)
            for row in [
                r
                for r, (name, at, _) in t.admissions.items()
                if name == limiter and at < forget_before
            ]:
                del t.admissions[row]
            row = t.next_id("admissions")
            t.admissions[row] = (limiter, admitted_at, None)
            return row

    async def recent_admissions(
        self, limiter: str, since: float
    ) -> list[tuple[float, float | None]]:
        return sorted(
            (
                (admitted, answered)
                for name, admitted, answered in self._t.admissions.values()
                if name == limiter and admitted > since
            ),
            key=lambda row: row[0],
        )


class _MemoryTransaction(Transaction):
    """Writes into the staged tables of :meth:`MemoryStore.transaction`."""

    def __init__(self, tables: _Tables, now: float) -> None:
        self._t = tables
        self._now = now

    @contextlib.asynccontextmanager
    async def savepoint(self) -> AsyncIterator[Transaction]:
        before = self._t.snapshot()
        try:
            yield self
        except BaseException:
            self._t.restore(before)
            raise

    async def lock_entity(self, kind: str, key: str) -> None:
        """Held already: a transaction holds the store's only lock until it ends."""

    async def delete_entity(self, kind: str, key: str) -> bool:
        return self._t.entities.pop((kind, key), None) is not None

    async def get_entity(self, kind: str, key: str) -> Entity | None:
        return _out(self._t.entities.get((kind, key)))

    async def get_entities(self, ids: Iterable[EntityId]) -> dict[EntityId, Entity]:
        return _found(self._t, ids)

    async def put_entity(self, kind: str, key: str, version: tuple[Any, ...], data: JSON) -> None:
        self._t.entities[(kind, key)] = Entity(
            kind, key, tuple(_json(list(version))), _json(data), self._now
        )

    async def mark_delivered(self, effect_id: int, owner: str, result: JSON = None) -> None:
        effect = self._t.effects.get(effect_id)
        lease_owner = self._t.effect_leases.get(effect_id, (None, 0.0))[0]
        if effect is None or effect.state is not EffectState.PENDING or lease_owner != owner:
            raise LeaseLost(f"effect {effect_id} is no longer leased by this worker")
        self._t.effects[effect_id] = replace(
            effect, state=EffectState.DELIVERED, result=_json(result)
        )
        self._t.effect_leases.pop(effect_id, None)

    async def add_effect(self, effect: NewEffect) -> bool:
        if effect.idempotency_key in self._t.effect_ids:
            return queued(effect, False)
        effect_id = self._t.next_id("outbox")
        self._t.effect_ids[effect.idempotency_key] = effect_id
        self._t.effects[effect_id] = Effect(
            id=effect_id,
            idempotency_key=effect.idempotency_key,
            destination=effect.destination,
            kind=effect.kind,
            order_key=effect.order_key,
            payload=_json(effect.payload),
            retailer=effect.retailer,
            source_inbox_id=effect.source_inbox_id,
            state=EffectState.PENDING,
            attempts=0,
            next_attempt_at=self._now if effect.not_before is None else effect.not_before,
            created_at=self._now,
            deadline_at=effect.deadline_at,
        )
        return True

    async def cancel_effects(self, order_key: str, kinds: frozenset[str] | None = None) -> int:
        canceled = 0
        for effect in list(self._t.effects.values()):
            if (
                effect.order_key == order_key
                and effect.state is EffectState.PENDING
                and (kinds is None or effect.kind in kinds)
            ):
                self._t.effects[effect.id] = replace(effect, state=EffectState.CANCELED)
                canceled += 1
        return canceled

    async def effect_states(self, order_key: str) -> dict[str, EffectState]:
        return {
            e.idempotency_key: e.state for e in self._t.effects.values() if e.order_key == order_key
        }

    async def finish_inbox(
        self, inbox_id: int, owner: str | None, status: InboxStatus, note: str | None = None
    ) -> None:
        item = self._t.inbox.get(inbox_id)
        lease_owner = self._t.inbox_leases.get(inbox_id, (None, 0.0))[0]
        if item is None or (
            owner is not None and (lease_owner != owner or item.status is not InboxStatus.PENDING)
        ):
            raise LeaseLost(f"inbox item {inbox_id} is no longer leased by this worker")
        self._t.inbox[inbox_id] = replace(item, status=status, note=note)
        self._t.inbox_leases.pop(inbox_id, None)

    async def add_flag(
        self, retailer: str | None, entity_kind: str, entity_key: str, reason: str
    ) -> None:
        if (entity_kind, entity_key, reason) not in self._t.flags:
            flag = Flag(
                self._t.next_id("flags"), retailer, entity_kind, entity_key, reason, self._now
            )
            self._t.flags[(entity_kind, entity_key, reason)] = flag
