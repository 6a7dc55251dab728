"""Store conformance suite: every backend must pass every test here.

The ``store`` fixture runs each test against SQLite (a real file) and the in-memory fake,
both on a fake clock the test moves by hand. Tests about what only SQLite has (migrations,
group commit, durability across kill -9) use the ``sqlite_store`` fixture instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from bridge.engine import Engine, EngineSettings
from bridge.engine.core import pid_alive
from bridge.errors import StoreError
from bridge.store import (
    Claim,
    ClaimState,
    EffectState,
    Entity,
    InboxStatus,
    LeaseLost,
    NewEffect,
    Store,
    store_from_url,
)
from bridge.store.base import SENT_WITHOUT_ANSWER, body_hash, each_entity_key
from bridge.store.memory import MemoryStore
from bridge.store.sqlite import SqliteStore
from tests.daemon_process import until

T0 = 1_700_000_000.0
REPO = Path(__file__).resolve().parents[1]
MIGRATIONS = REPO / "bridge" / "store" / "migrations"
CRASH_CHILD = REPO / "tests" / "store_crash_child.py"


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest_asyncio.fixture(params=["sqlite", "memory"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> AsyncIterator[Store]:
    backend: Store
    if request.param == "sqlite":
        backend = SqliteStore(tmp_path / "bridge.db", clock=clock)
    else:
        backend = MemoryStore(clock=clock)
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()


@pytest_asyncio.fixture
async def sqlite_store(tmp_path: Path, clock: FakeClock) -> AsyncIterator[SqliteStore]:
    backend = SqliteStore(tmp_path / "bridge.db", clock=clock)
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()


def effect(key: str, order_key: str = "", destination: str = "kibo", **kw: object) -> NewEffect:
    return NewEffect(
        idempotency_key=key,
        destination=destination,
        kind=str(kw.pop("kind", "create_return")),
        payload=kw.pop("payload", {"key": key}),
        order_key=order_key,
        **kw,  # type: ignore[arg-type]
    )


async def add_effects(store: Store, *effects: NewEffect) -> list[int]:
    async with store.transaction() as tx:
        for e in effects:
            assert await tx.add_effect(e)
    by_key = {e.idempotency_key: e.id for e in await store.list_effects()}
    return [by_key[e.idempotency_key] for e in effects]


async def lease_ids(store: Store, owner: str = "w1", limit: int = 100, **kw: object) -> list[int]:
    return [e.id for e in await store.lease_effects(owner, limit, 30, **kw)]  # type: ignore[arg-type]


# lifecycle and migrations ---------------------------------------------------------------------


def latest_migration() -> int:
    return max(int(p.name[:4]) for p in MIGRATIONS.glob("*.sql"))


async def test_sqlite_migrates_from_empty_and_reopens_idempotently(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "nested" / "bridge.db"
    first = SqliteStore(path, clock=clock)
    await first.open()
    try:
        assert await first.schema_version() == latest_migration() >= 1
        accepted = await first.accept("acme/optoro.rmas", "d1", b"{}", {})
        await first.set_cursor("poll", "42")
    finally:
        await first.close()

    second = SqliteStore(path, clock=clock)
    await second.open()  # nothing left to migrate: must not fail or touch the data
    try:
        assert await second.schema_version() == latest_migration()
        item = await second.get_inbox(accepted.inbox_id)
        assert item is not None
        assert item.body == b"{}"
        assert await second.get_cursor("poll") == "42"
    finally:
        await second.close()


async def test_a_database_of_the_schema_before_0005_upgrades_in_place(
    tmp_path: Path, clock: FakeClock
) -> None:
    """A file written by the schema of migrations 1-4 (what main ran) opens, migrates, and
    its pending items and leases behave as before (no entity: each its own)."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    for migration in sorted(MIGRATIONS.glob("*.sql")):
        if int(migration.name[:4]) <= 4:
            conn.executescript(migration.read_text(encoding="utf-8"))
    conn.execute("PRAGMA user_version = 4")
    conn.execute(
        "INSERT INTO inbox (source, dedup_key, body_hash, body, headers, received_at)"
        " VALUES ('src', 'k', 'h', x'7b7d', '{}', 1.0)"
    )
    conn.commit()
    conn.close()
    store = SqliteStore(path, clock=clock)
    await store.open()
    try:
        assert await store.schema_version() == latest_migration() >= 5
        (old,) = await store.lease_inbox("a/1/1", 10, 60)
        assert (old.dedup_key, old.entity) == ("k", None)
        await store.register_instance("a/1/1", "a", "host", 1)
        assert [i.owner for i in await store.list_instances()] == ["a/1/1"]
    finally:
        await store.close()


async def test_ping(store: Store) -> None:
    assert await store.ping()


async def test_sqlite_refuses_work_once_closed(sqlite_store: SqliteStore) -> None:
    await sqlite_store.close()
    assert not await sqlite_store.ping()
    with pytest.raises(StoreError):
        await asyncio.wait_for(sqlite_store.accept("s", None, b"x", {}), 5)
    with pytest.raises(StoreError):
        await sqlite_store.set_cursor("c", "1")


def test_store_from_url(tmp_path: Path) -> None:
    assert isinstance(store_from_url("memory://"), MemoryStore)
    assert isinstance(store_from_url(f"sqlite:///{tmp_path}/x.db"), SqliteStore)


async def test_memory_reset_empties_everything(clock: FakeClock) -> None:
    store = MemoryStore(clock=clock)
    await store.open()
    await store.accept("s", "k", b"body", {})
    await add_effects(store, effect("e1"))
    await store.set_cursor("c", "1")
    await store.put_token("t", b"secret", None)
    await store.claim("scope", "k", "h", 30)
    store.reset()
    assert await store.list_inbox(InboxStatus.PENDING) == []
    assert await store.list_effects() == []
    assert await store.get_cursor("c") is None
    assert await store.get_token("t") is None
    assert await store.claim("scope", "k", "h", 30) == Claim(ClaimState.NEW)
    assert (await store.accept("s", "k", b"body", {})).duplicate is False
    await store.close()


# inbox --------------------------------------------------------------------------------------


async def test_accept_stores_the_raw_input(store: Store, clock: FakeClock) -> None:
    accepted = await store.accept(
        "acme/optoro.rmas", "delivery-1", b'{"a": 1}', {"content-type": "json"}, retailer="acme"
    )
    assert accepted.duplicate is False
    item = await store.get_inbox(accepted.inbox_id)
    assert item is not None
    assert item.id == accepted.inbox_id
    assert (item.source, item.retailer, item.dedup_key) == (
        "acme/optoro.rmas",
        "acme",
        "delivery-1",
    )
    assert item.body == b'{"a": 1}'
    assert item.headers == {"content-type": "json"}
    assert item.received_at == clock.now
    assert item.status is InboxStatus.PENDING
    assert (item.note, item.attempts, item.duplicates) == (None, 0, 0)

    keyless = await store.accept("acme/optoro.rmas", None, b"other", {})
    item = await store.get_inbox(keyless.inbox_id)
    assert item is not None
    assert item.dedup_key == f"sha256:{body_hash(b'other')}"
    assert await store.get_inbox(999_999) is None


