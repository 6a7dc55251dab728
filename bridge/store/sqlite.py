"""SQLite backend: the standard library's ``sqlite3``, driven from the event loop.

Durability: WAL journal with ``synchronous=FULL``, so every COMMIT is fsynced before it
returns; an ``accept`` answers only after the COMMIT holding its row. Concurrent accepts
are *group-committed*: they queue, and one writer commits the whole queue in one
transaction (one fsync for many acknowledgements). All writes go through one connection
guarded by one lock: that single writer is how this backend meets the port's concurrency
guarantees (per-entity lock, entity-keyed inbox leases, one-statement claims): transactions
run one after the other, so whatever one reads stays true until it commits.

Where the time goes: a point statement on an open write transaction costs microseconds
(the pages are in the connection's cache and WAL readers never block the writer), far less
than a hop to a thread and back. So a write transaction's statements run inline on the
event loop, and only what may wait runs on the store's one thread: the COMMIT (its fsync),
a BEGIN that has to wait for another process's write, whole batches (group commits,
migrations) and reads that may scan (listings, counts). One write transaction is one
thread hop, not one per statement.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from bridge.errors import StoreError
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

GROUP_COMMIT_MAX = 512
MARK_BATCH_MAX = 256
BUSY_TIMEOUT_MS = 10_000
"""How long the store's thread waits for another process's write (e.g. a CLI command)."""

T = TypeVar("T")
ENTITY_BATCH_MAX = 400
"""Entities read per statement by ``get_entities`` (well under SQLite's variable limit)."""


def _migrations() -> list[tuple[int, str]]:
    folder = resources.files("bridge.store") / "migrations"
    found = []
    for entry in folder.iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:4].isdigit():
            found.append((int(name[:4]), entry.read_text(encoding="utf-8")))
    return sorted(found)


def _loads(text: str | None) -> JSON:
    return None if text is None else json.loads(text)


def _dumps(value: JSON) -> str | None:
    return None if value is None else canonical_json(value)


def _inbox(row: sqlite3.Row) -> InboxItem:
    return InboxItem(
        id=row["id"],
        source=row["source"],
        retailer=row["retailer"],
        dedup_key=row["dedup_key"],
        body=bytes(row["body"]),
        headers=json.loads(row["headers"]),
        received_at=row["received_at"],
        status=InboxStatus(row["status"]),
        note=row["note"],
        attempts=row["attempts"],
        duplicates=row["duplicates"],
        entity=row["entity"],
    )


def _effect(row: sqlite3.Row) -> Effect:
    return Effect(
        id=row["id"],
        idempotency_key=row["idempotency_key"],
        destination=row["destination"],
        kind=row["kind"],
        order_key=row["order_key"],
        payload=json.loads(row["payload"]),
        retailer=row["retailer"],
        source_inbox_id=row["source_inbox_id"],
        state=EffectState(row["state"]),
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"],
        created_at=row["created_at"],
        deadline_at=row["deadline_at"],
        last_error=row["last_error"],
        result=_loads(row["result"]),
        dead_reason=row["dead_reason"],
        dead_request=_loads(row["dead_request"]),
        dead_response=_loads(row["dead_response"]),
        outcome_unknown=bool(row["outcome_unknown"]),
    )


