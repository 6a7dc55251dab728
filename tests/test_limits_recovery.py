"""Limits that hold across restarts, credentials attached after admission, configurable
backoff and prompt recovery: over real HTTP against the sandboxes, with a real SQLite file
and the real daemon in this process (``tests/harness.py``). The kill -9 variant, which
lasts one minute window, is ``tests/test_limits_kill9.py``."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import zlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest_asyncio
from cryptography.fernet import Fernet

from adapters.optoro.client import ISOLATE_AFTER, RPO_LANES
from adapters.optoro.sandbox import OptoroSandbox
from adapters.optoro.sandbox import running_sandbox as optoro_sandbox
from adapters.returnlogic import team_key
from adapters.returnlogic.client import RlTeam
from adapters.returnlogic.config import ReturnLogicConfig
from adapters.returnlogic.sandbox import DEFAULT_TEAM, ReturnLogicSandbox
from adapters.returnlogic.sandbox import running_sandbox as rl_sandbox
from bridge.http import HttpClient, Priority
from bridge.ports import RMA_LIFECYCLE
from bridge.store import EffectState
from bridge.store.sqlite import SqliteStore
from bridge.vault import TokenVault
from tests.daemon_process import until
from tests.harness import (
    OPTORO_CLIENT_ID,
    OPTORO_SECRET,
    RETAILER,
    optoro_table,
    running_daemon,
)
from tests.test_optoro_rpo import guide_orders

RL_TOKEN = "rl-static-key-7d1f9a"
RL_CLIENT_ID, RL_CLIENT_SECRET = "rl-app", "rl-app-secret-93c2"


def rl_table(url: str, per_second: int = 2, per_minute: int = 120) -> str:
    """A ReturnLogic order source reading one order per request (a steady demand)."""
    return (
        f"[retailers.{RETAILER}.returnlogic]\n"
        f'base_url = "{url}"\nteam_id = "{DEFAULT_TEAM}"\nstatic_token = "${{RL_TOKEN}}"\n'
        f"timeout = 5.0\nrequests_per_second = {per_second}\n"
        f"requests_per_minute = {per_minute}\n"
        f"[retailers.{RETAILER}.returnlogic.orders]\npage_size = 1\n"
    )


def fill_rl(rl: ReturnLogicSandbox, orders: int = 400) -> None:
    rl.generate(orders=orders, seed=3, anchor=datetime.now(UTC), days=1)
    rl.issue_api_key(DEFAULT_TEAM, RL_TOKEN)


def api_requests(rl: ReturnLogicSandbox) -> list[float]:
    return [r.at for r in rl.requests if r.path.startswith("/v1/orders")]


# --- limits across restarts -----------------------------------------------------------------


async def test_restarted_daemon_starts_with_its_predecessors_windows(tmp_path: Path) -> None:
    """Two daemon lifetimes on one SQLite file, back to back (a restart takes milliseconds
    here, so the second window is what a fresh limiter would overrun): ReturnLogic at its
    real 2/s + 120/min sees no 429 and never more than 2 requests in a rolling second."""
    async with (
        rl_sandbox() as rl,
        optoro_sandbox(client_id=OPTORO_CLIENT_ID, client_secret=OPTORO_SECRET) as optoro,
    ):
        fill_rl(rl)
        tables = optoro_table(optoro.url) + rl_table(rl.url)
        env = {"RL_TOKEN": RL_TOKEN}
        for lifetime in (1, 2, 3):
            async with running_daemon(tmp_path, tables, env=env) as daemon:
                seen = len(api_requests(rl))
                await until(lambda s=seen: len(api_requests(rl)) >= s + 5, 15, "requests")
                team = daemon.runtime.find_shared(team_key(DEFAULT_TEAM))
                assert team is not None
                if lifetime > 1:
                    assert team.limits.journal.seeded_calls >= 2  # its predecessor's calls
        assert rl.rate_limited == 0
        assert rl.max_in_any_second() <= 2
        assert rl.max_in_any_minute() <= 120


# --- credentials after admission ------------------------------------------------------------


@pytest_asyncio.fixture
async def rl_oauth(tmp_path: Path) -> AsyncIterator[tuple[RlTeam, ReturnLogicSandbox]]:
    async with rl_sandbox(
        client_id=RL_CLIENT_ID,
        client_secret=RL_CLIENT_SECRET,
        token_ttl=2.0,
        rate_limit_second=4,
        rate_limit_minute=240,
    ) as rl:
        rl.generate(orders=20, seed=5)
        store = SqliteStore(tmp_path / "rl.db")
        await store.open()
        vault = TokenVault(store, Fernet.generate_key())
        try:
            async with aiohttp.ClientSession() as session:
                config = ReturnLogicConfig(
                    base_url=rl.url,
                    team_id=DEFAULT_TEAM,
                    client_id=RL_CLIENT_ID,
                    client_secret=RL_CLIENT_SECRET,
                    timeout=5.0,
                    requests_per_second=4,
                    requests_per_minute=240,
                )
                team = RlTeam(config, http=lambda: HttpClient(session, store), vault=lambda: vault)
                yield team, rl
        finally:
            await store.close()


async def test_a_token_that_expires_while_queued_is_never_sent_stale(rl_oauth) -> None:  # type: ignore[no-untyped-def]
    """Bearers live 2 s; 40 requests queue at 4/s (10 s of queue, five lifetimes): each
    request gets the bearer current when it is admitted, so none ends in "credentials
    refused (401) after re-authentication", and a 401 happens only to the calls admitted
    together when a bearer expires (then the team refreshes once and the queue waits)."""
    team, rl = rl_oauth
    await team.install(rl.issue_code())
    started = time.monotonic()
    results = await asyncio.gather(
        *(team.request("GET", "/v1/orders/count", priority=Priority.LIVE) for _ in range(40)),
        return_exceptions=True,
    )
    elapsed = time.monotonic() - started
    failures = [r for r in results if isinstance(r, BaseException)]
    assert failures == []
    assert rl.rate_limited == 0
    assert rl.max_in_any_second() <= 4
    refreshes = team.refreshes
    assert refreshes >= 3  # the bearer really expired again and again under the queue
    assert rl.unauthorized <= 4 * refreshes  # only what was admitted with it at each expiry
    print(
        f"40 queued calls in {elapsed:.1f}s: {refreshes} refreshes, {rl.unauthorized} x 401,"
        " 0 refused after re-authentication"
    )


# --- backoff and recovery -------------------------------------------------------------------


def retry_table(initial: float, cap: float) -> str:
    return f"[retailers.{RETAILER}.optoro.retry]\ninitial = {initial}\ncap = {cap}\n"


def rpo_attempts(sandbox: OptoroSandbox) -> list[tuple[float, int | None]]:
    return [(r.at, r.status) for r in sandbox.rpo_requests()]


async def test_configured_backoff_is_used_and_a_bare_429_pauses_by_it(tmp_path: Path) -> None:
    """``[retailers.acme.optoro.retry]`` initial 0.05 s, cap 0.2 s: three bare 429s (no
    ``Retry-After``) are retried within the cap each (the old fixed pause was 5 s)."""
    async with optoro_sandbox(client_id=OPTORO_CLIENT_ID, client_secret=OPTORO_SECRET) as sandbox:
        tables = optoro_table(sandbox.url, batch_size="1") + retry_table(0.05, 0.2)
        async with running_daemon(tmp_path, tables) as daemon:
            destination = daemon.runtime.engine.destinations[f"optoro.rpo:{RETAILER}"]
            assert (destination.backoff.initial, destination.backoff.cap) == (0.05, 0.2)
            sandbox.rate_limit_next = 3
            await daemon.runtime.service(RETAILER, RMA_LIFECYCLE).orders.publish(guide_orders()[:1])
            await daemon.settle(within=10)
        attempts = rpo_attempts(sandbox)
        statuses = [status for _, status in attempts]
        assert statuses == [429, 429, 429, 200]
        gaps = [b - a for (a, _), (b, _) in itertools.pairwise(attempts)]
        assert max(gaps) < 1.0  # cap 0.2 s plus dispatch and HTTP time; never 5 s


async def test_waiting_retries_go_out_when_the_destination_answers_again(tmp_path: Path) -> None:
    """A 5xx storm at Optoro: 12 batches retry with a long backoff (initial 4 s, cap 120 s)
    until each has failed 3 times. Optoro recovers; the first batch whose retry comes
    succeeds and the rest are sent at once, each well before its own retry time."""
    orders = guide_orders()[:12]
    async with optoro_sandbox(client_id=OPTORO_CLIENT_ID, client_secret=OPTORO_SECRET) as sandbox:
        tables = optoro_table(sandbox.url, batch_size="1") + retry_table(4.0, 120.0)
        async with running_daemon(tmp_path, tables) as daemon:
            store = daemon.runtime.store
            sandbox.error_rate = 1.0
            await daemon.runtime.service(RETAILER, RMA_LIFECYCLE).orders.publish(orders)

            async def storm_is_long() -> bool:
                pending = await store.list_effects(EffectState.PENDING)
                heads = {e.order_key: e for e in reversed(pending)}  # lowest id per lane
                return bool(pending) and all(e.attempts >= 3 for e in heads.values())

            await until(storm_is_long, 60, "three failed attempts per lane", step=0.1)
            sandbox.error_rate = 0.0
            recovered_at = time.time()
            waiting = {
                e.id: e.next_attempt_at for e in await store.list_effects(EffectState.PENDING)
            }
            await daemon.settle(within=150)
            delivered = await store.list_effects(EffectState.DELIVERED)
        assert {o.id for o in orders} <= set(sandbox.orders)
        first_ok = min(r.at for r in sandbox.rpo_requests() if r.status == 200)
        last_ok = max(r.at for r in sandbox.rpo_requests() if r.status == 200)
        early = [e for e in delivered if e.id in waiting and waiting[e.id] > first_ok + 3.0]
        sent_at = {
            json.dumps(r.body, sort_keys=True): r.at
            for r in sandbox.rpo_requests()
            if r.status == 200
        }
        assert early, "some retries were scheduled well after the recovery"
        for effect in early:
            body = {"returns_portal_order": {"orders": effect.payload["orders"]}}
            assert sent_at[json.dumps(body, sort_keys=True)] < waiting[effect.id]
        print(
            f"recovery: first success {first_ok - recovered_at:.1f}s after Optoro was healthy,"
            f" all {len(orders)} orders delivered {last_ok - first_ok:.2f}s after it;"
            f" latest own retry time was {max(waiting.values()) - first_ok:.1f}s after it"
        )


async def test_a_batch_optoro_cannot_take_does_not_hold_its_lane(tmp_path: Path) -> None:
    """One order Optoro answers 500 for, in a batch of two: after three failed attempts the
    batch is sent order by order, its other order is delivered, the batch is done, the
    refused order goes on alone in a lane of its own (retried there, holding back nothing
    else), and the orders queued behind it in its lane are delivered."""
    orders = guide_orders()
    lanes: dict[int, list[str]] = {}
    for order in orders:  # as the publisher spreads them
        lanes.setdefault(zlib.crc32(order.id.encode()) % RPO_LANES, []).append(order.id)
    lane, ids = next((k, v) for k, v in sorted(lanes.items()) if len(v) >= 3)
    poison = ids[0]
    async with optoro_sandbox(
        client_id=OPTORO_CLIENT_ID, client_secret=OPTORO_SECRET, fail_orders=[poison]
    ) as sandbox:
        tables = optoro_table(sandbox.url, batch_size="2") + retry_table(0.05, 0.2)
        async with running_daemon(tmp_path, tables) as daemon:
            store = daemon.runtime.store
            await daemon.runtime.service(RETAILER, RMA_LIFECYCLE).orders.publish(orders)
            others = {o.id for o in orders} - {poison}
            await until(lambda: others <= set(sandbox.orders), 20, "the other orders delivered")
            own_lane = f"optoro.rpo:{RETAILER}:order:{poison}"
            await until(
                lambda: sum(r.status == 500 for r in sandbox.rpo_requests()) > ISOLATE_AFTER + 2,
                20,
                "the refused order retried alone",
            )
            in_lane = await store.list_effects(order_key=f"optoro.rpo:{RETAILER}:lane{lane}")
            alone = await store.list_effects(order_key=own_lane)
            dead = await store.list_effects(EffectState.DEAD)
        assert poison not in sandbox.orders
        assert len(in_lane) >= 2
        assert all(e.state is EffectState.DELIVERED for e in in_lane)
        assert [o["identifier"] for o in in_lane[0].payload["orders"]] == ids[:2]
        assert [(e.state, [o["identifier"] for o in e.payload["orders"]]) for e in alone] == [
            (EffectState.PENDING, [poison])
        ]
        assert dead == []