async def test_duplicate_by_key_is_counted_not_stored(store: Store) -> None:
    first = await store.accept("acme/rl", "d1", b"v1", {})
    again = await store.accept("acme/rl", "d1", b"v2 (a redelivery with another body)", {})
    assert again.inbox_id == first.inbox_id
    assert again.duplicate is True
    item = await store.get_inbox(first.inbox_id)
    assert item is not None
    assert (item.body, item.duplicates) == (b"v1", 1)
    assert len(await store.list_inbox(InboxStatus.PENDING)) == 1


async def test_duplicate_by_body_is_counted_not_stored(store: Store) -> None:
    first = await store.accept("acme/rl", None, b"same", {})
    assert (await store.accept("acme/rl", None, b"same", {})) == type(first)(first.inbox_id, True)
    assert (await store.accept("acme/rl", "new-key", b"same", {})).inbox_id == first.inbox_id
    item = await store.get_inbox(first.inbox_id)
    assert item is not None
    assert item.duplicates == 2
    assert (await store.inbox_stats()).duplicates == 2


async def test_same_input_from_different_sources_is_not_a_duplicate(store: Store) -> None:
    a = await store.accept("acme/rl", "d1", b"same", {})
    b = await store.accept("other/rl", "d1", b"same", {})
    assert not a.duplicate
    assert not b.duplicate
    assert a.inbox_id != b.inbox_id


async def test_concurrent_accepts_are_all_stored(store: Store) -> None:
    results = await asyncio.gather(
        *(store.accept("acme/rl", f"d{i}", f"body {i}".encode(), {}) for i in range(200))
    )
    assert len({r.inbox_id for r in results}) == 200
    assert not any(r.duplicate for r in results)
    for i, r in enumerate(results):
        item = await store.get_inbox(r.inbox_id)
        assert item is not None
        assert item.body == f"body {i}".encode()


async def test_sqlite_group_commits_concurrent_accepts(sqlite_store: SqliteStore) -> None:
    before = sqlite_store.commits
    results = await asyncio.gather(
        *(sqlite_store.accept("acme/rl", f"d{i}", f"body {i}".encode(), {}) for i in range(200))
    )
    assert len({r.inbox_id for r in results}) == 200
    assert 1 <= sqlite_store.commits - before < 20


async def test_sqlite_close_fails_accepts_in_flight_instead_of_hanging(
    sqlite_store: SqliteStore,
) -> None:
    tasks = [
        asyncio.create_task(sqlite_store.accept("acme/rl", f"d{i}", f"b{i}".encode(), {}))
        for i in range(50)
    ]
    for _ in range(100):
        await asyncio.sleep(0)
        if not sqlite_store._queue:  # the group commit has taken the batch: close mid-commit
            break
    await sqlite_store.close()
    async with asyncio.timeout(5):
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    for outcome in outcomes:
        assert not isinstance(outcome, BaseException) or isinstance(outcome, StoreError)


async def test_lease_inbox_in_id_order_with_limit_and_source_prefix(store: Store) -> None:
    sources = ["other/rl", "ac_me/rl", "acXme/rl", "ac_me/optoro", "AC_ME/rl", "other/x"]
    ids = [
        (await store.accept(source, None, f"{source} {i}".encode(), {})).inbox_id
        for i, source in enumerate(sources)
    ]
    first = await store.lease_inbox("w1", 2, 30)
    assert [i.id for i in first] == ids[:2]
    assert all(i.attempts == 1 for i in first)
    # a plain, case-sensitive prefix: "_" is no wildcard and "AC_ME" is another retailer
    by_prefix = await store.lease_inbox("w1", 10, 30, source_prefix="ac_me/")
    assert [i.id for i in by_prefix] == [ids[3]]
    assert [i.id for i in await store.lease_inbox("w1", 10, 30)] == [ids[2], ids[4], ids[5]]
    assert await store.lease_inbox("w2", 10, 30) == []


async def test_inbox_lease_expires_and_the_old_owner_loses_it(
    store: Store, clock: FakeClock
) -> None:
    accepted = await store.accept("acme/rl", "d1", b"x", {})
    assert [i.id for i in await store.lease_inbox("old", 10, 30)] == [accepted.inbox_id]
    assert await store.lease_inbox("new", 10, 30) == []
    clock.advance(31)
    (item,) = await store.lease_inbox("new", 10, 30)
    assert item.attempts == 2

    with pytest.raises(LeaseLost):
        async with store.transaction() as tx:
            await tx.finish_inbox(accepted.inbox_id, "old", InboxStatus.DONE)
    still = await store.get_inbox(accepted.inbox_id)
    assert still is not None
    assert still.status is InboxStatus.PENDING

    async with store.transaction() as tx:
        await tx.finish_inbox(accepted.inbox_id, "new", InboxStatus.DONE, note="applied")
    done = await store.get_inbox(accepted.inbox_id)
    assert done is not None
    assert (done.status, done.note) == (InboxStatus.DONE, "applied")
    with pytest.raises(LeaseLost):  # finished already: a second finish is refused
        async with store.transaction() as tx:
            await tx.finish_inbox(accepted.inbox_id, "new", InboxStatus.DONE)
    clock.advance(100)
    assert await store.lease_inbox("new", 10, 30) == []


async def test_finish_inbox_without_owner_and_unknown_item(store: Store) -> None:
    accepted = await store.accept("acme/rl", "d1", b"x", {})
    async with store.transaction() as tx:  # replay of a quarantined item: not leased
        await tx.finish_inbox(accepted.inbox_id, None, InboxStatus.QUARANTINED, "bad field")
    item = await store.get_inbox(accepted.inbox_id)
    assert item is not None
    assert (item.status, item.note) == (InboxStatus.QUARANTINED, "bad field")
    with pytest.raises(LeaseLost):
        async with store.transaction() as tx:
            await tx.finish_inbox(424242, None, InboxStatus.DONE)


async def test_inbox_stats_list_and_requeue(store: Store) -> None:
    a = (await store.accept("acme/rl", "a", b"a", {})).inbox_id
    b = (await store.accept("acme/rl", "b", b"b", {})).inbox_id
    c = (await store.accept("acme/optoro", "c", b"c", {})).inbox_id
    await store.accept("acme/optoro", "c", b"c", {})
    await store.lease_inbox("w1", 10, 30)
    async with store.transaction() as tx:
        await tx.finish_inbox(a, "w1", InboxStatus.DONE)
        await tx.finish_inbox(b, "w1", InboxStatus.QUARANTINED, "missing rma_identifier")
        await tx.finish_inbox(c, "w1", InboxStatus.SUPERSEDED)
    stats = await store.inbox_stats()
    assert (stats.pending, stats.done, stats.superseded, stats.quarantined) == (0, 1, 1, 1)
    assert stats.duplicates == 1
    assert stats.by_source == {
        "acme/rl": {"done": 1, "quarantined": 1},
        "acme/optoro": {"superseded": 1},
    }
    (quarantined,) = await store.list_inbox(InboxStatus.QUARANTINED)
    assert (quarantined.id, quarantined.note) == (b, "missing rma_identifier")
    assert len(await store.list_inbox(InboxStatus.DONE, limit=0)) == 0

    assert await store.requeue_inbox(b)
    assert not await store.requeue_inbox(999_999)
    requeued = await store.get_inbox(b)
    assert requeued is not None
    assert (requeued.status, requeued.note) == (InboxStatus.PENDING, None)
    assert [i.id for i in await store.lease_inbox("w2", 10, 30)] == [b]
    assert (await store.inbox_stats()).pending == 1


