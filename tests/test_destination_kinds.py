"""Destination kinds through the engine's dispatcher, over real loopback sockets and a real
SQLite file: what a failed attempt says about whether its request may have reached the
partner (a refused connection and a connect timeout: known not sent; a server that accepts
then stalls: unknown), reads that are never of unknown outcome and apply what they found
in the recording transaction, and credentials that cannot be refreshed (a 401 is a dead
letter at once) against those that can (one refresh, one resend).

The client session is built as the daemon builds it (the send tracker's trace config), and
effects are dispatched by :meth:`Engine.run_dispatcher`, the daemon's loop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest_asyncio
from pydantic import SecretStr

from bridge.engine import (
    Absent,
    Engine,
    EngineSettings,
    Fetched,
    Found,
    ReadDestination,
    Skipped,
)
from bridge.errors import PermanentDeliveryError
from bridge.http import (
    Authorized,
    Backoff,
    DestinationLimits,
    HttpClient,
    OutboundRequest,
    Response,
    StaticCredentials,
    with_headers,
)
from bridge.http.sent import SendTracker
from bridge.store import Effect, EffectState, NewEffect, Transaction
from bridge.store.base import SENT_WITHOUT_ANSWER
from bridge.store.sqlite import SqliteStore
from tests.daemon_process import until
from tests.destination_server import FakeDestination, running_destination
from tests.engine_support import PartnerDestination

TIMEOUT = 0.5
"""The destinations' request timeout (s): short, so a stalled attempt ends quickly."""


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    sqlite = SqliteStore(tmp_path / "kinds.db")
    await sqlite.open()
    yield sqlite
    await sqlite.close()


@pytest_asyncio.fixture
async def tracker() -> SendTracker:
    return SendTracker()


@pytest_asyncio.fixture
async def session(tracker: SendTracker) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(
        raise_for_status=False, trace_configs=[tracker.trace_config]
    ) as client:
        yield client


@pytest_asyncio.fixture
async def dest() -> AsyncIterator[FakeDestination]:
    async with running_destination(seed=11) as destination:
        yield destination


class RecordingPartner(PartnerDestination):
    """The engine tests' partner, noting whether each attempt was handed an unknown outcome."""

    def __init__(self, url: str, http: HttpClient, **kwargs: object) -> None:
        super().__init__(url, http, **kwargs)  # type: ignore[arg-type]
        self.limits.timeout = TIMEOUT
        self.handed_unknown: list[bool] = []

    async def deliver(self, effect: Effect) -> Response:
        self.handed_unknown.append(effect.outcome_unknown)
        return await super().deliver(effect)


def engine_for(store: SqliteStore, *destinations: object) -> Engine:
    engine = Engine(store, EngineSettings(idle_poll=0.02, effect_lease=30.0), instance="kinds")
    for destination in destinations:
        engine.add_destination(destination)  # type: ignore[arg-type]
    return engine


@contextlib.asynccontextmanager
async def dispatching(engine: Engine, tracker: SendTracker) -> AsyncIterator[None]:
    """The daemon's dispatcher loop for the block; stopped (drained) at its end."""
    stop = asyncio.Event()
    task = asyncio.create_task(engine.run_dispatcher(stop, drain_seconds=2.0, sends=tracker))
    try:
        yield
    finally:
        stop.set()
        await task


async def add(store: SqliteStore, key: str, destination: str = "partner", **payload: object) -> int:
    async with store.transaction() as tx:
        assert await tx.add_effect(NewEffect(key, destination, "test", dict(payload)))
    (effect,) = [e for e in await store.list_effects() if e.idempotency_key == key]
    return effect.id


async def stored(store: SqliteStore, effect_id: int) -> Effect:
    effect = await store.get_effect(effect_id)
    assert effect is not None
    return effect


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A loopback port nothing listens on (bound, then closed: connecting is refused)."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = int(probe.getsockname()[1])
    probe.close()
    yield port


