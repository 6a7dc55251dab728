"""ReturnLogic tokens and rate governor against the ReturnLogic sandbox over loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from cryptography.fernet import Fernet

from adapters.returnlogic.client import NeedsInstallation, RlTeam
from adapters.returnlogic.config import ReturnLogicConfig
from adapters.returnlogic.sandbox import DEFAULT_TEAM, ReturnLogicSandbox, running_sandbox
from bridge.errors import CredentialsRefused
from bridge.http import HttpClient, Priority
from bridge.store.sqlite import SqliteStore
from bridge.vault import TokenVault

CLIENT_ID, CLIENT_SECRET = "rl-app", "rl-app-secret"


@pytest_asyncio.fixture
async def sandbox() -> AsyncIterator[ReturnLogicSandbox]:
    async with running_sandbox(client_id=CLIENT_ID, client_secret=CLIENT_SECRET) as rl:
        rl.generate(orders=60, seed=5)
        yield rl


@pytest_asyncio.fixture
async def parts(
    tmp_path: Path, sandbox: ReturnLogicSandbox
) -> AsyncIterator[tuple[RlTeam, SqliteStore]]:
    store = SqliteStore(tmp_path / "rl.db")
    await store.open()
    vault = TokenVault(store, Fernet.generate_key())
    async with aiohttp.ClientSession() as session:
        config = ReturnLogicConfig(
            base_url=sandbox.url,
            team_id=DEFAULT_TEAM,
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            timeout=5.0,
        )
        yield RlTeam(config, http=lambda: HttpClient(session), vault=lambda: vault), store
    await store.close()


async def test_install_then_calls_and_tokens_encrypted_at_rest(parts, sandbox) -> None:  # type: ignore[no-untyped-def]
    team, store = parts
    with pytest.raises(NeedsInstallation, match="not installed"):
        await team.request("GET", "/v1/orders")
    await team.install(sandbox.issue_code())
    response = await team.request("GET", "/v1/orders", params={"limit": 5})
    assert len(response.json()) == 5
    secret, version = await store.get_token(team.vault_name)  # type: ignore[misc]
    bearer = (await team.bearer()).get_secret_value()
    assert bearer.encode() not in secret
    assert version == 1


async def test_100_concurrent_401s_cause_exactly_one_refresh(parts, sandbox) -> None:  # type: ignore[no-untyped-def]
    team, store = parts
    team.limits.limiter.windows = ()  # this test is about tokens, not rate
    sandbox.configure(rate_limit_enabled=False)
    await team.install(sandbox.issue_code())
    sandbox.expire_tokens()
    answers = await asyncio.gather(*(team.request("GET", "/v1/orders/count") for _ in range(100)))
    assert all(r.status == 200 for r in answers)
    assert team.refreshes == 1
    _, version = await store.get_token(team.vault_name)  # type: ignore[misc]
    assert version == 2  # the rotated refresh token was persisted once


async def test_refused_refresh_stops_calls_and_says_why(parts, sandbox) -> None:  # type: ignore[no-untyped-def]
    team, _ = parts
    await team.install(sandbox.issue_code())
    sandbox.expire_tokens()
    sandbox.revoke_tokens()  # refresh tokens too
    with pytest.raises(NeedsInstallation, match="install the app again"):
        await team.request("GET", "/v1/orders/count")
    assert team.broken is not None
    requests = len(sandbox.requests)
    with pytest.raises(NeedsInstallation):
        await team.request("GET", "/v1/orders/count")
    assert len(sandbox.requests) == requests  # stopped calling


async def test_governor_never_exceeds_either_window_and_serves_live_first(parts, sandbox) -> None:  # type: ignore[no-untyped-def]
    team, _ = parts
    await team.install(sandbox.issue_code())
    order: list[str] = []

    async def call(label: str, priority: Priority) -> None:
        await team.request("GET", "/v1/orders/count", priority=priority)
        order.append(label)

    started = time.monotonic()
    backfill = [asyncio.create_task(call(f"b{i}", Priority.BACKFILL)) for i in range(6)]
    await asyncio.sleep(0.05)
    live = [asyncio.create_task(call(f"l{i}", Priority.LIVE)) for i in range(3)]
    await asyncio.gather(*backfill, *live)
    assert time.monotonic() - started >= 3.0  # 9 + install calls at 2/s
    assert sandbox.max_in_any_second() <= 2
    assert sandbox.rate_limited == 0
    assert order.index("l2") < order.index("b5")
    assert set(order) == {f"b{i}" for i in range(6)} | {f"l{i}" for i in range(3)}


class CrashingVault(TokenVault):
    """A vault whose next write dies, as a process killed right after ReturnLogic answered."""

    async def put(self, name: str, data: dict, expected_version: int | None) -> bool:  # type: ignore[override]
        raise KeyboardInterrupt("killed between refresh and persist")


async def test_crash_between_refresh_and_persist_is_reported_not_hammered(
    tmp_path: Path, sandbox: ReturnLogicSandbox
) -> None:
    """ReturnLogic rotates the refresh token on use: if the process dies after refreshing
    and before storing the answer, the stored refresh token is spent. The restarted bridge
    must say so (install the app again) and stop calling, not retry it forever."""
    store = SqliteStore(tmp_path / "rl.db")
    await store.open()
    key = Fernet.generate_key()
    config = ReturnLogicConfig(
        base_url=sandbox.url,
        team_id=DEFAULT_TEAM,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        timeout=5.0,
    )
    try:
        async with aiohttp.ClientSession() as session:
            vault = TokenVault(store, key)
            before = RlTeam(config, http=lambda: HttpClient(session), vault=lambda: vault)
            await before.install(sandbox.issue_code())
            sandbox.expire_tokens()
            crashing = CrashingVault(store, key)
            dying = RlTeam(config, http=lambda: HttpClient(session), vault=lambda: crashing)
            with pytest.raises(KeyboardInterrupt):
                await dying.request("GET", "/v1/orders/count")

            restarted = RlTeam(config, http=lambda: HttpClient(session), vault=lambda: vault)
            with pytest.raises(NeedsInstallation, match="install the app again"):
                await restarted.request("GET", "/v1/orders/count")
            assert restarted.broken is not None
            calls = len(sandbox.requests)
            with pytest.raises(NeedsInstallation):
                await restarted.request("GET", "/v1/orders/count")
            assert len(sandbox.requests) == calls

            await restarted.install(sandbox.issue_code())  # a new installation recovers
            assert restarted.broken is None
            assert (await restarted.request("GET", "/v1/orders/count")).status == 200
    finally:
        await store.close()


async def test_a_new_governor_on_the_same_store_starts_with_the_last_window(
    tmp_path: Path, sandbox: ReturnLogicSandbox
) -> None:
    """Two lifetimes of the team's governor (as two processes would build them) on one
    SQLite file: the second counts the first one's calls and waits, 0 x 429."""
    store = SqliteStore(tmp_path / "rl.db")
    await store.open()
    key = sandbox.issue_api_key(DEFAULT_TEAM)
    config = ReturnLogicConfig(
        base_url=sandbox.url, team_id=DEFAULT_TEAM, static_token=key, timeout=5.0
    )
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(3):
                team = RlTeam(config, http=lambda: HttpClient(session, store), vault=lambda: None)
                await asyncio.gather(*(team.request("GET", "/v1/orders/count") for _ in range(3)))
            assert team.limits.journal.seeded_calls >= 2
    finally:
        await store.close()
    assert sandbox.rate_limited == 0
    assert sandbox.max_in_any_second() <= 2


async def test_a_refused_static_token_fails_at_once_as_credentials_refused(
    tmp_path: Path, sandbox: ReturnLogicSandbox
) -> None:
    """A private app's static token cannot be refreshed: ReturnLogic's 401 is final on the
    first answer (a dead letter for outbox work), never retried or refreshed."""
    config = ReturnLogicConfig(
        base_url=sandbox.url,
        team_id=DEFAULT_TEAM,
        static_token="not-a-key-returnlogic-issued",
        timeout=5.0,
    )
    async with aiohttp.ClientSession() as session:
        team = RlTeam(config, http=lambda: HttpClient(session), vault=lambda: None)
        with pytest.raises(CredentialsRefused, match=r"^credentials refused \(401\)"):
            await team.request("GET", "/v1/orders/count")
    assert sandbox.unauthorized == 1
    assert team.refreshes == 0