# transactions -------------------------------------------------------------------------------


async def test_transaction_commits_everything_together(store: Store, clock: FakeClock) -> None:
    inbox_id = (await store.accept("acme/rl", "d1", b"x", {})).inbox_id
    await store.lease_inbox("w1", 10, 30)
    async with store.transaction() as tx:
        assert await tx.get_entity("rma", "R1") is None
        await tx.put_entity("rma", "R1", ("2024-01-01T00:00:00Z", 2), {"status": "TRANSIT"})
        seen = await tx.get_entity("rma", "R1")
        assert seen is not None
        assert seen.data == {"status": "TRANSIT"}
        assert await tx.add_effect(effect("kibo:R1", order_key="rma:R1", source_inbox_id=inbox_id))
        assert await tx.effect_states("rma:R1") == {"kibo:R1": EffectState.PENDING}
        await tx.finish_inbox(inbox_id, "w1", InboxStatus.DONE)
        await tx.add_flag("acme", "rma", "R1", "refund exceeds order")

    async with store.transaction() as tx:
        entity = await tx.get_entity("rma", "R1")
    assert entity is not None
    assert entity.version == ("2024-01-01T00:00:00Z", 2)
    assert entity.data == {"status": "TRANSIT"}
    assert entity.updated_at == clock.now
    (stored,) = await store.list_effects()
    assert stored.idempotency_key == "kibo:R1"
    assert stored.source_inbox_id == inbox_id
    assert stored.created_at == stored.next_attempt_at == clock.now
    assert (stored.state, stored.attempts, stored.outcome_unknown) == (
        EffectState.PENDING,
        0,
        False,
    )
    item = await store.get_inbox(inbox_id)
    assert item is not None
    assert item.status is InboxStatus.DONE
    assert [(f.entity_key, f.reason) for f in await store.list_flags()] == [
        ("R1", "refund exceeds order")
    ]


async def test_transaction_that_raises_writes_nothing(store: Store) -> None:
    inbox_id = (await store.accept("acme/rl", "d1", b"x", {})).inbox_id
    await store.lease_inbox("w1", 10, 30)
    async with store.transaction() as tx:
        await tx.put_entity("rma", "R1", (1,), {"v": 1})
        await tx.add_effect(effect("e1", order_key="rma:R1"))
    before_effects = await store.list_effects()

    async def doomed() -> None:
        async with store.transaction() as tx:
            await tx.put_entity("rma", "R1", (2,), {"v": 2})
            await tx.put_entity("rma", "R2", (1,), {"v": 1})
            assert await tx.add_effect(effect("e2", order_key="rma:R1"))
            assert await tx.cancel_effects("rma:R1", frozenset({"create_return"})) == 2
            await tx.finish_inbox(inbox_id, "w1", InboxStatus.DONE)
            await tx.add_flag(None, "rma", "R1", "odd")
            raise RuntimeError("mapping blew up")

    with pytest.raises(RuntimeError, match="mapping blew up"):
        await doomed()

    async with store.transaction() as tx:
        r1 = await tx.get_entity("rma", "R1")
        assert await tx.get_entity("rma", "R2") is None
        assert await tx.effect_states("rma:R1") == {"e1": EffectState.PENDING}
    assert r1 is not None
    assert (r1.version, r1.data) == ((1,), {"v": 1})
    assert await store.list_effects() == before_effects
    item = await store.get_inbox(inbox_id)
    assert item is not None
    assert item.status is InboxStatus.PENDING
    assert await store.list_flags() == []
    # the key of the rolled-back effect is free again
    async with store.transaction() as tx:
        assert await tx.add_effect(effect("e2", order_key="rma:R1"))


async def test_lease_lost_inside_a_transaction_rolls_it_back(
    store: Store, clock: FakeClock
) -> None:
    inbox_id = (await store.accept("acme/rl", "d1", b"x", {})).inbox_id
    await store.lease_inbox("old", 10, 30)
    clock.advance(31)
    await store.lease_inbox("new", 10, 30)

    async def stale() -> None:
        async with store.transaction() as tx:
            await tx.put_entity("rma", "R1", (1,), {})
            await tx.add_effect(effect("e1"))
            await tx.finish_inbox(inbox_id, "old", InboxStatus.DONE)

    with pytest.raises(LeaseLost):
        await stale()
    assert await store.list_effects() == []
    async with store.transaction() as tx:
        assert await tx.get_entity("rma", "R1") is None