@contextlib.contextmanager
def full_listener() -> Iterator[int]:
    """A loopback port whose accept queue is full: a new connection's handshake never
    completes, so connecting times out (no request can be sent)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = int(server.getsockname()[1])
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    try:
        yield port
    finally:
        for filler in fillers:
            filler.close()
        server.close()


# --- whether a failed attempt may have reached the partner ------------------------------------


async def _first_failure(
    store: SqliteStore, engine: Engine, tracker: SendTracker, effect_id: int
) -> Effect:
    async with dispatching(engine, tracker):

        async def failed() -> bool:
            last_error = (await stored(store, effect_id)).last_error
            return last_error not in (None, SENT_WITHOUT_ANSWER)  # an outcome, not the mark

        await until(failed, 10, "the first attempt's failure recorded")
    return await stored(store, effect_id)  # the dispatcher stopped: nothing in flight


async def test_a_refused_connection_is_retried_as_known_not_sent(
    store: SqliteStore, session: aiohttp.ClientSession, tracker: SendTracker
) -> None:
    with closed_port() as port:
        partner = RecordingPartner(f"http://127.0.0.1:{port}", HttpClient(session))
        engine = engine_for(store, partner)
        effect_id = await add(store, "refused:1")
        effect = await _first_failure(store, engine, tracker, effect_id)
    assert effect.state is EffectState.PENDING
    assert "could not connect" in (effect.last_error or "")
    assert "not sent" in (effect.last_error or "")
    assert not effect.outcome_unknown
    assert not any(partner.handed_unknown)  # no attempt had to settle an unknown outcome


async def test_a_connect_timeout_is_retried_as_known_not_sent(
    store: SqliteStore, session: aiohttp.ClientSession, tracker: SendTracker
) -> None:
    with full_listener() as port:
        partner = RecordingPartner(f"http://127.0.0.1:{port}", HttpClient(session))
        engine = engine_for(store, partner)
        effect_id = await add(store, "stuck-connect:1")
        effect = await _first_failure(store, engine, tracker, effect_id)
    assert "not sent" in (effect.last_error or ""), effect.last_error
    assert not effect.outcome_unknown
    assert not any(partner.handed_unknown)


async def test_a_server_that_accepts_then_stalls_leaves_the_outcome_unknown(
    store: SqliteStore,
    session: aiohttp.ClientSession,
    tracker: SendTracker,
    dest: FakeDestination,
) -> None:
    dest.latency = 30.0  # reads the request, then answers nothing within the timeout
    partner = RecordingPartner(dest.url, HttpClient(session))
    engine = engine_for(store, partner)
    effect_id = await add(store, "stall:1", entity="s", milestone=1)
    effect = await _first_failure(store, engine, tracker, effect_id)
    assert "outcome unknown" in (effect.last_error or ""), effect.last_error
    assert effect.outcome_unknown
    assert dest.attempts["stall:1"] >= 1

    dest.latency = 0.0
    async with dispatching(engine, tracker):

        async def delivered() -> bool:
            return (await stored(store, effect_id)).state is EffectState.DELIVERED

        await until(delivered, 10, "the retry delivered")
    assert partner.handed_unknown[0] is False
    assert partner.handed_unknown[-1] is True  # the retry knew it had to settle it


# --- reads ---------------------------------------------------------------------------------


class ThingRead(ReadDestination):
    """Reads ``GET <url>/things/<id>`` and keeps what it found as entity ``thing.read``; a
    found thing causes one follow-up effect to the partner, committed with the read."""

    backoff = Backoff(initial=0.01, cap=0.05)

    def __init__(self, url: str, http: HttpClient, store: SqliteStore) -> None:
        self.name = "things"
        self.url = url
        self.http = http
        self.store = store
        self.limits = DestinationLimits("things", timeout=TIMEOUT)

    async def build_request(self, effect: Effect) -> OutboundRequest:
        return OutboundRequest("GET", f"{self.url}/things/{effect.payload['id']}", {})

    async def fetch(self, effect: Effect) -> Fetched:
        if effect.payload.get("covered"):
            return Skipped("covered by a later read")
        started = self.store.clock()
        try:
            response = await self.http.send(await self.build_request(effect), self.limits)
        except PermanentDeliveryError as exc:
            if exc.status == 404:
                return Absent(started)
            raise
        return Found(response.body, started)

    async def apply(
        self, tx: Transaction, effect: Effect, fetched: Found | Absent
    ) -> list[NewEffect]:
        thing = str(effect.payload["id"])
        if isinstance(fetched, Absent):
            await tx.put_entity("thing.read", thing, (0,), {"absent": True})
            return []
        await tx.put_entity("thing.read", thing, (0,), {"found": json.loads(fetched.body)})
        return [NewEffect(f"follow:{thing}", "partner", "test", {"entity": thing, "milestone": 1})]


async def test_a_read_is_never_of_unknown_outcome_and_applies_in_the_recording_transaction(
    store: SqliteStore,
    session: aiohttp.ClientSession,
    tracker: SendTracker,
    dest: FakeDestination,
) -> None:
    http = HttpClient(session)
    partner = RecordingPartner(dest.url, http)
    engine = engine_for(store, ThingRead(dest.url, http, store), partner)
    dest.latency = 30.0  # the first read stalls after its request was sent
    read_id = await add(store, "read:a", "things", id="a")
    async with dispatching(engine, tracker):

        async def stalled() -> bool:
            return dest.in_flight > 0

        await until(stalled, 10, "the read in flight")
        in_flight = await stored(store, read_id)
        assert in_flight.last_error is None  # a read is never recorded as maybe sent
        assert not in_flight.outcome_unknown

        async def timed_out() -> bool:
            return (await stored(store, read_id)).last_error is not None

        await until(timed_out, 10, "the stalled read timed out")
        dest.latency = 0.0

        async def done() -> bool:
            effects = await store.list_effects()
            return len(effects) == 2 and all(e.state is EffectState.DELIVERED for e in effects)

        await until(done, 10, "the read applied and its follow-up delivered")
    read = await stored(store, read_id)
    assert read.attempts >= 2
    assert not read.outcome_unknown
    assert read.result["found"] is True
    async with store.transaction() as tx:
        entity = await tx.get_entity("thing.read", "a")
    assert entity is not None
    assert entity.data["found"]["id"].startswith("unkeyed-")  # what the GET answered
    assert dest.applications == {"follow:a": 1}  # the follow-up, committed with the read
    assert partner.handed_unknown == [False]


async def test_a_read_of_nothing_is_absent_and_a_covered_read_sends_nothing(
    store: SqliteStore,
    session: aiohttp.ClientSession,
    tracker: SendTracker,
    dest: FakeDestination,
) -> None:
    http = HttpClient(session)
    engine = engine_for(store, ThingRead(dest.url, http, store), RecordingPartner(dest.url, http))
    dest.configure(fail_next=1, fail_status=404)
    absent_id = await add(store, "read:gone", "things", id="gone")
    covered_id = await add(store, "read:covered", "things", id="c", covered=True)
    async with dispatching(engine, tracker):

        async def done() -> bool:
            states = [(await stored(store, i)).state for i in (absent_id, covered_id)]
            return states == [EffectState.DELIVERED] * 2

        await until(done, 10, "both reads recorded")
    absent = await stored(store, absent_id)
    assert absent.result["found"] is False
    assert (await stored(store, covered_id)).result == {"skipped": "covered by a later read"}
    assert [r.path for r in dest.requests] == ["/things/gone"]  # the covered one sent nothing
    async with store.transaction() as tx:
        gone = await tx.get_entity("thing.read", "gone")
        covered = await tx.get_entity("thing.read", "c")
    assert gone is not None
    assert gone.data == {"absent": True}
    assert covered is None


async def test_a_read_cut_short_by_a_stop_is_released_not_left_unknown(
    store: SqliteStore,
    session: aiohttp.ClientSession,
    tracker: SendTracker,
    dest: FakeDestination,
) -> None:
    """Its request was with the partner when the drain ran out, but a read changes nothing:
    it is given back as not attempted, free for the next start at once."""
    engine = engine_for(store, ThingRead(dest.url, HttpClient(session), store))
    dest.latency = 30.0
    read_id = await add(store, "read:cut", "things", id="cut")
    stop = asyncio.Event()
    task = asyncio.create_task(engine.run_dispatcher(stop, drain_seconds=0.05, sends=tracker))

    def stalled() -> bool:
        return dest.in_flight > 0

    await until(stalled, 10, "the read in flight")
    stop.set()
    report = await task
    assert (report.released_unsent, report.cancelled) == ([read_id], [])
    read = await stored(store, read_id)
    assert (read.state, read.attempts, read.outcome_unknown) == (EffectState.PENDING, 0, False)
    assert [e.id for e in await store.lease_effects("next-start", 10, 30.0)] == [read_id]


# --- credentials ---------------------------------------------------------------------------


async def test_a_401_to_credentials_that_cannot_be_refreshed_is_a_dead_letter_at_once(
    store: SqliteStore,
    session: aiohttp.ClientSession,
    tracker: SendTracker,
    dest: FakeDestination,
) -> None:
    token = SecretStr("Bearer static-token")
    static = StaticCredentials({"Authorization": token.get_secret_value()}, token)
    partner = RecordingPartner(dest.url, HttpClient(session), credentials=static)
    engine = engine_for(store, partner)
    dest.configure(fail_next=5, fail_status=401)
    effect_id = await add(store, "static:1", entity="t", milestone=1)
    async with dispatching(engine, tracker):

        async def dead() -> bool:
            return (await stored(store, effect_id)).state is EffectState.DEAD

        await until(dead, 10, "the dead letter")
    effect = await stored(store, effect_id)
    assert (effect.dead_reason or "").startswith("credentials refused (401)")
    assert "cannot be refreshed" in (effect.dead_reason or "")
    assert effect.attempts == 1
    assert len(dest.requests) == 1
    assert dest.requests[0].headers["Authorization"] == "Bearer static-token"
    assert "static-token" not in json.dumps(effect.dead_request)  # attached, never kept


class RotatingToken:
    """Refreshable credentials: a refused token is replaced by the next one."""

    refreshable = True

    def __init__(self) -> None:
        self.current = 1
        self.refreshes = 0

    async def ready(self) -> None:
        """Never waits (refreshes are instant)."""

    async def authorize(self, request: OutboundRequest) -> Authorized:
        token = SecretStr(f"token-{self.current}")
        return Authorized(
            with_headers(request, {"Authorization": f"Bearer {token.get_secret_value()}"}),
            token,
        )

    async def refused(self, credential: SecretStr) -> None:
        if credential.get_secret_value() == f"token-{self.current}":
            self.current += 1
            self.refreshes += 1


async def test_a_401_to_refreshable_credentials_refreshes_once_and_resends_once(
    store: SqliteStore,
    session: aiohttp.ClientSession,
    tracker: SendTracker,
    dest: FakeDestination,
) -> None:
    rotating = RotatingToken()
    partner = RecordingPartner(dest.url, HttpClient(session), credentials=rotating)
    engine = engine_for(store, partner)
    dest.configure(fail_next=1, fail_status=401)
    effect_id = await add(store, "rotating:1", entity="r", milestone=1)
    async with dispatching(engine, tracker):

        async def delivered() -> bool:
            return (await stored(store, effect_id)).state is EffectState.DELIVERED

        await until(delivered, 10, "the delivery after one refresh")
    effect = await stored(store, effect_id)
    assert effect.attempts == 1  # the resend is part of the same attempt
    assert rotating.refreshes == 1
    assert [r.headers["Authorization"] for r in dest.requests] == [
        "Bearer token-1",
        "Bearer token-2",
    ]
    assert dest.applications == {"rotating:1": 1}
