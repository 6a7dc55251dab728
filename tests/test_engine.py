"""The delivery engine against a real loopback destination and a real SQLite file."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.engine import Engine, EngineSettings
from bridge.errors import (
    BridgeError,
    ConfigError,
    CredentialsRefused,
    DeliveryError,
    MappingError,
    NotReady,
    PermanentDeliveryError,
    RetriableDeliveryError,
)
from bridge.http import Backoff, HttpClient
from bridge.inbound import receive
from bridge.store import EffectState, InboxStatus
from bridge.store.memory import MemoryStore
from bridge.store.sqlite import SqliteStore
from tests.destination_server import FakeDestination, running_destination
from tests.engine_support import KIND, MilestoneHandler, PartnerDestination, event, parse_event


@pytest_asyncio.fixture
async def dest() -> AsyncIterator[FakeDestination]:
    async with running_destination(seed=7) as destination:
        yield destination


@pytest_asyncio.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    sqlite = SqliteStore(tmp_path / "engine.db")
    await sqlite.open()
    yield sqlite
    await sqlite.close()


def make_engine(
    store: SqliteStore | MemoryStore,
    dest: FakeDestination,
    session: aiohttp.ClientSession,
    handler: MilestoneHandler | None = None,
    **dest_kwargs: object,
) -> Engine:
    engine = Engine(store, EngineSettings(idle_poll=0.02, effect_lease=30.0))
    engine.add_handler(KIND, handler or MilestoneHandler())
    engine.add_destination(PartnerDestination(dest.url, HttpClient(session), **dest_kwargs))  # type: ignore[arg-type]
    return engine


async def drain(engine: Engine, until: float = 10.0) -> None:
    """Run the daemon's inbox worker and dispatcher until nothing is pending (retries
    included) or ``until`` s pass, then stop them as the daemon does."""
    stop = asyncio.Event()
    worker = asyncio.create_task(engine.run_inbox_worker())
    dispatcher = asyncio.create_task(engine.run_dispatcher(stop, drain_seconds=5.0))
    try:
        deadline = time.monotonic() + until
        while time.monotonic() < deadline:
            if dispatcher.done():
                dispatcher.result()  # a crashed dispatcher fails the test with its error
            due = await engine.store.next_effect_due()
            stats = await engine.store.inbox_stats()
            leased = await engine.store.list_effects(EffectState.PENDING)
            if due is None and stats.pending == 0 and not leased:
                return
            await asyncio.sleep(0.01)
        raise AssertionError("engine did not drain in time")
    finally:
        worker.cancel()
        stop.set()
        await asyncio.gather(worker, return_exceptions=True)
        await dispatcher


def test_error_taxonomy_is_pinned() -> None:
    assert issubclass(ConfigError, BridgeError)
    assert issubclass(MappingError, BridgeError)
    assert issubclass(RetriableDeliveryError, DeliveryError)
    assert issubclass(PermanentDeliveryError, DeliveryError)
    assert issubclass(NotReady, RetriableDeliveryError)
    assert issubclass(CredentialsRefused, PermanentDeliveryError)  # a dead letter, at once
    assert str(CredentialsRefused()).startswith("credentials refused")
    assert not RetriableDeliveryError("x").outcome_unknown  # unknown only when said so
    assert not issubclass(PermanentDeliveryError, RetriableDeliveryError)
    assert "returns-bridge check" in str(ConfigError())
    assert RetriableDeliveryError("x", status=429, retry_after=3).retry_after == 3


async def test_event_becomes_one_effect_per_milestone(store, dest, session) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine(store, dest, session)
    await engine.accept("acme", KIND, None, event("a", 2), {})
    await drain(engine)
    assert dest.applied == {
        "a:m1": {"entity": "a", "milestone": 1, "label": "a/1"},
        "a:m2": {"entity": "a", "milestone": 2, "label": "a/2"},
    }
    assert all(r.headers["Idempotency-Key"] == r.key for r in dest.requests)
    delivered = await store.list_effects(EffectState.DELIVERED)
    assert [e.idempotency_key for e in delivered] == ["a:m1", "a:m2"]


async def test_retry_then_success(store, dest, session) -> None:  # type: ignore[no-untyped-def]
    dest.configure(fail_next=2, fail_status=503)
    engine = make_engine(store, dest, session)
    await engine.accept("acme", KIND, None, event("r", 1), {})
    await drain(engine)
    assert dest.applications == {"r:m1": 1}
    assert [r.outcome for r in dest.requests] == ["failed:503", "failed:503", "applied"]
    (effect,) = await store.list_effects(EffectState.DELIVERED)
    assert effect.attempts == 3
    assert engine.stats.retried == 2


async def test_429_retry_after_is_respected(store, dest, session) -> None:  # type: ignore[no-untyped-def]
    dest.configure(fail_next=1, fail_status=429, fail_retry_after=1)
    engine = make_engine(store, dest, session)
    await engine.accept("acme", KIND, None, event("t", 1), {})
    started = time.monotonic()
    await drain(engine)
    waited = time.monotonic() - started
    assert dest.applications == {"t:m1": 1}
    assert [r.outcome for r in dest.requests] == ["failed:429", "applied"]
    assert waited >= 0.95, f"retried after {waited:.3f}s despite Retry-After: 1"


async def test_permanent_4xx_is_dead_lettered_with_request_and_response(
    store, dest, session
) -> None:  # type: ignore[no-untyped-def]
    dest.configure(fail_next=1, fail_status=400)
    engine = make_engine(store, dest, session)
    await engine.accept("acme", KIND, None, event("d", 1), {})
    await drain(engine)
    (dead,) = await store.list_effects(EffectState.DEAD)
    assert dead.attempts == 1
    assert "answered 400" in (dead.dead_reason or "")
    assert dead.dead_request["method"] == "POST"
    assert dead.dead_request["json"] == {"entity": "d", "milestone": 1, "label": "d/1"}
    assert dead.dead_request["headers"]["Idempotency-Key"] == "d:m1"
    assert dead.dead_response["status"] == 400
    assert "injected failure" in dead.dead_response["body"]
    assert dest.applied == {}


async def test_retriable_failure_past_deadline_is_dead_lettered(store, dest, session) -> None:  # type: ignore[no-untyped-def]
    dest.configure(fail_next=100, fail_status=503)
    engine = make_engine(store, dest, session, deadline_seconds=0.3)
    await engine.accept("acme", KIND, None, event("late", 1), {})
    await drain(engine)
    (dead,) = await store.list_effects(EffectState.DEAD)
    assert (dead.dead_reason or "").startswith("deadline passed")
    assert dead.attempts >= 2


async def test_replay_remaps_from_stored_input_and_dry_run_sends_nothing(
    store, dest, session
) -> None:  # type: ignore[no-untyped-def]
    handler = MilestoneHandler(include_label=False)
    dest.configure(fail_next=1, fail_status=400)
    engine = make_engine(store, dest, session, handler)
    await engine.accept("acme", KIND, None, event("x", 1), {})
    await drain(engine)
    (dead,) = await store.list_effects(EffectState.DEAD)
    assert "label" not in dead.payload

    handler.include_label = True  # the mapping is fixed
    requests_before = len(dest.requests)
    preview = await engine.replay(dead.id, dry_run=True)
    assert preview.json == {"entity": "x", "milestone": 1, "label": "x/1"}
    assert preview.headers["Idempotency-Key"] == "x:m1"
    assert len(dest.requests) == requests_before
    assert (await store.get_effect(dead.id)).state is EffectState.DEAD  # type: ignore[union-attr]

    await engine.replay(dead.id)
    await drain(engine)
    assert dest.applied == {"x:m1": {"entity": "x", "milestone": 1, "label": "x/1"}}
    assert (await store.get_effect(dead.id)).state is EffectState.DELIVERED  # type: ignore[union-attr]
    with pytest.raises(BridgeError, match="not a dead letter"):
        await engine.replay(dead.id)


async def test_effects_of_one_entity_deliver_in_order(store, dest, session) -> None:  # type: ignore[no-untyped-def]
    dest.configure(fail_next=1, fail_status=503)
    engine = make_engine(store, dest, session)
    await engine.accept("acme", KIND, None, event("o", 4), {})
    await drain(engine)
    applied_order = [r.key for r in dest.requests if r.outcome == "applied"]
    assert applied_order == ["o:m1", "o:m2", "o:m3", "o:m4"]


async def test_stale_and_duplicate_events_change_nothing(store, dest, session) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine(store, dest, session)
    first = await engine.accept("acme", KIND, None, event("s", 3), {})
    again = await engine.accept("acme", KIND, None, event("s", 3), {})
    assert again == first
    await engine.accept("acme", KIND, None, event("s", 2), {})
    await drain(engine)
    stats = await store.inbox_stats()
    assert (stats.done, stats.superseded, stats.duplicates) == (1, 1, 1)
    assert sorted(dest.applied) == ["s:m1", "s:m2", "s:m3"]


async def test_unmappable_input_is_quarantined_and_replayable(store, dest, session) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine(store, dest, session)
    inbox_id = await engine.accept("acme", KIND, None, b'{"entity": "q", "version": "one"}', {})
    await drain(engine)
    (item,) = await store.list_inbox(InboxStatus.QUARANTINED)
    assert item.id == inbox_id
    assert item.note == "version: version must be a int"
    assert item.body == b'{"entity": "q", "version": "one"}'
    assert await engine.replay_inbox(inbox_id)
    await drain(engine)
    assert (await store.get_inbox(inbox_id)).status is InboxStatus.QUARANTINED  # type: ignore[union-attr]


async def _webhook_server(engine: Engine) -> tuple[web.AppRunner, str]:
    async def handle(request: web.Request) -> web.Response:
        return await receive(request, engine, retailer="acme", kind=KIND, validate=parse_event)

    app = web.Application(client_max_size=4096)
    app.router.add_post("/events", handle)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = next(a[1] for a in runner.addresses if isinstance(a, tuple))
    return runner, f"http://127.0.0.1:{port}/events"


async def test_webhook_acks_after_commit_and_group_commits(store, dest, session) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine(store, dest, session)
    runner, url = await _webhook_server(engine)
    try:
        commits_before = store.commits
        n = 100

        async def post(i: int) -> int:
            async with session.post(url, data=event(f"g{i}", 1)) as resp:
                return resp.status

        statuses = await asyncio.gather(*(post(i) for i in range(n)))
        assert statuses == [200] * n
        commits = store.commits - commits_before
        assert commits < n, f"{commits} commits for {n} acks"
        stats = await store.inbox_stats()
        assert stats.pending == n

        async with session.post(url, data=b'{"entity": "bad", "version": 1}') as resp:
            assert resp.status == 422
            error = (await resp.json())["error"]
        assert error["field"] == "stage"
        assert error["quarantined"] is True
        async with session.post(url, data=b"x" * 5000) as resp:
            assert resp.status == 413
            assert (await resp.json())["error"]["field"] == "body"
        async with session.post(url, data=event("after-bad", 1)) as resp:
            assert resp.status == 200
        assert (await store.inbox_stats()).quarantined == 1
    finally:
        await runner.cleanup()


events_strategy = st.lists(
    st.tuples(st.sampled_from(["e1", "e2", "e3"]), st.integers(min_value=1, max_value=5)),
    min_size=1,
    max_size=14,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(events=events_strategy, data=st.data())
def test_any_permutation_with_duplicates_gives_same_state_and_effects(events, data) -> None:  # type: ignore[no-untyped-def]
    """Delivered in any order, with duplicates, the same events end in the same state and
    the same single set of effects (computed from the newest version per entity)."""
    shuffled = data.draw(
        st.permutations(events + data.draw(st.lists(st.sampled_from(events), max_size=6)))
    )

    async def run() -> tuple[dict[str, int], list[str]]:
        async with running_destination() as dest, aiohttp.ClientSession() as client:
            memory = MemoryStore()
            await memory.open()
            try:
                engine = make_engine(memory, dest, client)
                for entity, version in shuffled:
                    await engine.accept("acme", KIND, None, event(entity, version), {})
                    if version % 2:
                        await engine.process_available()
                await drain(engine)
                state = {}
                async with memory.transaction() as tx:
                    for entity in {e for e, _ in events}:
                        stored = await tx.get_entity("thing", entity)
                        assert stored is not None
                        state[entity] = stored.data["stage"]
                assert all(count == 1 for count in dest.applications.values())
                return state, sorted(dest.applied)
            finally:
                await memory.close()

    state, effects = asyncio.run(run())
    newest = {entity: max(v for e, v in events if e == entity) for entity, _ in events}
    assert state == newest
    assert effects == sorted(
        f"{entity}:m{m}" for entity, top in newest.items() for m in range(1, top + 1)
    )


def test_backoff_is_capped_full_jitter_and_honours_retry_after() -> None:
    backoff = Backoff(initial=1.0, cap=60.0)
    delays = [backoff.delay(attempt) for attempt, _ in itertools.product(range(1, 12), range(20))]
    assert all(0 <= d <= 60.0 for d in delays)
    assert max(delays) > 30  # grows towards the cap
    assert min(delays) < 1  # full jitter reaches near zero
    assert backoff.delay(1, retry_after=42.0) >= 42.0