async def test_transactions_are_serialised(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.put_entity("counter", "c", (0,), {"n": 0})

    async def increment() -> None:
        async with store.transaction() as tx:
            current = await tx.get_entity("counter", "c")
            assert current is not None
            await asyncio.sleep(0.01)  # another writer would interleave here
            await tx.put_entity(
                "counter", "c", (current.data["n"] + 1,), {"n": current.data["n"] + 1}
            )

    await asyncio.gather(*(increment() for _ in range(10)))
    async with store.transaction() as tx:
        final = await tx.get_entity("counter", "c")
    assert final is not None
    assert final.data == {"n": 10}


async def test_a_cancelled_write_leaves_the_store_usable(store: Store) -> None:
    for step in range(4):  # cancel at different points of the write
        task = asyncio.create_task(store.set_cursor("c", f"cancelled {step}"))
        for _ in range(step):
            await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await store.set_cursor("c", f"ok {step}")
        assert await store.get_cursor("c") == f"ok {step}"
    async with store.transaction() as tx:
        await tx.put_entity("k", "1", (1,), {})
    async with store.transaction() as tx:
        assert await tx.get_entity("k", "1") is not None


# outbox -------------------------------------------------------------------------------------


async def test_returned_values_are_copies(store: Store) -> None:
    inbox_id = (await store.accept("acme/rl", "d1", b"x", {"h": "1"})).inbox_id
    (e,) = await add_effects(store, effect("e", payload={"items": [1]}))
    async with store.transaction() as tx:
        await tx.put_entity("rma", "R1", (1,), {"units": [1]})
    item = await store.get_inbox(inbox_id)
    stored = await store.get_effect(e)
    assert item is not None
    assert stored is not None
    item.headers["h"] = "changed"
    stored.payload["items"].append(2)
    (leased,) = await store.lease_effects("w1", 10, 30)
    leased.payload["items"].append(3)
    async with store.transaction() as tx:
        entity = await tx.get_entity("rma", "R1")
        assert entity is not None
        entity.data["units"].append(2)
    again = await store.get_inbox(inbox_id)
    assert again is not None
    assert again.headers == {"h": "1"}
    assert [x.payload for x in await store.list_effects()] == [{"items": [1]}]
    async with store.transaction() as tx:
        entity = await tx.get_entity("rma", "R1")
    assert entity is not None
    assert entity.data == {"units": [1]}


async def test_add_effect_is_unique_by_idempotency_key(store: Store) -> None:
    async with store.transaction() as tx:
        assert await tx.add_effect(effect("k1", payload={"v": 1}))
        assert not await tx.add_effect(effect("k1", payload={"v": 2}))
    async with store.transaction() as tx:
        assert not await tx.add_effect(effect("k1", payload={"v": 3}, destination="optoro"))
    (only,) = await store.list_effects()
    assert (only.payload, only.destination) == ({"v": 1}, "kibo")


async def test_effects_of_one_order_key_are_leased_one_at_a_time(
    store: Store, clock: FakeClock
) -> None:
    a1, a2, b1, free1, free2, a3 = await add_effects(
        store,
        effect("a1", order_key="rma:A"),
        effect("a2", order_key="rma:A"),
        effect("b1", order_key="rma:B"),
        effect("free1"),
        effect("free2"),
        effect("a3", order_key="rma:A"),
    )
    assert await lease_ids(store) == [a1, b1, free1, free2]
    assert await lease_ids(store) == []  # a2 waits for a1, even though a1 is only leased
    for done in (b1, free1, free2):
        await store.mark_delivered(done, "w1")
    await store.mark_delivered(a1, "w1", {"status": 201})
    assert await lease_ids(store) == [a2]
    # a head scheduled for a later retry still holds the line
    await store.schedule_retry(a2, "w1", 60, "503")
    assert await lease_ids(store) == []
    clock.advance(60)
    assert await lease_ids(store) == [a2]
    await store.dead_letter(a2, "w1", "422 unprocessable")  # dead does not block
    assert await lease_ids(store) == [a3]


async def test_not_before_retry_and_attempts(store: Store, clock: FakeClock) -> None:
    (e,) = await add_effects(store, effect("e", not_before=clock.now + 10))
    assert await lease_ids(store) == []
    assert await store.next_effect_due() == clock.now + 10
    clock.advance(10)
    (leased,) = await store.lease_effects("w1", 10, 30)
    assert (leased.id, leased.attempts, leased.outcome_unknown) == (e, 1, False)

    await store.schedule_retry(e, "w1", 5, "timeout", outcome_unknown=True)
    retried = await store.get_effect(e)
    assert retried is not None
    assert (retried.state, retried.last_error, retried.outcome_unknown) == (
        EffectState.PENDING,
        "timeout",
        True,
    )
    assert retried.next_attempt_at == clock.now + 5
    assert await lease_ids(store) == []
    clock.advance(5)
    (leased,) = await store.lease_effects("w2", 10, 30)
    assert (leased.attempts, leased.outcome_unknown) == (2, True)
    await store.schedule_retry(e, "w2", 5, "answered 503")
    clock.advance(5)
    (leased,) = await store.lease_effects("w3", 10, 30)
    assert (leased.attempts, leased.outcome_unknown) == (3, False)  # a 503 is a known failure
    with pytest.raises(LeaseLost):  # w1 gave it back: it cannot finish it any more
        await store.mark_delivered(e, "w1")


async def test_effect_lease_expires_and_the_old_owner_loses_it(
    store: Store, clock: FakeClock
) -> None:
    (e,) = await add_effects(store, effect("e"))
    assert await lease_ids(store, "old") == [e]
    assert await lease_ids(store, "new") == []
    clock.advance(31)
    assert await lease_ids(store, "new") == [e]
    for finish in (
        store.mark_delivered(e, "old"),
        store.schedule_retry(e, "old", 0, "x"),
        store.dead_letter(e, "old", "x"),
    ):
        with pytest.raises(LeaseLost):
            await finish
    await store.mark_delivered(e, "new", {"id": "kibo-1"})
    delivered = await store.get_effect(e)
    assert delivered is not None
    assert (delivered.state, delivered.result, delivered.attempts) == (
        EffectState.DELIVERED,
        {"id": "kibo-1"},
        2,
    )
    with pytest.raises(LeaseLost):
        await store.mark_delivered(e, "new")
    with pytest.raises(LeaseLost):
        await store.mark_delivered(424242, "new")


async def test_lease_effects_by_destination_and_limit(store: Store) -> None:
    k1, o1, k2 = await add_effects(
        store, effect("k1"), effect("o1", destination="optoro"), effect("k2")
    )
    assert await lease_ids(store, destinations=frozenset({"optoro"})) == [o1]
    assert await lease_ids(store, destinations=frozenset({"nowhere"})) == []
    assert await lease_ids(store, limit=1, destinations=frozenset({"kibo", "optoro"})) == [k1]
    assert await lease_ids(store) == [k2]


async def test_lease_effects_takes_the_earliest_due_first(store: Store, clock: FakeClock) -> None:
    _late, early = await add_effects(
        store, effect("late", not_before=clock.now - 1), effect("early", not_before=clock.now - 5)
    )
    assert await lease_ids(store, limit=1) == [early]


async def test_dead_letters_keep_request_and_response(store: Store) -> None:
    e1, e2, e3 = await add_effects(
        store,
        effect("e1", order_key="o"),
        effect("e2", destination="optoro"),
        effect("e3", destination="optoro"),
    )
    await lease_ids(store)
    request = {"method": "POST", "path": "/api/v2/return/", "body": {"items": [1]}}
    response = {"status": 422, "body": {"message": "invalid sku"}}
    await store.dead_letter(e1, "w1", "422 from kibo", request, response)
    await store.dead_letter(e3, None, "operator gave up")  # an operator needs no lease
    dead = await store.get_effect(e1)
    assert dead is not None
    assert dead.state is EffectState.DEAD
    assert (dead.dead_reason, dead.last_error) == ("422 from kibo", "422 from kibo")
    assert (dead.dead_request, dead.dead_response) == (request, response)

    assert [e.id for e in await store.list_effects(state=EffectState.DEAD)] == [e1, e3]
    assert [e.id for e in await store.list_effects(destination="optoro")] == [e2, e3]
    assert [e.id for e in await store.list_effects(order_key="o")] == [e1]
    assert [
        e.id for e in await store.list_effects(state=EffectState.DEAD, destination="optoro")
    ] == [e3]
    assert [e.id for e in await store.list_effects(limit=2)] == [e1, e2]
    assert await store.list_effects(state=EffectState.CANCELED) == []


async def test_requeue_effect_from_dead_letter(store: Store, clock: FakeClock) -> None:
    e, other = await add_effects(
        store, effect("e", payload={"v": 1}, deadline_at=clock.now + 100), effect("other")
    )
    await lease_ids(store)
    clock.advance(20)
    await store.schedule_retry(e, "w1", 0, "503")
    await lease_ids(store)
    await store.dead_letter(e, "w1", "422", {"req": 1}, {"status": 422})
    assert not await store.requeue_effect(other)  # leased, not dead
    assert not await store.requeue_effect(424242)

    clock.advance(10)
    assert await store.requeue_effect(e, {"v": 2})
    requeued = await store.get_effect(e)
    assert requeued is not None
    assert (requeued.state, requeued.attempts, requeued.payload) == (
        EffectState.PENDING,
        0,
        {"v": 2},
    )
    assert requeued.next_attempt_at == clock.now
    assert (requeued.dead_reason, requeued.dead_request, requeued.dead_response) == (None,) * 3
    assert requeued.deadline_at == clock.now + 100  # the same time to deliver as at first
    assert not await store.requeue_effect(e)  # pending already

    (leased,) = await store.lease_effects("w2", 10, 30)
    assert (leased.id, leased.attempts) == (e, 1)
    await store.dead_letter(e, "w2", "again")
    assert await store.requeue_effect(e)  # no payload given: kept
    kept = await store.get_effect(e)
    assert kept is not None
    assert kept.payload == {"v": 2}


async def test_cancel_effects_and_effect_states(store: Store) -> None:
    done, _create, _update, other_kind, elsewhere = await add_effects(
        store,
        effect("done", order_key="rma:R1"),
        effect("create", order_key="rma:R1", kind="create_return"),
        effect("update", order_key="rma:R1", kind="update_return"),
        effect("refund", order_key="rma:R1", kind="refund"),
        effect("elsewhere", order_key="rma:R2"),
    )
    await lease_ids(store)
    await store.mark_delivered(done, "w1")
    async with store.transaction() as tx:
        assert await tx.cancel_effects("rma:R1", frozenset({"create_return", "update_return"})) == 2
        assert await tx.cancel_effects("rma:R1", frozenset()) == 0
        assert await tx.effect_states("rma:R1") == {
            "done": EffectState.DELIVERED,
            "create": EffectState.CANCELED,
            "update": EffectState.CANCELED,
            "refund": EffectState.PENDING,
        }
        assert await tx.effect_states("nothing") == {}
    async with store.transaction() as tx:
        assert await tx.cancel_effects("rma:R1") == 1
    refund = await store.get_effect(other_kind)
    assert refund is not None
    assert refund.state is EffectState.CANCELED
    untouched = await store.get_effect(elsewhere)
    assert untouched is not None
    assert untouched.state is EffectState.PENDING


async def test_next_effect_due(store: Store, clock: FakeClock) -> None:
    assert await store.next_effect_due() is None
    a1, _a2, b = await add_effects(
        store,
        effect("a1", order_key="o", not_before=clock.now + 50),
        effect("a2", order_key="o"),  # due now, but behind a1: not due for the dispatcher
        effect("b", not_before=clock.now + 20),
    )
    assert await store.next_effect_due() == clock.now + 20
    clock.advance(20)
    assert await lease_ids(store) == [b]
    assert await store.next_effect_due() == clock.now + 30  # a1; b is leased until +30
    await store.mark_delivered(b, "w1")
    clock.advance(30)
    assert await lease_ids(store) == [a1]
    assert await store.next_effect_due() == clock.now + 30  # a1's lease; a2 still waits
    await store.mark_delivered(a1, "w1")
    assert await store.next_effect_due() == T0  # a2, due since it was written


# cursors, claims, tokens, flags ---------------------------------------------------------------


async def test_cursors(store: Store) -> None:
    assert await store.get_cursor("acme/rl.orders") is None
    await store.set_cursor("acme/rl.orders", "2024-01-01T00:00:00Z")
    await store.set_cursor("acme/rl.orders", "2024-02-01T00:00:00Z")
    await store.set_cursor("other", "1")
    assert await store.get_cursor("acme/rl.orders") == "2024-02-01T00:00:00Z"
    assert await store.get_cursor("other") == "1"


async def test_claims(store: Store, clock: FakeClock) -> None:
    assert await store.claim("exchange", "order-1", "h1", 30) == Claim(ClaimState.NEW)
    assert await store.claim("exchange", "order-1", "h1", 30) == Claim(ClaimState.IN_PROGRESS)
    assert (await store.claim("exchange", "order-1", "h2", 30)).state is ClaimState.CONFLICT
    assert await store.claim("other-scope", "order-1", "h2", 30) == Claim(ClaimState.NEW)

    await store.complete_claim("exchange", "order-1", {"exchange_order_id": "X1"})
    assert await store.claim("exchange", "order-1", "h1", 30) == Claim(
        ClaimState.DONE, {"exchange_order_id": "X1"}
    )
    conflict = await store.claim("exchange", "order-1", "h2", 30)
    assert conflict.state is ClaimState.CONFLICT
    await store.release_claim("exchange", "order-1")  # done: releasing changes nothing
    assert (await store.claim("exchange", "order-1", "h1", 30)).state is ClaimState.DONE


async def test_release_and_expiry_of_claims(store: Store, clock: FakeClock) -> None:
    assert (await store.claim("s", "k", "h", 30)).state is ClaimState.NEW
    await store.release_claim("s", "k")  # failed without creating anything
    assert (await store.claim("s", "k", "other hash", 30)).state is ClaimState.NEW

    assert (await store.claim("s", "k2", "h", 30)).state is ClaimState.NEW
    clock.advance(29)
    assert (await store.claim("s", "k2", "h", 30)).state is ClaimState.IN_PROGRESS
    clock.advance(2)  # the claimant died: its lease ran out
    assert (await store.claim("s", "k2", "h", 30)).state is ClaimState.NEW
    assert (await store.claim("s", "k2", "h", 30)).state is ClaimState.IN_PROGRESS
    await store.complete_claim("s", "k2", None)
    assert await store.claim("s", "k2", "h", 30) == Claim(ClaimState.DONE, None)
    await store.complete_claim("s", "never-claimed", {"x": 1})
    assert (await store.claim("s", "never-claimed", "h", 30)).state is ClaimState.NEW


async def test_tokens_compare_and_set(store: Store) -> None:
    assert await store.get_token("rl/team-1") is None
    assert not await store.put_token("rl/team-1", b"v0", 1)  # nothing stored yet
    assert await store.put_token("rl/team-1", b"\x00enc-1", None)
    assert await store.get_token("rl/team-1") == (b"\x00enc-1", 1)
    assert not await store.put_token("rl/team-1", b"late", None)  # someone stored one
    assert await store.put_token("rl/team-1", b"enc-2", 1)
    assert not await store.put_token("rl/team-1", b"stale", 1)  # lost the refresh race
    assert await store.get_token("rl/team-1") == (b"enc-2", 2)


async def test_flags_are_idempotent(store: Store, clock: FakeClock) -> None:
    for _ in range(2):
        async with store.transaction() as tx:
            await tx.add_flag("acme", "rma", "R1", "quantity mismatch")
            await tx.add_flag("acme", "rma", "R1", "quantity mismatch")
    async with store.transaction() as tx:
        await tx.add_flag(None, "rma", "R1", "another reason")
        await tx.add_flag("acme", "order", "R1", "quantity mismatch")
    flags = await store.list_flags()
    assert [(f.retailer, f.entity_kind, f.entity_key, f.reason) for f in flags] == [
        ("acme", "rma", "R1", "quantity mismatch"),
        (None, "rma", "R1", "another reason"),
        ("acme", "order", "R1", "quantity mismatch"),
    ]
    assert len({f.id for f in flags}) == 3
    assert all(f.created_at == clock.now for f in flags)
    assert await store.list_flags(include_resolved=True) == flags


async def test_a_resolved_flag_leaves_the_open_list(store: Store, clock: FakeClock) -> None:
    async with store.transaction() as tx:
        await tx.add_flag("acme", "rma", "R1", "quantity mismatch")
        await tx.add_flag("acme", "rma", "R2", "quantity mismatch")
    first, second = await store.list_flags()
    clock.advance(5)
    assert await store.resolve_flag(first.id)
    assert not await store.resolve_flag(first.id)  # resolved already
    assert not await store.resolve_flag(9999)
    assert await store.list_flags() == [second]
    resolved, still_open = await store.list_flags(include_resolved=True)
    assert (resolved.id, resolved.resolved_at) == (first.id, clock.now)
    assert still_open == second


async def test_claim_of_one_key_by_20_concurrent_callers_has_one_winner(store: Store) -> None:
    claims = await asyncio.gather(*(store.claim("x", "order-1", "h", 30) for _ in range(20)))
    states = sorted(c.state.value for c in claims)
    assert states == sorted([ClaimState.NEW.value] + [ClaimState.IN_PROGRESS.value] * 19)


async def test_an_expired_claim_is_taken_over_by_exactly_one_concurrent_claimer(
    store: Store, clock: FakeClock
) -> None:
    assert (await store.claim("x", "k", "h", 30)).state is ClaimState.NEW
    clock.advance(31)  # the claimant died: its lease ran out
    claims = await asyncio.gather(*(store.claim("x", "k", "h", 30) for _ in range(10)))
    assert [c.state for c in claims].count(ClaimState.NEW) == 1
    assert {c.state for c in claims} == {ClaimState.NEW, ClaimState.IN_PROGRESS}
    clock.advance(31)
    # a different request never takes over, expired or not
    assert (await store.claim("x", "k", "other", 30)).state is ClaimState.CONFLICT
    assert (await store.claim("x", "k", "h", 30)).state is ClaimState.NEW


# per-entity lock, entity-keyed inbox, the store's time, per-entity rows --------------------


async def test_two_transactions_locking_one_new_entity_serialise(store: Store) -> None:
    """Both lock an entity that does not exist yet, read it and write count + 1: the
    second sees the first's write, so the count is 2 (never 1, a lost update)."""

    async def increment() -> None:
        async with store.transaction() as tx:
            await tx.lock_entity("counter", "c1")
            found = await tx.get_entity("counter", "c1")
            count = 0 if found is None else int(found.data["count"])
            for _ in range(5):  # let the other task run, were it able to enter
                await asyncio.sleep(0)
            await tx.put_entity("counter", "c1", (count + 1,), {"count": count + 1})

    await asyncio.gather(increment(), increment())
    async with store.transaction() as tx:
        found = await tx.get_entity("counter", "c1")
    assert found is not None
    assert found.data == {"count": 2}


async def test_deleted_entities_and_paged_entity_keys(store: Store) -> None:
    async with store.transaction() as tx:
        for key in ("acme:3", "acme:1", "acme:2", "zeta:1"):
            await tx.put_entity("open_return", key, (1,), {"key": key})
        await tx.put_entity("other", "acme:9", (1,), {})
    assert await store.entity_keys("open_return", "acme:", limit=2) == ["acme:1", "acme:2"]
    assert await store.entity_keys("open_return", "acme:", after="acme:2") == ["acme:3"]
    assert await store.entity_keys("open_return") == ["acme:1", "acme:2", "acme:3", "zeta:1"]
    paged = [k async for k in each_entity_key(store, "open_return", "acme:", page=2)]
    assert paged == ["acme:1", "acme:2", "acme:3"]
    async with store.transaction() as tx:
        assert await tx.delete_entity("open_return", "acme:2")
        assert not await tx.delete_entity("open_return", "acme:2")
        assert await tx.get_entity("open_return", "acme:2") is None
    assert await store.entity_keys("open_return", "acme:") == ["acme:1", "acme:3"]
    with contextlib.suppress(RuntimeError):
        async with store.transaction() as tx:
            await tx.delete_entity("open_return", "acme:1")
            raise RuntimeError("rolled back")
    assert await store.entity_keys("open_return", "acme:") == ["acme:1", "acme:3"]


async def test_entity_keys_stay_inside_the_prefix_and_after_the_last_key(store: Store) -> None:
    keys = ["acm", "acme", "acme:", "acme:1", "acme:10", "acme:1\x00", "acme:2", "acme;", "b"]
    async with store.transaction() as tx:
        for key in keys:
            await tx.put_entity("open_return", key, (1,), {})
    assert await store.entity_keys("open_return", "acme:") == [
        "acme:",
        "acme:1",
        "acme:1\x00",
        "acme:10",
        "acme:2",
    ]
    assert await store.entity_keys("open_return", "acme:", after="acme:1") == [
        "acme:1\x00",
        "acme:10",
        "acme:2",
    ]
    assert await store.entity_keys("open_return", "acme:", after="acme:2") == []
    assert await store.entity_keys("open_return", "", after="acme;") == ["b"]
    paged = [k async for k in each_entity_key(store, "open_return", "acme", page=1)]
    assert paged == ["acme", "acme:", "acme:1", "acme:1\x00", "acme:10", "acme:2", "acme;"]


async def test_get_entities_reads_committed_rows_in_one_call_without_a_write(
    store: Store,
) -> None:
    async with store.transaction() as tx:
        for n in range(450):  # more than one SQLite statement's batch
            await tx.put_entity("line", f"acme:{n}", (n,), {"n": n})
        await tx.put_entity("order", "acme:1", (1,), {"currency": "EUR"})
    commits = store.commits  # type: ignore[attr-defined]
    wanted = [("line", f"acme:{n}") for n in range(450)]
    found = await store.get_entities([*wanted, ("order", "acme:1"), ("order", "acme:2")])
    assert sorted(found) == sorted([*wanted, ("order", "acme:1")])
    assert found["line", "acme:449"].data == {"n": 449}
    assert found["line", "acme:449"].version == (449,)
    assert found["order", "acme:1"].data == {"currency": "EUR"}
    assert await store.get_entities([]) == {}
    assert store.commits == commits  # type: ignore[attr-defined]
    found["order", "acme:1"].data["currency"] = "USD"  # type: ignore[index]
    again = await store.get_entities([("order", "acme:1")])
    assert again["order", "acme:1"].data == {"currency": "EUR"}


async def test_get_entities_never_sees_an_uncommitted_write(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.put_entity("order", "acme:1", (1,), {"currency": "EUR"})
    read: asyncio.Task[dict[tuple[str, str], Entity]] | None = None
    with contextlib.suppress(RuntimeError):
        async with store.transaction() as tx:
            await tx.put_entity("order", "acme:1", (2,), {"currency": "JPY"})
            await tx.put_entity("order", "acme:2", (1,), {"currency": "JPY"})
            mine = await tx.get_entities([("order", "acme:1"), ("order", "acme:2")])
            assert {k: e.data for k, e in mine.items()} == {
                ("order", "acme:1"): {"currency": "JPY"},
                ("order", "acme:2"): {"currency": "JPY"},
            }
            read = asyncio.create_task(
                store.get_entities([("order", "acme:1"), ("order", "acme:2")])
            )
            await asyncio.sleep(0)  # yield once: the read starts while the write is open
            raise RuntimeError("rolled back")
    assert read is not None
    seen = await read
    assert {k: e.data for k, e in seen.items()} == {("order", "acme:1"): {"currency": "EUR"}}


async def accept_for(store: Store, body: str, entity: str | None) -> int:
    return (await store.accept("src", None, body.encode(), {}, entity=entity)).inbox_id


async def test_inbox_items_of_one_entity_are_leased_one_at_a_time_in_order(
    store: Store, clock: FakeClock
) -> None:
    a1 = await accept_for(store, "a1", "rma:A")
    a2 = await accept_for(store, "a2", "rma:A")
    b1 = await accept_for(store, "b1", "rma:B")
    own = await accept_for(store, "n1", None)
    a3 = await accept_for(store, "a3", "rma:A")
    first, second = await asyncio.gather(
        store.lease_inbox("w1/1/1", 10, 60), store.lease_inbox("w2/2/2", 10, 60)
    )
    held = [*first, *second]
    assert sorted(i.id for i in held) == [a1, b1, own]  # several entities per batch
    assert [i.entity for i in held].count("rma:A") == 1
    assert await store.lease_inbox("w2/2/2", 10, 60) == []  # a2 waits for a1
    async with store.transaction() as tx:
        for item in held:
            await tx.finish_inbox(
                item.id, "w1/1/1" if item in first else "w2/2/2", InboxStatus.DONE
            )
    (next_a,) = await store.lease_inbox("w2/2/2", 10, 60)
    assert (next_a.id, next_a.entity) == (a2, "rma:A")
    clock.advance(61)  # the worker holding a2 died: its lease expired, a2 goes again alone
    again = await store.lease_inbox("w1/1/1", 10, 60)
    assert [(i.id, i.attempts) for i in again] == [(a2, 2)]
    assert a3 not in {i.id for i in await store.lease_inbox("w1/1/1", 10, 60)}
    async with store.transaction() as tx:
        await tx.finish_inbox(a2, "w1/1/1", InboxStatus.QUARANTINED, "bad")
    leased = await store.lease_inbox("w1/1/1", 10, 60)
    assert a3 in {i.id for i in leased}  # a quarantined item does not hold its entity


async def test_concurrent_workers_never_hold_two_items_of_one_entity(store: Store) -> None:
    """Four workers lease and finish concurrently until the inbox is empty; at no moment
    does one entity have two items leased, and each entity's items finish in id order."""
    ids: dict[str, list[int]] = {}
    for n in range(30):
        entity = f"rma:{n % 3}"
        ids.setdefault(entity, []).append(await accept_for(store, f"m{n}", entity))
    holding: dict[str, str] = {}
    finished: dict[str, list[int]] = {}

    async def worker(owner: str) -> None:
        while await store.pending_inbox_count():
            items = await store.lease_inbox(owner, 2, 60)
            for item in items:
                assert item.entity is not None
                assert item.entity not in holding, "two items of one entity leased at once"
                holding[item.entity] = owner
            await asyncio.sleep(0)
            for item in items:
                assert item.entity is not None
                async with store.transaction() as tx:
                    await tx.finish_inbox(item.id, owner, InboxStatus.DONE)
                del holding[item.entity]
                finished.setdefault(item.entity, []).append(item.id)

    await asyncio.gather(*(worker(f"w{n}/{n}/1") for n in range(4)))
    assert finished == ids


async def test_times_are_the_stores_own(store: Store, clock: FakeClock) -> None:
    assert await store.now() == clock.now
    (e,) = await add_effects(store, effect("e"))
    await store.lease_effects("w1", 10, 30)
    clock.advance(7)
    await store.schedule_retry(e, "w1", 5, "503")
    found = await store.get_effect(e)
    assert found is not None
    assert found.next_attempt_at == clock.now + 5  # due in the store's time, not the caller's
    await store.accept("src", None, b"x", {})
    await store.lease_inbox("w1", 10, 30)
    clock.advance(30)
    assert await store.lease_inbox("w2", 10, 30) == []  # expires at the store's now + 30
    clock.advance(0.5)
    assert len(await store.lease_inbox("w2", 10, 30)) == 1


# durability ---------------------------------------------------------------------------------


def crash_body(n: int) -> bytes:
    """Same as ``store_crash_child.crash_body``."""
    return f'{{"n": {n}, "pad": "{"x" * (n % 97)}"}}'.encode()


def parse_ack(line: str) -> tuple[int, int] | None:
    """``ACKED <inbox id> <n>`` -> (inbox id, n)."""
    if not line.startswith("ACKED "):
        return None
    _, inbox_id, n = line.split()
    return int(inbox_id), int(n)


async def test_sqlite_acknowledged_accepts_survive_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(CRASH_CHILD), str(path), "5000",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    assert proc.stdout is not None
    assert proc.stderr is not None
    acked: dict[int, int] = {}
    try:
        async with asyncio.timeout(60):
            while len(acked) < 300:
                line = (await proc.stdout.readline()).decode()
                if not line:
                    pytest.fail(f"child exited early: {(await proc.stderr.read()).decode()}")
                if ack := parse_ack(line):
                    acked[ack[0]] = ack[1]
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGKILL)
        rest, _ = await proc.communicate()
    acked.update(ack for line in rest.decode().splitlines() if (ack := parse_ack(line)))
    assert proc.returncode == -signal.SIGKILL

    store = SqliteStore(path)
    await store.open()
    try:
        for inbox_id, n in acked.items():
            item = await store.get_inbox(inbox_id)
            assert item is not None, f"acknowledged inbox item {inbox_id} lost"
            assert item.body == crash_body(n)
            assert item.dedup_key == f"delivery-{n}"
        stats = await store.inbox_stats()
        assert stats.duplicates == 0
        assert stats.pending >= len(acked)
    finally:
        await store.close()


def dead_pid() -> int:
    """The pid of a process that has exited and was reaped."""
    with subprocess.Popen([sys.executable, "-c", ""]) as child:
        child.wait()
        return child.pid


async def test_take_back_frees_a_dead_process_of_this_instance_never_a_live_one(
    store: Store,
) -> None:
    """Two daemons on one host (instances a and b) and a live second process of a: a
    restart of a frees only the leases of a's dead former process."""
    gone, live, mine = dead_pid(), os.getppid(), os.getpid()
    for body in (b"1", b"2", b"3"):
        await store.accept("src", None, body, {})
    await store.register_instance(f"a/{gone}/1", "a", "host", gone)
    await store.register_instance(f"a/{live}/1", "a", "host", live)
    await store.register_instance(f"b/{live}/1", "b", "host", live)
    (dead_item,) = await store.lease_inbox(f"a/{gone}/1", 1, 60)
    (live_a,) = await store.lease_inbox(f"a/{live}/1", 1, 60)
    (live_b,) = await store.lease_inbox(f"b/{live}/1", 1, 60)
    sent, unsent = await add_effects(store, effect("sent"), effect("unsent"))
    await store.lease_effects(f"a/{gone}/1", 10, 60)
    await store.mark_sending(sent, f"a/{gone}/1")  # then the process died mid-call

    await store.register_instance(f"a/{mine}/2", "a", "host", mine)
    assert await store.take_back_leases(f"a/{mine}/2", "a", "host", pid_alive, 3600) == 3
    (again,) = await store.lease_inbox(f"a/{mine}/2", 10, 60)
    assert again.id == dead_item.id
    assert {live_a.id, live_b.id}.isdisjoint({again.id})
    by_id = {e.id: e for e in await store.lease_effects(f"a/{mine}/2", 10, 60)}
    assert set(by_id) == {sent, unsent}
    assert by_id[sent].outcome_unknown  # recorded as sent: the dead process may have sent it
    assert not by_id[unsent].outcome_unknown  # never recorded as sent: known not sent
    owners = {i.owner for i in await store.list_instances()}
    assert owners == {f"a/{live}/1", f"b/{live}/1", f"a/{mine}/2"}  # the dead one is gone
    # b restarting frees nothing of a's live processes
    assert await store.take_back_leases(f"b/{mine}/3", "b", "host", pid_alive, 3600) == 0


async def test_take_back_treats_an_older_owner_with_the_callers_pid_as_dead(
    store: Store,
) -> None:
    """A container restarts its daemon at the same pid: one pid is one process at a time,
    so the former owner holding that pid is the dead previous run."""
    mine = os.getpid()
    await store.accept("src", None, b"x", {})
    await store.register_instance(f"a/{mine}/1", "a", "host", mine)
    await store.lease_inbox(f"a/{mine}/1", 1, 60)
    await store.register_instance(f"a/{mine}/2", "a", "host", mine)
    assert await store.take_back_leases(f"a/{mine}/2", "a", "host", pid_alive, 3600) == 1


async def test_take_back_frees_an_owner_whose_heartbeat_is_stale(
    store: Store, clock: FakeClock
) -> None:
    """Any instance, any host: a process that stopped heartbeating is dead; one that
    heartbeats is not, and unregistered owners' leases only expire."""
    for body in (b"1", b"2", b"3"):
        await store.accept("src", None, body, {})
    await store.register_instance("c/10/1", "c", "other-host", 10)
    await store.register_instance("d/11/1", "d", "other-host", 11)
    (stale,) = await store.lease_inbox("c/10/1", 1, 600)
    (beating,) = await store.lease_inbox("d/11/1", 1, 600)
    (unregistered,) = await store.lease_inbox("e/12/1", 1, 600)
    clock.advance(100)
    await store.heartbeat("d/11/1")
    await store.register_instance("a/1/1", "a", "host", os.getpid())
    assert await store.take_back_leases("a/1/1", "a", "host", pid_alive, 60) == 1
    assert [i.id for i in await store.lease_inbox("a/1/1", 10, 60)] == [stale.id]
    assert {i.owner for i in await store.list_instances()} == {"d/11/1", "a/1/1"}
    assert beating.id != unregistered.id


async def test_engine_registers_at_start_and_heartbeats(store: Store, clock: FakeClock) -> None:
    engine = Engine(store, EngineSettings(heartbeat_interval=0.01), instance="a")
    assert await engine.take_back_leases() == 0
    (me,) = await store.list_instances()
    assert (me.owner, me.instance, me.pid) == (engine.owner, "a", os.getpid())
    assert (me.host, me.heartbeat_at) == (socket.gethostname(), clock.now)
    beating = asyncio.create_task(engine.run_heartbeat())
    try:
        clock.advance(10)

        async def beat() -> bool:
            return [i.heartbeat_at for i in await store.list_instances()] == [clock.now]

        await until(beat, 10, "a heartbeat at the store's new time")
    finally:
        beating.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beating


async def test_engine_owner_ids_are_unique_per_process_and_engine(store: Store) -> None:
    first, second = Engine(store, instance="a"), Engine(store, instance="a")
    instance, pid, start_ms = first.owner.split("/")
    assert (instance, int(pid)) == ("a", os.getpid())
    assert int(start_ms) > 0
    assert first.owner != second.owner


# recovery and rate limits (expedite, governor admissions) ----------------------------------


async def test_expedite_makes_only_waiting_retries_of_that_destination_due(
    store: Store, clock: FakeClock
) -> None:
    retrying, leased, fresh, later, elsewhere = await add_effects(
        store,
        effect("retrying", order_key="lane1"),
        effect("leased"),
        effect("fresh", not_before=clock.now + 600),
        effect("later", order_key="lane1"),
        effect("elsewhere", destination="optoro"),
    )
    assert set(await lease_ids(store)) == {retrying, leased, elsewhere}
    await store.schedule_retry(retrying, "w1", 3600, "503")
    await store.schedule_retry(elsewhere, "w1", 3600, "503")
    assert await lease_ids(store, owner="w2") == []  # the lane waits behind its head

    assert await store.expedite("kibo") == 1  # not the leased, the new or optoro's
    now_due = await store.get_effect(retrying)
    assert now_due is not None
    assert now_due.next_attempt_at == clock.now
    assert await lease_ids(store, owner="w2") == [retrying]
    await store.mark_delivered(retrying, "w2")
    assert await lease_ids(store, owner="w2") == [later]  # the lane moves on
    untouched = await store.get_effect(elsewhere)
    assert untouched is not None
    assert untouched.next_attempt_at == clock.now + 3600
    assert (await store.get_effect(fresh)).next_attempt_at == clock.now + 600  # type: ignore[union-attr]
    assert await store.expedite("kibo") == 0


async def test_admissions_are_recorded_answered_and_forgotten(
    store: Store, clock: FakeClock
) -> None:
    first = await store.record_admission("rl:team", clock.now, {}, clock.now - 60)
    clock.advance(1)
    second = await store.record_admission("rl:team", clock.now, {first: clock.now - 0.5}, 0)
    await store.record_admission("other", clock.now, {}, 0)
    assert await store.recent_admissions("rl:team", clock.now - 60) == [
        (T0, T0 + 0.5),
        (T0 + 1, None),
    ]
    clock.advance(70)
    await store.record_admission("rl:team", clock.now, {second: T0 + 1.2}, clock.now - 60)
    assert await store.recent_admissions("rl:team", 0) == [(clock.now, None)]
    assert await store.recent_admissions("other", 0) == [(T0 + 1, None)]


async def test_sending_mark_makes_an_interrupted_attempt_unknown_until_its_answer(
    store: Store, clock: FakeClock
) -> None:
    (e,) = await add_effects(store, effect("e"))
    await store.lease_effects("w1", 10, 30)
    await store.schedule_retry(e, "w1", 0, "answered 503")  # known, nothing applied
    (leased,) = await store.lease_effects("w2", 10, 30)
    assert (leased.attempts, leased.outcome_unknown) == (2, False)
    await store.mark_sending(e, "w2")
    clock.advance(31)  # w2 died during the call: its lease expires
    (leased,) = await store.lease_effects("w3", 10, 30)
    assert (leased.attempts, leased.outcome_unknown) == (3, True)
    await store.mark_sending(e, "w3")
    await store.schedule_retry(e, "w3", 0, "answered 503")  # its answer replaces it
    (leased,) = await store.lease_effects("w4", 10, 30)
    assert (leased.attempts, leased.outcome_unknown) == (4, False)
    with pytest.raises(LeaseLost):  # w3's lease is gone: it must not send
        await store.mark_sending(e, "w3")
    await store.mark_delivered(e, "w4")
    with pytest.raises(LeaseLost):
        await store.mark_sending(e, "w4")


async def test_concurrent_sending_marks_share_one_commit(sqlite_store: SqliteStore) -> None:
    ids = await add_effects(sqlite_store, *(effect(f"e{i}") for i in range(40)))
    await sqlite_store.lease_effects("w1", 100, 30)
    before = sqlite_store.commits
    await asyncio.gather(*(sqlite_store.mark_sending(i, "w1") for i in ids))
    assert sqlite_store.commits - before == 1
    marked = await sqlite_store.list_effects()
    assert {(m.last_error, m.outcome_unknown) for m in marked} == {(SENT_WITHOUT_ANSWER, True)}
    wrong_owner = await asyncio.gather(
        sqlite_store.mark_sending(ids[0], "w1"),
        sqlite_store.mark_sending(ids[1], "w2"),
        return_exceptions=True,
    )
    assert wrong_owner[0] is None
    assert isinstance(wrong_owner[1], LeaseLost)  # one refused mark does not fail the others
