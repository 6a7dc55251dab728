"""Inbox -> map -> state -> outbox -> dispatch, platform-agnostic.

Adapters supply two things:

* an :data:`InboxHandler` per inbox *kind* (``"optoro.rmas"``): it parses and maps the raw
  body, reads and writes entity state through the :class:`~bridge.store.Transaction`, and
  returns the effects the new state causes. The engine writes those effects and the inbox
  outcome in the same transaction. A :class:`~bridge.errors.MappingError` quarantines the
  item with its reason (nothing else is written).
* a :data:`Destination` per effect destination, of one of two kinds:

  - a :class:`Delivery` (``kind = "delivery"``) changes something at the partner (a POST
    or PUT made idempotent by a key or a lookup). The engine commits that the attempt may
    reach the partner (:meth:`Engine.record_attempt`) before :meth:`Delivery.deliver`;
    :meth:`Delivery.on_delivered` runs in the transaction that records the delivery, so
    the state and follow-up effects it causes commit with it.
  - a :class:`Read` (``kind = "read"``) only reads (fetch, then apply): a GET changes
    nothing, so it is never recorded as sent, its outcome is never unknown and it is
    retried freely. :meth:`Read.fetch` runs outside any transaction and answers a typed
    :data:`Fetched` (:class:`Found`, :class:`Absent` or :class:`Skipped`);
    :meth:`Read.apply` runs in the transaction that records it.

  The base classes in :mod:`bridge.engine.destination` give the defaults. The dispatcher
  retries ``RetriableDeliveryError`` with capped exponential backoff and full jitter until
  the destination's deadline, and dead-letters ``PermanentDeliveryError``,
  ``MappingError`` and anything past its deadline, keeping the request and the response.

Exactly-once: every effect has an idempotency key (unique in the outbox); an effect whose
earlier attempt may have reached the partner (``Effect.outcome_unknown``: recorded as sent
and never answered, or failed after the request may have left) is settled by its
destination (the same key, or a lookup) before it is sent again; each delivery documents
how the partner deduplicates it. A failure known not to have sent anything (no connection,
refused before the call) leaves ``outcome_unknown`` false.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Literal, Protocol

from bridge.errors import (
    BridgeError,
    DeliveryError,
    MappingError,
    RetriableDeliveryError,
    StoreError,
)
from bridge.http import Backoff, OutboundRequest, Response
from bridge.http.sent import SendRecord, SendTracker
from bridge.store import (
    Accepted,
    Effect,
    EffectState,
    InboxItem,
    InboxStatus,
    LeaseLost,
    NewEffect,
    Store,
    Transaction,
)

log = logging.getLogger(__name__)

INBOX_FLAG = "inbox"
"""Entity kind of an operator flag raised about an inbox item (its key: the item's id)."""

DEFAULT_DEADLINE = 72 * 3600.0


@dataclass(frozen=True)
class Outcome:
    """What handling one inbox item did."""

    status: InboxStatus = InboxStatus.DONE
    effects: Sequence[NewEffect] = ()
    note: str | None = None


@dataclass(frozen=True)
class HandlerContext:
    """``replay`` is true when an operator re-runs stored input with the current mapping:
    the handler re-applies state of the same version instead of calling it a duplicate."""

    replay: bool = False


InboxHandler = Callable[[InboxItem, Transaction, HandlerContext], Awaitable[Outcome]]


class Outbound(Protocol):
    """What both kinds of destination have: a name, a deadline, a backoff, the request an
    effect becomes (for dry-run and dead letters) and the recovery signal."""

    name: str
    deadline_seconds: float
    backoff: Backoff

    async def build_request(self, effect: Effect) -> OutboundRequest:
        """The exact request the destination would send for ``effect``."""

    def take_recovery(self) -> bool:
        """True once after the partner answers again following an outage (the engine then
        makes the destination's waiting retries due now)."""


class Delivery(Outbound, Protocol):
    """A destination whose effects change something at the partner (POST, PUT).

    The engine records each attempt as possibly sent before :meth:`deliver` (so a process
    that dies during the call leaves ``Effect.outcome_unknown`` for its successor), and the
    delivery must be safe to repeat: an idempotency key the partner honours, or a lookup
    before re-sending when ``effect.outcome_unknown``."""

    kind: ClassVar[Literal["delivery"]]

    async def deliver(self, effect: Effect) -> Response:
        """Send once; raise ``DeliveryError`` subclasses or ``MappingError`` on failure
        (a ``RetriableDeliveryError`` says whether the request may have reached the
        partner: ``outcome_unknown``)."""

    async def on_delivered(
        self, tx: Transaction, effect: Effect, response: Response
    ) -> list[NewEffect]:
        """What the delivery causes (state, follow-up effects), in the transaction that
        records it as delivered; ``[]`` when nothing follows."""


@dataclass(frozen=True)
class Found:
    """A read found what it looked for."""

    body: bytes
    started_at: float
    """Store clock when the read began: the body is at least this recent."""


@dataclass(frozen=True)
class Absent:
    """The partner has no such thing (e.g. a 404 to a GET)."""

    started_at: float


@dataclass(frozen=True)
class Skipped:
    """No request was needed (e.g. a read that started later already applied the same)."""

    reason: str


Fetched = Found | Absent | Skipped
"""What :meth:`Read.fetch` learnt."""


class Read(Outbound, Protocol):
    """A destination whose effects read from the partner, then apply what they found.

    Never recorded as sent and never of unknown outcome (a read changes nothing at the
    partner): every failure is retried as it is, or dead-lettered when permanent."""

    kind: ClassVar[Literal["read"]]

    async def fetch(self, effect: Effect) -> Fetched:
        """Read outside any transaction; raise ``DeliveryError`` subclasses or
        ``MappingError`` (validate here: what cannot be applied is a dead letter)."""

    async def apply(
        self, tx: Transaction, effect: Effect, fetched: Found | Absent
    ) -> list[NewEffect]:
        """Apply what was read, in the transaction that records the effect as done; returns
        the effects it causes."""


Destination = Delivery | Read
"""Where the effects of one ``destination`` name go: a :class:`Delivery` or a :class:`Read`."""


def inbox_kind(source: str) -> str:
    """``"acme:optoro.rmas"`` -> ``"optoro.rmas"``."""
    return source.split(":", 1)[1] if ":" in source else source


def inbox_source(retailer: str | None, kind: str) -> str:
    return f"{retailer}:{kind}" if retailer else kind


def version_is_newer(new: Sequence[Any], stored: Sequence[Any] | None) -> bool:
    """True when ``new`` sorts after ``stored`` (``None``: nothing stored yet)."""
    return stored is None or tuple(new) > tuple(stored)


async def apply_versioned(
    tx: Transaction,
    kind: str,
    key: str,
    version: Sequence[Any],
    data: Any,
    ctx: HandlerContext = HandlerContext(),
) -> bool:
    """Write entity state only when ``version`` is newer than what is stored (or equal,
    on replay). False: stale or duplicate, nothing written. The entity is locked
    (:meth:`Transaction.lock_entity`) before it is read."""
    await tx.lock_entity(kind, key)
    current = await tx.get_entity(kind, key)
    stored = current.version if current else None
    if version_is_newer(version, stored) or (ctx.replay and tuple(version) == stored):
        await tx.put_entity(kind, key, tuple(version), data)
        return True
    return False


@dataclass
class EngineSettings:
    inbox_batch: int = 32
    inbox_lease: float = 60.0
    effect_batch: int = 32
    effect_lease: float = 120.0
    idle_poll: float = 0.5
    max_concurrent_deliveries: int = 16
    inbox_commit_batch: int = 16
    """Leased inbox items handled in one transaction (one commit), each in its own
    savepoint so that one item's failure undoes that item alone; 1: one commit per item."""
    max_inbox_attempts: int = 3
    """An inbox item leased more often than this without an outcome is quarantined."""
    heartbeat_interval: float = 5.0
    stale_after: float = 60.0
    """A process whose heartbeat is older than this is dead: its leases are taken back."""


def pid_alive(pid: int) -> bool:
    """A process with this pid exists on this host (``os.kill(pid, 0)``)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


_last_start_ms = 0


def _start_ms() -> int:
    """Milliseconds since the epoch, strictly increasing within this process (two engines
    made in one millisecond still get different owner ids)."""
    global _last_start_ms
    _last_start_ms = max(time.time_ns() // 1_000_000, _last_start_ms + 1)
    return _last_start_ms


@dataclass
class EngineStats:
    processed: int = 0
    quarantined: int = 0
    superseded: int = 0
    delivered: int = 0
    retried: int = 0
    dead: int = 0
    by_destination: dict[str, dict[str, int]] = field(default_factory=dict)

    def count(self, destination: str, what: str) -> None:
        bucket = self.by_destination.setdefault(destination, {})
        bucket[what] = bucket.get(what, 0) + 1


def _describe(exc: BaseException) -> str:
    """``"ClassName: message"`` for a quarantine or dead-letter reason (bounded length)."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text if len(text) <= 500 else text[:497] + "..."


@dataclass
class DrainReport:
    """What a graceful stop of the dispatcher did with the deliveries in flight (ids)."""

    finished: list[int] = field(default_factory=list)
    """Finished within the grace period (delivered, retried or dead-lettered)."""
    released_unsent: list[int] = field(default_factory=list)
    """Cancelled before their request left the process (or reads, which change nothing):
    released as never sent."""
    cancelled: list[int] = field(default_factory=list)
    """Cancelled while their request may have been with the partner: outcome unknown."""


_Unit = Literal["handled", "quarantined", "lease lost"]
"""What became of one item handled with others in one transaction."""


class _Rollback(Exception):
    """Raised inside a transaction to discard it (dry-run)."""


class Engine:
    """Runs the inbox worker and the outbox dispatcher over one :class:`Store`."""

    def __init__(
        self,
        store: Store,
        settings: EngineSettings | None = None,
        owner: str | None = None,
        instance: str | None = None,
    ) -> None:
        self.store = store
        self.settings = settings or EngineSettings()
        self.instance = instance or socket.gethostname()
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.owner = owner or f"{self.instance}/{self.pid}/{_start_ms()}"
        self.handlers: dict[str, InboxHandler] = {}
        self.destinations: dict[str, Destination] = {}
        self.stats = EngineStats()
        self._inbox_wakeup = asyncio.Event()
        self._outbox_wakeup = asyncio.Event()

    async def take_back_leases(self, alive: Callable[[int], bool] = pid_alive) -> int:
        """At start: register this process (:attr:`owner`), then free what dead processes
        had leased, so the work resumes now rather than when the leases expire: this
        instance's former processes on this host (their pid is gone), and any process whose
        heartbeat is older than ``stale_after``. A live process's leases are never freed
        (two daemons on one host each keep theirs); others expire as always.

        An effect freed this way is of unknown outcome only if its interrupted attempt was
        recorded as sent (:meth:`record_attempt`, committed just before the partner call):
        its destination then settles it (idempotency key, or a lookup) before sending
        again. One the process never got to send is simply sent."""
        await self.store.register_instance(self.owner, self.instance, self.host, self.pid)
        released = await self.store.take_back_leases(
            self.owner, self.instance, self.host, alive, self.settings.stale_after
        )
        if released:
            log.warning("took back leases of a previous run", extra={"released": released})
        return released

    async def run_heartbeat(self) -> None:
        """Tell the store this process is alive every ``heartbeat_interval`` seconds, until
        cancelled (a supervised side task: a store error ends it, the supervisor restarts)."""
        while True:
            await self.store.heartbeat(self.owner)
            await asyncio.sleep(self.settings.heartbeat_interval)

    async def record_attempt(self, effect: Effect) -> None:
        """Commit that this attempt of ``effect`` may reach the partner, before the call
        (:meth:`Store.mark_sending`; concurrent marks share one commit). A lease that moved
        on meanwhile is a retriable failure known not to have sent anything."""
        try:
            await self.store.mark_sending(effect.id, self.owner)
        except LeaseLost as exc:
            raise RetriableDeliveryError(
                f"{effect.destination}: the lease moved on before the call; nothing was sent",
                destination=effect.destination,
            ) from exc

    def add_handler(self, kind: str, handler: InboxHandler, retailer: str | None = None) -> None:
        """Handle inbox items of ``kind`` (only ``retailer``'s, when given)."""
        source = inbox_source(retailer, kind)
        if source in self.handlers:
            raise BridgeError(f"inbox source {source!r} has a handler already")
        self.handlers[source] = handler

    def handler_for(self, source: str) -> InboxHandler | None:
        return self.handlers.get(source) or self.handlers.get(inbox_kind(source))

    def add_destination(self, destination: Destination) -> None:
        if destination.name in self.destinations:
            raise BridgeError(f"destination {destination.name!r} is registered twice")
        self.destinations[destination.name] = destination

    # inbox -------------------------------------------------------------------------------

    async def accept(
        self,
        retailer: str | None,
        kind: str,
        key: str | None,
        body: bytes,
        headers: dict[str, str],
        entity: str | None = None,
    ) -> int:
        """Durably store raw input (returns after commit) and wake the worker. ``entity``:
        what the input is about; items of one entity are handled one at a time, in order."""
        accepted = await self.accept_detailed(retailer, kind, key, body, headers, entity=entity)
        return accepted.inbox_id

    async def accept_detailed(
        self,
        retailer: str | None,
        kind: str,
        key: str | None,
        body: bytes,
        headers: dict[str, str],
        quarantine: str | None = None,
        entity: str | None = None,
    ) -> Accepted:
        """:meth:`accept`, also saying whether this was a duplicate delivery.

        ``quarantine``: the reason the edge refused the input; it is committed quarantined
        in the same commit that stores it (no worker ever sees it pending)."""
        accepted = await self.store.accept(
            inbox_source(retailer, kind), key, body, headers, retailer, quarantine, entity
        )
        if quarantine is not None and not accepted.duplicate:
            self.stats.quarantined += 1
        elif not accepted.duplicate:
            self._inbox_wakeup.set()
        return accepted

    async def process_available(self) -> int:
        """Lease and process one batch of inbox items; returns how many were leased.

        An item leased more than ``max_inbox_attempts`` times without an outcome (the
        process died or hung while handling it: kill -9, OOM, a segfault) is quarantined
        instead of handled again, so one such item cannot crash-loop the daemon."""
        items = await self.store.lease_inbox(
            self.owner, self.settings.inbox_batch, self.settings.inbox_lease
        )
        ready = []
        for item in items:
            if item.attempts > self.settings.max_inbox_attempts:
                await self._quarantine(
                    item,
                    self.owner,
                    f"leased {item.attempts} times without an outcome (the process died or"
                    " hung while handling it); not handled again",
                )
                continue
            ready.append(item)
        step = max(1, self.settings.inbox_commit_batch)
        for start in range(0, len(ready), step):
            await self._process_together(ready[start : start + step])
        return len(items)

    async def _process_together(self, items: list[InboxItem]) -> None:
        """Handle leased items in one transaction, each in its own savepoint: one commit
        for all, and each item's outcome the same as :meth:`process` gives it alone (a
        failing item is quarantined or left to its lease, the others commit). If the
        shared transaction itself fails (a store error, a failed commit), nothing of it
        was written and each item is handled again on its own by :meth:`process`."""
        if len(items) == 1:
            await self.process(items[0])
            return
        try:
            async with self.store.transaction() as tx:
                outcomes = [await self._handle_unit(tx, item) for item in items]
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.info(
                "inbox items handled one by one after their shared transaction failed",
                extra={"inbox_ids": [i.id for i in items], "error": _describe(exc)},
            )
            for item in items:
                await self.process(item)
            return
        for item, (outcome, became) in zip(items, outcomes, strict=True):
            self._count(item, outcome, became)

    async def _handle_unit(self, tx: Transaction, item: InboxItem) -> tuple[Outcome, _Unit]:
        """One item of :meth:`_process_together`, in a savepoint of ``tx``, and what became of
        it. A store error ends the shared transaction (its items are
        then handled one by one)."""
        handler = self.handler_for(item.source)
        try:
            async with tx.savepoint() as unit:
                if handler is None:
                    raise MappingError(f"no handler for inbox kind {inbox_kind(item.source)!r}")
                outcome = await handler(item, unit, HandlerContext())
                for effect in outcome.effects:
                    await unit.add_effect(replace(effect, source_inbox_id=item.id))
                await unit.finish_inbox(item.id, self.owner, outcome.status, outcome.note)
            return outcome, "handled"
        except LeaseLost:
            log.warning("inbox lease lost", extra={"inbox_id": item.id})
            return Outcome(InboxStatus.PENDING), "lease lost"
        except StoreError:
            raise
        except MappingError as exc:
            note = f"{exc.field}: {exc}" if exc.field else str(exc)
        except Exception as exc:  # a bug in one item's handling ends that item alone
            note = _describe(exc)
        try:
            async with tx.savepoint() as unit:
                await unit.finish_inbox(item.id, self.owner, InboxStatus.QUARANTINED, note)
        except LeaseLost:
            log.warning("inbox lease lost", extra={"inbox_id": item.id})
            return Outcome(InboxStatus.PENDING), "lease lost"
        return Outcome(InboxStatus.QUARANTINED, (), note), "quarantined"

    def _count(self, item: InboxItem, outcome: Outcome, became: _Unit) -> None:
        """Stats, log and wake-up for an item whose outcome committed (as :meth:`process`
        and :meth:`_quarantine` count them)."""
        if became == "lease lost":
            return
        if became == "quarantined":
            self.stats.quarantined += 1
            log.warning(
                "inbox item quarantined",
                extra={"inbox_id": item.id, "source": item.source, "reason": outcome.note},
            )
            return
        self.stats.processed += 1
        if outcome.status is InboxStatus.SUPERSEDED:
            self.stats.superseded += 1
        if outcome.effects:
            self._outbox_wakeup.set()

    async def process(self, item: InboxItem, ctx: HandlerContext = HandlerContext()) -> Outcome:
        """Handle one leased item; its state, effects and outcome commit together.

        Total: any exception from the handler (a ``MappingError`` or a bug) quarantines this
        item alone with the exception's class and message, and nothing else it did is
        written; a lease that moved on is dropped; a transient store error leaves the item
        to be handled again after its lease (counted by the attempt bound). Only
        cancellation and an unusable store propagate."""
        owner = None if ctx.replay else self.owner
        handler = self.handler_for(item.source)
        try:
            if handler is None:
                raise MappingError(f"no handler for inbox kind {inbox_kind(item.source)!r}")
            async with self.store.transaction() as tx:
                outcome = await handler(item, tx, ctx)
                for effect in outcome.effects:
                    await tx.add_effect(replace(effect, source_inbox_id=item.id))
                await tx.finish_inbox(item.id, owner, outcome.status, outcome.note)
        except LeaseLost:
            log.warning("inbox lease lost", extra={"inbox_id": item.id})
            return Outcome(InboxStatus.PENDING)
        except MappingError as exc:
            note = f"{exc.field}: {exc}" if exc.field else str(exc)
            return await self._quarantine(item, owner, note)
        except StoreError as exc:
            if not await self.store_usable():
                raise
            # transient (busy, a failed commit): nothing was written; the item is handled
            # again when its lease expires, and the attempt bound ends a repeating failure
            log.warning(
                "inbox item not finished, retried after its lease",
                extra={"inbox_id": item.id, "source": item.source, "error": _describe(exc)},
            )
            return Outcome(InboxStatus.PENDING)
        except Exception as exc:  # a bug in one item's handling ends that item alone
            return await self._quarantine(item, owner, _describe(exc))
        self.stats.processed += 1
        if outcome.status is InboxStatus.SUPERSEDED:
            self.stats.superseded += 1
        if outcome.effects:
            self._outbox_wakeup.set()
        return outcome

    async def _quarantine(self, item: InboxItem, owner: str | None, note: str) -> Outcome:
        """Record ``item`` as quarantined with ``note`` (logged once); a lost lease is fine."""
        try:
            async with self.store.transaction() as tx:
                await tx.finish_inbox(item.id, owner, InboxStatus.QUARANTINED, note)
        except LeaseLost:
            log.warning("inbox lease lost", extra={"inbox_id": item.id})
            return Outcome(InboxStatus.PENDING)
        self.stats.quarantined += 1
        log.warning(
            "inbox item quarantined",
            extra={"inbox_id": item.id, "source": item.source, "reason": note},
        )
        return Outcome(InboxStatus.QUARANTINED, (), note)

    async def store_usable(self) -> bool:
        """The store answers a trivial query (an unusable store is the one fatal error)."""
        try:
            return await self.store.ping()
        except Exception:
            return False

    async def run_inbox_worker(self) -> None:
        """Process inbox items until cancelled. One item's failure never ends the loop; a
        store error does only when the store no longer answers (the supervisor decides)."""
        while True:
            try:
                if await self.process_available():
                    continue
            except StoreError as exc:
                if not await self.store_usable():
                    raise
                log.warning("inbox lease failed, retrying", extra={"error": _describe(exc)})
            self._inbox_wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._inbox_wakeup.wait(), self.settings.idle_poll)

    # outbox ------------------------------------------------------------------------------

    async def deliver(self, effect: Effect) -> None:
        """One delivery attempt of a leased effect and its recorded outcome.

        Never raises but ``CancelledError``: any unexpected exception from the destination
        (or from ``on_delivered``) dead-letters this effect alone with the exception class
        and message; a lease that moved on is handled; a store failure leaves the effect to
        its lease expiry (it is delivered again with its idempotency key)."""
        try:
            await self._deliver(effect)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error(
                "delivery outcome not recorded",
                extra={
                    "effect_id": effect.id,
                    "destination": effect.destination,
                    "error": _describe(exc),
                },
            )

    async def _deliver(self, effect: Effect) -> None:
        destination = self.destinations.get(effect.destination)
        if destination is None:
            await self._dead(effect, f"destination {effect.destination!r} is not configured")
            return
        if destination.kind == "read":
            await self._read(destination, effect)
        else:
            await self._send(destination, effect)

    async def _send(self, destination: Delivery, effect: Effect) -> None:
        """One attempt of a delivery: recorded as maybe sent, sent, its outcome recorded
        with what it causes."""
        try:
            await self.record_attempt(effect)
            response = await destination.deliver(effect)
        except Exception as exc:
            await self._failed(destination, effect, exc)
            return

        async def record(tx: Transaction) -> list[NewEffect]:
            return await destination.on_delivered(tx, effect, response)

        await self._record_done(destination, effect, response.describe(500), record)

    async def _read(self, destination: Read, effect: Effect) -> None:
        """One attempt of a read: fetched (never recorded as sent: a read changes nothing),
        then applied in the transaction that records it."""
        try:
            fetched = await destination.fetch(effect)
        except Exception as exc:
            await self._failed(destination, effect, exc)
            return
        if isinstance(fetched, Skipped):
            await self._record_done(destination, effect, {"skipped": fetched.reason}, None)
            return
        result = {"found": isinstance(fetched, Found), "started_at": fetched.started_at}

        async def record(tx: Transaction) -> list[NewEffect]:
            return await destination.apply(tx, effect, fetched)

        await self._record_done(destination, effect, result, record)

    async def _failed(self, destination: Destination, effect: Effect, exc: Exception) -> None:
        """Retry a retriable failure (keeping whether the request may have reached the
        partner) until the deadline; dead-letter anything else."""
        if not isinstance(exc, RetriableDeliveryError):
            reason = str(exc) if isinstance(exc, DeliveryError | MappingError) else _describe(exc)
            await self._dead(effect, reason, exc)  # a bug in a destination ends this effect alone
            return
        now = await self.store.now()
        deadline = effect.deadline_at or (effect.created_at + destination.deadline_seconds)
        delay = destination.backoff.delay(effect.attempts, exc.retry_after)
        if now + delay > deadline:
            await self._dead(effect, f"deadline passed: {exc}", exc)
            return
        maybe_sent = destination.kind == "delivery" and exc.outcome_unknown
        with contextlib.suppress(LeaseLost):
            await self.store.schedule_retry(
                effect.id, self.owner, delay, str(exc), outcome_unknown=maybe_sent
            )
        self.stats.retried += 1
        self.stats.count(effect.destination, "retried")
        log.info(
            "delivery will be retried",
            extra={
                "effect_id": effect.id,
                "destination": effect.destination,
                "attempt": effect.attempts,
                "delay": round(delay, 3),
                "reason": str(exc),
                "outcome_unknown": maybe_sent,
            },
        )

    async def _record_done(
        self,
        destination: Destination,
        effect: Effect,
        result: dict[str, Any],
        record: Callable[[Transaction], Awaitable[list[NewEffect]]] | None,
    ) -> None:
        """Mark ``effect`` delivered with ``result``; ``record`` (what it causes) runs in the
        same transaction and its follow-up effects commit with it."""
        try:
            async with self.store.transaction() as tx:
                follow_ups = await record(tx) if record is not None else []
                for follow_up in follow_ups:
                    await tx.add_effect(follow_up)
                await tx.mark_delivered(effect.id, self.owner, result)
            if follow_ups:
                self._outbox_wakeup.set()
        except LeaseLost:
            await self._flag_if_canceled(effect)
        except StoreError:
            raise
        except Exception as exc:  # recording failed: the partner has it (or it was read)
            await self._dead(
                effect, f"delivered, but recording what it causes failed: {_describe(exc)}", exc
            )
            return
        self.stats.delivered += 1
        self.stats.count(effect.destination, "delivered")
        log.info(
            "effect delivered",
            extra={
                "effect_id": effect.id,
                "destination": effect.destination,
                "attempt": effect.attempts,
            },
        )
        await self._expedite_if_recovered(destination)

    async def _expedite_if_recovered(self, destination: Destination) -> None:
        """A destination that was failing answers again: its effects waiting for a retry
        become due now, instead of each at its own backoff time (up to the backoff cap).

        Ordering lanes (``order_key``) are leased head first, so a head waiting for its
        retry holds its whole lane: making the heads due is also what frees the lanes."""
        if not destination.take_recovery():
            return
        expedited = await self.store.expedite(destination.name)
        log.info(
            "destination answers again: waiting retries are due now",
            extra={"destination": destination.name, "expedited": expedited},
        )
        if expedited:
            self._outbox_wakeup.set()

    async def _flag_if_canceled(self, effect: Effect) -> None:
        """A delivery that completed after its effect was canceled (or re-leased) reached the
        partner anyway: an operator must look at it."""
        current = await self.store.get_effect(effect.id)
        log.warning(
            "delivered after the lease moved on",
            extra={"effect_id": effect.id, "state": current.state.value if current else None},
        )
        if current is not None and current.state is EffectState.CANCELED:
            async with self.store.transaction() as tx:
                await tx.add_flag(
                    effect.retailer,
                    "effect",
                    effect.idempotency_key,
                    "delivered although canceled meanwhile: check the partner",
                )

    async def _dead(self, effect: Effect, reason: str, exc: BaseException | None = None) -> None:
        """Park ``effect`` as a dead letter with ``reason``, the request it would send and
        the partner's answer (when there was one); never raises but for the store."""
        destination = self.destinations.get(effect.destination)
        request: Any
        try:
            if destination is None:
                raise BridgeError(f"destination {effect.destination!r} is not configured")
            request = (await destination.build_request(effect)).describe()
        except asyncio.CancelledError:
            raise
        except Exception as build_error:
            request = {"unavailable": _describe(build_error)}
        response = None
        if isinstance(exc, DeliveryError) and exc.status is not None:
            response = {"status": exc.status, "body": exc.body}
        with contextlib.suppress(LeaseLost):
            await self.store.dead_letter(effect.id, self.owner, reason, request, response)
        self.stats.dead += 1
        self.stats.count(effect.destination, "dead")
        log.warning(
            "effect dead-lettered",
            extra={"effect_id": effect.id, "destination": effect.destination, "reason": reason},
        )

    def wake_dispatcher(self) -> None:
        """New effects were committed outside an inbox handler (e.g. an order sync)."""
        self._outbox_wakeup.set()

    async def run_dispatcher(
        self,
        stop: asyncio.Event | None = None,
        drain_seconds: float = 10.0,
        sends: SendTracker | None = None,
    ) -> DrainReport:
        """Deliver effects until ``stop`` is set (then drain and return) or cancelled.

        Up to ``max_concurrent_deliveries`` run at once and a free slot is filled as soon
        as it frees up, so one slow partner call does not hold back the others; between
        deliveries it sleeps until the next effect is due.

        Draining (``stop`` set): nothing new is leased; a delivery whose request has not
        left the process (``sends`` tells, when given) is cancelled at once and its lease
        released as not sent, so the next start sends it without an unknown-outcome wait;
        the others get ``drain_seconds`` to finish, then are cancelled and keep their
        lease (the next start takes it back as of unknown outcome). Without ``sends``
        every cancelled delivery counts as maybe sent. Cancelling the task does the same
        as a drain of 0 seconds."""
        in_flight: dict[asyncio.Task[None], tuple[Effect, SendRecord | None]] = {}
        report = DrainReport()
        stopping = stop or asyncio.Event()
        try:
            while not stopping.is_set():
                for task in [t for t in in_flight if t.done()]:
                    del in_flight[task]
                    task.result()  # a bug in delivery stops the daemon loudly
                room = self.settings.max_concurrent_deliveries - len(in_flight)
                leased: list[Effect] = []
                if room > 0:
                    leased = await self.store.lease_effects(
                        self.owner,
                        min(room, self.settings.effect_batch),
                        self.settings.effect_lease,
                        frozenset(self.destinations),
                    )
                for effect in leased:
                    name = f"deliver-{effect.id}"
                    if sends is None:
                        in_flight[asyncio.create_task(self.deliver(effect), name=name)] = (
                            effect,
                            None,
                        )
                    else:
                        task, record = sends.start(self.deliver(effect), name=name)
                        in_flight[task] = (effect, record)
                if leased:
                    continue
                due = await self.store.next_effect_due()
                wait = self.settings.idle_poll
                if due is not None:
                    wait = min(wait, max(0.01, due - await self.store.now()))
                self._outbox_wakeup.clear()
                woken = asyncio.ensure_future(self._outbox_wakeup.wait())
                stopped = asyncio.ensure_future(stopping.wait())
                try:
                    await asyncio.wait(
                        {woken, stopped, *in_flight},
                        timeout=wait,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                finally:
                    woken.cancel()
                    stopped.cancel()
            await self._drain(in_flight, drain_seconds, report)
            return report
        finally:
            if in_flight:  # cancelled (also mid-drain): what is left goes without grace
                await asyncio.shield(self._drain(in_flight, 0.0, report))
            if report.finished or report.released_unsent or report.cancelled:
                log.info(
                    "deliveries drained",
                    extra={
                        "finished": report.finished,
                        "released_unsent": report.released_unsent,
                        "cancelled_outcome_unknown": report.cancelled,
                    },
                )

    async def _drain(
        self,
        in_flight: dict[asyncio.Task[None], tuple[Effect, SendRecord | None]],
        grace: float,
        report: DrainReport,
    ) -> DrainReport:
        """Cancel and release what has not left, wait ``grace`` for the rest, cancel it;
        each task leaves ``in_flight`` once counted in ``report``."""
        unsent = [
            t
            for t, (_, record) in in_flight.items()
            if not t.done() and record is not None and not record.may_have_left
        ]
        for task in unsent:  # decided and cancelled in one step: none can connect meanwhile
            task.cancel()
        await asyncio.gather(*unsent, return_exceptions=True)
        await self._count_drained(in_flight, unsent, report)
        if in_flight and grace > 0:
            await asyncio.wait(list(in_flight), timeout=grace)
        late = [t for t in in_flight if not t.done()]
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        await self._count_drained(in_flight, list(in_flight), report)
        return report

    async def _count_drained(
        self,
        in_flight: dict[asyncio.Task[None], tuple[Effect, SendRecord | None]],
        tasks: list[asyncio.Task[None]],
        report: DrainReport,
    ) -> None:
        for task in tasks:
            effect, record = in_flight.pop(task)
            if not task.cancelled():
                report.finished.append(effect.id)
                if task.exception() is not None:
                    log.error(
                        "delivery failed while draining",
                        extra={"effect_id": effect.id},
                        exc_info=task.exception(),
                    )
            elif (record is not None and not record.may_have_left) or self._reads(effect):
                # as if this attempt had not been made: the earlier attempt's outcome stays
                # (a read changes nothing at the partner, wherever its request was)
                if await self.store.release_unsent(
                    effect.id, self.owner, effect.last_error, effect.outcome_unknown
                ):
                    report.released_unsent.append(effect.id)
                else:
                    report.cancelled.append(effect.id)
            else:
                report.cancelled.append(effect.id)

    def _reads(self, effect: Effect) -> bool:
        destination = self.destinations.get(effect.destination)
        return destination is not None and destination.kind == "read"

    # operator actions --------------------------------------------------------------------

    async def rebuild_effect(self, effect: Effect, dry_run: bool) -> Effect:
        """The effect as the current mapping builds it from its stored raw input.

        Re-runs the source inbox item's handler in replay mode; with ``dry_run`` the
        transaction is rolled back so nothing changes."""
        if effect.source_inbox_id is None:
            return effect
        item = await self.store.get_inbox(effect.source_inbox_id)
        handler = self.handler_for(item.source) if item else None
        if item is None or handler is None:
            return effect
        rebuilt: NewEffect | None = None
        try:
            async with self.store.transaction() as tx:
                outcome = await handler(item, tx, HandlerContext(replay=True))
                rebuilt = next(
                    (e for e in outcome.effects if e.idempotency_key == effect.idempotency_key),
                    None,
                )
                if dry_run:
                    raise _Rollback
        except _Rollback:
            pass
        if rebuilt is None:
            return effect
        return replace(effect, payload=rebuilt.payload)

    async def replay(self, effect_id: int, dry_run: bool = False) -> OutboundRequest:
        """Re-map a dead letter from its stored input and queue it again (or only show the
        request it would send). Raises ``MappingError`` if the input still does not map."""
        effect = await self.store.get_effect(effect_id)
        if effect is None:
            raise BridgeError(f"no effect {effect_id}")
        if effect.state is not EffectState.DEAD:
            raise BridgeError(f"effect {effect_id} is {effect.state.value}, not a dead letter")
        if effect.destination not in self.destinations:
            raise BridgeError(f"destination {effect.destination!r} is not configured")
        rebuilt = await self.rebuild_effect(effect, dry_run)
        request = await self.destinations[effect.destination].build_request(rebuilt)
        if not dry_run:
            await self.store.requeue_effect(effect_id, rebuilt.payload)
            self._outbox_wakeup.set()
        return request

    async def replay_inbox(self, inbox_id: int) -> bool:
        """Put a quarantined item back in the queue, to be mapped with the current code; the
        operator flags raised about it (entity kind :data:`INBOX_FLAG`) are resolved, since
        what they asked for is done."""
        requeued = await self.store.requeue_inbox(inbox_id)
        if requeued:
            self._inbox_wakeup.set()
            for flag in await self.store.list_flags():
                if flag.entity_kind == INBOX_FLAG and flag.entity_key == str(inbox_id):
                    await self.store.resolve_flag(flag.id)
        return requeued