def sqlite_path_from_url(url: str) -> Path:
    """``sqlite:///relative.db`` or ``sqlite:////abs/path.db`` -> a path."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        raise StoreError(f"not a sqlite URL (expected {prefix}PATH)")
    return Path(url[len(prefix) :])


def _prefix_end(prefix: str) -> str | None:
    """The least string above every string starting with ``prefix`` (``None``: no bound)."""
    if not prefix or ord(prefix[-1]) >= 0x10FFFF:
        return None
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def _entity_batches(ids: Iterable[EntityId]) -> list[tuple[str, list[str]]]:
    """One ``SELECT`` (kinds joined by ``UNION ALL``, keys by ``IN``, on the primary key) and
    its parameters per ``ENTITY_BATCH_MAX`` ids."""
    unique = list(dict.fromkeys(ids))
    statements: list[tuple[str, list[str]]] = []
    for start in range(0, len(unique), ENTITY_BATCH_MAX):
        by_kind: dict[str, list[str]] = {}
        for kind, key in unique[start : start + ENTITY_BATCH_MAX]:
            by_kind.setdefault(kind, []).append(key)
        parts, params = [], []
        for kind, keys in by_kind.items():
            marks = ", ".join("?" * len(keys))
            parts.append(
                "SELECT kind, key, version, data, updated_at FROM entities"  # noqa: S608 - placeholders only
                f" WHERE kind = ? AND key IN ({marks})"
            )
            params += [kind, *keys]
        statements.append((" UNION ALL ".join(parts), params))
    return statements


def _entities(rows: Iterable[sqlite3.Row]) -> dict[EntityId, Entity]:
    return {
        (row[0], row[1]): Entity(
            row[0], row[1], tuple(json.loads(row[2])), json.loads(row[3]), row[4]
        )
        for row in rows
    }


class _PendingAccept:
    __slots__ = (
        "body",
        "digest",
        "entity",
        "future",
        "headers",
        "key",
        "quarantine",
        "retailer",
        "source",
    )

    def __init__(
        self,
        source: str,
        key: str,
        digest: str,
        body: bytes,
        headers: str,
        retailer: str | None,
        future: asyncio.Future[Accepted],
        quarantine: str | None = None,
        entity: str | None = None,
    ) -> None:
        self.entity = entity
        self.source = source
        self.key = key
        self.digest = digest
        self.body = body
        self.headers = headers
        self.retailer = retailer
        self.future = future
        self.quarantine = quarantine


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if not future.done():
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)


class _StoreThread:
    """The store's one thread: runs blocking work in order and hands each result back to
    the event loop (a queue and ``call_soon_threadsafe``: about half the CPU of an
    executor's ``run_in_executor`` per hop)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._jobs: queue.SimpleQueue[
            tuple[asyncio.Future[Any], Callable[..., Any], tuple[Any, ...]] | None
        ] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="sqlite-store", daemon=True)
        self._thread.start()

    def submit(self, work: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        future: asyncio.Future[T] = self._loop.create_future()
        self._jobs.put((future, work, args))
        return future

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, work, args = job
            result, error = None, None
            try:
                result = work(*args)
            except BaseException as exc:  # handed to the caller, as it was raised
                error = exc
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                self._loop.call_soon_threadsafe(_settle, future, result, error)

    def stop(self) -> None:
        """Run what is queued, then end the thread."""
        self._jobs.put(None)
        self._thread.join()


class SqliteStore(Store):
    """The embedded default store: one SQLite file."""

    def __init__(self, path: Path | str, clock: Clock = time.time) -> None:
        self.path = Path(path)
        self.clock = clock
        self._conn: sqlite3.Connection | None = None
        self._thread: _StoreThread | None = None
        self._lock = asyncio.Lock()
        self._queue: list[_PendingAccept] = []
        self._queue_ready = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._marks: list[tuple[int, str, asyncio.Future[bool]]] = []
        self._marks_ready = asyncio.Event()
        self._marker: asyncio.Task[None] | None = None
        self.commits = 0
        """Number of write transactions committed (group-commit evidence)."""

    @property
    def conn(self) -> sqlite3.Connection:
        """The one connection: use it only under the store's lock."""
        if self._conn is None:
            raise StoreError("store is not open")
        return self._conn

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._thread = _StoreThread(asyncio.get_running_loop())
        try:
            async with self._lock:
                self._conn = await self._off_loop(self._connect)
                await self._off_loop(self._migrate_sync)
        except BaseException:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            self._thread.stop()
            self._thread = None
            raise
        self._flusher = asyncio.create_task(self._flush_accepts(), name="sqlite-group-commit")
        self._marker = asyncio.create_task(self._flush_marks(), name="sqlite-sending-marks")

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, cached_statements=256
        )
        conn.row_factory = sqlite3.Row
        for pragma in (
            "PRAGMA journal_mode=WAL",
            "PRAGMA synchronous=FULL",
            f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS:d}",
            "PRAGMA foreign_keys=ON",
        ):
            conn.execute(pragma)
        return conn

    async def _off_loop(self, work: Callable[..., T], *args: Any) -> T:
        """Run ``work`` on the store's thread (the caller holds the lock). Cancelling the
        caller does not let go of the connection while the thread still uses it: the
        cancellation is raised once ``work`` has ended."""
        if self._thread is None:
            raise StoreError("store is not open")
        running = self._thread.submit(work, *args)
        try:
            return await asyncio.shield(running)
        except asyncio.CancelledError:
            while not running.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait([running])
            raise

    async def close(self) -> None:
        if self._marker is not None:
            self._marker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._marker
            self._marker = None
        for _, _, waiting in self._marks:
            if not waiting.done():
                waiting.set_exception(StoreError("store closed before commit"))
        self._marks.clear()
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        for pending in self._queue:
            if not pending.future.done():
                pending.future.set_exception(StoreError("store closed before commit"))
        self._queue.clear()
        if self._conn is not None:
            async with self._lock:
                await self._off_loop(self._conn.close)
            self._conn = None
        if self._thread is not None:
            self._thread.stop()
            self._thread = None

    async def ping(self) -> bool:
        try:
            return bool(await self._fetchall("SELECT 1"))
        except (StoreError, sqlite3.Error):
            return False

    async def schema_version(self) -> int:
        rows = await self._fetchall("PRAGMA user_version")
        return int(rows[0][0]) if rows else 0

    def _migrate_sync(self) -> None:
        conn = self.conn
        row = conn.execute("PRAGMA user_version").fetchone()
        current = int(row[0]) if row else 0
        for version, sql in _migrations():
            if version <= current:
                continue
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _split_sql(sql):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {version:d}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    async def _begin(self, conn: sqlite3.Connection) -> None:
        """``BEGIN IMMEDIATE`` inline when the database is free (it is, unless another
        process writes); otherwise wait for it on the store's thread."""
        conn.execute("PRAGMA busy_timeout=0")
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError:
            pass
        finally:
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS:d}")
        await self._off_loop(conn.execute, "BEGIN IMMEDIATE")

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[sqlite3.Connection]:
        """One write transaction: statements inline, the COMMIT (fsync) on the thread."""
        async with self._lock:
            conn = self.conn
            try:
                await self._begin(conn)
                yield conn
                await self._off_loop(conn.execute, "COMMIT")
            except BaseException:
                # also after a cancelled BEGIN or a failed COMMIT: never leave the shared
                # connection inside a transaction ("no transaction is active" is fine)
                with contextlib.suppress(sqlite3.OperationalError):
                    conn.execute("ROLLBACK")
                raise
            self.commits += 1

    async def _fetchall(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        """Reads wait for the writer (the one connection must not show a transaction's
        uncommitted rows to a concurrent reader) and run on the thread: they may scan."""

        def read() -> list[sqlite3.Row]:
            return self.conn.execute(sql, params).fetchall()

        async with self._lock:
            return await self._off_loop(read)

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
        if self._flusher is None:
            raise StoreError("store is not open")
        digest = body_hash(body)
        future: asyncio.Future[Accepted] = asyncio.get_running_loop().create_future()
        self._queue.append(
            _PendingAccept(
                source,
                key or f"sha256:{digest}",
                digest,
                body,
                canonical_json(dict(headers)),
                retailer,
                future,
                quarantine,
                entity,
            )
        )
        self._queue_ready.set()
        return await future

    async def _flush_accepts(self) -> None:
        while True:
            await self._queue_ready.wait()
            self._queue_ready.clear()
            while self._queue:
                batch = self._queue[:GROUP_COMMIT_MAX]
                del self._queue[:GROUP_COMMIT_MAX]
                try:
                    results = await self._commit_accepts(batch)
                except asyncio.CancelledError:  # close() during the commit
                    for pending in batch:
                        if not pending.future.done():
                            pending.future.set_exception(StoreError("store closed before commit"))
                    raise
                except Exception as exc:  # the callers must not acknowledge
                    for pending in batch:
                        if not pending.future.done():
                            pending.future.set_exception(
                                StoreError(f"inbox commit failed: {type(exc).__name__}")
                            )
                    continue
                for pending, result in zip(batch, results, strict=True):
                    if not pending.future.done():
                        pending.future.set_result(result)

    async def _commit_accepts(self, batch: list[_PendingAccept]) -> list[Accepted]:
        """One transaction for the batch, run whole on the store's thread: one hop between
        the event loop and the database however many rows the batch holds."""
        now = self.clock()
        async with self._lock:
            results = await self._off_loop(self._commit_accepts_sync, batch, now)
            self.commits += 1
        return results

    def _commit_accepts_sync(self, batch: list[_PendingAccept], now: float) -> list[Accepted]:
        conn = self.conn
        results: list[Accepted] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for p in batch:
                status = InboxStatus.PENDING if p.quarantine is None else InboxStatus.QUARANTINED
                cur = conn.execute(
                    "INSERT OR IGNORE INTO inbox (source, retailer, dedup_key, body_hash, body,"
                    " headers, received_at, status, note, processed_at, entity)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        p.source,
                        p.retailer,
                        p.key,
                        p.digest,
                        p.body,
                        p.headers,
                        now,
                        status.value,
                        p.quarantine,
                        None if p.quarantine is None else now,
                        p.entity,
                    ),
                )
                if cur.rowcount == 1 and cur.lastrowid is not None:
                    results.append(Accepted(cur.lastrowid, duplicate=False))
                    continue
                row = conn.execute(
                    "UPDATE inbox SET duplicates = duplicates + 1, last_duplicate_at = ?"
                    " WHERE source = ? AND (dedup_key = ? OR body_hash = ?) RETURNING id",
                    (now, p.source, p.key, p.digest),
                ).fetchone()
                if row is None:
                    raise StoreError("duplicate inbox row vanished")
                results.append(Accepted(int(row[0]), duplicate=True))
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        return results

    async def lease_inbox(
        self, owner: str, limit: int, lease_seconds: float, source_prefix: str = ""
    ) -> list[InboxItem]:
        now = self.clock()
        async with self._write() as conn:
            cur = conn.execute(
                "SELECT i.id, i.attempts FROM inbox i WHERE i.status = 'pending'"
                " AND (i.lease_until IS NULL OR i.lease_until < ?)"
                " AND substr(i.source, 1, length(?)) = ?"
                " AND (i.entity IS NULL OR NOT EXISTS (SELECT 1 FROM inbox o"
                " WHERE o.entity = i.entity AND o.status = 'pending' AND o.id <> i.id"
                " AND (o.id < i.id OR o.lease_until >= ?)))"
                " ORDER BY i.id LIMIT ?",
                (now, source_prefix, source_prefix, now, limit),
            )
            chosen = lease_batch([(int(r[0]), int(r[1])) for r in cur.fetchall()])
            cur.close()
            if not chosen:
                return []
            marks = ", ".join("?" * len(chosen))
            sql = (
                "UPDATE inbox SET lease_owner = ?, lease_until = ?, attempts = attempts + 1"  # noqa: S608
                f" WHERE id IN ({marks}) RETURNING *"
            )
            cur = conn.execute(sql, (owner, now + lease_seconds, *chosen))
            rows = list(cur.fetchall())
            cur.close()
        return sorted((_inbox(r) for r in rows), key=lambda item: item.id)

    async def get_inbox(self, inbox_id: int) -> InboxItem | None:
        rows = await self._fetchall("SELECT * FROM inbox WHERE id = ?", (inbox_id,))
        return _inbox(rows[0]) if rows else None

    async def list_inbox(self, status: InboxStatus, limit: int = 100) -> list[InboxItem]:
        rows = await self._fetchall(
            "SELECT * FROM inbox WHERE status = ? ORDER BY id LIMIT ?", (status.value, limit)
        )
        return [_inbox(r) for r in rows]

    async def inbox_stats(self) -> InboxStats:
        rows = await self._fetchall(
            "SELECT source, status, COUNT(*) AS n, SUM(duplicates) AS d FROM inbox"
            " GROUP BY source, status"
        )
        totals = {s.value: 0 for s in InboxStatus}
        by_source: dict[str, dict[str, int]] = {}
        duplicates = 0
        for row in rows:
            totals[row["status"]] += row["n"]
            duplicates += row["d"] or 0
            by_source.setdefault(row["source"], {})[row["status"]] = row["n"]
        return InboxStats(
            pending=totals["pending"],
            done=totals["done"],
            superseded=totals["superseded"],
            quarantined=totals["quarantined"],
            duplicates=duplicates,
            by_source=by_source,
        )

    async def requeue_inbox(self, inbox_id: int) -> bool:
        async with self._write() as conn:
            cur = conn.execute(
                "UPDATE inbox SET status = 'pending', lease_owner = NULL, lease_until = NULL,"
                " note = NULL, attempts = 0 WHERE id = ?",
                (inbox_id,),
            )
            return cur.rowcount == 1

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        async with self._write() as conn:
            yield _SqliteTransaction(conn, self.clock())

    # outbox ------------------------------------------------------------------------------

    async def lease_effects(
        self,
        owner: str,
        limit: int,
        lease_seconds: float,
        destinations: frozenset[str] | None = None,
    ) -> list[Effect]:
        now = self.clock()
        where_dest = ""
        params: list[Any] = [owner, now + lease_seconds, now, now]
        if destinations is not None:
            where_dest = f" AND o.destination IN ({','.join('?' * len(destinations))})"
            params.extend(sorted(destinations))
        params.append(limit)
        async with self._write() as conn:
            cur = conn.execute(
                "UPDATE outbox SET lease_owner = ?, lease_until = ?, attempts = attempts + 1"  # noqa: S608 - placeholders only
                " WHERE id IN (SELECT o.id FROM outbox o WHERE o.state = 'pending'"
                " AND o.next_attempt_at <= ? AND (o.lease_until IS NULL OR o.lease_until < ?)"
                + where_dest
                + " AND (o.order_key = '' OR NOT EXISTS (SELECT 1 FROM outbox p"
                " WHERE p.order_key = o.order_key AND p.state = 'pending' AND p.id < o.id))"
                " ORDER BY o.next_attempt_at, o.id LIMIT ?) RETURNING *",
                tuple(params),
            )
            rows = list(cur.fetchall())
            cur.close()
        return sorted((_effect(r) for r in rows), key=lambda e: e.id)

    async def _finish_effect(
        self, effect_id: int, owner: str | None, sql: str, params: tuple[Any, ...]
    ) -> None:
        owner_clause = " AND lease_owner = ?" if owner is not None else ""
        async with self._write() as conn:
            cur = conn.execute(
                sql + " WHERE id = ? AND state = 'pending'" + owner_clause,
                params + (effect_id,) + ((owner,) if owner is not None else ()),
            )
            if cur.rowcount != 1:
                raise LeaseLost(f"effect {effect_id} is no longer leased by this worker")

    async def mark_delivered(self, effect_id: int, owner: str, result: JSON = None) -> None:
        await self._finish_effect(
            effect_id,
            owner,
            "UPDATE outbox SET state = 'delivered', finished_at = ?, result = ?,"
            " lease_owner = NULL, lease_until = NULL",
            (self.clock(), _dumps(result)),
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
            "UPDATE outbox SET next_attempt_at = ?, last_error = ?, outcome_unknown = ?,"
            " lease_owner = NULL, lease_until = NULL",
            (self.clock() + delay, error, int(outcome_unknown)),
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
            "UPDATE outbox SET state = 'dead', finished_at = ?, dead_reason = ?, last_error = ?,"
            " dead_request = ?, dead_response = ?, lease_owner = NULL, lease_until = NULL",
            (self.clock(), reason, reason, _dumps(request), _dumps(response)),
        )

    async def get_effect(self, effect_id: int) -> Effect | None:
        rows = await self._fetchall("SELECT * FROM outbox WHERE id = ?", (effect_id,))
        return _effect(rows[0]) if rows else None

    async def list_effects(
        self,
        state: EffectState | None = None,
        destination: str | None = None,
        order_key: str | None = None,
        limit: int = 1000,
    ) -> list[Effect]:
        clauses, params = [], []
        filters = (("state", state), ("destination", destination), ("order_key", order_key))
        for column, value in filters:
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(str(value))
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        rows = await self._fetchall(
            f"SELECT * FROM outbox{where} ORDER BY id LIMIT ?",  # noqa: S608 - fixed columns
            (*params, limit),
        )
        return [_effect(r) for r in rows]

    async def requeue_effect(self, effect_id: int, payload: JSON = None) -> bool:
        now = self.clock()
        async with self._write() as conn:
            cur = conn.execute(
                "UPDATE outbox SET state = 'pending', attempts = 0, outcome_unknown = 0,"
                " next_attempt_at = ?,"
                " payload = COALESCE(?, payload), dead_reason = NULL, dead_request = NULL,"
                " dead_response = NULL, finished_at = NULL, lease_owner = NULL,"
                " lease_until = NULL, deadline_at = CASE WHEN deadline_at IS NULL THEN NULL"
                " ELSE ? + (deadline_at - created_at) END WHERE id = ? AND state = 'dead'",
                (now, _dumps(payload), now, effect_id),
            )
            return cur.rowcount == 1

    async def next_effect_due(self) -> float | None:
        rows = await self._fetchall(
            "SELECT MIN(MAX(o.next_attempt_at, COALESCE(o.lease_until, 0))) FROM outbox o"
            " WHERE o.state = 'pending' AND (o.order_key = '' OR NOT EXISTS (SELECT 1 FROM outbox p"
            " WHERE p.order_key = o.order_key AND p.state = 'pending' AND p.id < o.id))"
        )
        value = rows[0][0] if rows else None
        return float(value) if value is not None else None

    # process registry --------------------------------------------------------------------

    async def register_instance(self, owner: str, instance: str, host: str, pid: int) -> None:
        now = self.clock()
        async with self._write() as conn:
            conn.execute(
                "INSERT INTO instances (owner, instance, host, pid, started_at, heartbeat_at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (owner) DO UPDATE SET"
                " heartbeat_at = excluded.heartbeat_at",
                (owner, instance, host, pid, now, now),
            )

    async def heartbeat(self, owner: str) -> None:
        async with self._write() as conn:
            conn.execute(
                "UPDATE instances SET heartbeat_at = ? WHERE owner = ?", (self.clock(), owner)
            )

    async def list_instances(self) -> list[Instance]:
        rows = await self._fetchall("SELECT * FROM instances ORDER BY owner")
        return [
            Instance(
                r["owner"], r["instance"], r["host"], r["pid"], r["started_at"], r["heartbeat_at"]
            )
            for r in rows
        ]

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
        async with self._write() as conn:
            cur = conn.execute("SELECT owner, instance, host, pid, heartbeat_at FROM instances")
            rows = [_Registered(*r) for r in cur.fetchall()]
            cur.close()
            dead = dead_owners(rows, owner, instance, host, alive, now - stale_after)
            for dead_owner in dead:
                for table, state in (("inbox", "status"), ("outbox", "state")):
                    cur = conn.execute(
                        f"UPDATE {table} SET lease_owner = NULL, lease_until = NULL"  # noqa: S608
                        f" WHERE {state} = 'pending' AND lease_owner = ?",
                        (dead_owner,),
                    )
                    released += cur.rowcount
                conn.execute("DELETE FROM instances WHERE owner = ?", (dead_owner,))
        return released

    async def mark_sending(self, effect_id: int, owner: str) -> None:
        """Queued, and committed with every other mark waiting at that moment in one
        transaction (one fsync for a whole dispatched batch, like ``accept``)."""
        if self._marker is None:
            raise StoreError("store is not open")
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._marks.append((effect_id, owner, future))
        self._marks_ready.set()
        if not await future:
            raise LeaseLost(f"effect {effect_id} is no longer leased by this worker")

    async def _flush_marks(self) -> None:
        while True:
            await self._marks_ready.wait()
            self._marks_ready.clear()
            while self._marks:
                batch = self._marks[:MARK_BATCH_MAX]
                del self._marks[:MARK_BATCH_MAX]
                try:
                    held = await self._commit_marks(batch)
                except asyncio.CancelledError:  # close() during the commit
                    for _, _, waiting in batch:
                        if not waiting.done():
                            waiting.set_exception(StoreError("store closed before commit"))
                    raise
                except Exception as exc:  # the callers must not send
                    for _, _, waiting in batch:
                        if not waiting.done():
                            waiting.set_exception(
                                StoreError(f"sending mark failed: {type(exc).__name__}")
                            )
                    continue
                for (_, _, waiting), ok in zip(batch, held, strict=True):
                    if not waiting.done():
                        waiting.set_result(ok)

    async def _commit_marks(self, batch: list[tuple[int, str, asyncio.Future[bool]]]) -> list[bool]:
        held = []
        async with self._write() as conn:
            for effect_id, owner, _ in batch:
                cur = conn.execute(
                    "UPDATE outbox SET last_error = ?, outcome_unknown = 1"
                    " WHERE id = ? AND state = 'pending' AND lease_owner = ?",
                    (SENT_WITHOUT_ANSWER, effect_id, owner),
                )
                held.append(cur.rowcount == 1)
        return held

    # cursors -----------------------------------------------------------------------------

    async def get_cursor(self, name: str) -> str | None:
        rows = await self._fetchall("SELECT value FROM cursors WHERE name = ?", (name,))
        return str(rows[0][0]) if rows else None

    async def set_cursor(self, name: str, value: str) -> None:
        async with self._write() as conn:
            conn.execute(
                "INSERT INTO cursors (name, value, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET value = excluded.value,"
                " updated_at = excluded.updated_at",
                (name, value, self.clock()),
            )

    # idempotency -------------------------------------------------------------------------

    async def claim(self, scope: str, key: str, request_hash: str, lease_seconds: float) -> Claim:
        """Insert, or take over an expired in-progress claim of the same request, in one
        statement; only when neither happened is the claim read to say why."""
        now = self.clock()
        async with self._write() as conn:
            cur = conn.execute(
                "INSERT INTO idempotency (scope, key, request_hash, state, lease_until,"
                " created_at, updated_at) VALUES (?, ?, ?, 'in_progress', ?, ?, ?)"
                " ON CONFLICT (scope, key) DO UPDATE SET lease_until = excluded.lease_until,"
                " updated_at = excluded.updated_at WHERE idempotency.state = 'in_progress'"
                " AND idempotency.request_hash = excluded.request_hash"
                " AND idempotency.lease_until < excluded.created_at RETURNING 1",
                (scope, key, request_hash, now + lease_seconds, now, now),
            )
            taken = cur.fetchone()
            cur.close()
            if taken is not None:
                return Claim(ClaimState.NEW)
            cur = conn.execute(
                "SELECT request_hash, state, response FROM idempotency WHERE scope = ? AND key = ?",
                (scope, key),
            )
            row = cur.fetchone()
            cur.close()
        if row is None:
            raise StoreError("claim row vanished")
        if row["request_hash"] != request_hash:
            return Claim(ClaimState.CONFLICT, _loads(row["response"]))
        if row["state"] == "done":
            return Claim(ClaimState.DONE, _loads(row["response"]))
        return Claim(ClaimState.IN_PROGRESS)

    async def complete_claim(self, scope: str, key: str, response: JSON) -> None:
        async with self._write() as conn:
            conn.execute(
                "UPDATE idempotency SET state = 'done', response = ?, lease_until = NULL,"
                " updated_at = ? WHERE scope = ? AND key = ?",
                (_dumps(response), self.clock(), scope, key),
            )

    async def release_claim(self, scope: str, key: str) -> None:
        async with self._write() as conn:
            conn.execute(
                "DELETE FROM idempotency WHERE scope = ? AND key = ? AND state = 'in_progress'",
                (scope, key),
            )

    # tokens ------------------------------------------------------------------------------

    async def get_token(self, name: str) -> tuple[bytes, int] | None:
        rows = await self._fetchall("SELECT secret, version FROM tokens WHERE name = ?", (name,))
        return (bytes(rows[0][0]), int(rows[0][1])) if rows else None

    async def put_token(self, name: str, secret: bytes, expected_version: int | None) -> bool:
        now = self.clock()
        async with self._write() as conn:
            if expected_version is None:
                cur = conn.execute(
                    "INSERT OR IGNORE INTO tokens (name, secret, version, updated_at)"
                    " VALUES (?, ?, 1, ?)",
                    (name, secret, now),
                )
            else:
                cur = conn.execute(
                    "UPDATE tokens SET secret = ?, version = version + 1, updated_at = ?"
                    " WHERE name = ? AND version = ?",
                    (secret, now, name, expected_version),
                )
            return cur.rowcount == 1

    # flags -------------------------------------------------------------------------------

    async def list_flags(self, include_resolved: bool = False) -> list[Flag]:
        where = "" if include_resolved else " WHERE resolved_at IS NULL"
        rows = await self._fetchall(f"SELECT * FROM flags{where} ORDER BY id")  # noqa: S608
        return [
            Flag(
                r["id"],
                r["retailer"],
                r["entity_kind"],
                r["entity_key"],
                r["reason"],
                r["created_at"],
                r["resolved_at"],
            )
            for r in rows
        ]

    async def resolve_flag(self, flag_id: int) -> bool:
        async with self._write() as conn:
            cur = conn.execute(
                "UPDATE flags SET resolved_at = ? WHERE id = ? AND resolved_at IS NULL",
                (self.clock(), flag_id),
            )
            return cur.rowcount == 1

    # per-entity rows ---------------------------------------------------------------------

    async def get_entities(self, ids: Iterable[EntityId]) -> dict[EntityId, Entity]:
        """Committed rows, no write transaction: under the writer lock (the one connection
        must not show a transaction's uncommitted rows), one statement per batch."""
        found: dict[EntityId, Entity] = {}
        statements = _entity_batches(ids)
        if not statements:
            return found

        def read() -> None:
            for sql, params in statements:
                found.update(_entities(self.conn.execute(sql, params).fetchall()))

        async with self._lock:
            await self._off_loop(read)  # one thread round trip for every statement
        return found

    async def entity_keys(
        self, kind: str, key_prefix: str = "", after: str = "", limit: int = 1000
    ) -> list[str]:
        # the prefix's key range bounds the index search: other retailers' keys are not read
        # (``after + NUL`` is the least key above ``after``)
        lower = max(key_prefix, f"{after}\x00" if after else "")
        upper = _prefix_end(key_prefix)
        head = "SELECT key FROM entities WHERE kind = ? AND key >= ?"
        tail = " AND substr(key, 1, length(?)) = ? ORDER BY key LIMIT ?"
        if upper is None:
            rows = await self._fetchall(head + tail, (kind, lower, key_prefix, key_prefix, limit))
        else:
            rows = await self._fetchall(
                head + " AND key < ?" + tail, (kind, lower, upper, key_prefix, key_prefix, limit)
            )
        return [str(r[0]) for r in rows]

    # back-pressure and graceful stop -----------------------------------------------------

    async def pending_inbox_count(self) -> int:
        rows = await self._fetchall("SELECT COUNT(*) FROM inbox WHERE status = 'pending'")
        return int(rows[0][0])

    async def release_unsent(
        self, effect_id: int, owner: str, last_error: str | None, outcome_unknown: bool
    ) -> bool:
        async with self._write() as conn:
            cur = conn.execute(
                "UPDATE outbox SET lease_owner = NULL, lease_until = NULL,"
                " attempts = MAX(attempts - 1, 0), last_error = ?, outcome_unknown = ?"
                " WHERE id = ? AND state = 'pending' AND lease_owner = ?",
                (last_error, int(outcome_unknown), effect_id, owner),
            )
            return cur.rowcount == 1

    # recovery and rate limits ------------------------------------------------------------

    async def expedite(self, destination: str) -> int:
        now = self.clock()
        async with self._write() as conn:
            cur = conn.execute(
                "UPDATE outbox SET next_attempt_at = ? WHERE destination = ?"
                " AND state = 'pending' AND attempts > 0 AND next_attempt_at > ?"
                " AND lease_owner IS NULL",
                (now, destination, now),
            )
            return cur.rowcount

    async def record_admission(
        self, limiter: str, admitted_at: float, answered: Mapping[int, float], forget_before: float
    ) -> int:
        async with self._write() as conn:
            if answered:
                conn.executemany(
                    "UPDATE admissions SET answered_at = ? WHERE id = ?",
                    [(at, row) for row, at in answered.items()],
                )
            conn.execute(
                "DELETE FROM admissions WHERE limiter = ? AND admitted_at < ?",
                (limiter, forget_before),
            )
            cur = conn.execute(
                "INSERT INTO admissions (limiter, admitted_at) VALUES (?, ?)",
                (limiter, admitted_at),
            )
            if cur.lastrowid is None:
                raise StoreError("admission row has no id")
            return cur.lastrowid

    async def recent_admissions(
        self, limiter: str, since: float
    ) -> list[tuple[float, float | None]]:
        rows = await self._fetchall(
            "SELECT admitted_at, answered_at FROM admissions WHERE limiter = ?"
            " AND admitted_at > ? ORDER BY admitted_at",
            (limiter, since),
        )
        return [(float(r[0]), None if r[1] is None else float(r[1])) for r in rows]


