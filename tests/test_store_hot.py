"""The store's hot path: savepoints, and several inbox items handled in one commit.

Real SQLite files (and the memory store for the port's conformance), the engine's own
worker loop, items accepted through the real webhook route over 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from bridge.engine import Engine, EngineSettings, HandlerContext, Outcome
from bridge.errors import StoreError
from bridge.inbound import receive
from bridge.store import InboxItem, InboxStatus, Store, Transaction
from bridge.store.base import canonical_json
from bridge.store.memory import MemoryStore
from bridge.store.sqlite import SqliteStore
from tests.engine_support import KIND, MilestoneHandler, event, parse_event


@pytest_asyncio.fixture(params=["sqlite", "memory"])
async def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    store: Store = SqliteStore(tmp_path / "hot.db") if request.param == "sqlite" else MemoryStore()
    await store.open()
    yield store
    await store.close()


@pytest_asyncio.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / "hot.db")
    await store.open()
    yield store
    await store.close()


class Boom(Exception):
    pass


async def _write_then_fail(tx: Transaction, *keys: str) -> None:
    """In a savepoint of ``tx``: write ``keys`` (version 9), delete ``second``, then fail."""
    async with tx.savepoint() as unit:
        for key in keys:
            await unit.put_entity("thing", key, (9,), {"n": 9})
        await unit.delete_entity("thing", "second")
        raise Boom


async def test_savepoint_undoes_only_its_own_block(any_store: Store) -> None:
    async with any_store.transaction() as tx:
        await tx.put_entity("thing", "kept", (1,), {"n": 1})
        with pytest.raises(Boom):
            await _write_then_fail(tx, "undone", "kept")
        async with tx.savepoint() as unit:
            await unit.put_entity("thing", "second", (1,), {"n": 4})
            with pytest.raises(Boom):
                await _write_then_fail(unit, "inner")  # nested in the savepoint
        assert await tx.get_entity("thing", "undone") is None
    async with any_store.transaction() as tx:
        kept = await tx.get_entity("thing", "kept")
        second = await tx.get_entity("thing", "second")
        assert await tx.get_entity("thing", "undone") is None
        assert await tx.get_entity("thing", "inner") is None
    assert kept is not None
    assert (kept.version, kept.data) == ((1,), {"n": 1})
    assert second is not None
    assert second.data == {"n": 4}


class PickyHandler(MilestoneHandler):
    """A bug for entity ``bug`` (after it wrote state); a transient store failure for
    entity ``flaky`` the first ``flaky_failures`` times."""

    def __init__(self, flaky_failures: int = 0) -> None:
        super().__init__()
        self.flaky_failures = flaky_failures

    async def __call__(self, item: InboxItem, tx: Transaction, ctx: HandlerContext) -> Outcome:
        outcome = await super().__call__(item, tx, ctx)
        entity = parse_event(item.body)["entity"]
        if entity == "bug":
            raise Boom("handler bug")
        if entity == "flaky" and self.flaky_failures > 0:
            self.flaky_failures -= 1
            raise StoreError("database is busy")
        return outcome


async def _post_all(engine: Engine, bodies: list[bytes]) -> None:
    """Accept ``bodies`` through the real webhook route, in order, before any worker runs."""

    async def handle(request: web.Request) -> web.Response:
        return await receive(
            request,
            engine,
            retailer="acme",
            kind=KIND,
            validate=parse_event,
            entity_of=lambda parsed: str(parsed["entity"]),
        )

    app = web.Application()
    app.router.add_post("/events", handle)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = next(a[1] for a in runner.addresses if isinstance(a, tuple))
    try:
        async with aiohttp.ClientSession() as session:
            for body in bodies:
                async with session.post(f"http://127.0.0.1:{port}/events", data=body) as resp:
                    assert resp.status == 200, await resp.text()
    finally:
        await runner.cleanup()


async def _run_worker_until_settled(engine: Engine, settled: int, until: float = 10.0) -> None:
    """Run the daemon's inbox worker until ``settled`` items are no longer pending."""
    worker = asyncio.create_task(engine.run_inbox_worker())
    try:
        deadline = time.monotonic() + until
        while time.monotonic() < deadline:
            stats = await engine.store.inbox_stats()
            if stats.done + stats.superseded + stats.quarantined >= settled:
                return
            if worker.done():
                worker.result()
            await asyncio.sleep(0.01)
        raise AssertionError(f"worker did not settle {settled} items in time: {stats}")
    finally:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)


async def test_items_share_a_commit_and_a_failing_item_is_quarantined_alone(
    sqlite_store: SqliteStore,
) -> None:
    engine = Engine(sqlite_store, EngineSettings(idle_poll=0.02, inbox_commit_batch=16))
    engine.add_handler(KIND, PickyHandler())
    bodies = [event(f"e{i}", 1, 2) for i in range(10)]
    bodies[4] = event("bug", 1, 2)
    await _post_all(engine, bodies)
    before = sqlite_store.commits
    await _run_worker_until_settled(engine, len(bodies))

    assert sqlite_store.commits - before <= 3  # one lease, one shared commit (+ idle lease)
    (bad,) = await sqlite_store.list_inbox(InboxStatus.QUARANTINED)
    assert bad.body == event("bug", 1, 2)
    assert bad.note == "Boom: handler bug"
    done = await sqlite_store.list_inbox(InboxStatus.DONE)
    assert len(done) == 9
    effects = await sqlite_store.list_effects()
    assert sorted(e.idempotency_key for e in effects) == sorted(
        f"e{i}:m{m}" for i in range(10) if i != 4 for m in (1, 2)
    )
    assert {e.source_inbox_id for e in effects} == {item.id for item in done}
    async with sqlite_store.transaction() as tx:  # the bug's state was undone with it
        assert await tx.get_entity("thing", "bug") is None
        assert await tx.get_entity("thing", "e5") is not None
    assert (engine.stats.processed, engine.stats.quarantined) == (9, 1)


