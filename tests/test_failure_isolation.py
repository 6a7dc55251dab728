"""Failure isolation: one item's failure ends that item alone, never the daemon.

Engine and store level on both backends (a real SQLite file and the in-memory fake), and
the in-process daemon app (its supervised inbox worker and dispatcher) over loopback HTTP.
"""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from adapters.optoro.sandbox import scenario
from bridge.app import Runtime
from bridge.engine import DeliveryDestination, Engine, EngineSettings, HandlerContext, Outcome
from bridge.errors import StoreError
from bridge.http import Backoff, OutboundRequest, Response
from bridge.store import Effect, EffectState, InboxItem, InboxStatus, NewEffect, Store, Transaction
from bridge.store.memory import MemoryStore
from bridge.store.sqlite import SqliteStore
from tests.harness import (
    OPTITURN_ID,
    WEBHOOK_PASSWORD,
    WEBHOOK_USER,
    optoro_table,
    running_daemon,
)

KIND = "test.items"
T0 = 1_700_000_000.0
DEADLINE = 15.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest_asyncio.fixture(params=["sqlite", "memory"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    clock = Clock()
    backend: Store = (
        SqliteStore(tmp_path / "bridge.db", clock=clock)
        if request.param == "sqlite"
        else MemoryStore(clock=clock)
    )
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()


async def wait_until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while not await condition():
        assert loop.time() < deadline, f"not reached in {DEADLINE} s: {what}"
        await asyncio.sleep(0.01)


class SometimesBuggy:
    """A handler with a bug on bodies saying ``{"bug": true}``; effects to ``destination``
    for the others."""

    def __init__(self, destination: str | None = None) -> None:
        self.seen: list[int] = []
        self.destination = destination

    async def __call__(self, item: InboxItem, tx: Transaction, ctx: HandlerContext) -> Outcome:
        self.seen.append(item.id)
        body = json.loads(item.body)
        if body.get("bug"):
            raise RuntimeError(f"handler bug on item {item.id}")
        effects = []
        if self.destination is not None:
            effects.append(
                NewEffect(
                    idempotency_key=f"fx:{body['n']}",
                    destination=self.destination,
                    kind="test",
                    payload=body,
                    order_key=f"fx:{body['n']}",
                )
            )
        return Outcome(effects=effects, note=f"handled {body['n']}")


class BuggyDestination(DeliveryDestination):
    """Delivers effects whose payload has no ``bug``; raises ``RuntimeError`` (a bug in an
    adapter, not a delivery error) on the others."""

    name = "buggy"
    deadline_seconds = 3600.0

    def __init__(self) -> None:
        self.backoff = Backoff(initial=0.01, cap=0.05)
        self.delivered: list[int] = []

    async def build_request(self, effect: Effect) -> OutboundRequest:
        return OutboundRequest("POST", "http://127.0.0.1:9/fx", {}, json.dumps(effect.payload))

    async def deliver(self, effect: Effect) -> Response:
        if effect.payload.get("bug"):
            raise RuntimeError(f"destination bug on effect {effect.id}")
        self.delivered.append(effect.payload["n"])
        return Response(200, {}, b"{}")


# --- engine and store --------------------------------------------------------------------------


async def test_a_handler_bug_quarantines_that_item_and_the_next_is_processed(
    store: Store,
) -> None:
    engine = Engine(store, EngineSettings(idle_poll=0.01), instance="t")
    handler = SometimesBuggy()
    engine.add_handler(KIND, handler)
    bad = await engine.accept(None, KIND, None, b'{"bug": true, "n": 1}', {})
    good = await engine.accept(None, KIND, None, b'{"n": 2}', {})
    worker = asyncio.create_task(engine.run_inbox_worker())
    try:

        async def settled() -> bool:
            return (await store.inbox_stats()).pending == 0

        await wait_until(settled, "both items handled")
        assert not worker.done(), "the worker stopped"
        later = await engine.accept(None, KIND, None, b'{"n": 3}', {})

        async def later_done() -> bool:
            item = await store.get_inbox(later)
            return item is not None and item.status is InboxStatus.DONE

        await wait_until(later_done, "an item after the bug handled")
    finally:
        worker.cancel()
        with pytest.raises(asyncio.CancelledError):
            await worker
    bad_item, good_item = await store.get_inbox(bad), await store.get_inbox(good)
    assert bad_item is not None
    assert good_item is not None
    assert bad_item.status is InboxStatus.QUARANTINED
    assert bad_item.note == f"RuntimeError: handler bug on item {bad}"
    assert good_item.status is InboxStatus.DONE
    assert handler.seen.count(bad) == 1  # quarantined once, never retried
    assert engine.stats.quarantined == 1


async def register_dead(store: Store, owner: str, instance: str) -> None:
    """Register ``owner`` as a process of ``instance`` on this host that has exited."""
    child = await asyncio.create_subprocess_exec(sys.executable, "-c", "")
    await child.wait()
    await store.register_instance(owner, instance, socket.gethostname(), child.pid)


async def test_an_item_leased_more_than_three_times_without_an_outcome_is_quarantined(
    store: Store,
) -> None:
    """Three processes each leased the item and died (kill -9, OOM) before an outcome; each
    restart took its lease back. The fourth lease quarantines it unhandled; an item leased
    three times is still handled."""
    handler = SometimesBuggy()
    poison = await store.accept(KIND, None, b'{"n": 1}', {})
    survivor = await store.accept(KIND, None, b'{"n": 2}', {})
    for run in range(3):
        await register_dead(store, f"host/{100 + run}/x", "host")
        (leased,) = await store.lease_inbox(f"host/{100 + run}/x", 1, 60.0)
        assert leased.id == poison.inbox_id
        restarted = Engine(store, instance="host")  # the next process of this instance
        assert await restarted.take_back_leases() == 1
    engine = Engine(store, EngineSettings(), instance="host")
    engine.add_handler(KIND, handler)
    assert await engine.process_available() == 1  # leased alone: it was leased before
    assert await engine.process_available() == 1
    poisoned = await store.get_inbox(poison.inbox_id)
    kept = await store.get_inbox(survivor.inbox_id)
    assert poisoned is not None
    assert kept is not None
    assert poisoned.status is InboxStatus.QUARANTINED
    assert poisoned.attempts == 4
    assert poisoned.note is not None
    assert poisoned.note.startswith("leased 4 times without an outcome")
    assert handler.seen == [survivor.inbox_id]
    assert kept.status is InboxStatus.DONE

    assert await engine.replay_inbox(poison.inbox_id)  # an operator's replay starts afresh
    replayed = await store.get_inbox(poison.inbox_id)
    assert replayed is not None
    assert replayed.attempts == 0
    assert await engine.process_available() == 1
    done = await store.get_inbox(poison.inbox_id)
    assert done is not None
    assert done.status is InboxStatus.DONE


async def test_refused_input_is_committed_quarantined_and_never_leased(store: Store) -> None:
    refused = await store.accept("acme:x", None, b"{bad", {}, "acme", quarantine="body: not JSON")
    assert refused.duplicate is False
    item = await store.get_inbox(refused.inbox_id)
    assert item is not None
    assert (item.status, item.note) == (InboxStatus.QUARANTINED, "body: not JSON")
    assert await store.lease_inbox("w", 10, 60.0) == []
    again = await store.accept("acme:x", None, b"{bad", {}, "acme", quarantine="body: not JSON")
    assert again == type(refused)(refused.inbox_id, True)
    assert (await store.inbox_stats()).quarantined == 1
    assert (await store.inbox_stats()).duplicates == 1


async def test_a_destination_bug_dead_letters_that_effect_alone(store: Store) -> None:
    engine = Engine(store, EngineSettings(idle_poll=0.01), instance="t")
    destination = BuggyDestination()
    engine.add_destination(destination)
    async with store.transaction() as tx:
        for n, bug in ((1, True), (2, False)):
            await tx.add_effect(
                NewEffect(f"fx:{n}", "buggy", "test", {"n": n, "bug": bug}, order_key=f"k{n}")
            )
    for effect in await store.lease_effects(engine.owner, 10, 60.0):
        await engine.deliver(effect)  # never raises
    (dead,) = await store.list_effects(EffectState.DEAD)
    assert dead.dead_reason == f"RuntimeError: destination bug on effect {dead.id}"
    assert dead.dead_request is not None
    assert destination.delivered == [2]


# --- the daemon app --------------------------------------------------------------------------


def guide_rma() -> bytes:
    step = next(s for s in scenario(1).steps if s.path == "/rmas")
    return json.dumps(step.request).encode()


def _auth() -> dict[str, str]:
    token = base64.b64encode(f"{WEBHOOK_USER}:{WEBHOOK_PASSWORD}".encode()).decode()
    return {"Authorization": f"Basic {token}", "X-Optiturn-Id": OPTITURN_ID}


async def test_the_running_daemon_outlives_a_destination_bug(tmp_path: Path) -> None:
    destination = BuggyDestination()
    handler = SometimesBuggy(destination="buggy")

    def wire(runtime: Runtime) -> None:
        runtime.engine.add_handler(KIND, handler)
        runtime.engine.add_destination(destination)

    async with (
        running_daemon(tmp_path, optoro_table("http://127.0.0.1:9"), before_start=wire) as d,
        aiohttp.ClientSession() as session,
    ):
        engine = d.runtime.engine
        await engine.accept(None, KIND, None, b'{"n": 1, "bug": false}', {})
        await engine.accept(None, KIND, None, b'{"n": 2, "bug": 0}', {})
        async with d.runtime.store.transaction() as tx:
            await tx.add_effect(NewEffect("fx:bug", "buggy", "test", {"n": 9, "bug": True}))
        engine.wake_dispatcher()
        await d.settle()
        (dead,) = await d.runtime.store.list_effects(EffectState.DEAD)
        assert dead.dead_reason is not None
        assert dead.dead_reason.startswith("RuntimeError: destination bug on effect")
        await engine.accept(None, KIND, None, b'{"n": 3}', {})
        await d.settle()
        assert sorted(destination.delivered) == [1, 2, 3]
        async with session.get(f"{d.url}/healthz") as resp:
            assert resp.status == 200
        async with session.get(f"{d.url}/readyz") as resp:
            assert resp.status == 200, await resp.text()
        assert not d.runtime.fatal.is_set()


async def test_a_crashed_side_task_is_restarted_and_shown_on_readyz(tmp_path: Path) -> None:
    crashes: list[str] = []

    def inject(runtime: Runtime) -> None:
        runtime.side_task_backoff = 0.05
        runtime.side_task_stable = 1.0
        original = runtime.engine.process_available

        async def crashing_once() -> int:
            if not crashes:
                crashes.append("once")
                raise RuntimeError("injected worker crash")
            return await original()

        runtime.engine.process_available = crashing_once  # type: ignore[method-assign]

    async with (
        running_daemon(tmp_path, optoro_table("http://127.0.0.1:9"), before_start=inject) as d,
        aiohttp.ClientSession() as session,
    ):
        seen: dict[str, Any] = {}

        async def reported() -> bool:
            async with session.get(f"{d.url}/readyz") as resp:
                body = await resp.json()
                seen.update(body)
                return resp.status == 503 and "task:inbox-worker" in body.get("problems", {})

        await wait_until(reported, "/readyz naming the crashed worker")
        assert "RuntimeError: injected worker crash" in seen["problems"]["task:inbox-worker"]

        async with session.post(
            d.retailer_url("optoro", "rmas"), data=guide_rma(), headers=_auth()
        ) as resp:
            assert resp.status == 200
            inbox_id = (await resp.json())["inbox_id"]

        async def processed() -> bool:
            item = await d.runtime.store.get_inbox(inbox_id)
            return item is not None and item.status is InboxStatus.DONE

        await wait_until(processed, "an RMA handled by the restarted worker")

        async def ready_again() -> bool:
            async with session.get(f"{d.url}/readyz") as resp:
                return resp.status == 200

        await wait_until(ready_again, "/readyz 200 once the restarted worker is stable")
        assert d.runtime.side_task_restarts == {"inbox-worker": 1}
        assert not d.runtime.fatal.is_set()


async def test_a_retry_of_a_quarantined_body_that_now_validates_is_processed(
    tmp_path: Path,
) -> None:
    """Wrong X-Optiturn-Id: stored quarantined (503, Optoro retries); the retry with the
    right header is the same body: it is re-queued and processed, not a mere duplicate."""
    body = guide_rma()
    async with (
        running_daemon(tmp_path, optoro_table("http://127.0.0.1:9")) as d,
        aiohttp.ClientSession() as session,
    ):
        url = d.retailer_url("optoro", "rmas")
        async with session.post(
            url, data=body, headers={**_auth(), "X-Optiturn-Id": "someone-else"}
        ) as resp:
            assert resp.status == 503
            refused = await resp.json()
        inbox_id = refused["error"]["inbox_id"]
        item = await d.runtime.store.get_inbox(inbox_id)
        assert item is not None
        assert item.status is InboxStatus.QUARANTINED
        async with session.post(url, data=body, headers=_auth()) as resp:
            assert resp.status == 200
            assert (await resp.json())["inbox_id"] == inbox_id

        async def processed() -> bool:
            current = await d.runtime.store.get_inbox(inbox_id)
            return current is not None and current.status is InboxStatus.DONE

        await wait_until(processed, "the retried body processed")


POISON_CHILD = Path(__file__).resolve().with_name("poison_child.py")


async def test_an_item_that_kills_the_process_does_not_crash_loop_it(tmp_path: Path) -> None:
    """A handler that SIGKILLs its process on one item: each restart leases it again, and
    the fourth lease quarantines it unhandled, so the fourth process lives on and handles
    the item behind it."""
    db = tmp_path / "poison.db"
    seed = SqliteStore(db)
    await seed.open()
    try:
        poison = await seed.accept("test.poison", None, b'{"poison": true}', {})
        after = await seed.accept("test.poison", None, b'{"n": 2}', {})
    finally:
        await seed.close()
    codes = []
    for _ in range(6):
        child = await asyncio.create_subprocess_exec(
            sys.executable, str(POISON_CHILD), str(db), cwd=POISON_CHILD.parent.parent
        )
        codes.append(await asyncio.wait_for(child.wait(), DEADLINE))
        if codes[-1] == 0:
            break
    assert codes == [-signal.SIGKILL] * 3 + [0]
    check = SqliteStore(db)
    await check.open()
    try:
        poisoned = await check.get_inbox(poison.inbox_id)
        handled = await check.get_inbox(after.inbox_id)
    finally:
        await check.close()
    assert poisoned is not None
    assert poisoned.status is InboxStatus.QUARANTINED
    assert (poisoned.note or "").startswith("leased 4 times without an outcome")
    assert handled is not None
    assert handled.status is InboxStatus.DONE


async def test_an_item_leased_before_without_an_outcome_is_leased_alone(store: Store) -> None:
    """So that a crash is blamed on the item being handled, not on its batch mates."""
    ids = [
        (await store.accept(KIND, None, f'{{"n": {n}}}'.encode(), {})).inbox_id for n in range(4)
    ]
    await register_dead(store, "host/1/a", "host")
    first = await store.lease_inbox("host/1/a", 10, 60.0)
    assert [i.id for i in first] == ids
    assert await Engine(store, instance="host").take_back_leases() == 4
    again = await store.lease_inbox("host/2/a", 10, 60.0)
    assert [(i.id, i.attempts) for i in again] == [(ids[0], 2)]
    fresh = (await store.accept(KIND, None, b'{"n": 9}', {})).inbox_id
    rest = await store.lease_inbox("host/2/a", 10, 60.0)
    assert [(i.id, i.attempts) for i in rest] == [(ids[1], 2)]
    assert fresh not in {i.id for i in rest}


async def test_an_unusable_store_stops_the_daemon(tmp_path: Path) -> None:
    """The one failure that is not isolated: with the store gone, the supervised worker's
    crash is fatal (the daemon exits 1 through ``runtime.fatal``)."""
    holder: dict[str, Runtime] = {}

    def inject(runtime: Runtime) -> None:
        holder["runtime"] = runtime
        runtime.side_task_backoff = 0.01

        async def store_gone() -> int:
            raise StoreError("disk I/O error")

        async def no_answer() -> bool:
            return False

        runtime.engine.process_available = store_gone  # type: ignore[method-assign]
        runtime.store.ping = no_answer  # type: ignore[method-assign]

    async def run_until_fatal() -> None:
        async with running_daemon(
            tmp_path, optoro_table("http://127.0.0.1:9"), before_start=inject
        ) as d:

            async def fatal() -> bool:
                return d.runtime.fatal.is_set()

            await wait_until(fatal, "the daemon giving up on its store")

    with pytest.raises(AssertionError, match="inbox-worker crashed: StoreError: disk I/O error"):
        await run_until_fatal()
    assert holder["runtime"].side_task_restarts == {}