class _SqliteTransaction(Transaction):
    """Statements run inline: the store's lock is held and the transaction is open, so
    each is a point read or write on cached pages (see the module docstring)."""

    def __init__(self, conn: sqlite3.Connection, now: float) -> None:
        self._conn = conn
        self._now = now
        self._depth = 0

    @contextlib.asynccontextmanager
    async def savepoint(self) -> AsyncIterator[Transaction]:
        self._depth += 1
        name = f"unit{self._depth:d}"
        self._conn.execute(f"SAVEPOINT {name}")
        try:
            yield self
        except BaseException:
            self._conn.execute(f"ROLLBACK TO {name}")
            self._conn.execute(f"RELEASE {name}")
            raise
        else:
            self._conn.execute(f"RELEASE {name}")
        finally:
            self._depth -= 1

    async def lock_entity(self, kind: str, key: str) -> None:
        """Held already: this transaction holds the store's only write lock until it ends."""

    async def delete_entity(self, kind: str, key: str) -> bool:
        cur = self._conn.execute("DELETE FROM entities WHERE kind = ? AND key = ?", (kind, key))
        return cur.rowcount == 1

    async def get_entity(self, kind: str, key: str) -> Entity | None:
        row = self._conn.execute(
            "SELECT * FROM entities WHERE kind = ? AND key = ?", (kind, key)
        ).fetchone()
        if row is None:
            return None
        version = tuple(json.loads(row["version"]))
        return Entity(kind, key, version, json.loads(row["data"]), row["updated_at"])

    async def get_entities(self, ids: Iterable[EntityId]) -> dict[EntityId, Entity]:
        found: dict[EntityId, Entity] = {}
        for sql, params in _entity_batches(ids):  # inline, as the transaction's statements
            found.update(_entities(self._conn.execute(sql, params).fetchall()))
        return found

    async def put_entity(self, kind: str, key: str, version: tuple[Any, ...], data: JSON) -> None:
        self._conn.execute(
            "INSERT INTO entities (kind, key, version, data, updated_at) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (kind, key) DO UPDATE SET version = excluded.version,"
            " data = excluded.data, updated_at = excluded.updated_at",
            (kind, key, canonical_json(list(version)), canonical_json(data), self._now),
        )

    async def add_effect(self, effect: NewEffect) -> bool:
        cur = self._conn.execute(
            "INSERT OR IGNORE INTO outbox (idempotency_key, destination, kind, order_key, payload,"
            " source_inbox_id, retailer, next_attempt_at, created_at, deadline_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                effect.idempotency_key,
                effect.destination,
                effect.kind,
                effect.order_key,
                canonical_json(effect.payload),
                effect.source_inbox_id,
                effect.retailer,
                effect.not_before if effect.not_before is not None else self._now,
                self._now,
                effect.deadline_at,
            ),
        )
        return queued(effect, cur.rowcount == 1)

    async def cancel_effects(self, order_key: str, kinds: frozenset[str] | None = None) -> int:
        sql = (
            "UPDATE outbox SET state = 'canceled', finished_at = ?"
            " WHERE order_key = ? AND state = 'pending'"
        )
        params: list[Any] = [self._now, order_key]
        if kinds is not None:
            sql += f" AND kind IN ({','.join('?' * len(kinds))})"
            params.extend(sorted(kinds))
        cur = self._conn.execute(sql, tuple(params))
        return cur.rowcount

    async def effect_states(self, order_key: str) -> dict[str, EffectState]:
        rows = self._conn.execute(
            "SELECT idempotency_key, state FROM outbox WHERE order_key = ?", (order_key,)
        ).fetchall()
        return {row[0]: EffectState(row[1]) for row in rows}

    async def mark_delivered(self, effect_id: int, owner: str, result: JSON = None) -> None:
        cur = self._conn.execute(
            "UPDATE outbox SET state = 'delivered', finished_at = ?, result = ?,"
            " lease_owner = NULL, lease_until = NULL"
            " WHERE id = ? AND state = 'pending' AND lease_owner = ?",
            (self._now, _dumps(result), effect_id, owner),
        )
        if cur.rowcount != 1:
            raise LeaseLost(f"effect {effect_id} is no longer leased by this worker")

    async def finish_inbox(
        self, inbox_id: int, owner: str | None, status: InboxStatus, note: str | None = None
    ) -> None:
        sql = (
            "UPDATE inbox SET status = ?, note = ?, processed_at = ?, lease_owner = NULL,"
            " lease_until = NULL WHERE id = ?"
        )
        params: tuple[Any, ...] = (status.value, note, self._now, inbox_id)
        if owner is not None:
            sql += " AND lease_owner = ? AND status = 'pending'"
            params += (owner,)
        cur = self._conn.execute(sql, params)
        if cur.rowcount != 1:
            raise LeaseLost(f"inbox item {inbox_id} is no longer leased by this worker")

    async def add_flag(
        self, retailer: str | None, entity_kind: str, entity_key: str, reason: str
    ) -> None:
        self._conn.execute(
            "INSERT OR IGNORE INTO flags (retailer, entity_kind, entity_key, reason, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (retailer, entity_kind, entity_key, reason, self._now),
        )


def _split_sql(script: str) -> list[str]:
    lines = [line.split("--", 1)[0] for line in script.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