async def test_a_store_failure_in_a_shared_commit_falls_back_to_one_commit_per_item(
    sqlite_store: SqliteStore,
) -> None:
    engine = Engine(
        sqlite_store, EngineSettings(idle_poll=0.02, inbox_commit_batch=16, inbox_lease=0.3)
    )
    engine.add_handler(KIND, PickyHandler(flaky_failures=2))
    bodies = [event(f"e{i}", 1) for i in range(6)]
    bodies[2] = event("flaky", 1)
    await _post_all(engine, bodies)
    await _run_worker_until_settled(engine, len(bodies))

    assert len(await sqlite_store.list_inbox(InboxStatus.DONE)) == 6
    flaky = next(i for i in await sqlite_store.list_inbox(InboxStatus.DONE) if b"flaky" in i.body)
    assert flaky.attempts == 2  # failed in the shared commit and alone, then after its lease
    effects = await sqlite_store.list_effects()
    assert sorted(e.idempotency_key for e in effects) == sorted(
        ["flaky:m1"] + [f"e{i}:m1" for i in range(6) if i != 2]
    )
    assert engine.stats.quarantined == 0


async def test_items_of_one_entity_are_handled_in_order_across_shared_commits(
    sqlite_store: SqliteStore,
) -> None:
    engine = Engine(sqlite_store, EngineSettings(idle_poll=0.02, inbox_commit_batch=4))
    engine.add_handler(KIND, MilestoneHandler())
    bodies = [event(f"e{i % 3}", 1 + i // 3) for i in range(15)]  # e0..e2, versions 1..5
    await _post_all(engine, bodies)
    await _run_worker_until_settled(engine, len(bodies))

    assert engine.stats.superseded == 0  # no version handled after a newer one
    assert len(await sqlite_store.list_inbox(InboxStatus.DONE)) == 15
    async with sqlite_store.transaction() as tx:
        for n in range(3):
            state = await tx.get_entity("thing", f"e{n}")
            assert state is not None
            assert state.version == (5,)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text() | st.floats(allow_nan=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(value=json_values)
def test_canonical_json_is_the_text_it_always_was(value: object) -> None:
    """Effect payloads, entity state and header hashes are stored as this text: the
    encoder made once must write exactly what ``json.dumps`` with the options wrote."""
    expected = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    assert canonical_json(value) == expected
    assert canonical_json({"at": Decimal("1.10"), "é": "ü"}) == '{"at":"1.10","\\u00e9":"\\u00fc"}'


async def test_cancelling_transactions_anywhere_leaves_the_store_consistent_and_usable(
    sqlite_store: SqliteStore,
) -> None:
    """A transaction cancelled at any point (inline statements, the COMMIT on the store's
    thread) is either committed whole or not at all, and the next one runs normally."""

    async def write(n: int) -> None:
        async with sqlite_store.transaction() as tx:
            await tx.put_entity("pair", f"a{n}", (n,), {"n": n})
            await tx.put_entity("pair", f"b{n}", (n,), {"n": n})

    for n in range(60):
        task = asyncio.create_task(write(n))
        for _ in range(n % 6):  # cancel after a different number of loop turns each time
            await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    async with sqlite_store.transaction() as tx:
        for n in range(60):
            a, b = await tx.get_entity("pair", f"a{n}"), await tx.get_entity("pair", f"b{n}")
            assert (a is None) == (b is None), n
        await tx.put_entity("pair", "after", (1,), {})
    assert await sqlite_store.ping()
    assert await sqlite_store.entity_keys("pair", "after") == ["after"]


async def test_a_transaction_waits_off_the_loop_while_another_process_writes(
    sqlite_store: SqliteStore,
) -> None:
    """Another connection (a CLI command, another process) holds the write lock: the
    store's BEGIN waits for it on the store's thread while the event loop keeps running,
    then the transaction commits."""
    other = sqlite3.connect(sqlite_store.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")

    async def write() -> None:
        async with sqlite_store.transaction() as tx:
            await tx.put_entity("thing", "waited", (1,), {})

    task = asyncio.create_task(write())
    started = time.monotonic()
    for _ in range(200):  # the loop turns while the BEGIN waits
        await asyncio.sleep(0)
        assert not task.done()
    assert sqlite_store._lock.locked()  # the transaction is under way, waiting
    other.execute("COMMIT")
    other.close()
    await asyncio.wait_for(task, 5)
    assert time.monotonic() - started < 5
    assert await sqlite_store.entity_keys("thing") == ["waited"]
